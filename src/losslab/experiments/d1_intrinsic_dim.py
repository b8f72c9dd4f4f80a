"""D1 — Intrinsic dimension (Li, Farkhoor, Liu & Yosinski 2018, arXiv 1804.08838).

Training is restricted to a random ``d``-dimensional affine subspace of parameter space,

.. math::

    \\theta = \\theta_0 + P\\theta_d, \\qquad P \\in \\mathbb{R}^{D \\times d}\\ \\text{(random, unit-norm columns)},

and only :math:`\\theta_d` is trained (:func:`losslab.subspace.train_subspace`). With :math:`\\bar a(d)`
the accuracy reached (mean over seeds) and :math:`a^*` the accuracy of full-space training with the same
budget, :math:`d_{int90}` is the smallest ``d`` with :math:`\\bar a(d) \\ge 0.9\\,a^*`, interpolated in
:math:`\\log d` between the bracketing grid values (:func:`losslab.subspace.threshold_crossing`).

Two measurements, both on scikit-learn digits with a small MLP (64-64-10, :math:`D = 4810`):

1. **Clean labels, test accuracy** (Li et al.'s definition) — :func:`losslab.subspace.intrinsic_dimension`
   on all 1347 training examples, Adam on :math:`\\theta_d` (lr 0.05), baseline Adam lr 0.003, 20 epochs.
2. **Memorization, train accuracy** — the same model on a stratified subset of ``mem_examples`` training
   examples (300), once with the true labels and once with *every* label replaced by a random class
   (:func:`losslab.data.corrupt_labels`, ``p = 1``). The subset is small enough that full-space training
   memorizes the random labels (a precondition, checked), so "needs a larger d" is measurable. Full-batch
   training for ``mem_epochs`` steps; Adam's step moves each coordinate of :math:`\\theta_d` by about
   ``lr``, i.e. :math:`\\lVert\\Delta\\theta\\rVert \\approx \\mathrm{lr}\\sqrt d` for unit-norm columns, so the
   learning rate is scaled as :math:`\\mathrm{lr}(d) = \\mathrm{lr}_0 \\min(1, \\sqrt{d_{ref}/d})` to keep the
   step length in parameter space the same at every ``d`` (at fixed lr, Adam overshoots at large ``d``).
   Each task's :math:`d_{int90}` is measured against its own full-space train accuracy.

Checks (relative, from the numbers above):

* precondition: the clean full-space baseline reaches ``min_baseline_accuracy`` test accuracy, and
  full-space training fits both the clean and the random-label subset to ``min_memorized`` train accuracy;
* decisive: :math:`d_{int90}` (clean, test accuracy) is found and is at most ``max_fraction`` of ``D``
  (a small subspace suffices);
* decisive: :math:`d_{int90}` for random labels is at least ``min_ratio`` times the clean-label
  :math:`d_{int90}` on the same examples (bounds are used when a crossing lies outside the grid);
* context: the order of magnitude of the clean :math:`d_{int90}` (SURVEY pilot: about :math:`10^2`), and in
  the full profile :math:`d_{int90}` with the sparse and Fastfood projections.

Seeds: cell ``(d, s)`` of the clean sweep follows :func:`~losslab.subspace.intrinsic_dimension` (init seed
``s``, data order ``s``, projection seed derived from ``(s, d)``); in the memorization sweep init seed ``s``,
projection seed ``7919 s + d``; the random labels are drawn once from ``label_seed``, the subset from
``subset_seed``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ._base import Check, ExperimentResult, Verdict, verdict_from_checks
from .common import Timer, describe_data, new_figure, save_figure

ID = "D1"
VERSION = 1
COST = {"quick": 25, "full": 600}


# ---- shared by the subspace rows (D1, D2, C10) ------------------------------------------------------


def load_data(dataset: str, dataset_kwargs: Mapping[str, Any] | None = None, subsample: int = 0,
              subset_seed: int = 0) -> Any:
    """``losslab.data.load(dataset, **dataset_kwargs)``, optionally a stratified training subset."""
    from .. import data

    b = data.load(dataset, **dict(dataset_kwargs or {}))
    if subsample and subsample < len(b.train):
        b = data.subsample(b, int(subsample), seed=int(subset_seed))
    return b


def mlp_factory(bundle: Any, width: int, depth: int, activation: str = "relu") -> Callable[[int], Any]:
    """``seed -> fresh zoo MLP`` (PyTorch default init) for ``bundle``."""
    from .. import models

    def make(seed: int) -> Any:
        return models.build("mlp", input_shape=tuple(bundle.input_shape), num_classes=bundle.num_classes,
                            seed=int(seed), width=int(width), depth=int(depth), activation=activation)

    return make


def nanmean_rows(a: Any) -> np.ndarray:
    """Mean of the finite entries of each row of a 2-D array (NaN for a row without any), without warnings."""
    x = np.asarray(a, dtype=float)
    ok = np.isfinite(x)
    n = ok.sum(axis=1)
    s = np.where(ok, x, 0.0).sum(axis=1)
    return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def fmax(a: Any) -> float:
    """Largest finite entry (NaN if none)."""
    x = np.asarray(a, dtype=float).ravel()
    x = x[np.isfinite(x)]
    return float(x.max()) if x.size else math.nan


def fmin(a: Any) -> float:
    """Smallest finite entry (NaN if none)."""
    x = np.asarray(a, dtype=float).ravel()
    x = x[np.isfinite(x)]
    return float(x.min()) if x.size else math.nan


def d_bounds(crossing: Mapping[str, Any], dims: Sequence[float]) -> tuple[float, float]:
    """(lower, upper) bounds of a crossing's ``d`` from :func:`~losslab.subspace.threshold_crossing`:
    the value itself when interpolated, ``(0, dims[0])`` when reached at the first grid value,
    ``(dims[-1], inf)`` when not reached, ``(nan, nan)`` when undetermined."""
    st = crossing.get("status")
    if st == "interpolated":
        return float(crossing["d"]), float(crossing["d"])
    if st == "at_first":
        return 0.0, float(dims[0])
    if st == "not_reached":
        return float(max(dims)), math.inf
    return math.nan, math.nan


def fmt_d(crossing: Mapping[str, Any], dims: Sequence[float]) -> str:
    """``"124"``, ``"<= 25"``, ``"> 1600"`` or ``"?"``."""
    st = crossing.get("status")
    if st == "interpolated":
        return f"{crossing['d']:.0f}"
    if st == "at_first":
        return f"<= {dims[0]:g}"
    if st == "not_reached":
        return f"> {max(dims):g}"
    return "?"


# ---- config -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """D1 settings.

    Attributes:
        dataset, dataset_kwargs, subsample: the data (subsample: keep this many training examples, 0 all).
        width, depth: the MLP (zoo ``mlp``; 64-64-10 has D = 4810).
        projection: projection of the clean sweep (``dense``, ``sparse``, ``fastfood``).
        extra_projections: further projections measured for context (full profile).
        dims, seeds, epochs, lr, batch_size, baseline_lr: the clean sweep (Adam on theta_d).
        mem_examples: training examples of the memorization comparison (stratified subset).
        mem_dims, mem_seeds, mem_epochs, mem_lr, mem_ref_dim, mem_baseline_lr: its sweep (full batch;
            lr(d) = mem_lr * min(1, sqrt(mem_ref_dim / d))).
        mem_projection: projection of the memorization sweep.
        subset_seed, label_seed: seeds of the subset and of the random labels.
        min_baseline_accuracy: precondition on the clean baseline's test accuracy.
        min_memorized: precondition: full-space train accuracy on both subsets.
        max_fraction: decisive: d_int90 <= max_fraction * D.
        min_ratio: decisive: d_int90(random labels) >= min_ratio * d_int90(clean labels).
    """

    dataset: str = "digits"
    dataset_kwargs: dict = field(default_factory=dict)
    subsample: int = 0
    width: int = 64
    depth: int = 1
    projection: str = "dense"
    extra_projections: tuple[str, ...] = ()
    dims: tuple[int, ...] = (25, 50, 100, 200, 400)
    seeds: tuple[int, ...] = (0,)
    epochs: int = 20
    lr: float = 0.05
    batch_size: int = 128
    baseline_lr: float = 0.003
    mem_examples: int = 300
    mem_dims: tuple[int, ...] = (25, 100, 400, 1600)
    mem_seeds: tuple[int, ...] = (0,)
    mem_epochs: int = 300
    mem_lr: float = 0.05
    mem_ref_dim: int = 100
    mem_baseline_lr: float = 0.003
    mem_projection: str = "dense"
    subset_seed: int = 0
    label_seed: int = 0
    min_baseline_accuracy: float = 0.8
    min_memorized: float = 0.9
    max_fraction: float = 0.1
    min_ratio: float = 4.0

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        return cls(dims=(10, 20, 50, 100, 200, 500, 1000), seeds=(0, 1, 2), extra_projections=("sparse", "fastfood"),
                   mem_dims=(25, 50, 100, 200, 400, 800, 1600, 3200), mem_seeds=(0, 1, 2))


# ---- run ----------------------------------------------------------------------------------------------


def _mem_lr(config: Config, d: int) -> float:
    return float(config.mem_lr) * min(1.0, math.sqrt(config.mem_ref_dim / d))


def _memorization(config: Config, bundle: Any, label: str, progress: Callable[[str], None]) -> dict[str, Any]:
    """Full-space baseline and d sweep on one subset (train accuracy); returns the task's record."""
    from ..subspace import threshold_crossing, train_full, train_subspace

    make = mlp_factory(bundle, config.width, config.depth)
    base = [train_full(make(s), bundle, epochs=config.mem_epochs, lr=config.mem_baseline_lr, batch_size=0,
                       order_seed=s).train_accuracy for s in config.mem_seeds]
    acc = np.full((len(config.mem_dims), len(config.mem_seeds)), np.nan)
    for i, d in enumerate(config.mem_dims):
        for j, s in enumerate(config.mem_seeds):
            r = train_subspace(make(s), bundle, int(d), projection=config.mem_projection, seed=7919 * s + int(d),
                               order_seed=s, epochs=config.mem_epochs, lr=_mem_lr(config, int(d)), batch_size=0)
            acc[i, j] = r.train_accuracy
        progress(f"memorization {label}: d={d} train accuracy {np.mean(acc[i]):.3f}")
    baseline = float(np.mean(base))
    mean = acc.mean(axis=1)
    c = threshold_crossing(config.mem_dims, mean, 0.9 * baseline)
    return {"label": label, "dims": list(config.mem_dims), "accuracy": acc.tolist(), "mean": mean.tolist(),
            "baseline": baseline, "baseline_per_seed": base, "target": 0.9 * baseline, "crossing": c,
            "lr": [_mem_lr(config, int(d)) for d in config.mem_dims]}


def _reporter(progress: Callable[[str], None], proj: str, every: int) -> Callable[[Any], None]:
    def report(r: Any) -> None:
        if r.n_done and r.n_done % max(1, every) == 0:
            progress(f"{proj} sweep: {r.n_done}/{r.done.size} cells")

    return report


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    """Clean d sweep (test accuracy), memorization sweeps (train accuracy), judge, plot."""
    from .. import data
    from ..subspace import intrinsic_dimension

    timer = Timer()
    bundle = load_data(config.dataset, config.dataset_kwargs, config.subsample, config.subset_seed)
    make = mlp_factory(bundle, config.width, config.depth)
    sweeps: dict[str, Any] = {}
    D = None
    for proj in (config.projection, *[p for p in config.extra_projections if p != config.projection]):
        with timer(f"sweep_{proj}"):
            res = intrinsic_dimension(
                make, bundle, dims=config.dims, seeds=config.seeds, projection=proj, epochs=config.epochs,
                lr=config.lr, optimizer="adam", batch_size=config.batch_size, baseline_lr=config.baseline_lr,
                metric="test_accuracy", path=Path(work_dir) / f"sweep_{proj}", progress=False,
                callback=_reporter(progress, proj, len(config.seeds)))
        s = res.summary()
        D = s["D"]
        sweeps[proj] = {"dims": s["dims"], "mean": s["mean"], "std": s["std"], "baseline": s["baseline"],
                        "baseline_per_seed": s["baseline_per_seed"], "target": s["target"],
                        "crossing": {"d": s["d_int90"], "d_lo": s["d_int90_bracket"][0], "d_hi": s["d_int90_bracket"][1],
                                     "status": s["d_int90_status"]},
                        "per_seed_d_int90": s["per_seed_d_int"], "mean_train_accuracy": s["mean_train_accuracy"]}
        progress(f"{proj}: d_int90 = {fmt_d(sweeps[proj]['crossing'], s['dims'])} (D = {D}); baseline test accuracy "
                 f"{s['baseline']:.3f}")
    sub = load_data(config.dataset, config.dataset_kwargs, config.mem_examples, config.subset_seed)
    rnd = data.corrupt_labels(sub, 1.0, seed=config.label_seed, mode="uniform")
    with timer("memorization"):
        mem = {"clean": _memorization(config, sub, "clean labels", progress),
               "random": _memorization(config, rnd, "random labels", progress)}
    m = {"D": D, "projection": config.projection, "sweeps": sweeps, "memorization": mem,
         "mem_examples": len(sub.train), "min_baseline_accuracy": config.min_baseline_accuracy,
         "min_memorized": config.min_memorized, "max_fraction": config.max_fraction, "min_ratio": config.min_ratio}
    verdict = judge(m)

    with timer("plot"):
        fig_ref = _figure(m, work_dir)
    main = sweeps[config.projection]
    mc, mr = mem["clean"], mem["random"]
    ratio = _ratio_bounds(mc, mr)
    key = {
        f"d_int90 (clean, test acc, {config.projection})": fmt_d(main["crossing"], main["dims"]),
        "D (parameters)": D,
        "baseline test accuracy": main["baseline"],
        f"d_int90 memorize {len(sub.train)} (clean / random labels)":
            f"{fmt_d(mc['crossing'], mc['dims'])} / {fmt_d(mr['crossing'], mr['dims'])}",
        "ratio random / clean": _fmt_ratio(ratio),
    }
    extra = "".join(f"; {p}: d_int90 {fmt_d(v['crossing'], v['dims'])}" for p, v in sweeps.items()
                    if p != config.projection)
    comparison = (
        f"Clean digits, MLP {config.width}x{config.depth} (D = {D}): test accuracy {main['baseline']:.3f} in the full "
        f"space; a random {config.projection} subspace reaches 90% of it at d_int90 = "
        f"{fmt_d(main['crossing'], main['dims'])} ({_frac(main['crossing'], D)} of D){extra}. Memorizing "
        f"{len(sub.train)} examples (train accuracy, full space {mc['baseline']:.3f} clean / {mr['baseline']:.3f} "
        f"random): d_int90 = {fmt_d(mc['crossing'], mc['dims'])} with the true labels vs "
        f"{fmt_d(mr['crossing'], mr['dims'])} with random labels (ratio {_fmt_ratio(ratio)})."
    )
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"sweep": list(config.seeds), "memorization": list(config.mem_seeds), "subset": config.subset_seed,
               "labels": config.label_seed,
               "note": "clean cell (d, s): init s, order s, projection derived from (s, d); memorization: "
                       "init s, projection 7919 s + d"},
        data=describe_data(bundle) + f"; memorization subset {len(sub.train)} examples (clean / all labels random)",
        timings=timer.seconds,
        notes=[(f"memorization lr(d) = {config.mem_lr:g} * min(1, sqrt({config.mem_ref_dim}/d)), full batch, "
               f"{config.mem_epochs} steps (constant step length in parameter space).")],
    )


def _frac(c: Mapping[str, Any], D: int | None) -> str:
    if c.get("d") is None or not D:
        return "?"
    return f"{c['d'] / D:.1%}"


def _ratio_bounds(mc: Mapping[str, Any], mr: Mapping[str, Any]) -> tuple[float, float]:
    clo, chi = d_bounds(mc["crossing"], mc["dims"])
    rlo, rhi = d_bounds(mr["crossing"], mr["dims"])
    lo = rlo / chi if chi > 0 else math.nan
    hi = rhi / clo if clo > 0 else math.inf
    return lo, hi


def _fmt_ratio(r: tuple[float, float]) -> str:
    lo, hi = r
    if math.isnan(lo):
        return "?"
    if lo == hi:
        return f"{lo:.1f}x"
    if math.isinf(hi):
        return f">= {lo:.1f}x"
    return f"{lo:.1f}x .. {hi:.1f}x"


def log_ticks(ax: Any, values: Sequence[float]) -> None:
    """Log x axis with ticks (labelled ``%g``) exactly at ``values`` and no minor ticks."""
    ax.set_xscale("log")
    ax.set_xticks(list(values))
    ax.set_xticklabels([f"{v:g}" for v in values], fontsize=7)
    ax.minorticks_off()


def _figure(m: Mapping[str, Any], work_dir: Path) -> Any:
    fig, axes = new_figure(2, 1, width=4.6, height=3.4)
    ax = axes[0]
    for i, (proj, s) in enumerate(m["sweeps"].items()):
        ax.errorbar(s["dims"], s["mean"], yerr=s["std"], marker="o", ms=4, capsize=2, color=f"C{i}",
                    label=f"{proj}: d_int90 {fmt_d(s['crossing'], s['dims'])}")
        if s["crossing"].get("d") is not None:
            ax.axvline(s["crossing"]["d"], color=f"C{i}", ls=":", lw=1)
    main = m["sweeps"][m["projection"]]
    ax.axhline(main["baseline"], color="k", lw=1, label=f"full space {main['baseline']:.3f}")
    ax.axhline(main["target"], color="0.5", lw=1, ls="--", label="90% of full space")
    log_ticks(ax, main["dims"])
    ax.set_xlabel("subspace dimension d")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"clean labels (D = {m['D']})", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1]
    for i, (k, rec) in enumerate(m["memorization"].items()):
        col = "C0" if k == "clean" else "C3"
        ax.plot(rec["dims"], rec["mean"], "o-", ms=4, color=col,
                label=f"{rec['label']}: d_int90 {fmt_d(rec['crossing'], rec['dims'])}")
        ax.axhline(rec["target"], color=col, lw=1, ls="--")
        if rec["crossing"].get("d") is not None:
            ax.axvline(rec["crossing"]["d"], color=col, ls=":", lw=1)
    log_ticks(ax, m["memorization"]["clean"]["dims"])
    ax.set_xlabel("subspace dimension d")
    ax.set_ylabel("train accuracy")
    ax.set_title(f"memorizing {m['mem_examples']} examples (dashed: 90% of full space)", fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(fig, work_dir, "intrinsic_dim",
                       "Left: test accuracy after training in a random d-dimensional subspace (mean ± sd over seeds), "
                       "clean labels; dotted: d_int90. Right: train accuracy on a small subset with true vs random "
                       "labels (memorization); random labels need a much larger d.")


# ---- judge --------------------------------------------------------------------------------------------


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m["sweeps"][projection]``: ``dims``, ``baseline``, ``crossing``; ``m["memorization"]["clean"|"random"]``:
    ``dims``, ``baseline`` (full-space train accuracy), ``crossing``; ``m["D"]``; thresholds
    ``min_baseline_accuracy``, ``min_memorized``, ``max_fraction``, ``min_ratio``."""
    D = float(m["D"])
    main = m["sweeps"][m["projection"]]
    mc, mr = m["memorization"]["clean"], m["memorization"]["random"]
    min_acc, min_mem = float(m["min_baseline_accuracy"]), float(m["min_memorized"])
    frac, min_ratio = float(m["max_fraction"]), float(m["min_ratio"])
    checks = [
        Check("baseline trained", main["baseline"] >= min_acc,
              f"full-space test accuracy {main['baseline']:.3f} (needs >= {min_acc:g})", precondition=True),
        Check("full space fits the clean subset", mc["baseline"] >= min_mem,
              f"train accuracy {mc['baseline']:.3f} (needs >= {min_mem:g})", precondition=True),
        Check("full space memorizes random labels", mr["baseline"] >= min_mem,
              f"train accuracy {mr['baseline']:.3f} (needs >= {min_mem:g})", precondition=True),
    ]
    lo, hi = d_bounds(main["crossing"], main["dims"])
    limit = frac * D
    ok: bool | None = None if math.isnan(lo) else (True if hi <= limit else (False if lo > limit else None))
    checks.append(Check("d_int90 small", ok,
                         f"d_int90 = {fmt_d(main['crossing'], main['dims'])} vs {frac:g} x D = {limit:.0f} "
                         f"({_frac(main['crossing'], int(D))} of D)"))
    rlo, rhi = _ratio_bounds(mc, mr)
    ok2: bool | None = None if math.isnan(rlo) else (True if rlo >= min_ratio else (False if rhi < min_ratio else None))
    checks.append(Check("random labels need much larger d", ok2,
                         f"d_int90 random {fmt_d(mr['crossing'], mr['dims'])} vs clean "
                         f"{fmt_d(mc['crossing'], mc['dims'])}: ratio {_fmt_ratio((rlo, rhi))} (needs >= {min_ratio:g}x)"))
    if main["crossing"].get("d") is not None:
        d = float(main["crossing"]["d"])
        checks.append(Check("order of magnitude 10^2", 10 ** 1.5 <= d <= 10 ** 2.5,
                             f"d_int90 = {d:.0f} (SURVEY pilot ~160; bench 124)", decisive=False))
    for proj, s in m["sweeps"].items():
        if proj != m["projection"]:
            plo, phi = d_bounds(s["crossing"], s["dims"])
            checks.append(Check(f"{proj} projection small too", None if math.isnan(plo) else phi <= limit,
                                 f"d_int90 = {fmt_d(s['crossing'], s['dims'])}", decisive=False))
    return verdict_from_checks(checks)
