"""Building blocks shared by the experiment modules (public library API only underneath).

* :func:`train_run` trains (or reuses) a run in ``cache_dir/runs`` under a per-run file lock, so
  experiments running in parallel processes that need the same run train it once.
* :class:`Timer` collects per-phase seconds for :attr:`ExperimentResult.timings`.
* :func:`evaluator`, :func:`interpolate` (the linear path :math:`(1-a)\\theta_A + a\\theta_B` through
  :func:`losslab.surface.line`): the numbers several rows need, defined once (the survey's definitions,
  held fixed across rows); barriers and monotonicity are the library's (:func:`losslab.connect.paths.barriers`,
  :func:`losslab.interpolation.monotonicity`).
* :func:`new_figure` / :func:`save_figure`: matplotlib figures without pyplot, written atomically as
  PNG into the experiment's ``work_dir`` and returned as a :class:`FigureRef`; :func:`label_axes`,
  :func:`interval_bar`, :func:`ratio_panel`, :func:`seed_panel`: the panels several rows draw.
* :class:`RowConfig` (every row's ``Config``: ``quick()`` is its defaults), :func:`row_result` (the
  :class:`~losslab.experiments.ExperimentResult` of a row) and :func:`same_seeds` (the seeds record
  of a row whose control reuses its seeds): the boilerplate every row shares.
* :func:`example_subset`: the fixed random subset of training examples a row measures on (e.g. its
  Hessian's).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .._io import atomic_write
from ..errors import LosslabError
from ._base import FigureRef

__all__ = [
    "RowConfig", "row_result", "same_seeds", "train_run", "run_lock", "Timer", "describe_data", "evaluator",
    "interpolate", "spread", "interval_text", "fit_epoch", "describe_model", "new_figure", "save_figure",
    "label_axes", "interval_bar", "ratio_panel", "train_config", "seed_panel", "pairs_of",
    "example_subset",
]


# ---- row configs -----------------------------------------------------------------------------------


class RowConfig:
    """Base of every row's frozen ``Config`` dataclass: :meth:`quick` is the dataclass defaults.

    It adds no field, so a row's :func:`~losslab.experiments.result_key` is that of its fields alone;
    each row defines :meth:`full` (and overrides :meth:`quick` only if its defaults are not the quick
    profile).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Config(RowConfig):
        ...     seeds: tuple[int, ...] = (0, 1)
        >>> Config.quick()
        Config(seeds=(0, 1))
    """

    @classmethod
    def quick(cls) -> Any:
        """The quick profile: the defaults of the row's dataclass."""
        return cls()


# ---- trained runs ---------------------------------------------------------------------------------


def train_config(
    *,
    dataset: str = "mnist1d",
    dataset_kwargs: Mapping[str, Any] | None = None,
    label_noise: float = 0.0,
    poison: int = 0,
    subsample: int = 0,
    model: str = "mlp",
    model_kwargs: Mapping[str, Any] | None = None,
    optimizer: str = "sgd",
    lr: float = 0.05,
    momentum: float = 0.9,
    batch_size: int = 128,
    epochs: int = 30,
    schedule: str = "constant",
    seed: int = 0,
    checkpoints: str = "log:16",
    **optim: Any,
) -> Any:
    """A :class:`losslab.config.TrainConfig` from flat keywords (a shorthand for recipes)."""
    from ..config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, SeedConfig, TrainConfig

    return TrainConfig(
        data=DataConfig(dataset=dataset, dataset_kwargs=dict(dataset_kwargs or {}), label_noise=label_noise,
                        poison=poison, subsample=subsample),
        model=ModelConfig(model=model, model_kwargs=dict(model_kwargs or {})),
        optim=OptimConfig(optimizer=optimizer, lr=lr, momentum=momentum, batch_size=batch_size, epochs=epochs,
                          schedule=schedule, **optim),
        seeds=SeedConfig(seed=seed),
        ckpt=CheckpointConfig(checkpoints=checkpoints),
    ).validate()


def run_lock(path: Path) -> Any:
    """An exclusive advisory lock on ``path`` (:func:`losslab._io.file_lock`)."""
    from .._io import file_lock

    return file_lock(path)


def train_run(config: Any, cache_dir: str | os.PathLike, progress: Callable[[str], None] | None = None) -> Any:
    """Train ``config`` into ``cache_dir/runs`` (or reuse the finished run) and return the :class:`Run`.

    Holds ``cache_dir/runs/.locks/train-<hash>.lock`` while training, so a second process asking
    for the same run waits and then reuses it instead of training it again.
    """
    from ..runs import Run, run_dir_for
    from ..train import train

    runs = Path(cache_dir) / "runs"
    rdir = run_dir_for(config, runs)
    if Run(rdir).intact:
        if progress:
            progress(f"reusing run {rdir.name}")
        return Run(rdir)
    with run_lock(runs / ".locks" / f"{rdir.name}.lock"):
        if Run(rdir).intact:
            if progress:
                progress(f"reusing run {rdir.name} (trained by another experiment)")
            return Run(rdir)
        if progress:
            d, o = config.data, config.optim
            extra = "".join(f", {k} {v}" for k, v in (("subsample", d.subsample), ("label noise", d.label_noise),
                                                                 ("poison", d.poison)) if v)
            progress(f"training {rdir.name}: {describe_model(config)} on {d.dataset}{extra}; {o.optimizer} lr {o.lr:g}, "
                     f"batch {o.batch_size}, {o.epochs} epochs, seed {config.seeds.seed}")
        t = time.perf_counter()
        run = train(config, out=runs, progress=False)
        if progress:
            s = run.summary
            progress(f"trained {rdir.name} in {time.perf_counter() - t:.1f}s: train error "
                     f"{s['train_error']:.3f}, test error {s['test_error']:.3f}")
        return run


def describe_model(config: Any) -> str:
    """``"mlp width 256 depth 2"``: a TrainConfig's model in words."""
    kw = " ".join(f"{k} {v}" for k, v in config.model.model_kwargs.items())
    return f"{config.model.model} {kw}".strip()


def fit_epoch(metrics: Sequence[Mapping[str, Any]], threshold: float) -> int | None:
    """First recorded epoch whose train error is ``<= threshold`` (None if never)."""
    for m in metrics:
        if m.get("train_error", float("nan")) <= threshold:
            return int(m["epoch"])
    return None


def describe_data(bundle: Any) -> str:
    """One line: dataset, sizes, wrappers applied."""
    d = bundle.describe()
    wr = ", ".join(w.get("op", "?") + ("" if "p" not in w else f" p={w['p']}") +
                   ("" if "n_extra" not in w else f" n={w['n_extra']}") for w in d.get("wrappers", []))
    return (f"{d['name']}: {d['n_train']} train / {d['n_test']} test, {d['num_classes']} classes, "
            f"input {tuple(d['input_shape'])}" + (f"; {wr}" if wr else ""))


def example_subset(split: Any, n: int, seed: int) -> tuple[Any, Any]:
    """``(x, y)`` of ``split`` (a Split or an ``(x, y)`` pair), or ``n`` of its examples drawn with ``seed``
    (in their order; ``n <= 0`` or ``n >= `` the size: all): :func:`losslab.curvature.analysis.data_subset`
    with 0 meaning all, as the rows' settings have it."""
    from ..curvature.analysis import data_subset

    return data_subset(split, int(n) if n > 0 else None, int(seed))


class Timer:
    """Per-phase wall-clock seconds: ``with timer("train"): ...``; ``timer.seconds`` is the dict."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = round(self.seconds.get(phase, 0.0) + time.perf_counter() - t, 3)


def row_result(id: str, criteria: Any, config: Any, measurements: Mapping[str, Any], verdict: Any, control: Any,
               key_numbers: Mapping[str, Any], figure: FigureRef, timer: Timer, *, seeds: Mapping[str, Any],
               data: str, comparison: str, notes: Sequence[str] = ()) -> Any:
    """A row's :class:`~losslab.experiments.ExperimentResult`: :meth:`ExperimentResult.create` with the
    arguments every row passes alike (its ``CRITERIA``, its ``Control``, one figure, the
    :class:`Timer`'s seconds as timings) given by position."""
    from ._base import ExperimentResult

    return ExperimentResult.create(
        id, config, measurements=measurements, verdict=verdict, comparison=comparison, key_numbers=key_numbers,
        figures=[figure], criteria=criteria, control=control, seeds=seeds, data=data, timings=timer.seconds,
        notes=notes)


def same_seeds(seeds: Sequence[int], note: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``seeds`` record of a row whose control runs on the row's own seeds.

    Example:
        >>> same_seeds((0, 1), "init from each seed", {"probes": [5, 6]})
        {'runs': [0, 1], 'control': [0, 1], 'probes': [5, 6], 'note': 'init from each seed'}
    """
    return {"runs": list(seeds), "control": list(seeds), **(extra or {}), "note": note}


# ---- measurements ---------------------------------------------------------------------------------


def evaluator(model: Any, data: Any, *, bn_data: Any = None, **kw: Any) -> Any:
    """An :class:`losslab.evaluate.Evaluator` (BatchNorm statistics recomputed on ``bn_data`` or ``data``)."""
    from ..evaluate import Evaluator

    return Evaluator(model, data, bn_data=bn_data, **kw)


def interpolate(model: Any, start: Mapping[str, Any], end: Mapping[str, Any], alphas: Sequence[float] | np.ndarray,
                *, evaluator: Any) -> dict[str, np.ndarray]:
    """Metrics along :math:`\\theta(a) = (1-a)\\,\\theta_A + a\\,\\theta_B` (``a`` may leave [0, 1]).

    Returns ``{"alpha": a, "loss": ..., "accuracy": ..., "error": 1 - accuracy}`` as float64 arrays.
    """
    from ..surface import line

    res = line(model, start=start, end=end, alphas=np.asarray(alphas, dtype=float), evaluator=evaluator,
               progress=False)
    out = {"alpha": np.asarray(res.x, dtype=float)}
    out.update({k: np.asarray(v, dtype=float) for k, v in res.metrics.items()})
    if "accuracy" in out:
        out["error"] = 1.0 - out["accuracy"]
    return out


def spread(items: Sequence[Any], k: int) -> list[Any]:
    """``k`` of ``items`` spread evenly over them, first and last included (all when ``k <= 0`` or
    ``k >= len(items)``): the checkpoints a row measures.

    Example:
        >>> spread(range(10), 4)
        [0, 3, 6, 9]
    """
    if k <= 0 or k >= len(items):
        return list(items)
    pos = sorted({int(round(p)) for p in np.linspace(0, len(items) - 1, k)})
    return [items[p] for p in pos]


def interval_text(values: Sequence[float], fmt: str = ".3g") -> str:
    """``"mean [lo, hi]"`` of the 95% t-interval of ``values`` over seeds, each number in ``fmt``.

    Example:
        >>> interval_text([1.0, 2.0, 3.0], ".2f")
        '2.00 [-0.48, 4.48]'
    """
    from .criteria import t_interval

    iv = t_interval(values)
    return f"{iv.mean:{fmt}} [{iv.lo:{fmt}}, {iv.hi:{fmt}}]"


# ---- figures --------------------------------------------------------------------------------------


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 4.2, height: float = 3.2, **kw: Any) -> tuple[Any, Any]:
    """A matplotlib ``Figure`` and its axes, made without pyplot (no global state, no GUI backend)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=True, **kw)
    return fig, axes


def save_figure(fig: Any, work_dir: str | os.PathLike, name: str, caption: str = "", *, dpi: int = 110) -> FigureRef:
    """Write ``fig`` as ``work_dir/name.png`` atomically and return its :class:`FigureRef`."""
    fname = name if name.endswith(".png") else f"{name}.png"
    atomic_write(Path(work_dir) / fname, lambda fh: fig.savefig(fh, format="png", dpi=dpi))
    return FigureRef(fname, caption)


def label_axes(ax: Any, *, xlabel: str | None = None, ylabel: str | None = None, title: str | None = None,
               title_size: float | None = None, legend: float | None = None, **legend_kw: Any) -> None:
    """Label one panel: axis labels, a title (``title_size`` points) and, when ``legend`` (its font size)
    is given, the legend (``legend_kw``, e.g. ``loc``, go to ``ax.legend``). ``None`` leaves a part as it is.
    """
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title, **({} if title_size is None else {"fontsize": title_size}))
    if legend is not None:
        ax.legend(fontsize=legend, **legend_kw)


def interval_bar(ax: Any, x: float, values: Sequence[float], **kw: Any) -> None:
    """The mean of ``values`` with its 95% t-interval (:func:`~losslab.experiments.criteria.t_interval`)
    as an error bar at ``x``; ``kw`` (``fmt``, ``color``, ...) go to ``ax.errorbar``."""
    from .criteria import t_interval

    iv = t_interval(values)
    ax.errorbar([x], [iv.mean], yerr=[[iv.mean - iv.lo], [iv.hi - iv.mean]], **kw)


def ratio_panel(ax: Any, groups: Sequence[tuple[Sequence[float], str, str]], *, alpha: float = 0.8) -> None:
    """Per-seed log ratios: for each group ``(values, tick label, colour)`` at x = 0, 1, ... its finite
    values (dots) and, beside them, their mean with its 95% t-interval (black diamond); a line at 0."""
    for j, (vals, _, color) in enumerate(groups):
        v = [x for x in vals if math.isfinite(x)]
        ax.plot([j] * len(v), v, "o", color=color, alpha=alpha)
        if len(v) >= 2:
            interval_bar(ax, j + 0.15, v, fmt="D", color="k", capsize=4, ms=5)
    ax.axhline(0.0, color="0.5", lw=1)
    ax.set_xticks(range(len(groups)), [g[1] for g in groups])
    ax.set_xlim(-0.5, len(groups) - 0.4)


def seed_panel(ax: Any, groups: Sequence[tuple[str, Sequence[float], str]], threshold: float, op: str,
               ylabel: str, *, legend_loc: str = "upper left") -> None:
    """Per-seed values (dots), their mean and 95% t-interval (bar) for each group, and the threshold.

    ``groups``: ``(label, per-seed values, colour)``; ``op``/``threshold``: the criterion, drawn as a
    dashed line labelled "claim: op threshold".
    """
    for i, (name, vals, color) in enumerate(groups):
        v = np.asarray(vals, dtype=float)
        ax.scatter(np.full(v.shape, i) + np.linspace(-0.08, 0.08, len(v)), v, color=color, s=22, zorder=3)
        if len(v) > 1 and np.all(np.isfinite(v)):
            interval_bar(ax, i + 0.22, v, fmt="s", color=color, ms=5, capsize=4, lw=1.5)
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"claim: {op} {threshold:.3g}")
    ax.set_xticks(range(len(groups)), [g[0] for g in groups], fontsize=8)
    ax.set_xlim(-0.5, len(groups) - 0.4)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, loc=legend_loc)


def pairs_of(seeds: Sequence[int]) -> list[tuple[int, int]]:
    """Disjoint consecutive pairs ``[(s0, s1), (s2, s3), ...]`` (an even number of distinct seeds).

    Example:
        >>> pairs_of((0, 1, 2, 3))
        [(0, 1), (2, 3)]
    """
    s = [int(x) for x in seeds]
    if len(s) < 2 or len(s) % 2 or len(set(s)) != len(s):
        raise LosslabError(f"need an even number (>= 2) of distinct seeds for disjoint pairs, got {tuple(s)}")
    return [(s[i], s[i + 1]) for i in range(0, len(s), 2)]
