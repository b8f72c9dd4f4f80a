"""A1 — Monotonic linear interpolation (Goodfellow, Vinyals & Saxe 2015; Lucas et al. 2021).

Measures the training loss along the straight line from the initialization to the solution,

.. math::

    L(a) = L\\bigl((1 - a)\\,\\theta_0 + a\\,\\theta_T\\bigr), \\qquad a \\in [-e, 1 + e],

on ``num_steps + 1`` equally spaced points of [0, 1] (plus ``extend`` beyond each end for the
figure). A step ``a_i -> a_{i+1}`` in [0, 1] is non-monotone when the loss rises by more than the
float tolerance; the bump height is the largest rise above the running minimum
(:func:`losslab.interpolation.monotonicity` with ``atol = 1e-6``, ``rtol = Config.rtol``).

Pre-registered criteria (:data:`CRITERIA`): the SGD MLP on MNIST-1D, trained to a minimum (train
error <= 1% on every seed), has a relative bump height (largest rise above the running minimum / L(0))
below 1e-3 on a 95% t-interval over >= 3 seeds. Negative control: the same MLP trained with plain SGD
at learning rate 1.0, where Lucas et al. 2021 report MLI failures; it is judged by the same checks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config import TrainConfig

import numpy as np

from . import recipes
from ._base import ExperimentResult, Verdict
from .criteria import Control, Criteria, Criterion, SEED_PLAN_2026_12_04, trained_to_minimum
from ..interpolation import monotonicity, rising_steps
from .common import (
    describe_data, evaluator, interpolate, label_axes, new_figure, row_result, RowConfig, same_seeds, save_figure,
    Timer, train_run,
)

ID = "A1"
VERSION = 3
COST = {"quick": 45, "full": 400}
ATOL = 1e-6
"""Absolute tolerance of a rise (with ``Config.rtol``): float32 evaluation noise is not a bump."""

CRITERIA = Criteria(
    preconditions=(
        trained_to_minimum("final train error"),
    ),
    claims=(
        Criterion("monotone", "relative bump height on [0, 1]: max_a (L(a) - min_{a'<=a} L(a')) / L(0)", "<", 1e-3,
                  "Goodfellow et al. 2015: the loss decreases monotonically (no bump); 1e-3 of L(0) allows float32 "
                  "evaluation noise only"),
        Criterion("rising steps", "number of the 50 steps on [0, 1] where the loss rises", "<", 0.5,
                  "context: how many steps rise at all", decisive=False),
    ),
    control="the same MLP and budget trained with plain SGD at learning rate 1.0, no momentum (Lucas et al. 2021 "
            "report non-monotone paths at large learning rates); same checks",
    seeds="5 independent runs (init and data order from each seed) in quick and in full; control on the same seeds",
    registered="2026-12-04",
    changes=(SEED_PLAN_2026_12_04,),
)


@dataclass(frozen=True)
class Config(RowConfig):
    """A1 settings.

    Attributes:
        train: the SGD run (shared recipe :func:`recipes.mnist1d_mlp`, also used by C4).
        contrast: the negative control: a large-LR run expected to violate monotonicity.
        seeds: seeds of the SGD runs and of the control runs.
        num_steps: steps on [0, 1] (``num_steps + 1`` points).
        extend: also evaluate ``a`` in ``[-extend, 0)`` and ``(1, 1 + extend]`` (figure only).
        rtol: relative tolerance of a rise (float32 evaluation noise is not a bump).
    """

    train: TrainConfig = field(default_factory=lambda: recipes.mnist1d_mlp("quick"))
    contrast: TrainConfig = field(default_factory=lambda: recipes.mnist1d_mlp_large_lr("quick"))
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    num_steps: int = 50
    extend: float = 0.25
    rtol: float = 1e-5

    @classmethod
    def full(cls) -> "Config":
        return cls(train=recipes.mnist1d_mlp("full"), contrast=recipes.mnist1d_mlp_large_lr("full"),
                   seeds=(0, 1, 2, 3, 4))


def _alphas(num_steps: int, extend: float) -> np.ndarray:
    inner = np.linspace(0.0, 1.0, num_steps + 1)
    h = 1.0 / num_steps
    k = int(round(extend / h))
    before = -h * np.arange(k, 0, -1)
    after = 1.0 + h * np.arange(1, k + 1)
    return np.concatenate([before, inner, after])


def _measure_run(cfg: Any, config: Config, cache_dir: Path, progress: Callable[[str], None], timer: Timer,
                 label: str) -> tuple[dict[str, Any], Any]:
    with timer("train"):
        run = train_run(cfg, cache_dir, progress)
    traj = run.trajectory()
    model = run.build_model()
    bundle = run.bundle()
    alphas = _alphas(config.num_steps, config.extend)
    with timer("interpolate"):
        ev = evaluator(model, bundle.train)
        curve = interpolate(model, traj[0][1], traj[-1][1], alphas, evaluator=ev)
    inside = (alphas >= -1e-12) & (alphas <= 1 + 1e-12)
    mono = _monotonicity(alphas, curve["loss"], config.rtol)
    s = run.summary
    rec = {
        "label": label,
        "seed": cfg.seeds.seed,
        "optimizer": cfg.optim.optimizer,
        "lr": cfg.optim.lr,
        "momentum": cfg.optim.momentum,
        "loss_init": float(curve["loss"][inside][0]),
        "loss_final": float(curve["loss"][inside][-1]),
        "train_error": s["train_error"],
        "test_error": s["test_error"],
        **mono,
        "alpha": curve["alpha"].tolist(),
        "loss": curve["loss"].tolist(),
        "error": curve["error"].tolist(),
        "run": run.path.name,
    }
    progress(f"{label} seed {rec['seed']}: {mono['nonmonotone_steps']} of {mono['steps']} steps rise, "
             f"bump {mono['bump_height']:.3g}")
    return rec, bundle


def _monotonicity(alphas: np.ndarray, loss: np.ndarray, rtol: float) -> dict[str, Any]:
    """The record's monotonicity fields from :func:`losslab.interpolation.monotonicity` on [0, 1].

    A non-finite loss leaves the count and the bump height NaN (the library's "undecided").
    """
    mono = monotonicity(alphas, loss, atol=ATOL, rtol=rtol)
    inside = np.asarray(loss, dtype=float)[(alphas >= -1e-12) & (alphas <= 1 + 1e-12)]
    up = rising_steps(inside, atol=ATOL, rtol=rtol)
    nan = float("nan")
    return {"nonmonotone_steps": nan if mono["non_monotone_steps"] is None else mono["non_monotone_steps"],
            "steps": mono["steps"], "bump_height": nan if mono["bump_height"] is None else mono["bump_height"],
            "first_rise_index": int(np.argmax(up)) if up.any() else None}


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    """Train (or reuse) the runs, measure the interpolation curves, judge, plot."""
    timer = Timer()
    mains = []
    bundle = None
    for seed in config.seeds:
        rec, bundle = _measure_run(recipes.with_seed(config.train, seed), config, cache_dir, progress, timer, "SGD")
        mains.append(rec)
    contrasts = [_measure_run(recipes.with_seed(config.contrast, seed), config, cache_dir, progress, timer,
                              "contrast")[0] for seed in config.seeds]
    m = {"main": mains, "contrast": contrasts}
    verdict = judge(m)
    control = Control(CRITERIA.control, judge({"main": contrasts}))

    with timer("plot"):
        fig, axes = new_figure(2, 1, width=4.4, height=3.3)
        for ax, recs, title in ((axes[0], mains, "SGD lr {lr:g}, momentum {momentum:g}"),
                                (axes[1], contrasts, "control: SGD lr {lr:g}, momentum {momentum:g}")):
            for i, r in enumerate(recs):
                ax.plot(r["alpha"], r["loss"], color=f"C{i}", label=f"seed {r['seed']}: {r['nonmonotone_steps']} rises")
            ax.axvspan(0, 1, color="0.92", zorder=0)
            label_axes(ax, xlabel="a  (θ = (1-a)·θ0 + a·θT)", ylabel="train loss")
            ax.set_yscale("log")
            label_axes(ax, title=title.format(**recs[0]), title_size=10, legend=8, loc="upper right")
        # the claim is about bumps: a zoom on [0.5, 1], where they would show, in the empty lower left
        axz = axes[0].inset_axes([0.1, 0.1, 0.36, 0.36])
        for i, r in enumerate(mains):
            a, l = np.asarray(r["alpha"]), np.asarray(r["loss"])
            sel = (a >= 0.5) & (a <= 1.0)
            axz.plot(a[sel], l[sel], color=f"C{i}", lw=1)
        axz.set_yscale("log")
        axz.tick_params(labelsize=6)
        axz.set_title("zoom a in [0.5, 1]", fontsize=7)
        fig_ref = save_figure(fig, work_dir, "interpolation",
                              "Train loss along the line from initialization (a=0) to solution (a=1), "
                              "shaded: [0, 1]. Left: the SGD runs judged (inset: zoom where bumps would show); "
                              "right: the large-LR negative control.")

    worst = max(mains, key=lambda r: (r["nonmonotone_steps"], r["bump_height"]))
    cworst = max(contrasts, key=lambda r: (r["nonmonotone_steps"], r["bump_height"]))
    key = {
        "non-monotone steps (SGD, worst seed)": f"{worst['nonmonotone_steps']}/{worst['steps']}",
        "bump height (SGD, worst seed)": worst["bump_height"],
        "non-monotone steps (control, worst seed)": f"{cworst['nonmonotone_steps']}/{cworst['steps']}",
        "bump height (control, worst seed)": cworst["bump_height"],
    }
    errs = ", ".join(f"{r['train_error']:.3f}" for r in mains)
    return row_result(ID, CRITERIA, config, m, verdict, control, key, fig_ref, timer,
        seeds=same_seeds(config.seeds, "init and data order derive from each run's seed"),
        data=describe_data(bundle) + "; loss evaluated on the full training set",
        comparison=(
            f"Along the line from init to solution the SGD runs (seeds {', '.join(str(r['seed']) for r in mains)}; "
            f"train error {errs}) had at most {worst['nonmonotone_steps']} of "
            f"{worst['steps']} rising steps (largest bump {worst['bump_height']:.3g}; loss {worst['loss_init']:.3f} -> "
            f"{worst['loss_final']:.3f}). The large-LR control (SGD lr {cworst['lr']:g}, no momentum) had up to "
            f"{cworst['nonmonotone_steps']} rising steps with a bump of up to {cworst['bump_height']:.3g}."
        ),
    )


def judge(m: Mapping[str, Any]) -> Verdict:
    """Judge the SGD runs ``m["main"]`` (records with ``seed``, ``train_error``, ``bump_height``,
    ``loss_init``, ``nonmonotone_steps``) by :data:`CRITERIA`; the control is judged by calling this on
    ``{"main": m["contrast"]}``.
    """
    recs = m["main"]
    rel = [r["bump_height"] / r["loss_init"] if r["loss_init"] else float("nan") for r in recs]
    return CRITERIA.judge_records(recs, {"trained to a minimum": "train_error", "monotone": rel,
                                         "rising steps": "nonmonotone_steps"})
