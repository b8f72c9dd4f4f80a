r"""Paths between two solutions: linear interpolation, metrics along any path, and barriers.

A *path* is a map :math:`\alpha \in [0, 1] \mapsto \theta(\alpha)` with :math:`\theta(0) = \theta_A`
and :math:`\theta(1) = \theta_B`. The linear path is

.. math::

    \theta(\alpha) = (1 - \alpha)\,\theta_A + \alpha\,\theta_B ,

computed in exactly this form so that :math:`\theta(0)` and :math:`\theta(1)` are bit-identical to
the endpoints. Trained curves (:mod:`losslab.connect.curves`) and AutoNEB paths
(:mod:`losslab.connect.neb`) produce :class:`PathResult` objects of the same shape.

Barriers (:func:`barriers`) of a metric :math:`L` sampled along a path, both reported for loss and
error (Frankle et al. 2020; Ainsworth et al. 2023; the definitions every survey row uses)::

    mean   = max_α L(α) − (L(0) + L(1)) / 2
    interp = max_α [ L(α) − ((1 − α) L(0) + α L(1)) ]

Both are >= 0 and agree when the endpoints have equal values.

BatchNorm: with ``bn="auto"`` (default) the running statistics are recomputed at every point of the
path with one pass over the *training* data (Garipov et al.'s ``update_bn``), also when evaluating
on the test split; see :class:`losslab.evaluate.Evaluator`.

Adaptive precision: with ``precision=Precision(rtol=...)`` (:mod:`losslab.precision`) a path costs
what its precision needs. The endpoints and every ``coarse``-th point are evaluated exactly; every
other point is estimated from a seeded, class-stratified subsample with those points' per-example
losses as a control variate, with more examples (up to all) while its error bar is too large. The
result carries per-point ``stderr``, ``examples_used``, ``exact`` and ``interpolated`` and the totals
in ``meta["precision"]``; BatchNorm must then be in eval mode (``bn="eval"``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from losslab import params
    >>> from losslab.connect import linear_path
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    >>> a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    >>> res = linear_path(a, (x, y), point_a=params.get_point(a), point_b=params.get_point(b), num=25)
    >>> res.alphas.shape, sorted(res.metrics["train"])
    ((25,), ['error', 'loss'])
    >>> res.barrier("loss", split="train", kind="interp") >= 0
    True
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .._functional import Point, as_xy, model_then_data
from ..results import Result, load_arrays, result_paths, save_arrays
from .. import params as P
from ..errors import LosslabError
from ..evaluate import Evaluator, has_batchnorm

if TYPE_CHECKING:  # pragma: no cover
    from ..precision import Precision

__all__ = [
    "PathResult",
    "barriers",
    "linear_path",
    "evaluate_path",
    "as_point",
    "interpolate",
    "BARRIER_KINDS",
]

BARRIER_KINDS = ("mean", "interp")
FORMAT = "losslab.path"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------- barriers
def barriers(values: Sequence[float] | np.ndarray, alphas: Sequence[float] | np.ndarray) -> dict[str, float]:
    r"""Both barrier definitions of one metric sampled along a path.

    With :math:`L_0 = L(\alpha_0)`, :math:`L_1 = L(\alpha_{n-1})` (the endpoints) and the position
    normalised to :math:`s = (\alpha - \alpha_0) / (\alpha_{n-1} - \alpha_0) \in [0, 1]`:

    * ``mean``   :math:`= \max_i L_i - (L_0 + L_1)/2` (Frankle et al. 2020; git re-basin's code),
    * ``interp`` :math:`= \max_i \,[L_i - ((1 - s_i) L_0 + s_i L_1)]` (Garipov/Draxler-style height
      above the chord).

    One definition for the whole library: ``losslab connect``, :class:`PathResult` and the rows of
    ``losslab reproduce`` (C4 stores ``mean`` and ``interp`` of its linear paths as ``*_mean`` and
    ``*_linear``) all use this function.

    Args:
        values: the metric at each sampled point, endpoints first and last.
        alphas: the positions, strictly increasing (``t`` of a curve, arc length of a NEB path...).

    Returns:
        ``{"mean", "interp", "alpha_mean", "alpha_interp", "max", "start", "end"}``: the two barriers,
        the positions where they are attained, the maximum and the endpoint values. A non-finite value
        anywhere makes the barriers NaN (a diverged point has no meaningful barrier).

    Raises:
        LosslabError: fewer than 2 points, mismatched lengths, or non-increasing alphas.

    Example:
        >>> b = barriers([0.0, 1.0, 2.0], [0.0, 0.5, 1.0])
        >>> b["mean"], b["interp"]
        (1.0, 0.0)
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    a = np.asarray(alphas, dtype=np.float64).reshape(-1)
    if v.shape != a.shape:
        raise LosslabError(f"barriers: {v.size} values for {a.size} alphas")
    if v.size < 2:
        raise LosslabError("barriers need at least the two endpoints")
    if not (np.all(np.isfinite(a)) and np.all(np.diff(a) > 0)):
        raise LosslabError("barriers: alphas must be finite and strictly increasing")
    s = (a - a[0]) / (a[-1] - a[0])
    l0, l1 = float(v[0]), float(v[-1])
    out = {"start": l0, "end": l1}
    if not np.all(np.isfinite(v)):
        nan = float("nan")
        out.update({"mean": nan, "interp": nan, "alpha_mean": nan, "alpha_interp": nan, "max": nan})
        return out
    i = int(np.argmax(v))
    above = v - ((1.0 - s) * l0 + s * l1)
    j = int(np.argmax(above))
    out.update({
        "mean": float(v[i] - 0.5 * (l0 + l1)),
        "interp": float(above[j]),
        "alpha_mean": float(a[i]),
        "alpha_interp": float(a[j]),
        "max": float(v[i]),
    })
    return out


# -------------------------------------------------------------------------------------- the result
@dataclass(frozen=True, eq=False)
class PathResult(Result):
    """Metrics along a path between two solutions.

    Attributes:
        alphas: ``(n,)`` positions along the path (``α`` of a line, ``t`` of a curve, normalised arc
            length of a NEB path), strictly increasing, endpoints first and last.
        metrics: ``{split: {metric: (n,) float64}}``; splits ``"train"`` and (when given) ``"test"``;
            metrics ``"loss"`` and, for classification, ``"error"`` (= 1 − accuracy).
        barriers: ``{split: {metric: barriers(...)}}`` (see :func:`barriers`).
        meta: JSON-serialisable description (``kind``, number of points, BN mode, evaluator setup,
            timings, endpoint distance...); ``meta["precision"]`` for an adaptive path (settings,
            ``example_evaluations``, ``exact_equivalent``, ``savings``, and per split the tolerance
            and counts).
        arrays: per split, the per-point arrays of an adaptive-precision path (``stderr__<metric>``,
            ``examples_used``, ``exact``, ``interpolated``; see :mod:`losslab.precision`); empty for
            an exact one. Read them through :attr:`stderr`, :attr:`examples_used`, :attr:`exact` and
            :attr:`interpolated`, which also answer for an exact path.

    ``save(path)`` writes ``<path>.npz`` (``alphas`` and one ``<split>__<metric>`` array each, plus
    ``<split>__adaptive__<name>`` for ``arrays``) and ``<path>.json`` (format, splits, metrics,
    barriers, meta): plain numpy + JSON, readable without losslab, each written atomically.

    Example:
        >>> import numpy as np
        >>> a = np.linspace(0, 1, 5)
        >>> r = PathResult.from_metrics(a, {"test": {"error": np.array([.1, .3, .5, .3, .1])}})
        >>> r.barrier("error")
        0.4
    """

    alphas: np.ndarray
    metrics: dict[str, dict[str, np.ndarray]]
    barriers: dict[str, dict[str, dict[str, float]]]
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        a = np.asarray(self.alphas, dtype=np.float64)
        object.__setattr__(self, "alphas", a)
        for split, ms in self.metrics.items():
            for name, v in ms.items():
                if np.shape(v) != a.shape:
                    raise LosslabError(f"metric {split}/{name} has shape {np.shape(v)}, expected {a.shape}")
        for split, arrs in self.arrays.items():
            if split not in self.metrics:
                raise LosslabError(f"arrays for split {split!r}, which has no metrics")
            for name, v in arrs.items():
                if np.shape(v) != a.shape:
                    raise LosslabError(f"array {split}/{name} has shape {np.shape(v)}, expected {a.shape}")

    @classmethod
    def from_metrics(cls, alphas: np.ndarray, metrics: Mapping[str, Mapping[str, np.ndarray]],
                     meta: Mapping[str, Any] | None = None,
                     arrays: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> "PathResult":
        """Build a result and compute its barriers from raw metric arrays (and, for an adaptive path,
        its per-point ``arrays``).

        When the alphas extend beyond [0, 1] but include both 0 and 1 (a line extrapolated past the
        endpoints), the barriers are computed on the part in [0, 1]; otherwise between the first and
        last points.
        """
        a = np.asarray(alphas, dtype=np.float64)
        ms = {s: {k: np.asarray(v, dtype=np.float64) for k, v in m.items()} for s, m in metrics.items()}
        sel = np.ones(a.shape, bool)
        if (a[0] < 0 or a[-1] > 1) and np.any(a == 0.0) and np.any(a == 1.0):
            sel = (a >= 0.0) & (a <= 1.0)
        bs = {s: {k: barriers(v[sel], a[sel]) for k, v in m.items()} for s, m in ms.items()}
        arrs = {s: {k: np.asarray(v) for k, v in m.items()} for s, m in (arrays or {}).items()}
        return cls(a, ms, bs, dict(meta or {}), arrs)

    @property
    def splits(self) -> list[str]:
        return list(self.metrics)

    @property
    def stderr(self) -> dict[str, dict[str, np.ndarray]]:
        """``{split: {metric: standard error per point}}``: 0 where evaluated on every example."""
        zero = np.zeros(self.alphas.shape)
        return {s: {m: self.arrays.get(s, {}).get(f"stderr__{m}", zero).copy() for m in ms}
                for s, ms in self.metrics.items()}

    @property
    def examples_used(self) -> dict[str, np.ndarray]:
        """``{split: examples evaluated per point}`` (every example of an exact path, 0 where interpolated)."""
        n = {s: int(self.meta.get("evaluator", {}).get(s, {}).get("n", 0)) for s in self.metrics}
        return {s: self.arrays.get(s, {}).get("examples_used", np.full(self.alphas.shape, n[s], np.int64))
                for s in self.metrics}

    @property
    def exact(self) -> dict[str, np.ndarray]:
        """``{split: which points were evaluated on every example}``."""
        return {s: self.arrays.get(s, {}).get("exact", np.ones(self.alphas.shape, bool)) for s in self.metrics}

    @property
    def interpolated(self) -> dict[str, np.ndarray]:
        """``{split: which points were filled by interpolation (never evaluated)}``."""
        return {s: self.arrays.get(s, {}).get("interpolated", np.zeros(self.alphas.shape, bool)) for s in self.metrics}

    def barrier(self, metric: str = "error", *, split: str = "test", kind: Literal["mean", "interp"] = "mean") -> float:
        """One barrier value: ``barriers[split][metric][kind]``."""
        if kind not in BARRIER_KINDS:
            raise LosslabError(f"barrier kind must be one of {BARRIER_KINDS}, got {kind!r}")
        if split not in self.barriers:
            raise LosslabError(f"no split {split!r} on this path; have {self.splits}")
        if metric not in self.barriers[split]:
            raise LosslabError(f"no metric {metric!r} on split {split!r}; have {sorted(self.barriers[split])}")
        return float(self.barriers[split][metric][kind])

    def summary(self) -> dict[str, Any]:
        """Barriers (both kinds) and endpoint values per split and metric, JSON-ready (and
        ``precision``, ``meta["precision"]``, for an adaptive path)."""
        out: dict[str, Any] = {}
        for s, ms in self.barriers.items():
            for m, b in ms.items():
                out[f"{s}_{m}_barrier"] = b["mean"]
                out[f"{s}_{m}_barrier_interp"] = b["interp"]
                out[f"{s}_{m}_endpoints"] = [b["start"], b["end"]]
                out[f"{s}_{m}_max"] = b["max"]
        if "precision" in self.meta:  # an adaptive path: its totals and savings
            out["precision"] = self.meta["precision"]
        return out

    # ---- I/O -----------------------------------------------------------------------------------
    @staticmethod
    def paths(path: str | Path) -> tuple[Path, Path]:
        """``(npz, json)`` for ``path`` given with or without ``.npz``/``.json`` (:func:`losslab.results.result_paths`)."""
        return result_paths(path)

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.npz`` and ``<path>.json`` atomically (:func:`losslab.results.save_arrays`, NaN kept);
        returns the npz path."""
        arrays: dict[str, np.ndarray] = {"alphas": self.alphas}
        for s, ms in self.metrics.items():
            for m, v in ms.items():
                if "__" in s or "__" in m:
                    raise LosslabError(f"split/metric names must not contain '__': {s}/{m}")
                arrays[f"{s}__{m}"] = np.asarray(v, dtype=np.float64)
        for s, arrs in self.arrays.items():
            for name, v in arrs.items():
                arrays[f"{s}__adaptive__{name}"] = np.asarray(v)
        desc: dict[str, Any] = {"splits": {s: list(ms) for s, ms in self.metrics.items()}, "n": int(self.alphas.size),
                "layout": "npz: alphas (n,), <split>__<metric> (n,) at alphas",
                "barrier_definitions": {
                    "mean": "max_a L(a) - (L(0) + L(1)) / 2",
                    "interp": "max_a [L(a) - ((1 - a) L(0) + a L(1))] (a normalised to [0, 1])"},
                "barriers": self.barriers, "meta": self.meta}
        if self.arrays:  # an adaptive path (an exact one's files are as before)
            desc["adaptive_arrays"] = {s: list(arrs) for s, arrs in self.arrays.items()}
        return save_arrays(path, FORMAT, arrays, desc, keep_nonfinite=True, format_version=FORMAT_VERSION)

    @classmethod
    def load(cls, path: str | Path) -> "PathResult":
        """Read a result written by :meth:`save`."""
        arrays, desc = load_arrays(path, FORMAT, what="path")
        metrics = {s: {m: arrays[f"{s}__{m}"].astype(np.float64) for m in ms} for s, ms in desc["splits"].items()}
        extra = {s: {n: arrays[f"{s}__adaptive__{n}"] for n in names} for s, names in desc.get("adaptive_arrays", {}).items()}
        return cls(arrays["alphas"].astype(np.float64), metrics, desc["barriers"], desc.get("meta", {}), extra)


# ------------------------------------------------------------------------------------ points/data
def as_point(obj: nn.Module | Mapping[str, Tensor], what: str = "point") -> Point:
    """A point from a model (parameters and buffers, detached copies) or a dict of tensors."""
    if isinstance(obj, nn.Module):
        return P.get_point(obj, buffers=True)
    if isinstance(obj, Mapping) and all(isinstance(v, Tensor) for v in obj.values()):
        return dict(obj)
    raise LosslabError(f"{what} must be an nn.Module or a dict of tensors, got {type(obj).__name__}")


def _splits(data: Any, test_data: Any) -> tuple[Any, Any | None]:
    """(train split, test split or None) from a Bundle, a Split or an (x, y) tuple."""
    if data is None:
        raise LosslabError("data is required (a Bundle, a Split or an (x, y) tuple)")
    if hasattr(data, "train") and hasattr(data, "test"):
        train, test = data.train, data.test
        if test is not None and len(test) == 0:
            test = None
    else:
        train, test = data, None
    if test_data is not None:
        test = test_data
    return train, test


def xy(split: Any, what: str = "data") -> tuple[Tensor, Tensor]:
    """``(x, y)`` tensors of a ``Split`` or an ``(x, y)`` tuple (:func:`losslab._functional.as_xy`)."""
    return as_xy(split, None, what=what, allow_empty=True)


def interp_keys(model: nn.Module, a: Mapping[str, Tensor], b: Mapping[str, Tensor], bn: str) -> tuple[list[str], list[str]]:
    """Keys to interpolate and keys to take from A.

    Parameters of the model are interpolated (they must be in both points with equal shapes). Floating
    buffers present in both points are interpolated too, except when BatchNorm statistics are
    recomputed (then they are dropped: the evaluator recomputes them). Integer buffers are taken from A.
    """
    pnames = [k for k, _ in model.named_parameters()]
    bnames = {k for k, _ in model.named_buffers()}
    for what, pt in (("point_a", a), ("point_b", b)):
        missing = [k for k in pnames if k not in pt]
        if missing:
            raise LosslabError(f"{what} lacks parameters {missing[:5]} of the model")
        extra = [k for k in pt if k not in bnames and k not in pnames]
        if extra:
            raise LosslabError(f"{what} has keys the model lacks: {extra[:5]}")
    P.check_compatible({k: a[k] for k in pnames}, {k: b[k] for k in pnames}, "point_a and point_b")
    keys, fixed = list(pnames), []
    if bn != "recompute":
        for k in a:
            if k in bnames:
                if k in b and a[k].is_floating_point() and a[k].shape == b[k].shape:
                    keys.append(k)
                else:
                    fixed.append(k)
    return keys, fixed


def interpolate(a: Mapping[str, Tensor], b: Mapping[str, Tensor], alphas: np.ndarray | Sequence[float],
                keys: Sequence[str] | None = None) -> Point:
    r"""The stacked points :math:`(1 - \alpha_k)\,\theta_A + \alpha_k\,\theta_B`, leading dimension K.

    Computed in the points' dtype in exactly this form, so ``alphas`` 0 and 1 give A and B bit for bit.
    """
    keys = list(a) if keys is None else list(keys)
    out: Point = {}
    for k in keys:
        ta, tb = a[k], b[k].to(device=a[k].device, dtype=a[k].dtype)
        al = torch.as_tensor(np.asarray(alphas, dtype=np.float64), dtype=ta.dtype, device=ta.device)
        al = al.reshape(-1, *([1] * ta.dim()))
        out[k] = (1 - al) * ta + al * tb
    return out


# ------------------------------------------------------------------------------------ evaluation
@model_then_data
def evaluate_path(
    model: nn.Module,
    data: Any,
    *,
    make: Callable[[np.ndarray], Mapping[str, Tensor]],
    alphas: np.ndarray | Sequence[float],
    test_data: Any = None,
    bn: Literal["auto", "recompute", "eval"] = "auto",
    loss: str | Callable[[Tensor, Tensor], Tensor] = "cross_entropy",
    batch_size: int | None = None,
    strategy: Literal["auto", "loop", "vmap"] = "auto",
    device: torch.device | str | None = None,
    splits: Sequence[str] = ("train", "test"),
    meta: Mapping[str, Any] | None = None,
    precision: "Precision | None" = None,
) -> PathResult:
    """Loss and error at the points ``make(alphas[idx])`` of any path, on train (and test) data.

    Args:
        model: the architecture (never modified).
        data: a ``Bundle`` (train and test), a ``Split`` or an ``(x, y)`` tuple (train only).
        make: ``make(alphas_subset) -> stacked point`` (leading dimension ``len(alphas_subset)``).
        alphas: strictly increasing positions, endpoints first and last.
        test_data: a test split (overrides the bundle's).
        bn: BatchNorm handling (``"auto"``: recompute the statistics on the *training* data at every
            point when the model has BatchNorm).
        loss, batch_size, strategy, device: passed to :class:`~losslab.evaluate.Evaluator`.
        splits: which of ``"train"``, ``"test"`` to evaluate (BatchNorm statistics always come from
            the training split).
        meta: extra description stored in the result.
        precision: ``None`` (default): every point on every example, exact. A
            :class:`~losslab.precision.Precision`: adaptive precision on each split
            (:func:`losslab.precision.adaptive_path`): the first and last points, ``alpha`` 0 and 1
            and every ``coarse``-th point are exact and are the control variate's references; the
            others are estimated (or interpolated where the path is flat) with error bars in
            ``arrays`` and the totals in ``meta["precision"]``. Its ``metric`` may be ``"loss"`` or
            ``"error"``. Needs ``bn="eval"`` for a model with BatchNorm.
    """
    a = np.asarray(alphas, dtype=np.float64).reshape(-1)
    if a.size < 2 or not np.all(np.diff(a) > 0):
        raise LosslabError("a path needs at least 2 strictly increasing alphas")
    train, test = _splits(data, test_data)
    bad = [s for s in splits if s not in ("train", "test")]
    if bad or not splits:
        raise LosslabError(f"splits must be a non-empty subset of ('train', 'test'), got {list(splits)}")
    if "train" not in splits and test is None:
        raise LosslabError("only the test split was asked for, but there is no test data")
    if precision is not None:
        from ..precision import require_fixed_bn

        require_fixed_bn(model, bn)
    t0 = time.perf_counter()
    metrics: dict[str, dict[str, np.ndarray]] = {}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    grids: dict[str, Any] = {}
    infos: dict[str, Any] = {}
    for name, split in (("train", train), ("test", test)):
        if split is None or name not in splits:
            continue
        ev = Evaluator(model, split, loss=loss, batch_size=batch_size, strategy=strategy, bn=bn,
                       bn_data=train, device=device)

        def src(idx: np.ndarray) -> Mapping[str, Tensor]:
            return make(a[idx])

        if precision is None:
            res = ev.evaluate_many(src, n=a.size)
        else:
            res, arrays[name], grids[name] = _adaptive(precision, ev, a, make)
        m = {"loss": res["loss"]}
        if "accuracy" in res:
            m["error"] = 1.0 - res["accuracy"]
        metrics[name] = m
        infos[name] = ev.info
    md = {"n": int(a.size), "seconds": round(time.perf_counter() - t0, 4), "evaluator": infos,
          "bn": next(iter(infos.values()))["bn"]}
    if precision is not None:
        md["precision"] = precision_totals(precision, {k: g.summary() for k, g in grids.items()})
    md.update(dict(meta or {}))
    return PathResult.from_metrics(a, metrics, md, arrays)


def _adaptive(precision: "Precision", ev: Evaluator, a: np.ndarray, make: Callable[[np.ndarray], Mapping[str, Tensor]]
              ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], Any]:
    """One split of an adaptive path: ``(metrics, per-point arrays, the finished AdaptiveGrid)``; the
    error's standard error is the accuracy's."""
    import dataclasses

    from ..precision import adaptive_path

    if precision.metric == "error" and "accuracy" in ev.metric_names:  # the same tolerance and error bars
        precision = dataclasses.replace(precision, metric="accuracy")
    anchors = np.flatnonzero((a == 0.0) | (a == 1.0))  # the endpoints, also on an extended line

    def point_at(k: int) -> Mapping[str, Tensor]:
        return {key: v[0] for key, v in make(a[k : k + 1]).items()}

    grid = adaptive_path(precision, ev, a, point_at, anchors=anchors)
    res = {n: grid.value[:, j].copy() for j, n in enumerate(ev.metric_names)}
    out = {f"stderr__{'error' if n == 'accuracy' else n}": grid.se[:, j].copy() for j, n in enumerate(ev.metric_names)
           if n in ("loss", "accuracy")}
    out.update(examples_used=grid.used.copy(), exact=grid.exact.copy(), interpolated=grid.interpolated.copy())
    return res, out, grid


def precision_totals(precision: "Precision", parts: Mapping[str, Mapping[str, Any]], by: str | None = "splits"
                     ) -> dict[str, Any]:
    """``meta["precision"]`` of an adaptive path: the settings, ``example_evaluations`` and
    ``exact_equivalent`` summed over the ``parts`` (each split's
    :meth:`~losslab.precision.AdaptiveGrid.summary`, or several paths' totals), ``savings`` (their
    ratio) and, under ``by`` (unless ``None``), each part less the settings."""
    settings = precision.describe()
    used = sum(int(s["example_evaluations"]) for s in parts.values())
    equiv = sum(int(s["exact_equivalent"]) for s in parts.values())
    out = {**settings, "example_evaluations": used, "exact_equivalent": equiv, "savings": (equiv / used) if used else None}
    if by is not None:
        out[by] = {k: {n: v for n, v in s.items() if n not in settings} for k, s in parts.items()}
    return out


@model_then_data
def linear_path(
    model: nn.Module,
    data: Any,
    *,
    point_a: Mapping[str, Tensor] | nn.Module,
    point_b: Mapping[str, Tensor] | nn.Module,
    num: int = 25,
    alphas: Sequence[float] | np.ndarray | None = None,
    test_data: Any = None,
    bn: Literal["auto", "recompute", "eval"] = "auto",
    loss: str | Callable[[Tensor, Tensor], Tensor] = "cross_entropy",
    batch_size: int | None = None,
    strategy: Literal["auto", "loop", "vmap"] = "auto",
    device: torch.device | str | None = None,
    splits: Sequence[str] = ("train", "test"),
    precision: "Precision | None" = None,
) -> PathResult:
    r"""Loss and error along :math:`\theta(\alpha) = (1-\alpha)\theta_A + \alpha\theta_B` on train and test.

    Args:
        model: the architecture (its own tensors fill keys the points lack; it is never modified).
        data: a ``Bundle`` (both splits are evaluated), a ``Split`` or ``(x, y)`` (train only).
        point_a, point_b: the endpoints: dicts of tensors (parameters, optionally buffers) or models.
        num: number of evenly spaced points in [0, 1] (default 25, endpoints included).
        alphas: explicit strictly increasing positions (overrides ``num``; may extend beyond [0, 1]).
        test_data: a test split (overrides the bundle's).
        bn: ``"auto"`` (recompute BatchNorm statistics on the training data at every point when the
            model has BatchNorm), ``"recompute"`` or ``"eval"``. Under ``"eval"`` floating buffers
            present in both points are interpolated like parameters.
        loss, batch_size, strategy, device: see :class:`~losslab.evaluate.Evaluator`.
        splits: which splits to evaluate (default both; BatchNorm statistics come from train).
        precision: ``None`` (exact, default) or a :class:`~losslab.precision.Precision`: adaptive
            precision, as in :func:`evaluate_path` (``point_a`` and ``point_b``, ``alpha`` 0 and 1,
            are always evaluated exactly). Needs ``bn="eval"`` for a model with BatchNorm.

    Returns:
        A :class:`PathResult` (``meta["kind"] == "linear"``) with both barrier definitions for loss and
        error on each split.
    """
    if alphas is None:
        if int(num) < 2:
            raise LosslabError(f"num must be >= 2, got {num}")
        alphas = np.linspace(0.0, 1.0, int(num))
    al = np.asarray(alphas, dtype=np.float64)
    pa, pb = as_point(point_a, "point_a"), as_point(point_b, "point_b")
    mode = bn if bn != "auto" else ("recompute" if has_batchnorm(model) else "eval")
    keys, fixed = interp_keys(model, pa, pb, mode)
    const = {k: pa[k] for k in fixed}

    def make(sub: np.ndarray) -> Point:
        st = interpolate(pa, pb, sub, keys)
        for k, v in const.items():
            st[k] = v.unsqueeze(0).expand(len(sub), *v.shape)
        return st

    dist = P.distance({k: pa[k] for k, _ in model.named_parameters()}, {k: pb[k] for k, _ in model.named_parameters()})
    return evaluate_path(model, data, make=make, alphas=al, test_data=test_data, bn=bn, loss=loss, batch_size=batch_size,
                         strategy=strategy, device=device, splits=splits, meta={"kind": "linear", "distance": dist},
                         precision=precision)
