"""A2 — Over-parameterized nets reach ~zero training error (Zhang et al. 2016; Du et al. 2019).

Trains over-parameterized networks (more parameters than training examples) on clean labels and
records the train error per epoch. The MNIST-1D run is the ``p = 0`` run of A3 (same recipe, so it
is trained once and shared through the run cache); a digits MLP adds a second dataset.

Check: every run ends with train error ``<= threshold``. Precondition: each net is
over-parameterized (parameters > training examples).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import Check, ExperimentResult, Verdict, verdict_from_checks
from .common import Timer, describe_data, describe_model, fit_epoch, new_figure, save_figure, train_run

ID = "A2"
VERSION = 1
COST = {"quick": 20, "full": 200}


@dataclass(frozen=True)
class Config:
    """A2 settings.

    Attributes:
        runs: the clean-label runs (recipes shared with A3 and the digits MLP).
        threshold: "~zero" train error means ``<=`` this.
    """

    runs: tuple[TrainConfig, ...] = field(
        default_factory=lambda: (recipes.memorization_mlp(0.0, "quick"), recipes.digits_mlp("quick")))
    threshold: float = 0.01

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        return cls(runs=(recipes.memorization_mlp(0.0, "full"), recipes.digits_mlp("full")))


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    from ..models import count_parameters

    timer = Timer()
    recs = []
    datas = []
    for cfg in config.runs:
        with timer("train"):
            r = train_run(cfg, cache_dir, progress)
        bundle = r.bundle()
        n_params = int(count_parameters(r.build_model()))
        metrics = r.metrics
        recs.append({
            "name": f"{describe_model(cfg)} on {cfg.data.dataset}",
            "dataset": cfg.data.dataset,
            "n_train": len(bundle.train),
            "n_params": n_params,
            "params_per_example": n_params / max(1, len(bundle.train)),
            "train_error": r.summary["train_error"],
            "test_error": r.summary["test_error"],
            "fit_epoch": fit_epoch(metrics, config.threshold),
            "epochs": r.summary["epochs"],
            "train_error_curve": [x["train_error"] for x in metrics],
            "run": r.path.name,
        })
        datas.append(describe_data(bundle))
    m = {"runs": recs, "threshold": config.threshold}
    verdict = judge(m)
    with timer("plot"):
        fig, ax = new_figure(1, 1, width=5.0, height=3.3)
        for i, r in enumerate(recs):
            ep = np.arange(len(r["train_error_curve"]))
            ax.plot(ep, np.maximum(r["train_error_curve"], 1e-4), color=f"C{i}",
                    label=f"{r['dataset']}: {r['n_params']:,} params / {r['n_train']} examples")
        ax.axhline(config.threshold, color="0.5", lw=0.8, ls=":", label=f"threshold {config.threshold:g}")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("train error (floored at 1e-4)")
        ax.legend(fontsize=8)
        fig_ref = save_figure(fig, work_dir, "train_error", "Train error per epoch of the over-parameterized nets "
                              "on clean labels (log scale; an error of 0 is drawn at 1e-4).")
    key = {f"train error ({r['dataset']})": r["train_error"] for r in recs}
    key.update({f"params/example ({r['dataset']})": r["params_per_example"] for r in recs})
    comparison = "; ".join(
        f"{r['name']}: {r['n_params']:,} parameters for {r['n_train']} examples, train error "
        f"{r['train_error']:.4f} after {r['epochs']} epochs (<= {config.threshold:g} from epoch {r['fit_epoch']}), "
        f"test error {r['test_error']:.3f}" for r in recs)
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={r["dataset"]: c.seeds.seed for r, c in zip(recs, config.runs)}, data="; ".join(datas),
        timings=timer.seconds,
    )


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m["runs"]``: records with ``name``, ``n_params``, ``n_train``, ``train_error``; ``m["threshold"]``."""
    thr = float(m["threshold"])
    checks = []
    for r in m["runs"]:
        checks.append(Check(f"{r['name']} over-parameterized", r["n_params"] > r["n_train"],
                            f"{r['n_params']} parameters vs {r['n_train']} examples", precondition=True))
    for r in m["runs"]:
        ok = r["train_error"] <= thr
        checks.append(Check(f"{r['name']} train error ~0", ok,
                            f"final train error {r['train_error']:.4f} "
                            + ("<=" if ok else f"> threshold, {r['train_error'] - thr:.4f} above") + f" {thr:g}"))
    return verdict_from_checks(checks)
