"""A5 — Saddles, not local minima: negative curvature fades as training proceeds (Dauphin et al. 2014;
Goodfellow et al. 2015).

Along the saved trajectory of a shared SGD run (:func:`recipes.mnist1d_mlp`, also used by A1 and C4), at
``num_checkpoints`` checkpoints spread over the log-spaced schedule, one Lanczos run on both ends of the
spectrum (:func:`losslab.curvature.negative_curvature_ratio`) gives the extreme eigenvalues of the Hessian
of the mean cross-entropy on a fixed subset of the training set, and the negative-curvature ratio

.. math:: r(t) = \\frac{\\max(0, -\\lambda_{min}(t))}{\\lambda_{max}(t)}.

Dauphin et al. report that the critical points met early (high loss) have many, strong negative
directions while those met late are nearly minima; here: :math:`r` falls as the loss falls.

Check (relative, same run): precondition — the run trained (subset loss at the last checkpoint
``<= trained_ratio`` × the first) and every Lanczos run converged; then the mean ratio over the last
third of the checkpoints is ``<= shrink_factor`` × the mean over the first third, and the trend is
negative (Spearman rank correlation of :math:`r` with the step ``< 0``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import Check, ExperimentResult, Verdict, verdict_from_checks
from .common import Timer, describe_data, evaluator, new_figure, save_figure, train_run

ID = "A5"
VERSION = 1
COST = {"quick": 10, "full": 120}


@dataclass(frozen=True)
class Config:
    """A5 settings.

    Attributes:
        train: the run whose trajectory is measured (shared recipe :func:`recipes.mnist1d_mlp`).
        num_checkpoints: checkpoints measured, evenly spread over the saved (log-spaced) ones, first and
            last included (0: all of them).
        hessian_examples: training examples of the Hessian (a fixed random subset; 0: all).
        tol: relative Lanczos tolerance (λmin is accurate to about ``tol · λmax``).
        max_iter: Lanczos steps at most per checkpoint.
        shrink_factor: the late ratio must be ``<=`` this times the early ratio.
        trained_ratio: precondition: last subset loss ``<=`` this times the first.
        seed: seed of the subset and of the Lanczos start vectors.
    """

    train: TrainConfig = field(default_factory=lambda: recipes.mnist1d_mlp("quick"))
    num_checkpoints: int = 8
    hessian_examples: int = 512
    tol: float = 1e-3
    max_iter: int = 300
    shrink_factor: float = 0.5
    trained_ratio: float = 0.5
    seed: int = 0

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        return cls(train=recipes.mnist1d_mlp("full"), num_checkpoints=0, hessian_examples=2000)


def _pick(n: int, k: int) -> list[int]:
    if k <= 0 or k >= n:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(x) < 3 or np.all(y == y[0]):
        return float("nan")
    return float(spearmanr(x, y).statistic)


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    import torch
    import torch.nn.functional as F

    from ..curvature import HessianOperator, negative_curvature_ratio

    timer = Timer()
    with timer("train"):
        r = train_run(config.train, cache_dir, progress)
    bundle = r.bundle()
    model = r.build_model()
    traj = r.trajectory()
    x, y = bundle.train.x, bundle.train.y
    if 0 < config.hessian_examples < len(x):
        g = torch.Generator().manual_seed(config.seed)
        idx = torch.sort(torch.randperm(len(x), generator=g)[: config.hessian_examples]).values
        x, y = x[idx], y[idx]
    ev = evaluator(model, (x, y))
    recs = []
    for i in _pick(len(traj), config.num_checkpoints):
        step, pt = traj[i]
        with timer("lanczos"):
            H = HessianOperator(model, F.cross_entropy, (x, y), point=pt)
            nc = negative_curvature_ratio(H, tol=config.tol, max_iter=config.max_iter, seed=config.seed)
            H.release()
        met = ev.evaluate(pt)
        recs.append({"step": step, "loss": met["loss"], "error": 1 - met["accuracy"], "lambda_min": nc.lambda_min,
                     "lambda_max": nc.lambda_max, "ratio": nc.ratio, "converged": nc.converged,
                     "matvecs": nc.num_matvecs})
        progress(f"step {step}: loss {met['loss']:.3f}, lambda_min {nc.lambda_min:.3g}, lambda_max "
                 f"{nc.lambda_max:.3g}, ratio {nc.ratio:.3g}")
    m = {"checkpoints": recs, "shrink_factor": config.shrink_factor, "trained_ratio": config.trained_ratio,
         "hessian_examples": int(len(x)), "run": r.path.name}
    m.update(_summaries(recs))
    verdict = judge(m)

    with timer("plot"):
        steps = np.array([c["step"] for c in recs], dtype=float)
        xs = steps + 1
        fig, axes = new_figure(2, 1, width=4.4, height=3.3)
        ax = axes[0]
        ax.plot(xs, [c["lambda_max"] for c in recs], "o-", ms=3, color="C1", label="λmax")
        ax.plot(xs, [max(0.0, -c["lambda_min"]) for c in recs], "s-", ms=3, color="C0", label="|λmin| (negative)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step + 1")
        ax.set_ylabel("extreme Hessian eigenvalue")
        ax2 = ax.twinx()
        ax2.plot(xs, [c["loss"] for c in recs], ":", color="0.4", label="loss")
        ax2.set_ylabel("training loss (subset)", color="0.4")
        ax.legend(fontsize=8, loc="center left")
        ax = axes[1]
        ax.plot(xs, [c["ratio"] for c in recs], "o-", ms=3, color="C3")
        ax.set_xscale("log")
        ax.set_xlabel("step + 1")
        ax.set_ylabel("|λmin| / λmax")
        ax.set_title(f"early {m['early_ratio']:.3g} → late {m['late_ratio']:.3g} (Spearman ρ {m['spearman']:.2f})",
                     fontsize=9)
        fig_ref = save_figure(fig, work_dir, "negative_curvature",
                              "Left: the largest and the most negative Hessian eigenvalue along the SGD trajectory "
                              "(dotted: training loss on the Hessian's subset). Right: their ratio |λmin|/λmax.")
    key = {
        "|λmin|/λmax early → late": f"{m['early_ratio']:.3g} → {m['late_ratio']:.3g}",
        "first → last checkpoint": f"{recs[0]['ratio']:.3g} → {recs[-1]['ratio']:.3g}",
        "Spearman ρ(step, ratio)": m["spearman"],
        "λmax first → last": f"{recs[0]['lambda_max']:.3g} → {recs[-1]['lambda_max']:.3g}",
        "λmin first → last": f"{recs[0]['lambda_min']:.3g} → {recs[-1]['lambda_min']:.3g}",
    }
    comparison = (
        f"Across {len(recs)} checkpoints of the SGD run (steps {recs[0]['step']}–{recs[-1]['step']}; subset loss "
        f"{recs[0]['loss']:.3f} → {recs[-1]['loss']:.3f}) the negative-curvature ratio |λmin|/λmax fell from "
        f"{m['early_ratio']:.3g} (mean of the first third) to {m['late_ratio']:.3g} (last third); λmax grew "
        f"{recs[0]['lambda_max']:.3g} → {recs[-1]['lambda_max']:.3g} while λmin went {recs[0]['lambda_min']:.3g} → "
        f"{recs[-1]['lambda_min']:.3g}. Spearman ρ between step and ratio: {m['spearman']:.2f}."
    )
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"run": config.train.seeds.seed, "subset/lanczos": config.seed},
        data=describe_data(bundle) + f"; Hessian on {len(x)} training examples", timings=timer.seconds,
        notes=["Negative curvature is measured with the extreme eigenvalues only (one Lanczos run, both ends); "
               "Dauphin et al.'s index (fraction of negative eigenvalues) would need the whole spectrum."],
    )


def _summaries(recs: list[Mapping[str, Any]]) -> dict[str, float]:
    r = np.array([c["ratio"] for c in recs], dtype=float)
    s = np.array([c["step"] for c in recs], dtype=float)
    third = max(1, len(r) // 3)
    return {"early_ratio": float(np.mean(r[:third])), "late_ratio": float(np.mean(r[-third:])),
            "spearman": _spearman(s, r)}


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m["checkpoints"]``: records with ``step``, ``loss``, ``ratio``, ``converged`` (step order);
    ``shrink_factor``, ``trained_ratio``. The early/late means and the Spearman correlation are recomputed
    from the records."""
    recs = list(m["checkpoints"])
    k, tr = float(m["shrink_factor"]), float(m["trained_ratio"])
    s = _summaries(recs)
    first, last = recs[0], recs[-1]
    bad = [c["step"] for c in recs if not c["converged"]]
    checks = [
        Check("run trained", last["loss"] <= tr * first["loss"],
              f"subset loss {first['loss']:.3f} -> {last['loss']:.3f} (needs <= {tr:g}x)", precondition=True),
        Check("Lanczos converged", not bad,
              "all checkpoints" if not bad else f"not converged at steps {bad}", precondition=True),
    ]
    e, late = s["early_ratio"], s["late_ratio"]
    checks.append(Check("negative curvature shrinks", late <= k * e,
                        f"|λmin|/λmax {e:.3g} (first third) -> {late:.3g} (last third), {late / e:.2f}x "
                        f"(needs <= {k:g}x)" if e > 0 else f"early ratio {e:.3g} (no negative curvature early)"))
    rho = s["spearman"]
    checks.append(Check("falls with training", bool(rho < 0) if np.isfinite(rho) else None,
                        f"Spearman ρ(step, ratio) = {rho:.2f} (needs < 0)"))
    return verdict_from_checks(checks)
