"""Intrinsic dimension of an objective (Li, Farkhoor, Liu & Yosinski 2018).

For each subspace dimension ``d`` of a grid and each seed ``s`` a fresh model ``model_factory(s)`` is
trained in a random ``d``-dimensional subspace (:func:`~losslab.subspace.train_subspace`); a baseline
trains the same models in the full space with the same budget. With :math:`\\bar a(d)` the mean over
seeds of the chosen accuracy and :math:`a^*` the mean baseline accuracy, the intrinsic dimension at
threshold :math:`t` (0.9 by default) is the smallest ``d`` with :math:`\\bar a(d) \\ge t\\,a^*`,
linearly interpolated in :math:`\\log d` between the two bracketing grid values:

.. math::

    \\log d_{\\text{int}} = \\log d_{lo} + \\frac{t a^* - \\bar a(d_{lo})}{\\bar a(d_{hi}) - \\bar a(d_{lo})}
    \\,(\\log d_{hi} - \\log d_{lo}),

where :math:`d_{hi}` is the first grid value reaching the target and :math:`d_{lo}` the grid value
before it (see :func:`threshold_crossing` for the edge cases: reached at the first grid value, never
reached). Seeds: cell ``(d, s)`` uses init seed ``s`` (the same init for every ``d``), mini-batch order
seed ``s`` and a projection seed derived from ``(s, d)``; so every cell is reproducible on its own and
a resumed sweep equals an uninterrupted one.

Example:
    >>> from losslab import data, models
    >>> b = data.load("blobs")
    >>> make = lambda s: models.build("mlp", input_shape=b.input_shape, num_classes=b.num_classes, seed=s, width=8)
    >>> r = intrinsic_dimension(make, b, dims=[2, 8], seeds=[0], epochs=2, progress=False)
    >>> r.complete, r.summary()["status"] in ("interpolated", "at_first", "not_reached")
    (True, True)
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..results import Result, load_arrays, seal
from .. import params as PR
from .._functional import model_then_data
from .._io import atomic_savez, atomic_write_json
from ..config import INTRINSIC_DIMS
from ..errors import LosslabError
from ._grid import derive_seed, jsonable, paths, progress_bar, tensor_digest, versions
from .projections import PROJECTIONS
from .training import LossLike, SubspaceResult, _splits, _xy, train_full, train_subspace

__all__ = ["IntrinsicDimResult", "intrinsic_dimension", "threshold_crossing", "DEFAULT_DIMS", "CELL_METRICS"]

FORMAT = "losslab.intrinsic_dim"
FORMAT_VERSION = 1
DEFAULT_DIMS = INTRINSIC_DIMS
CELL_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "distance", "steps",
                "diverged", "seconds")
ACCURACY_METRICS = ("test_accuracy", "train_accuracy")


def threshold_crossing(dims: Sequence[float], values: Sequence[float], target: float) -> dict[str, Any]:
    """Where ``values`` (a function of ``dims``) first reaches ``target``, interpolated in log d.

    Grid points with a non-finite value (not computed) are ignored.

    Args:
        dims: increasing positive grid values.
        values: the (mean) accuracy at each grid value.
        target: the level to reach (e.g. ``0.9 * baseline``).

    Returns:
        ``{"d": ..., "d_lo": ..., "d_hi": ..., "status": ...}`` with ``status``

        * ``"interpolated"``: ``d_hi`` is the first grid value with ``value >= target``, ``d_lo`` the
          grid value before it, ``d`` the log-linear interpolation (``d_lo < d <= d_hi``);
        * ``"at_first"``: already reached at the first grid value: ``d = d_hi = dims[0]`` is an upper
          bound, ``d_lo = None``;
        * ``"not_reached"``: ``d = None``, ``d_lo`` = the largest grid value, ``d_hi = None``;
        * ``"undetermined"``: no finite values or a non-finite target (all ``None``).

    Example:
        >>> threshold_crossing([10, 100, 1000], [0.2, 0.5, 0.9], 0.7)["d"]  # halfway in log d
        316.22776601683796
        >>> threshold_crossing([10, 100], [0.2, 0.5], 0.7)["status"]
        'not_reached'
    """
    ds = np.asarray(dims, dtype=np.float64)
    vs = np.asarray(values, dtype=np.float64)
    if ds.shape != vs.shape or ds.ndim != 1:
        raise LosslabError(f"dims and values must be 1-D of the same length, got {ds.shape} and {vs.shape}")
    if np.any(ds <= 0) or np.any(np.diff(ds) <= 0):
        raise LosslabError("dims must be positive and strictly increasing")
    ok = np.isfinite(vs)
    ds, vs = ds[ok], vs[ok]
    none: dict[str, Any] = {"d": None, "d_lo": None, "d_hi": None, "status": "undetermined"}
    if ds.size == 0 or not math.isfinite(float(target)):
        return none
    hit = np.nonzero(vs >= target)[0]
    if hit.size == 0:
        return {"d": None, "d_lo": float(ds[-1]), "d_hi": None, "status": "not_reached"}
    i = int(hit[0])
    if i == 0:
        return {"d": float(ds[0]), "d_lo": None, "d_hi": float(ds[0]), "status": "at_first"}
    lo, hi = math.log(ds[i - 1]), math.log(ds[i])
    frac = (float(target) - vs[i - 1]) / (vs[i] - vs[i - 1])
    return {"d": float(math.exp(lo + frac * (hi - lo))), "d_lo": float(ds[i - 1]), "d_hi": float(ds[i]),
            "status": "interpolated"}


@dataclass(frozen=True, eq=False)
class IntrinsicDimResult(Result):
    """A (possibly partial) intrinsic-dimension sweep.

    Attributes:
        dims: ``(nd,)`` subspace dimensions (int).
        seeds: ``(ns,)`` seeds (int).
        metrics: ``{name: (nd, ns) float64}`` per cell: ``train_loss``, ``train_accuracy``,
            ``test_loss``, ``test_accuracy``, ``distance`` (:math:`\\lVert\\theta-\\theta_0\\rVert`),
            ``steps``, ``diverged`` (0/1), ``seconds``; NaN where not done.
        done: ``(nd, ns)`` bool: which cells are computed.
        baseline_metrics: ``{name: (ns,)}`` the same metrics for full-space training per seed.
        baseline_done: ``(ns,)`` bool.
        metric: the accuracy used for ``d_int``: ``"test_accuracy"`` or ``"train_accuracy"``.
        threshold: the fraction of the baseline to reach (0.9 for :math:`d_{int90}`).
        baseline_value: a baseline accuracy given by the user (then no baseline is trained).
        meta: settings, fingerprint, data/model description, timing, versions.
    """

    dims: np.ndarray
    seeds: np.ndarray
    metrics: dict[str, np.ndarray]
    done: np.ndarray
    baseline_metrics: dict[str, np.ndarray]
    baseline_done: np.ndarray
    metric: str = "test_accuracy"
    threshold: float = 0.9
    baseline_value: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = (len(self.dims), len(self.seeds))
        if self.done.shape != shape or self.done.dtype != np.bool_:
            raise LosslabError(f"done must be a bool array of shape {shape}")
        for k, v in self.metrics.items():
            if v.shape != shape:
                raise LosslabError(f"metric {k!r} has shape {v.shape}, expected {shape}")
        if self.baseline_done.shape != (len(self.seeds),):
            raise LosslabError("baseline_done must have one entry per seed")
        if self.metric not in ACCURACY_METRICS:
            raise LosslabError(f"metric must be one of {ACCURACY_METRICS}, got {self.metric!r}")
        if not 0.0 < float(self.threshold) <= 1.0:
            raise LosslabError(f"threshold must be in (0, 1], got {self.threshold}")

    # ---- construction --------------------------------------------------------------------------

    @classmethod
    def empty(cls, dims: Sequence[int], seeds: Sequence[int], *, metric: str = "test_accuracy",
              threshold: float = 0.9, baseline_value: float | None = None,
              meta: Mapping[str, Any] | None = None) -> "IntrinsicDimResult":
        """Nothing done yet (all NaN)."""
        dims_a = np.asarray(list(dims), dtype=np.int64)
        seeds_a = np.asarray(list(seeds), dtype=np.int64)
        shape = (len(dims_a), len(seeds_a))
        return cls(dims_a, seeds_a, {m: np.full(shape, np.nan) for m in CELL_METRICS}, np.zeros(shape, bool),
                   {m: np.full(len(seeds_a), np.nan) for m in CELL_METRICS}, np.zeros(len(seeds_a), bool),
                   metric, float(threshold), None if baseline_value is None else float(baseline_value),
                   dict(meta or {}))

    @classmethod
    def from_table(cls, dims: Sequence[int], accuracy: Any, baseline: float | Sequence[float], *,
                   metric: str = "test_accuracy", threshold: float = 0.9) -> "IntrinsicDimResult":
        """A complete result from a hand-made ``(nd, ns)`` accuracy table (for analysis and tests).

        ``baseline`` is one accuracy or one per seed.

        Example:
            >>> r = IntrinsicDimResult.from_table([10, 100], [[0.5, 0.6], [0.9, 1.0]], 1.0)
            >>> r.crossing()["status"], round(r.d_int, 3)  # 10 ** (1 + (0.9 - 0.55) / 0.4)
            ('interpolated', 74.989)
        """
        acc = np.asarray(accuracy, dtype=np.float64)
        if acc.ndim == 1:
            acc = acc[:, None]
        r = cls.empty(dims, range(acc.shape[1]), metric=metric, threshold=threshold)
        r.metrics[metric][...] = acc
        r.done[...] = True
        b = np.broadcast_to(np.asarray(baseline, dtype=np.float64), (acc.shape[1],))
        r.baseline_metrics[metric][...] = b
        r.baseline_done[...] = True
        return r

    # ---- derived numbers -----------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        return bool(self.done.all() and (self.baseline_value is not None or self.baseline_done.all()))

    @property
    def n_done(self) -> int:
        return int(self.done.sum())

    def mean(self, name: str | None = None) -> np.ndarray:
        """``(nd,)`` mean over the done seeds of a metric (default :attr:`metric`); NaN where none done."""
        v = self.metrics[name or self.metric]
        out = np.full(len(self.dims), np.nan)
        for i in range(len(self.dims)):
            sel = self.done[i]
            if sel.any():
                out[i] = float(np.mean(v[i, sel]))
        return out

    def std(self, name: str | None = None) -> np.ndarray:
        """``(nd,)`` standard deviation over done seeds (0 with one seed; NaN with none)."""
        v = self.metrics[name or self.metric]
        return np.array([float(np.std(v[i, self.done[i]])) if self.done[i].any() else np.nan
                         for i in range(len(self.dims))])

    @property
    def baseline(self) -> float:
        """The reference accuracy :math:`a^*`: the given value, else the mean over trained baselines."""
        if self.baseline_value is not None:
            return float(self.baseline_value)
        v = self.baseline_metrics[self.metric][self.baseline_done]
        return float(np.mean(v)) if v.size else float("nan")

    def target(self, threshold: float | None = None) -> float:
        """``threshold * baseline``."""
        return float(self.threshold if threshold is None else threshold) * self.baseline

    def crossing(self, threshold: float | None = None) -> dict[str, Any]:
        """:func:`threshold_crossing` of the per-d means at ``threshold`` (default :attr:`threshold`)."""
        t = float(self.threshold if threshold is None else threshold)
        out = threshold_crossing(self.dims, self.mean(), self.target(t))
        out["threshold"] = t
        out["target"] = self.target(t)
        return out

    @property
    def d_int(self) -> float | None:
        """The intrinsic dimension at :attr:`threshold` (``None`` if not reached or undetermined)."""
        return self.crossing()["d"]

    @property
    def d_int90(self) -> float | None:
        """The intrinsic dimension at 90% of the baseline."""
        return self.crossing(0.9)["d"]

    def per_seed(self, threshold: float | None = None) -> list[dict[str, Any]]:
        """The crossing of each seed's own curve against the common target."""
        tgt = self.target(threshold)
        v = self.metrics[self.metric]
        return [threshold_crossing(self.dims, np.where(self.done[:, j], v[:, j], np.nan), tgt)
                for j in range(len(self.seeds))]

    def summary(self) -> dict[str, Any]:
        """A JSON-ready digest: d_int90 and its bracket, the baseline, the per-d means."""
        c90 = self.crossing(0.9)
        c = self.crossing()
        return jsonable({
            "metric": self.metric,
            "threshold": float(self.threshold),
            "d_int": c["d"], "d_int_lo": c["d_lo"], "d_int_hi": c["d_hi"], "status": c["status"],
            "d_int90": c90["d"], "d_int90_bracket": [c90["d_lo"], c90["d_hi"]], "d_int90_status": c90["status"],
            "target": c["target"],
            "baseline": self.baseline,
            "baseline_per_seed": self.baseline_metrics[self.metric].tolist(),
            "dims": self.dims.tolist(),
            "seeds": self.seeds.tolist(),
            "mean": self.mean().tolist(),
            "std": self.std().tolist(),
            "mean_train_accuracy": self.mean("train_accuracy").tolist(),
            "mean_test_accuracy": self.mean("test_accuracy").tolist(),
            "per_seed_d_int": [p["d"] for p in self.per_seed()],
            "D": self.meta.get("D"),
            "projection": self.meta.get("settings", {}).get("projection"),
            "complete": self.complete,
            "n_done": self.n_done,
            "seconds": self.meta.get("timing", {}).get("seconds"),
        })

    def with_threshold(self, threshold: float, metric: str | None = None) -> "IntrinsicDimResult":
        """The same cells analysed at another threshold (and/or accuracy metric)."""
        return dataclasses.replace(self, threshold=float(threshold), metric=metric or self.metric)

    # ---- I/O ----------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.npz`` (arrays, no pickles) and ``<path>.json`` (description + summary), atomically.

        npz keys: ``dims``, ``seeds``, ``done``, ``baseline_done``, ``metric__<name>`` ``(nd, ns)`` and
        ``baseline__<name>`` ``(ns,)``.
        """
        npz, js = paths(path)
        arrays: dict[str, np.ndarray] = {"dims": self.dims, "seeds": self.seeds, "done": self.done,
                                         "baseline_done": self.baseline_done}
        for k, v in self.metrics.items():
            arrays[f"metric__{k}"] = v
        for k, v in self.baseline_metrics.items():
            arrays[f"baseline__{k}"] = v
        atomic_savez(npz, **arrays)
        atomic_write_json(js, seal({  # with its content hash, checked by load_arrays
            "format": FORMAT, "format_version": FORMAT_VERSION, "metric": self.metric,
            "threshold": self.threshold, "baseline_value": self.baseline_value,
            "metrics": list(self.metrics), "layout": "metric__X[i, j] is dims[i], seeds[j]",
            "summary": self.summary(), "meta": jsonable(self.meta),
        }))
        return npz

    @classmethod
    def load(cls, path: str | Path) -> "IntrinsicDimResult":
        """Read a result written by :meth:`save`."""
        a, desc = load_arrays(path, FORMAT, what="intrinsic-dimension result")
        names = desc["metrics"]
        return cls(a["dims"].astype(np.int64), a["seeds"].astype(np.int64),
                   {m: a[f"metric__{m}"].astype(np.float64) for m in names}, a["done"].astype(bool),
                   {m: a[f"baseline__{m}"].astype(np.float64) for m in names}, a["baseline_done"].astype(bool),
                   desc["metric"], float(desc["threshold"]), desc.get("baseline_value"), desc.get("meta", {}))


# ---- the sweep ------------------------------------------------------------------------------------


def _cell_values(r: SubspaceResult) -> dict[str, float]:
    return {**r.metrics(), "distance": float(r.meta["distance"]), "steps": float(r.steps),
            "diverged": float(r.diverged), "seconds": float(r.seconds)}


def _int_list(values: Sequence[int], what: str) -> list[int]:
    try:
        out = [int(v) for v in values]
    except (TypeError, ValueError):
        raise LosslabError(f"{what} must be a sequence of ints, got {values!r}") from None
    if not out:
        raise LosslabError(f"{what} must not be empty")
    if any(float(a) != float(b) for a, b in zip(out, values)):
        raise LosslabError(f"{what} must be integers, got {list(values)}")
    if len(set(out)) != len(out):
        raise LosslabError(f"{what} has duplicates: {out}")
    return out


@model_then_data
def intrinsic_dimension(
    model_factory: Callable[[int], nn.Module],
    data: Any,
    *,
    dims: Sequence[int] = DEFAULT_DIMS,
    seeds: Sequence[int] = (0, 1, 2),
    projection: str = "dense",
    epochs: int = 20,
    lr: float = 0.05,
    optimizer: str = "adam",
    batch_size: int | None = 128,
    baseline: float | None = None,
    baseline_lr: float = 0.003,
    baseline_epochs: int | None = None,
    threshold: float = 0.9,
    metric: str = "test_accuracy",
    origin: bool = False,
    loss: LossLike = "cross_entropy",
    projection_options: Mapping[str, Any] | None = None,
    path: str | Path | None = None,
    progress: bool | None = None,
    max_runs: int | None = None,
    callback: Callable[[IntrinsicDimResult], None] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> IntrinsicDimResult:
    """Sweep the subspace dimension and find :math:`d_{int}` (see the module docstring).

    Args:
        model_factory: ``seed -> fresh nn.Module`` (its parameters are the init :math:`\\theta_0`),
            e.g. ``lambda s: models.build("mlp", input_shape=..., num_classes=..., seed=s)``.
        data: a :class:`~losslab.data.Bundle` (train on ``train``; ``test_accuracy`` needs ``test``).
        dims: subspace dimensions (sorted here; each ``<= D``).
        seeds: seeds; each gives one init, one data order and (with ``d``) one projection.
        projection: ``"dense"``, ``"sparse"`` or ``"fastfood"``.
        epochs, lr, optimizer, batch_size: the subspace training budget (Adam on :math:`\\theta_d`).
        baseline: a known full-space accuracy; ``None`` trains each seed's model in the full space
            with the same epochs/batch size/optimizer and ``baseline_lr``.
        baseline_lr, baseline_epochs: full-space learning rate and epochs (default: ``epochs``).
        threshold: fraction of the baseline to reach (0.9: :math:`d_{int90}`).
        metric: ``"test_accuracy"`` (Li et al.) or ``"train_accuracy"`` (random labels).
        origin: subspaces through the origin (see :func:`~losslab.subspace.train_subspace`).
        loss: training loss.
        projection_options: ``density`` (sparse) or ``block_size`` (fastfood).
        path: save the result here after every run (``.npz`` + ``.json``) and resume from it when it
            exists: runs already done are skipped; the training settings, the data (a digest of its
            tensors) and the parameter shapes must match, while ``dims`` and ``seeds`` may differ (finished
            cells of the grid are kept). The factory must give the same init for a seed as before.
        progress: progress bar (``None``: when stderr is a terminal).
        max_runs: stop after this many new runs (the result is then partial; rerun to continue).
        callback: called with the partial result after every run.
        device, dtype: where to train (default: the model's).

    Returns:
        An :class:`IntrinsicDimResult`; ``.summary()`` holds ``d_int90``, its bracket and the means.

    Raises:
        LosslabError: bad grid, settings, or a saved result with different settings.
    """
    if projection not in PROJECTIONS:
        raise LosslabError(f"unknown projection {projection!r}; choose one of {', '.join(PROJECTIONS)}")
    if metric not in ACCURACY_METRICS:
        raise LosslabError(f"metric must be one of {ACCURACY_METRICS}, got {metric!r}")
    if not 0.0 < float(threshold) <= 1.0:
        raise LosslabError(f"threshold must be in (0, 1], got {threshold}")
    if max_runs is not None and int(max_runs) < 0:
        raise LosslabError(f"max_runs must be >= 0, got {max_runs}")
    dims_l = sorted(_int_list(dims, "dims"))
    seeds_l = _int_list(seeds, "seeds")
    if dims_l[0] < 1:
        raise LosslabError(f"dims must be >= 1, got {dims_l}")
    train, test = _splits(data)
    if metric == "test_accuracy" and (test is None or int(_xy(test)[0].shape[0]) == 0):
        raise LosslabError("metric 'test_accuracy' needs a test split; use metric='train_accuracy'")
    if not callable(model_factory):
        raise LosslabError("model_factory must be a callable seed -> nn.Module")

    probe = model_factory(seeds_l[0])
    if not isinstance(probe, nn.Module):
        raise LosslabError(f"model_factory returned {type(probe).__name__}, not an nn.Module")
    trainable = {k: v for k, v in probe.named_parameters() if v.requires_grad}
    D = PR.numel(trainable)
    if dims_l[-1] > D:
        raise LosslabError(f"dims go up to {dims_l[-1]} but the model has only D={D} trainable parameters")
    x, y = _xy(train)
    settings = {
        "projection": projection, "projection_options": dict(projection_options or {}), "epochs": epochs,
        "lr": float(lr), "optimizer": optimizer, "batch_size": batch_size, "origin": bool(origin),
        "baseline": None if baseline is None else float(baseline), "baseline_lr": float(baseline_lr),
        "baseline_epochs": epochs if baseline_epochs is None else int(baseline_epochs),
        "loss": loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__),
        "dtype": str(dtype) if dtype is not None else None,
    }
    fingerprint = {
        "settings": settings, "D": D,
        "data": tensor_digest(x, y, *(_xy(test) if test is not None else ())),
        "parameters": {k: list(v.shape) for k, v in trainable.items()},
    }
    meta: dict[str, Any] = {
        "format": FORMAT, "D": D, "settings": settings, "fingerprint": fingerprint,
        "data": _describe(data), "model": type(probe).__name__, "versions": versions(),
        "seed_rule": "cell (d, s): init seed s, order seed s, projection seed derive_seed(s, 'projection', d)",
    }
    result = IntrinsicDimResult.empty(dims_l, seeds_l, metric=metric, threshold=threshold,
                                      baseline_value=baseline, meta=meta)
    prior_seconds = 0.0
    if path is not None and all(p.exists() for p in paths(path)):
        prev = IntrinsicDimResult.load(path)
        result = _merge(prev, result)
        prior_seconds = float(prev.meta.get("timing", {}).get("seconds") or 0.0)

    metrics = {k: v.copy() for k, v in result.metrics.items()}
    done = result.done.copy()
    bmetrics = {k: v.copy() for k, v in result.baseline_metrics.items()}
    bdone = result.baseline_done.copy()
    t0 = time.perf_counter()
    runs = 0

    def snapshot() -> IntrinsicDimResult:
        secs = prior_seconds + time.perf_counter() - t0
        m = {**result.meta, "timing": {"seconds": secs}}
        return dataclasses.replace(result, metrics={k: v.copy() for k, v in metrics.items()}, done=done.copy(),
                                   baseline_metrics={k: v.copy() for k, v in bmetrics.items()},
                                   baseline_done=bdone.copy(), meta=m)

    todo_base = [] if baseline is not None else [j for j in range(len(seeds_l)) if not bdone[j]]
    todo = [(i, j) for i in range(len(dims_l)) for j in range(len(seeds_l)) if not done[i, j]]
    total = len(seeds_l) * (0 if baseline is not None else 1) + done.size
    bar = progress_bar(total, total - len(todo_base) - len(todo), progress, "intrinsic-dim")
    budget = math.inf if max_runs is None else int(max_runs)
    common = dict(optimizer=optimizer, batch_size=batch_size, loss=loss, device=device, dtype=dtype)

    def finish_run(desc: str) -> None:
        nonlocal runs
        runs += 1
        snap = None
        if path is not None:
            snap = snapshot()
            snap.save(path)
        if callback is not None:
            callback(snap or snapshot())
        if bar is not None:
            bar.set_postfix_str(desc)
            bar.update(1)

    try:
        for j in todo_base:
            if runs >= budget:
                break
            s = seeds_l[j]
            r = train_full(model_factory(s), data, epochs=settings["baseline_epochs"], lr=baseline_lr,
                           order_seed=s, **common)
            for k, v in _cell_values(r).items():
                bmetrics[k][j] = v
            bdone[j] = True
            finish_run(f"baseline seed {s}")
        for i, j in todo:
            if runs >= budget:
                break
            d, s = dims_l[i], seeds_l[j]
            r = train_subspace(model_factory(s), data, d=d, projection=projection,
                               seed=derive_seed(s, "projection", d), order_seed=s, epochs=epochs, lr=lr,
                               origin=origin, projection_options=projection_options, **common)
            for k, v in _cell_values(r).items():
                metrics[k][i, j] = v
            done[i, j] = True
            finish_run(f"d={d} seed {s}")
    finally:
        if bar is not None:
            bar.close()
    final = snapshot()
    if path is not None and runs == 0 and not all(p.exists() for p in paths(path)):
        final.save(path)
    return final


def _describe(data: Any) -> dict[str, Any]:
    desc = getattr(data, "describe", None)
    if callable(desc):
        try:
            return jsonable(desc())
        except Exception:  # noqa: BLE001 - description only
            return {}
    return {}


def _merge(prev: IntrinsicDimResult, new: IntrinsicDimResult) -> IntrinsicDimResult:
    """Copy ``prev``'s finished cells into ``new``'s grid; settings, data and model must match."""
    a, b = prev.meta.get("fingerprint"), new.meta["fingerprint"]
    if jsonable(a) != jsonable(b):
        diff = sorted(k for k in set(a or {}) | set(b) if jsonable((a or {}).get(k)) != jsonable(b.get(k)))
        if "settings" in diff:
            sa, sb = (a or {}).get("settings", {}), b["settings"]
            diff = [f"settings.{k}" for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)] + \
                   [k for k in diff if k != "settings"]
        raise LosslabError(f"cannot resume from the saved result: {', '.join(diff)} differ")
    metrics = {k: v.copy() for k, v in new.metrics.items()}
    done = new.done.copy()
    bmetrics = {k: v.copy() for k, v in new.baseline_metrics.items()}
    bdone = new.baseline_done.copy()
    di = {int(d): i for i, d in enumerate(prev.dims)}
    si = {int(s): j for j, s in enumerate(prev.seeds)}
    for i, d in enumerate(new.dims):
        for j, s in enumerate(new.seeds):
            pi, pj = di.get(int(d)), si.get(int(s))
            if pi is not None and pj is not None and prev.done[pi, pj]:
                done[i, j] = True
                for k in metrics:
                    if k in prev.metrics:
                        metrics[k][i, j] = prev.metrics[k][pi, pj]
    for j, s in enumerate(new.seeds):
        pj = si.get(int(s))
        if pj is not None and prev.baseline_done[pj]:
            bdone[j] = True
            for k in bmetrics:
                if k in prev.baseline_metrics:
                    bmetrics[k][j] = prev.baseline_metrics[k][pj]
    return dataclasses.replace(new, metrics=metrics, done=done, baseline_metrics=bmetrics, baseline_done=bdone)
