"""A1 — Monotonic linear interpolation (Goodfellow, Vinyals & Saxe 2015; Lucas et al. 2021).

Measures the training loss along the straight line from the initialization to the solution,

.. math::

    L(a) = L\\bigl((1 - a)\\,\\theta_0 + a\\,\\theta_T\\bigr), \\qquad a \\in [-e, 1 + e],

on ``num_steps + 1`` equally spaced points of [0, 1] (plus ``extend`` beyond each end for the
figure). A step ``a_i -> a_{i+1}`` in [0, 1] is non-monotone when the loss rises by more than the
float tolerance; the bump height is the largest rise above the running minimum
(:func:`losslab.experiments.common.monotonicity`).

Check: the SGD MLP on MNIST-1D has 0 non-monotone steps of ``num_steps`` (every seed). A large-LR
regime is measured as a contrast (Lucas et al. report MLI failures there); it does not decide the
verdict.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config import TrainConfig

import numpy as np

from . import recipes
from ._base import Check, ExperimentResult, Verdict, verdict_from_checks
from .common import Timer, describe_data, evaluator, interpolate, monotonicity, new_figure, save_figure, train_run

ID = "A1"
VERSION = 1
COST = {"quick": 25, "full": 240}


@dataclass(frozen=True)
class Config:
    """A1 settings.

    Attributes:
        train: the SGD run (shared recipe :func:`recipes.mnist1d_mlp`, also used by C4).
        contrast: a large-LR run expected to violate monotonicity (context only).
        seeds: seeds of the SGD runs (each must be monotone).
        num_steps: steps on [0, 1] (``num_steps + 1`` points).
        extend: also evaluate ``a`` in ``[-extend, 0)`` and ``(1, 1 + extend]`` (figure only).
        trained_ratio: precondition: final train loss <= ``trained_ratio`` x initial train loss.
        rtol: relative tolerance of a rise (float32 evaluation noise is not a bump).
    """

    train: TrainConfig = field(default_factory=lambda: recipes.mnist1d_mlp("quick"))
    contrast: TrainConfig = field(default_factory=lambda: recipes.mnist1d_mlp_large_lr("quick"))
    seeds: tuple[int, ...] = (0,)
    num_steps: int = 50
    extend: float = 0.25
    trained_ratio: float = 0.5
    rtol: float = 1e-5

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        return cls(train=recipes.mnist1d_mlp("full"), contrast=recipes.mnist1d_mlp_large_lr("full"), seeds=(0, 1, 2))


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
    mono = monotonicity(curve["loss"][inside], rtol=config.rtol)
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


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    """Train (or reuse) the runs, measure the interpolation curves, judge, plot."""
    timer = Timer()
    mains = []
    bundle = None
    for seed in config.seeds:
        rec, bundle = _measure_run(recipes.with_seed(config.train, seed), config, cache_dir, progress, timer, "SGD")
        mains.append(rec)
    contrast, _ = _measure_run(config.contrast, config, cache_dir, progress, timer, "contrast")
    m = {"main": mains, "contrast": contrast, "trained_ratio": config.trained_ratio}
    verdict = judge(m)

    with timer("plot"):
        fig, axes = new_figure(2, 1, width=4.4, height=3.3)
        for ax, recs, title in ((axes[0], mains, "SGD lr {lr:g}, momentum {momentum:g}"),
                                (axes[1], [contrast], "contrast: SGD lr {lr:g}, momentum {momentum:g}")):
            for i, r in enumerate(recs):
                ax.plot(r["alpha"], r["loss"], color=f"C{i}", label=f"seed {r['seed']}: {r['nonmonotone_steps']} rises")
            ax.axvspan(0, 1, color="0.92", zorder=0)
            ax.set_xlabel("a  (θ = (1-a)·θ0 + a·θT)")
            ax.set_ylabel("train loss")
            ax.set_yscale("log")
            ax.set_title(title.format(**recs[0]), fontsize=10)
            ax.legend(fontsize=8)
        fig_ref = save_figure(fig, work_dir, "interpolation",
                              "Train loss along the line from initialization (a=0) to solution (a=1), "
                              "shaded: [0, 1]. Left: the SGD runs judged; right: the large-LR contrast.")

    worst = max(mains, key=lambda r: (r["nonmonotone_steps"], r["bump_height"]))
    key = {
        "non-monotone steps (SGD)": f"{worst['nonmonotone_steps']}/{worst['steps']}",
        "bump height (SGD)": worst["bump_height"],
        "non-monotone steps (contrast)": f"{contrast['nonmonotone_steps']}/{contrast['steps']}",
        "bump height (contrast)": contrast["bump_height"],
    }
    comparison = (
        f"Along the line from init to solution the SGD run{'s' if len(mains) > 1 else ''} "
        f"(seeds {', '.join(str(r['seed']) for r in mains)}) had at most {worst['nonmonotone_steps']} of "
        f"{worst['steps']} rising steps (largest bump {worst['bump_height']:.3g}; loss {worst['loss_init']:.3f} -> "
        f"{worst['loss_final']:.3f}). The large-LR contrast (SGD lr {contrast['lr']:g}, no momentum) had "
        f"{contrast['nonmonotone_steps']} rising steps with a bump of {contrast['bump_height']:.3g}."
    )
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"runs": list(config.seeds), "contrast": config.contrast.seeds.seed,
               "note": "init, data order derive from each run's seed"},
        data=describe_data(bundle) + "; loss evaluated on the full training set", timings=timer.seconds,
    )


def judge(m: Mapping[str, Any]) -> Verdict:
    """Reproduced when every SGD run is monotone on [0, 1]; inconclusive when a run did not train.

    ``m["main"]``: list of records with ``loss_init``, ``loss_final``, ``nonmonotone_steps``, ``steps``,
    ``bump_height``, ``seed``; ``m["contrast"]``: one such record (context only);
    ``m["trained_ratio"]`` (default 0.5).
    """
    ratio = float(m.get("trained_ratio", 0.5))
    checks = []
    for r in m["main"]:
        trained = r["loss_final"] <= ratio * r["loss_init"]
        checks.append(Check(f"seed {r['seed']} trained", trained,
                            f"train loss {r['loss_init']:.3f} -> {r['loss_final']:.3f} (needs <= {ratio:g}x)",
                            precondition=True))
    for r in m["main"]:
        k, n, h = r["nonmonotone_steps"], r["steps"], r["bump_height"]
        rel = h / r["loss_init"] if r["loss_init"] else float("nan")
        checks.append(Check(f"seed {r['seed']} monotone", k == 0,
                            f"{k} of {n} steps rise, bump height {h:.3g} ({rel:.2%} of the initial loss)"))
    c = m.get("contrast")
    if c:
        checks.append(Check("contrast violates MLI", c["nonmonotone_steps"] > 0,
                            f"large-LR run: {c['nonmonotone_steps']} of {c['steps']} steps rise, bump "
                            f"{c['bump_height']:.3g}", decisive=False))
    return verdict_from_checks(checks)
