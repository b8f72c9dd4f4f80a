"""A3 — Nets fit random labels (Zhang et al. 2016, "Understanding deep learning requires rethinking
generalization").

The same over-parameterized MLP is trained on MNIST-1D with a fraction ``p`` of its training labels
replaced by uniformly random ones (:func:`losslab.data.corrupt_labels`, ``mode="uniform"``: a
replaced label may equal the true one), for each ``p`` in the sweep. Measured per ``p``: final
train and test error and the *steps to fit*, the first epoch at which the train error (on the
labels trained on) is ``<= fit_threshold``, times the steps per epoch.

Check: at ``p = 1`` the train error reaches ``<= fit_threshold`` and the test error is within
``chance_tolerance`` of chance, :math:`1 - 1/C`; the steps to fit grow with ``p`` (Spearman rank
correlation > 0 and more steps at the largest ``p`` than at ``p = 0``; a run that never fits counts
as slower than every run that does).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import Check, ExperimentResult, Verdict, verdict_from_checks
from .common import Timer, describe_data, fit_epoch, new_figure, save_figure, train_run

ID = "A3"
VERSION = 1
COST = {"quick": 50, "full": 600}


@dataclass(frozen=True)
class Config:
    """A3 settings.

    Attributes:
        train: the run at ``p = 0`` (recipe :func:`recipes.memorization_mlp`, shared with A2); the
            sweep changes only ``data.label_noise``.
        noise: the label-corruption fractions ``p``.
        fit_threshold: a run has fit its labels when its train error is ``<=`` this.
        chance_tolerance: allowed ``|test error - chance|`` at ``p = 1``.
    """

    train: TrainConfig = field(default_factory=lambda: recipes.memorization_mlp(0.0, "quick"))
    noise: tuple[float, ...] = (0.0, 0.2, 0.5, 0.8, 1.0)
    fit_threshold: float = 0.01
    chance_tolerance: float = 0.05

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        return cls(train=recipes.memorization_mlp(0.0, "full"))


def with_noise(train: TrainConfig, p: float) -> TrainConfig:
    return dataclasses.replace(train, data=dataclasses.replace(train.data, label_noise=float(p)))


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    timer = Timer()
    recs = []
    bundle = None
    for p in config.noise:
        with timer("train"):
            r = train_run(with_noise(config.train, p), cache_dir, progress)
        info = r.info
        spe = int(info.get("steps_per_epoch", 0))
        metrics = r.metrics
        fe = fit_epoch(metrics, config.fit_threshold)
        if bundle is None:
            bundle = r.bundle()
        recs.append({
            "p": float(p),
            "train_error": r.summary["train_error"],
            "test_error": r.summary["test_error"],
            "fit_epoch": fe,
            "fit_steps": None if fe is None else fe * spe,
            "steps_per_epoch": spe,
            "epochs": r.summary["epochs"],
            "train_error_curve": [x["train_error"] for x in metrics],
            "test_error_curve": [x["test_error"] for x in metrics],
            "run": r.path.name,
        })
    chance = 1.0 - 1.0 / bundle.num_classes
    m = {"runs": recs, "chance": chance, "fit_threshold": config.fit_threshold,
         "chance_tolerance": config.chance_tolerance}
    m["spearman_fit_steps_vs_p"] = _spearman_censored([r["p"] for r in recs], [r["fit_steps"] for r in recs])
    verdict = judge(m)

    with timer("plot"):
        fig, axes = new_figure(2, 1, width=4.4, height=3.3)
        for i, r in enumerate(recs):
            ep = np.arange(len(r["train_error_curve"]))
            axes[0].plot(ep, r["train_error_curve"], color=f"C{i}", label=f"p={r['p']:g}")
        axes[0].axhline(config.fit_threshold, color="0.5", lw=0.8, ls=":")
        axes[0].set_xlabel("epoch")
        axes[0].set_ylabel("train error (on the labels trained on)")
        axes[0].legend(fontsize=8)
        ps = [r["p"] for r in recs]
        axes[1].plot(ps, [r["train_error"] for r in recs], "o-", label="final train error")
        axes[1].plot(ps, [r["test_error"] for r in recs], "s-", label="test error")
        axes[1].axhline(chance, color="0.5", lw=0.8, ls="--", label=f"chance {chance:.2f}")
        axes[1].set_xlabel("label corruption p")
        axes[1].set_ylabel("error")
        ax2 = axes[1].twinx()
        ax2.plot(ps, [np.nan if r["fit_steps"] is None else r["fit_steps"] for r in recs], "^:", color="C3",
                 label="steps to fit")
        ax2.set_ylabel("steps to fit", color="C3")
        axes[1].legend(fontsize=8, loc="center left")
        fig_ref = save_figure(fig, work_dir, "random_labels",
                              "Left: train error per epoch for each corruption fraction p. Right: final train "
                              "and test error vs p, and the steps to reach the fit threshold (red, right axis).")

    last = max(recs, key=lambda r: r["p"])
    first = min(recs, key=lambda r: r["p"])
    key = {
        f"train error p={last['p']:g}": last["train_error"],
        f"test error p={last['p']:g}": last["test_error"],
        "chance": chance,
        f"steps to fit p={first['p']:g} / p={last['p']:g}": f"{first['fit_steps']} / {last['fit_steps']}",
        "Spearman(steps, p)": m["spearman_fit_steps_vs_p"],
    }
    comparison = (
        "Steps to fit by p: " + ", ".join(f"p={r['p']:g}: {r['fit_steps'] if r['fit_steps'] is not None else 'not fit'}"
                                        for r in recs)
        + f" (Spearman {m['spearman_fit_steps_vs_p']:.2f}). At p={last['p']:g} the net reached train error "
        f"{last['train_error']:.3f} with test error {last['test_error']:.3f} (chance {chance:.2f})."
    )
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"init/order/label": config.train.seeds.seed},
        data=describe_data(bundle) + f"; labels corrupted for p in {list(config.noise)}",
        timings=timer.seconds,
    )


def _spearman_censored(ps: list[float], steps: list[int | None]) -> float:
    """Spearman rank correlation of steps-to-fit with p; runs that never fit rank above all others."""
    from scipy.stats import spearmanr

    big = max([s for s in steps if s is not None] or [0]) + 1
    y = [big if s is None else s for s in steps]
    if len(set(y)) < 2 or len(set(ps)) < 2:
        return float("nan")
    return float(spearmanr(ps, y).statistic)


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m["runs"]``: records with ``p``, ``train_error``, ``test_error``, ``fit_steps`` (None: never fit);
    ``m["chance"]``, ``m["fit_threshold"]``, ``m["chance_tolerance"]``; ``m["spearman_fit_steps_vs_p"]``
    (recomputed when absent)."""
    runs = sorted(m["runs"], key=lambda r: r["p"])
    thr, chance, tol = float(m["fit_threshold"]), float(m["chance"]), float(m["chance_tolerance"])
    lo, hi = runs[0], runs[-1]
    rho = m.get("spearman_fit_steps_vs_p")
    if rho is None:
        rho = _spearman_censored([r["p"] for r in runs], [r["fit_steps"] for r in runs])
    checks = [
        Check(f"p={lo['p']:g} fitted", lo["train_error"] <= thr,
              f"train error {lo['train_error']:.4f} (threshold {thr:g})", precondition=True),
        Check(f"p={hi['p']:g} fitted", hi["train_error"] <= thr,
              f"train error {hi['train_error']:.4f} (threshold {thr:g}); "
              + ("never reached the threshold" if hi["fit_steps"] is None else f"fit after {hi['fit_steps']} steps")),
        Check(f"p={hi['p']:g} test error at chance", abs(hi["test_error"] - chance) <= tol,
              f"test error {hi['test_error']:.3f} vs chance {chance:.3f} (|diff| {abs(hi['test_error'] - chance):.3f}, "
              f"tolerance {tol:g})"),
    ]
    s_lo = lo["fit_steps"]
    s_hi = hi["fit_steps"]
    slower = s_lo is not None and (s_hi is None or s_hi > s_lo)
    grows = bool(slower and rho == rho and rho > 0)
    checks.append(Check("steps to fit grow with p", grows,
                        f"{s_lo} steps at p={lo['p']:g} vs {s_hi if s_hi is not None else 'never'} at p={hi['p']:g}; "
                        f"Spearman rank correlation {rho:.2f}"))
    return verdict_from_checks(checks)
