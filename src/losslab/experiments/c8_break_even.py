"""C8 — The break-even point: the learning rate sets the curvature reached early (Jastrzebski et al. 2020).

The same MLP (same initialization and data order) is trained on MNIST-1D with plain SGD (no momentum, so
the stability threshold of a step is :math:`2/η`) at several learning rates :math:`η`. A
:class:`losslab.curvature.CurvatureTracker` measures :math:`λ_{max}` of the Hessian of the mean loss on a
fixed subset of the training set every ``every`` steps (Lanczos, warm-started). Jastrzebski et al.: early
in training :math:`λ_{max}` grows until it reaches a level set by :math:`η` (the break-even point) and
stays around it; a larger :math:`η` stops the growth sooner and lower, and :math:`λ_{max} ≲ 2/η`.

The tracked runs live in ``cache_dir/tracked/`` under a name that includes the tracker's settings (its
``cache_key``; a finished :func:`losslab.train.train` run is returned without calling callbacks, so the
records of a tracked run are kept next to it in ``curvature.json`` and reused).

Checks (relative, same initialization): after the early phase (the first ``early_fraction`` of the
steps) the level of :math:`λ_{max}` — the median of its measurements, robust to the transient spikes above
:math:`2/η` that self-stabilizing SGD shows (edge-of-stability "catapults") — strictly decreases with
:math:`η`, and for every :math:`η` it is ``<= (1 + edge_tolerance) · 2/η``. Means and maxima are reported. For context, :math:`λ_{max}` is also compared at matched training loss
(the epoch where each run first reaches the largest final loss of the runs).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..config import TrainConfig
from ._base import Check, ExperimentResult, Verdict, verdict_from_checks
from .common import Timer, describe_data, new_figure, run_lock, save_figure, train_config

ID = "C8"
VERSION = 1
COST = {"quick": 30, "full": 300}

__all__ = ["ID", "VERSION", "COST", "Config", "run", "judge", "train_tracked"]


def _base(profile: str) -> TrainConfig:
    width, epochs = (128, 20) if profile == "quick" else (256, 40)
    return train_config(dataset="mnist1d", model="mlp", model_kwargs={"width": width, "depth": 2}, optimizer="sgd",
                        momentum=0.0, batch_size=128, epochs=epochs, checkpoints="none")


@dataclass(frozen=True)
class Config:
    """C8 settings.

    Attributes:
        train: the run; only its learning rate varies.
        lrs: learning rates, increasing.
        every: optimizer steps between two λmax measurements.
        data_subset: training examples of the measured Hessian (a fixed random subset).
        tol: relative Lanczos tolerance.
        early_fraction: the early phase is this fraction of the steps.
        edge_tolerance: "λmax ≲ 2/η" allows the post-early median up to ``(1 + edge_tolerance) · 2/η``.
        seed: seed of the subset and the Lanczos start vectors.
    """

    train: TrainConfig = field(default_factory=lambda: _base("quick"))
    lrs: tuple[float, ...] = (0.1, 0.25, 0.5)
    every: int = 16
    data_subset: int = 512
    tol: float = 1e-3
    early_fraction: float = 0.25
    edge_tolerance: float = 0.15
    seed: int = 0

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        return cls(train=_base("full"), lrs=(0.05, 0.1, 0.25, 0.5), every=8, data_subset=1024)


def train_tracked(config: TrainConfig, tracker_kwargs: Mapping[str, Any], *, cache_dir: str | Path,
                  progress: Callable[[str], None] | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """Train ``config`` with a :class:`~losslab.curvature.CurvatureTracker` (or reuse a finished tracked run).

    The tracker's settings are part of the run's identity (its ``cache_key``), so a cached run in
    ``cache_dir/tracked/`` always has the records of exactly these settings. Returns ``(run, records)``.
    """
    from ..curvature import CurvatureTracker, load_curvature_records
    from ..runs import Run, run_dir_for
    from ..train import train

    out = Path(cache_dir) / "tracked"
    tracker = CurvatureTracker(**dict(tracker_kwargs))
    rdir = run_dir_for(config, out, [tracker])

    def finished() -> bool:
        return Run(rdir).done and (rdir / "curvature.json").is_file()

    if finished():
        if progress:
            progress(f"reusing tracked run {rdir.name} (lr {config.optim.lr:g})")
        return Run(rdir), load_curvature_records(rdir)
    with run_lock(out / ".locks" / f"{rdir.name}.lock"):
        if finished():
            return Run(rdir), load_curvature_records(rdir)
        if progress:
            progress(f"training {rdir.name} with curvature tracking: sgd lr {config.optim.lr:g}, "
                     f"{config.optim.epochs} epochs")
        run = train(config, out=out, callbacks=[tracker], progress=False, force=True)
        return run, list(tracker.records)


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    timer = Timer()
    tk = {"every": config.every, "data_subset": config.data_subset, "seed": config.seed, "tol": config.tol}
    recs = []
    bundle = None
    for lr in config.lrs:
        cfg = dataclasses.replace(config.train, optim=dataclasses.replace(config.train.optim, lr=float(lr)))
        with timer("train+track"):
            r, records = train_tracked(cfg, tk, cache_dir=cache_dir, progress=progress)
        if bundle is None:
            bundle = r.bundle()
        steps = np.array([x["step"] for x in records], dtype=float)
        lam = np.array([x["lambda_max"] for x in records], dtype=float)
        total = int(r.summary.get("steps", steps.max()))
        post = steps >= config.early_fraction * total
        metrics = r.metrics
        rec = {
            "lr": float(lr), "two_over_lr": 2.0 / float(lr), "total_steps": total,
            "steps_per_epoch": int(r.info.get("steps_per_epoch", 0)),
            "step": steps.tolist(), "lambda_max": lam.tolist(),
            "post_early_mean": float(lam[post].mean()), "post_early_median": float(np.median(lam[post])),
            "post_early_max": float(lam[post].max()), "peak": float(lam.max()),
            "epoch": [x["epoch"] for x in metrics], "train_loss": [x["train_loss"] for x in metrics],
            "train_error": r.summary["train_error"], "test_error": r.summary["test_error"],
            "converged": float(np.mean([bool(x.get("lambda_max_converged", True)) for x in records])),
            "run": r.path.name,
        }
        rec["edge_ratio"] = rec["post_early_median"] * float(lr) / 2.0
        recs.append(rec)
        progress(f"lr {lr:g}: post-early median lambda_max {rec['post_early_median']:.3g} (mean "
                 f"{rec['post_early_mean']:.3g}, 2/lr = {2 / lr:.3g}), "
                 f"train error {rec['train_error']:.3f}")
    _matched(recs)
    m = {"runs": recs, "early_fraction": config.early_fraction, "edge_tolerance": config.edge_tolerance}
    verdict = judge(m)

    with timer("plot"):
        from ..curvature import plot_sharpness_trajectory

        fig, axes = new_figure(2, 1, width=4.8, height=3.5)
        ax = axes[0]
        for i, x in enumerate(recs):
            rs = [{"step": s, "lambda_max": v, "two_over_lr": x["two_over_lr"]} for s, v in zip(x["step"], x["lambda_max"])]
            plot_sharpness_trajectory(rs, ax=ax, label=f"η={x['lr']:g}", color=f"C{i}")
        ax.axvspan(0, config.early_fraction * recs[0]["total_steps"], color="0.93", zorder=0)
        ax.set_title("λmax along training (dashed: 2/η; shaded: early phase)", fontsize=9)
        ax = axes[1]
        lrs = np.array([x["lr"] for x in recs])
        ax.plot(lrs, [x["post_early_median"] for x in recs], "o-", color="C3", label="median λmax after the early phase")
        ax.plot(lrs, [x["post_early_mean"] for x in recs], "^-", color="C3", alpha=0.5, ms=4, label="mean")
        ax.plot(lrs, [x["post_early_max"] for x in recs], "v:", color="C3", alpha=0.6, label="max λmax after it")
        ax.plot(lrs, [x["matched_lambda_max"] for x in recs], "s--", color="C4", alpha=0.8,
                label=f"λmax at matched loss ({recs[0]['matched_loss']:.3g})")
        grid = np.geomspace(lrs.min() * 0.8, lrs.max() * 1.25, 50)
        ax.plot(grid, 2 / grid, "k--", lw=1, label="2/η")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("learning rate η")
        ax.set_ylabel("λmax")
        ax.legend(fontsize=7)
        fig_ref = save_figure(fig, work_dir, "break_even",
                              "Left: λmax of the Hessian (on a fixed training subset) along SGD training at several "
                              "learning rates, with each run's 2/η (dashed). Right: λmax after the early phase and "
                              "at matched training loss against the learning rate, with 2/η.")
    key = {f"λmax after early phase (η={x['lr']:g})": f"{x['post_early_median']:.3g} (2/η = {x['two_over_lr']:.3g})"
           for x in recs}
    key["λmax/(2/η), largest"] = max(x["edge_ratio"] for x in recs)
    key["λmax at matched loss"] = " / ".join(f"{x['matched_lambda_max']:.3g}" for x in recs)
    comparison = (
        "Plain SGD from one initialization at η = " + ", ".join(f"{x['lr']:g}" for x in recs) + ": after the first "
        f"{config.early_fraction:.0%} of the steps λmax had median " + ", ".join(f"{x['post_early_median']:.3g}" for x in recs)
        + " (mean " + ", ".join(f"{x['post_early_mean']:.3g}" for x in recs) + "; 2/η = " + ", ".join(f"{x['two_over_lr']:.3g}" for x in recs) + "; ratio " +
        ", ".join(f"{x['edge_ratio']:.2f}" for x in recs) + "; largest single measurement " +
        ", ".join(f"{x['post_early_max']:.3g}" for x in recs) + f"). At matched training loss "
        f"{recs[0]['matched_loss']:.3g}: λmax " + ", ".join(f"{x['matched_lambda_max']:.3g}" for x in recs) +
        ". Final train error " + ", ".join(f"{x['train_error']:.3f}" for x in recs) + "."
    )
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"init/order": config.train.seeds.seed, "subset/lanczos": config.seed},
        data=describe_data(bundle) + f"; λmax on {config.data_subset} training examples every {config.every} steps",
        timings=timer.seconds,
        notes=["λmax is measured on a fixed training subset right after an SGD step; single measurements "
               "may exceed 2/η (edge-of-stability oscillations); the checks use the post-early-phase median."],
    )


def _matched(recs: list[dict[str, Any]]) -> None:
    """λmax at matched training loss: each run's epoch where the train loss first reaches the largest final
    loss of the runs; median of the measurements in that epoch (context only)."""
    target = max(x["train_loss"][-1] for x in recs)
    for x in recs:
        e = next((ep for ep, lo in zip(x["epoch"], x["train_loss"]) if lo <= target * (1 + 1e-9)), x["epoch"][-1])
        spe = x["steps_per_epoch"] or 1
        st = np.asarray(x["step"])
        sel = (st > (e - 1) * spe) & (st <= e * spe)
        vals = np.asarray(x["lambda_max"])[sel] if sel.any() else np.asarray(x["lambda_max"])[-1:]
        x["matched_loss"] = float(target)
        x["matched_epoch"] = int(e)
        x["matched_lambda_max"] = float(np.median(vals))


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m["runs"]``: records (increasing ``lr``) with ``two_over_lr``, ``post_early_median``, ``train_loss``
    (per epoch, epoch 0 first) and optionally ``matched_lambda_max``; ``edge_tolerance``."""
    runs = sorted(m["runs"], key=lambda x: x["lr"])
    tol = float(m["edge_tolerance"])
    checks = []
    for x in runs:
        lo0, lo1 = x["train_loss"][0], x["train_loss"][-1]
        checks.append(Check(f"η={x['lr']:g} trains", lo1 < 0.9 * lo0,
                            f"train loss {lo0:.3f} -> {lo1:.3f} (needs < 0.9x)", precondition=True))
    for a, b in zip(runs, runs[1:]):
        checks.append(Check(f"η={b['lr']:g} flatter than η={a['lr']:g}", b["post_early_median"] < a["post_early_median"],
                            f"median λmax after the early phase {b['post_early_median']:.3g} (η={b['lr']:g}) vs "
                            f"{a['post_early_median']:.3g} (η={a['lr']:g})"))
    for x in runs:
        r = x["post_early_median"] / x["two_over_lr"]
        checks.append(Check(f"η={x['lr']:g}: λmax ≲ 2/η", r <= 1 + tol,
                            f"median λmax {x['post_early_median']:.3g} vs 2/η = {x['two_over_lr']:.3g} (ratio {r:.2f}, "
                            f"needs <= {1 + tol:g}; largest single value {x.get('post_early_max', float('nan')):.3g})"))
    if all("matched_lambda_max" in x for x in runs):
        ok = all(b["matched_lambda_max"] < a["matched_lambda_max"] for a, b in zip(runs, runs[1:]))
        checks.append(Check("ordered at matched loss", ok,
                            "λmax at matched training loss " + ", ".join(f"{x['matched_lambda_max']:.3g}" for x in runs),
                            decisive=False))
    return verdict_from_checks(checks)
