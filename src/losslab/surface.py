"""1-D and 2-D loss surfaces: lines and planes through parameter space, resumable.

A *line* evaluates the model along

.. math::

    \\theta(a) = \\theta_0 + a\\,d \\qquad\\text{or}\\qquad \\theta(a) = (1 - a)\\,\\theta_A + a\\,\\theta_B

(``a`` may lie outside [0, 1]); a *plane* evaluates it on the grid

.. math::

    \\theta(x_i, y_j) = \\theta_0 + x_i\\,d_x + y_j\\,d_y,

with metric arrays shaped ``(ny, nx)``: **rows index y, columns index x**, so
``result.metrics["loss"][j, i]`` is the loss at ``(x[i], y[j])`` (what ``plt.contour(x, y, Z)``
expects). Directions are generic: a point (``dict[str, Tensor]``, possibly covering only some
parameters), a flat tensor, or any object with a ``.vector`` (and optionally ``.meta``) attribute.
Keys that no direction touches keep the origin's (default: the model's) values.

Grid points are evaluated in blocks of ``points_per_chunk`` consecutive flat indices (row-major
over ``(ny, nx)``); after each block the partial :class:`SurfaceResult`, with an explicit ``done``
mask, can be written atomically to ``checkpoint_path``. Calling again with ``resume_from`` evaluates
only the points not done; the grid, the directions, origin, data and loss must match (checked with
a fingerprint), else :class:`~losslab.errors.LosslabError`. Block boundaries are fixed by the grid,
and the resumed run reuses the recorded strategy and chunk sizes, so a resumed surface equals an
uninterrupted one exactly.

A block's points are not materialised: they go to
:meth:`~losslab.evaluate.Evaluator.evaluate_combinations` as coefficients, so the loop strategy
builds each point into one reused buffer right before evaluating it (vmap builds one stacked group
at a time).

Example:
    >>> import numpy as np, torch
    >>> from torch import nn
    >>> from losslab import params
    >>> from losslab.surface import plane
    >>> g = torch.Generator().manual_seed(0)
    >>> model = nn.Linear(3, 2)
    >>> x, y = torch.randn(16, 3, generator=g), torch.randint(0, 2, (16,), generator=g)
    >>> d1 = params.randn_like(params.get_point(model), generator=g)
    >>> d2 = params.randn_like(params.get_point(model), generator=g)
    >>> res = plane(model, (x, y), dx=d1, dy=d2, x=np.linspace(-1, 2, 4), y=np.linspace(0, 1, 3), progress=False)
    >>> res.metrics["loss"].shape, bool(res.done.all())
    ((3, 4), True)
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

import os

import numpy as np
import torch
from torch import Tensor, nn

from ._functional import Point, model_then_data
from .results import jsonable
from . import params as P
from .errors import LosslabError
from .evaluate import Evaluator
from .surface_result import FORMAT, FORMAT_VERSION, BlockLog, SurfaceResult  # noqa: F401 (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    from .precision import Precision

__all__ = ["SurfaceResult", "line", "plane", "DirectionLike", "block_plan", "render", "bundle_settings"]

DirectionLike = Any
"""A point (``dict[str, Tensor]``), a flat 1-D tensor, or an object with ``.vector`` (and ``.meta``)."""

# ---- public functions -------------------------------------------------------------------------------


@model_then_data
def line(
    model: nn.Module,
    data: Any = None,
    *,
    direction: DirectionLike | None = None,
    start: Mapping[str, Tensor] | nn.Module | None = None,
    end: Mapping[str, Tensor] | nn.Module | None = None,
    origin: Mapping[str, Tensor] | nn.Module | None = None,
    alphas: Sequence[float] | np.ndarray | None = None,
    span: tuple[float, float] | None = None,
    num: int = 51,
    evaluator: Evaluator | None = None,
    progress: bool = True,
    resume_from: str | Path | SurfaceResult | None = None,
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int = 1,
    max_points: int | None = None,
    callback: Callable[[SurfaceResult], None] | None = None,
    meta: Mapping[str, Any] | None = None,
    precision: "Precision | None" = None,
    **evaluator_kwargs: Any,
) -> SurfaceResult:
    """Metrics along a line in parameter space.

    Two modes:

    * ``direction``: :math:`\\theta(a) = \\theta_0 + a\\,d` with :math:`\\theta_0` = ``origin``
      (default: the model's parameters).
    * ``start``/``end`` (points or modules; a missing one is the model itself):
      :math:`\\theta(a) = (1 - a)\\,\\theta_A + a\\,\\theta_B`, exactly :math:`\\theta_A` at
      ``a = 0`` and :math:`\\theta_B` at ``a = 1``; ``a`` may lie outside [0, 1]. Only
      parameters are interpolated: BatchNorm statistics are recomputed at every ``a`` (the
      default for models with BatchNorm), or with ``bn="eval"`` taken from ``model``'s buffers.

    Args:
        model: the network (template; never modified).
        data: a ``Split`` or ``(x, y)``; may be ``None`` when ``evaluator`` is given.
        direction: a point, flat tensor or object with ``.vector``/``.meta``.
        start, end: endpoints for interpolation (exclusive with ``direction``/``origin``).
        origin: base point for ``direction`` (subset of keys allowed; the rest from the model).
        alphas: the coefficients; default ``np.linspace(*span, num)``.
        span: range for the default alphas: (-1, 1) with a direction, (0, 1) between models.
        num: number of default alphas.
        evaluator: a prebuilt :class:`~losslab.evaluate.Evaluator` (then no evaluator kwargs).
        progress: show a tqdm bar (only when stderr is a terminal).
        resume_from, checkpoint_path, checkpoint_every, max_points, callback: as in :func:`plane`.
        meta: extra JSON-serialisable metadata (seeds, notes) stored under ``meta["user"]``.
        precision: as in :func:`plane`; between ``start`` and ``end``, ``a = 0`` and ``a = 1``
            (the endpoints) are always on the exact lattice.
        **evaluator_kwargs: passed to :class:`~losslab.evaluate.Evaluator` (``loss``, ``metrics``,
            ``batch_size``, ``bn``, ``strategy``, ``points_per_chunk``, ``device``, ...).

    Returns:
        A :class:`SurfaceResult` of kind ``"line"`` with ``x`` = the alphas.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> data = (torch.randn(8, 2), torch.randint(0, 2, (8,)))
        >>> r = line(a, data, start=a, end=b, num=5, progress=False)
        >>> r.x.tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    ev = _evaluator(model, data, evaluator, evaluator_kwargs, resume_from)
    interp = start is not None or end is not None
    if interp and (direction is not None or origin is not None):
        raise LosslabError("give either direction (and origin) or start/end, not both")
    if not interp and direction is None:
        raise LosslabError("line needs a direction or start/end points")
    if alphas is None:
        lo, hi = span if span is not None else ((0.0, 1.0) if interp else (-1.0, 1.0))
        _check_grid_size(int(num), f"a line of {int(num)} points")
        alphas = np.linspace(lo, hi, int(num))
    xs = _coords(alphas, "alphas")

    if interp:
        a = _endpoint(start, ev)
        b = _endpoint(end, ev)
        if a.keys() != b.keys():
            P.check_compatible(a, b, "start and end")
        basis = [a, b]
        base: Point | None = None
        coeffs = np.stack([1.0 - xs, xs], axis=1)
        dmeta = [
            {"name": "start", "source": "model" if start is None else _describe_source(start), "norm": P.norm(a)},
            {"name": "end", "source": "model" if end is None else _describe_source(end), "norm": P.norm(b)},
        ]
        mode = "interpolation"
        anchors = np.flatnonzero((xs == 0.0) | (xs == 1.0))  # the endpoints: exact under precision too
    else:
        d, m = _as_direction(direction, ev, "direction")
        base = _origin(origin, [d], ev)
        basis = [d]
        coeffs = xs[:, None]
        dmeta = [{"name": "direction", "norm": P.norm(d), "numel": P.numel(d), "meta": m}]
        mode = "direction"
        anchors = np.zeros(0, dtype=np.int64)
    return _run(
        "line", xs, None, coeffs, base, basis, ev,
        info={"mode": mode, "directions": dmeta, "origin": _origin_meta(origin, base),
              "data_meta": getattr(data, "meta", None)},
        progress=progress, resume_from=resume_from, checkpoint_path=checkpoint_path,
        checkpoint_every=checkpoint_every, max_points=max_points, callback=callback, user_meta=meta,
        precision=precision, anchors=anchors,
    )


@model_then_data
def plane(
    model: nn.Module,
    data: Any = None,
    *,
    dx: DirectionLike,
    dy: DirectionLike,
    origin: Mapping[str, Tensor] | nn.Module | None = None,
    x: Sequence[float] | np.ndarray | None = None,
    y: Sequence[float] | np.ndarray | None = None,
    x_span: tuple[float, float] = (-1.0, 1.0),
    y_span: tuple[float, float] = (-1.0, 1.0),
    nx: int = 21,
    ny: int = 21,
    evaluator: Evaluator | None = None,
    progress: bool = True,
    resume_from: str | Path | SurfaceResult | None = None,
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int = 1,
    max_points: int | None = None,
    callback: Callable[[SurfaceResult], None] | None = None,
    meta: Mapping[str, Any] | None = None,
    precision: "Precision | None" = None,
    **evaluator_kwargs: Any,
) -> SurfaceResult:
    """Metrics on the grid :math:`\\theta_0 + x_i d_x + y_j d_y`, shaped ``(ny, nx)`` (rows = y).

    Args:
        model: the network (template; never modified).
        data: a ``Split`` or ``(x, y)``; may be ``None`` when ``evaluator`` is given.
        dx, dy: directions (points, flat tensors or objects with ``.vector``/``.meta``).
        origin: base point (default: the model's parameters; subset of keys allowed).
        x, y: coordinates (any ranges, any lengths); default ``np.linspace(*x_span, nx)`` and
            ``np.linspace(*y_span, ny)``.
        evaluator: a prebuilt :class:`~losslab.evaluate.Evaluator` (then no evaluator kwargs).
        progress: show a tqdm bar (only when stderr is a terminal).
        resume_from: a :class:`SurfaceResult` or a saved path; only points not done are evaluated.
            A path that does not exist yet starts a fresh surface (so the same call can both start
            and resume a run). The grid, directions, origin, data and loss must match.
        checkpoint_path: where to save the partial result (atomically) during the run and the final
            result at the end.
        checkpoint_every: save every this many blocks of points.
        max_points: evaluate at most this many points in this call (the result is partial).
        callback: called with the partial result after each block (after checkpointing); an
            exception it raises stops the run.
        meta: extra JSON-serialisable metadata (seeds, notes) stored under ``meta["user"]``.
        precision: ``None`` (default): every point on every example, exact. A
            :class:`~losslab.precision.Precision`: adaptive precision (subsampled control-variate
            estimates, coarse to fine), with ``stderr``, ``examples_used``, ``exact`` and
            ``interpolated`` per point and the totals in ``meta["precision"]``.
        **evaluator_kwargs: passed to :class:`~losslab.evaluate.Evaluator`.

    Returns:
        A :class:`SurfaceResult` of kind ``"plane"``.
    """
    n_x = int(nx) if x is None else int(np.size(x))
    n_y = int(ny) if y is None else int(np.size(y))
    _check_grid_size(n_x * n_y, f"a {n_x} x {n_y} grid")
    ev = _evaluator(model, data, evaluator, evaluator_kwargs, resume_from)
    xs = _coords(np.linspace(x_span[0], x_span[1], int(nx)) if x is None else x, "x")
    ys = _coords(np.linspace(y_span[0], y_span[1], int(ny)) if y is None else y, "y")
    d1, m1 = _as_direction(dx, ev, "dx")
    d2, m2 = _as_direction(dy, ev, "dy")
    base = _origin(origin, [d1, d2], ev)
    jj, ii = np.divmod(np.arange(len(xs) * len(ys)), len(xs))
    coeffs = np.stack([xs[ii], ys[jj]], axis=1)
    dmeta = [
        {"name": "dx", "norm": P.norm(d1), "numel": P.numel(d1), "meta": m1},
        {"name": "dy", "norm": P.norm(d2), "numel": P.numel(d2), "meta": m2},
    ]
    cos = None
    if d1.keys() == d2.keys():
        try:
            cos = P.cosine(d1, d2)
        except LosslabError:  # a zero direction
            pass
    return _run(
        "plane", xs, ys, coeffs, base, [d1, d2], ev,
        info={"mode": "plane", "directions": dmeta, "cosine_dx_dy": cos, "origin": _origin_meta(origin, base),
              "data_meta": getattr(data, "meta", None)},
        progress=progress, resume_from=resume_from, checkpoint_path=checkpoint_path,
        checkpoint_every=checkpoint_every, max_points=max_points, callback=callback, user_meta=meta,
        precision=precision,
    )


# ---- internals -------------------------------------------------------------------------------------


_BYTES_PER_POINT = 96
"""Host memory one grid point costs in the bookkeeping: coordinates, indices, metrics, done mask."""


def _check_grid_size(n_points: int, what: str) -> None:
    """Refuse, before allocating anything, a grid whose bookkeeping alone needs over half the RAM."""
    if n_points < 1:
        raise LosslabError(f"{what} has no points")
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        ram = 16 << 30
    need = n_points * _BYTES_PER_POINT
    if need > ram // 2:
        raise LosslabError(f"{what} is {n_points:.3g} points: its coordinates and results alone need "
                           f"~{need / 2**30:.3g} GiB, over half of this machine's {ram / 2**30:.3g} GiB; "
                           f"use fewer points")


def _coords(v: Any, what: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise LosslabError(f"{what} is empty")
    if not np.all(np.isfinite(a)):
        raise LosslabError(f"{what} has non-finite coordinates")
    return a


def _load_resume(resume_from: str | Path | SurfaceResult | None) -> SurfaceResult | None:
    if resume_from is None or isinstance(resume_from, SurfaceResult):
        return resume_from
    npz, js = SurfaceResult.paths(resume_from)
    if not npz.exists() and not js.exists():
        return None
    return SurfaceResult.load(resume_from)


def _evaluator(
    model: nn.Module, data: Any, evaluator: Evaluator | None, kwargs: dict[str, Any], resume_from: Any
) -> Evaluator:
    if evaluator is not None:
        if kwargs:
            raise LosslabError(f"pass evaluator settings to the Evaluator, not here: {sorted(kwargs)}")
        return evaluator
    if data is None:
        raise LosslabError("give data (a Split or (x, y)) or an evaluator")
    prev = _load_resume(resume_from)
    if prev is not None:  # reuse the recorded chunking/strategy so the resumed grid is bit-identical
        kwargs = resumed_evaluator_kwargs(model, kwargs, prev.meta.get("evaluator", {}))
    return Evaluator(model, data, **kwargs)


def _device_type(model: nn.Module | None, kwargs: Mapping[str, Any]) -> str | None:
    """The device type an evaluator built with ``kwargs`` (or recorded as ``kwargs``) uses."""
    dev = kwargs.get("device")
    if dev is None and model is not None:
        ref = next(iter(model.parameters()), None)
        dev = ref.device if ref is not None else "cpu"
    try:
        return None if dev is None else torch.device(dev).type
    except (RuntimeError, TypeError):
        return None


def _floating(point: Mapping[str, Tensor]) -> Point:
    return {k: v for k, v in point.items() if v.is_floating_point()}


def _as_direction(d: DirectionLike, ev: Evaluator, what: str) -> tuple[Point, dict[str, Any]]:
    meta: dict[str, Any] = {}
    vec = d
    if not isinstance(d, (Mapping, Tensor)) and hasattr(d, "vector"):
        vec = d.vector
        m = getattr(d, "meta", None)
        if m is not None:
            meta = _jsonable(dataclasses.asdict(m) if dataclasses.is_dataclass(m) else m)
            if not isinstance(meta, dict):
                meta = {"value": meta}
        meta.setdefault("type", type(d).__name__)
    if isinstance(vec, Tensor):
        vec = P.unflatten(vec.reshape(-1), ev.base_point())
    if not isinstance(vec, Mapping):
        raise LosslabError(f"{what} must be a point (dict of tensors), a flat tensor or have .vector, got {type(d).__name__}")
    out = _floating(ev.prepare(vec))
    if not out:
        raise LosslabError(f"{what} has no floating tensors")
    for k, v in out.items():
        ref = ev.base_point().get(k)
        if ref is not None and v.shape != ref.shape:
            raise LosslabError(f"{what}[{k!r}] has shape {tuple(v.shape)}, the model's is {tuple(ref.shape)}")
    return out, meta


def _endpoint(p: Mapping[str, Tensor] | nn.Module | None, ev: Evaluator) -> Point:
    if p is None:
        p = ev.base_point()
    elif isinstance(p, nn.Module):
        p = {k: v.detach() for k, v in p.named_parameters()}
    return _floating(ev.prepare(p))


def _origin(origin: Mapping[str, Tensor] | nn.Module | None, dirs: Sequence[Point], ev: Evaluator) -> Point:
    """The base point restricted to the keys that vary (directions) plus any the user gave."""
    base = ev.base_point()
    given: Point = {}
    if origin is not None:
        if isinstance(origin, nn.Module):
            origin = {k: v.detach() for k, v in origin.named_parameters()}
        given = _floating(ev.prepare(origin))
    keys = list(dict.fromkeys([*given, *(k for d in dirs for k in d)]))
    out: Point = {}
    for k in keys:
        if k in given:
            out[k] = given[k]
        elif k in base:
            out[k] = base[k]
        else:
            raise LosslabError(f"direction key {k!r} is a buffer; give its origin value in origin=")
    return out


def _origin_meta(origin: Any, base: Point | None) -> dict[str, Any]:
    if base is None:
        return {"source": "interpolation"}
    return {"source": "model" if origin is None else _describe_source(origin), "norm": P.norm(base) if base else 0.0}


def _describe_source(obj: Any) -> str:
    return type(obj).__name__ if isinstance(obj, nn.Module) else "point"


def _fingerprint(kind: str, base: Point | None, basis: Sequence[Point], ev: Evaluator) -> str:
    """sha256 (:class:`losslab.results.Fingerprint`) of the settings, points, directions and data of a surface."""
    from .results import Fingerprint

    h = Fingerprint().text(f"{kind}|{ev.loss_name}|{ev.bn}|{','.join(ev.metric_names)}|{ev.dtype}")
    for name, pt in [("origin", base or {})] + [(f"d{j}", d) for j, d in enumerate(basis)]:
        for k in sorted(pt):
            h.tensor(f"{name}.{k}", pt[k])
    h.tensor("data.x", ev.x)
    h.tensor("data.y", ev.y)
    if ev.bn_x is not ev.x:
        h.tensor("bn.x", ev.bn_x)
    return h.hexdigest()


def _check_resume(prev: SurfaceResult, kind: str, xs: np.ndarray, ys: np.ndarray | None, names: Sequence[str], fp: str) -> None:
    problems = []
    if prev.kind != kind:
        problems.append(f"kind {prev.kind!r} vs {kind!r}")
    if prev.x.shape != xs.shape or not np.array_equal(prev.x, xs):
        problems.append("x coordinates differ")
    if (prev.y is None) != (ys is None) or (ys is not None and (prev.y.shape != ys.shape or not np.array_equal(prev.y, ys))):
        problems.append("y coordinates differ")
    if list(prev.metrics) != list(names):
        problems.append(f"metrics {list(prev.metrics)} vs {list(names)}")
    if prev.meta.get("fingerprint") != fp:
        problems.append("directions, origin, data or loss differ (fingerprint mismatch)")
    if problems:
        raise LosslabError("cannot resume the saved surface: " + "; ".join(problems)
                           + " (delete it, or pass --force on the command line, to start over)")


def _versions() -> dict[str, str]:
    from . import __version__

    return {"losslab": __version__, "torch": torch.__version__, "numpy": np.__version__, "python": sys.version.split()[0]}


def _data_meta(ev: Evaluator, split_meta: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n": ev.n,
        "x_shape": list(ev.x.shape),
        "y_dtype": str(ev.y.dtype).replace("torch.", ""),
        "n_bn": int(ev.bn_x.shape[0]),
    }
    if split_meta:
        out["meta"] = _jsonable(split_meta)
    return out


def _run(
    kind: Literal["line", "plane"],
    xs: np.ndarray,
    ys: np.ndarray | None,
    coeffs: np.ndarray,
    base: Point | None,
    basis: Sequence[Point],
    ev: Evaluator,
    *,
    info: dict[str, Any],
    progress: bool,
    resume_from: Any,
    checkpoint_path: str | Path | None,
    checkpoint_every: int,
    max_points: int | None,
    callback: Callable[[SurfaceResult], None] | None,
    user_meta: Mapping[str, Any] | None,
    precision: "Precision | None" = None,
    anchors: np.ndarray | Sequence[int] = (),
) -> SurfaceResult:
    if int(checkpoint_every) < 1:
        raise LosslabError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if max_points is not None and int(max_points) < 0:
        raise LosslabError(f"max_points must be >= 0, got {max_points}")
    named = [("the origin (the model)", base)] * (base is not None) + [(f"direction {i}", d) for i, d in enumerate(basis)]
    for what, point in named:  # NaN in, NaN everywhere: refuse
        P.check_finite(point, what)
    fp = _fingerprint(kind, base, basis, ev)
    if precision is not None:  # an adaptive surface never resumes an exact one, nor one of other settings
        from .results import digest

        fp = digest({"surface": fp, "precision": precision.describe()}, 64)
    prev = _load_resume(resume_from)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "kind": kind,
        **_jsonable({k: v for k, v in info.items() if k != "data_meta"}),
        "data": _data_meta(ev, info.get("data_meta")),
        "evaluator": dict(ev.info),
        "versions": _versions(),
        "fingerprint": fp,
        "user": _jsonable(dict(user_meta or {})),
    }
    seeds = [d.get("meta", {}).get("seed") for d in meta.get("directions", []) if isinstance(d, dict)]
    meta["seeds"] = [s for s in seeds if s is not None]
    prior_s, prior_pts = 0.0, 0
    if prev is not None:
        _check_resume(prev, kind, xs, ys, ev.metric_names, fp)
        result = dataclasses.replace(prev, meta={**prev.meta, **meta})
        t = prev.meta.get("timing", {})
        prior_s, prior_pts = float(t.get("seconds", 0.0)), int(t.get("points_evaluated", 0))
    else:
        result = SurfaceResult.empty(kind, xs, ys, ev.metric_names, meta)

    if precision is not None:
        from ._adaptive_surface import run_adaptive

        return run_adaptive(result, precision, ev, coeffs, base, basis, progress=progress,
                            checkpoint_path=checkpoint_path, checkpoint_every=checkpoint_every,
                            max_points=max_points, callback=callback, prior=(prior_s, prior_pts), anchors=anchors)
    metrics = {k: v.copy() for k, v in result.metrics.items()}
    done = result.done.copy()
    flat_done = done.reshape(-1)
    flat_metrics = {k: v.reshape(-1) for k, v in metrics.items()}
    n = coeffs.shape[0]
    block = ev.points_per_chunk
    evaluated = 0
    t0 = time.perf_counter()

    def snapshot() -> SurfaceResult:
        secs = prior_s + (time.perf_counter() - t0)
        pts = prior_pts + evaluated
        timing = {"seconds": secs, "points_evaluated": pts, "points_per_s": (pts / secs) if secs > 0 else None}
        m = {**result.meta, "timing": timing, "evaluator": dict(ev.info)}
        return dataclasses.replace(
            result, metrics={k: v.copy() for k, v in metrics.items()}, done=done.copy(), meta=_jsonable(m)
        )

    log = BlockLog(snapshot, n, int(flat_done.sum()), progress, kind, checkpoint_path, checkpoint_every, callback)
    try:
        for idx in block_plan(flat_done, block, max_points):
            res = ev.evaluate_combinations(coeffs[idx], basis, base)
            for k in flat_metrics:
                flat_metrics[k][idx] = res[k]
            flat_done[idx] = True
            evaluated += int(idx.size)
            log.block(int(idx.size))
    finally:
        log.close()
    return log.final()


def bundle_settings(bundle: Any, split: str = "train") -> dict[str, Any]:
    """The evaluator settings a data bundle implies for a surface on its ``split``.

    ``loss``: ``"cross_entropy"`` for classification (``bundle.num_classes > 0``), else ``"mse"``;
    ``bn_data``: for the test split of a classification bundle, the training split (BatchNorm
    statistics are recomputed on training data, as in training). Pass them on to :func:`plane` or
    :func:`line` (``plane(model, bundle.test, ..., **bundle_settings(bundle, "test"))``).
    """
    classification = bundle.num_classes > 0
    out: dict[str, Any] = {"loss": "cross_entropy" if classification else "mse"}
    if classification and split == "test":
        out["bn_data"] = bundle.train
    return out


def block_plan(done: np.ndarray, block: int, max_points: int | None = None) -> list[np.ndarray]:
    """The blocks a surface evaluates: flat grid indices in the order :func:`plane`/:func:`line` use.

    The flat (row-major) indices are cut into consecutive runs of ``block``; the points already
    ``done`` are dropped from each run (a run left empty is skipped) and the plan stops once
    ``max_points`` points are planned (the last block truncated). Each block is evaluated in one
    :meth:`~losslab.evaluate.Evaluator.evaluate_combinations` call, then checkpointed; the sharded
    surface (:mod:`losslab.distributed`) hands out exactly these blocks.

    Args:
        done: the done mask (any shape; read flat, row-major).
        block: points per block (the evaluator's ``points_per_chunk``), >= 1.
        max_points: at most this many points over all blocks (None: no limit).

    Example:
        >>> import numpy as np
        >>> done = np.array([True, False, False, False, True, False, False])
        >>> [b.tolist() for b in block_plan(done, 3, max_points=3)]
        [[1, 2], [3]]
    """
    flat_done = np.asarray(done, dtype=bool).reshape(-1)
    n = flat_done.size
    block = int(block)
    if block < 1:
        raise LosslabError(f"block must be >= 1, got {block}")
    budget = math.inf if max_points is None else int(max_points)
    out: list[np.ndarray] = []
    evaluated = 0
    for s in range(0, n, block):
        if evaluated >= budget:
            break
        idx = np.arange(s, min(n, s + block), dtype=np.int64)
        idx = idx[~flat_done[idx]]
        if idx.size == 0:
            continue
        if evaluated + idx.size > budget:
            idx = idx[: int(budget - evaluated)]
        out.append(idx)
        evaluated += int(idx.size)
    return out


def render(
    result: SurfaceResult,
    out: str | Path,
    *,
    png: bool = False,
    html: bool = False,
    vtp: bool = False,
    log: bool = False,
    pca: Any = None,
    dpi: int = 120,
) -> dict[str, str]:
    """Write the figures and exports of a surface into the folder ``out``; returns ``{kind: path}``.

    * ``png``: a line's ``surface.png`` (:class:`~losslab.plot.LineDisplay`), or a plane's
      ``contour.png`` (filled contours), ``surface3d.png`` (3-D) and, given the ``pca`` of the
      trajectory, ``trajectory.png`` (the path over the contours). Keys ``png``, ``png_3d``,
      ``png_trajectory``.
    * ``html``: ``surface.html``, offline interactive Plotly (plane only; key ``html``).
    * ``vtp``: ``surface.vtp`` for ParaView (plane only; key ``vtp``).
    * an adaptive-precision plane (with ``stderr__loss``, see :mod:`losslab.precision`) adds
      ``uncertainty.png`` with ``png`` (:class:`~losslab.plot.UncertaintyDisplay`; key ``png_uncertainty``).

    ``log`` log-scales the loss everywhere. Nothing is recomputed: figures re-render from the result.

    Raises:
        LosslabError: ``html``/``vtp`` asked for a line.
    """
    out = Path(out)
    files: dict[str, str] = {}
    if result.kind != "plane" and (html or vtp):
        raise LosslabError("HTML and VTP exports need a 2-D surface (a plane)")
    if png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .plot import ContourDisplay, LineDisplay, SurfaceDisplay, TrajectoryDisplay, UncertaintyDisplay

        def save(disp: Any, key: str, name: str) -> None:
            files[key] = str(disp.savefig(out / name, dpi=dpi, bbox_inches="tight"))
            plt.close(disp.figure_)

        if result.kind == "line":
            save(LineDisplay.from_result(result, log=log), "png", "surface.png")
        else:
            save(ContourDisplay.from_result(result, kind="contourf", log=log), "png", "contour.png")
            save(SurfaceDisplay.from_result(result, log=log), "png_3d", "surface3d.png")
            if "stderr__loss" in getattr(result, "arrays", {}):
                save(UncertaintyDisplay.from_result(result, log=log), "png_uncertainty", "uncertainty.png")
            if pca is not None:
                save(TrajectoryDisplay.from_result(pca, result, log=log), "png_trajectory", "trajectory.png")
    if html:
        from .plot import plotly_surface_html

        files["html"] = str(plotly_surface_html(result, out / "surface.html", log=log))
    if vtp:
        from .plot import export_vtp

        files["vtp"] = str(export_vtp(result, out / "surface.vtp", log=log))
    return files


def resumed_evaluator_kwargs(model: nn.Module, kwargs: Mapping[str, Any], rec: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluator settings for resuming a surface: ``kwargs`` with the settings the user left at
    their defaults taken from the interrupted run's record (``meta["evaluator"]``): points per
    chunk, strategy, batch size, first-layer mode, memory layout (``contiguous`` for a record that
    predates the choice), and the cache target when the device type is the same, so that the
    resumed grid is computed exactly as the uninterrupted one would be."""
    kwargs = dict(kwargs)
    if kwargs.get("points_per_chunk") is None and rec.get("points_per_chunk"):
        kwargs["points_per_chunk"] = int(rec["points_per_chunk"])
    if kwargs.get("strategy", "auto") == "auto" and rec.get("strategy") in ("loop", "vmap"):
        kwargs["strategy"] = rec["strategy"]
    if kwargs.get("batch_size") is None and rec.get("batch_size"):
        kwargs["batch_size"] = int(rec["batch_size"])
    if "cache_mb" not in kwargs and "cache_mb" in rec and _device_type(model, kwargs) == _device_type(None, rec):
        kwargs["cache_mb"] = rec["cache_mb"]  # the same evaluation chunks
    if rec and kwargs.get("memory_format", "auto") == "auto":  # the same layout (recorded since 2026-12-05)
        mf = rec.get("memory_format")
        kwargs["memory_format"] = mf.get("used", "contiguous") if isinstance(mf, dict) else "contiguous"
    fl = rec.get("first_layer")
    if kwargs.get("first_layer", "auto") == "auto" and isinstance(fl, dict) and fl.get("requested") in ("precompute", "compute"):
        kwargs["first_layer"] = fl["requested"]
    return kwargs


def _progress_bar(total: int, initial: int, progress: bool, desc: str) -> Any:
    """:func:`losslab.results.progress_bar` (a bar only on a terminal)."""
    from .results import progress_bar

    return progress_bar(total, initial, progress=progress, desc=desc, unit="pt")


def _jsonable(obj: Any) -> Any:
    """Metadata as strict JSON (NaN/inf to null), arrays over 64 entries summarised by their shape."""
    return jsonable(obj, max_array_size=64)
