"""C1 — Wide basins are found more often: the good solution's basin is wider than the bad one's
(Huang et al. 2020; Keskar et al. 2017).

Uses A4's clean and poisoned MLPs (:func:`recipes.poison_pair`, the same ``TrainConfig`` objects, so the
same run directories: whichever row runs first trains them). For each solution :math:`\\theta^*` the
basin is probed on the clean training set along ``num_directions`` random Gaussian directions
:math:`d_j`, filter-normalized to that solution (Li et al. 2018; biases fixed), in both signs
(:func:`losslab.curvature.basin_width`). The radius along a ray is the first
:math:`t > 0` with :math:`L(\\theta^* + t d) > L(\\theta^*) + \\Delta` (an *additive* threshold, so both
solutions are measured by the same loss rise although their base losses differ). Huang et al.'s volume
estimate over the :math:`2K` rays,

.. math:: \\log V \\approx \\log V_D(1) + \\log \\frac{1}{2K} \\sum_j \\rho_j^D, \\qquad \\rho_j = t_j \\|d_j\\|,

is reported with its effective radius :math:`(\\frac{1}{2K}\\sum_j \\rho_j^D)^{1/D}`.

Check: both solutions fit the clean training set (precondition, ``<= fit_tolerance``); the clean
solution's mean radius (units of the filter-normalized direction) and its log-volume both exceed the
poisoned solution's.
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

ID = "C1"
VERSION = 1
COST = {"quick": 15, "full": 240}


@dataclass(frozen=True)
class Config:
    """C1 settings.

    Attributes:
        clean, poisoned: A4's pair of runs (the same configs: shared through the run cache).
        num_directions: random directions per solution (each measured in both signs).
        threshold: the loss rise :math:`\\Delta` that ends the basin.
        profile_directions: directions drawn as 1-D loss profiles in the figure.
        profile_points: points per profile.
        fit_tolerance: both solutions must reach clean-train error ``<=`` this.
        seed: root seed of the directions (the same seeds for both solutions).
    """

    clean: TrainConfig = field(default_factory=lambda: recipes.poison_pair("quick")[0])
    poisoned: TrainConfig = field(default_factory=lambda: recipes.poison_pair("quick")[1])
    num_directions: int = 16
    threshold: float = 0.1
    profile_directions: int = 3
    profile_points: int = 41
    fit_tolerance: float = 0.02
    seed: int = 0

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        c, p = recipes.poison_pair("full")
        return cls(clean=c, poisoned=p, num_directions=50)


def _profiles(model: Any, ev: Any, point: Mapping[str, Any], seeds: list[int], ts: np.ndarray) -> list[list[float]]:
    import torch

    from ..directions import random_direction

    out = []
    for s in seeds:
        d = random_direction(point, normalization="filter", ignore_1d=True, seed=s)
        pts = [{k: v + float(t) * d.vector[k].to(v.dtype) for k, v in point.items()} for t in ts]
        with torch.no_grad():
            out.append(np.asarray(ev.evaluate_many(pts)["loss"], dtype=float).tolist())
    return out


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    from ..curvature import basin_width

    timer = Timer()
    with timer("train"):
        rc = train_run(config.clean, cache_dir, progress)
        rp = train_run(config.poisoned, cache_dir, progress)
    bundle = rc.bundle()
    model = rc.build_model()
    ev_train = evaluator(model, bundle.train)
    ev_test = evaluator(model, bundle.test, bn_data=bundle.train)
    recs: dict[str, dict[str, Any]] = {}
    basins = {}
    for name, r in (("clean", rc), ("poisoned", rp)):
        pt = r.trajectory()[-1][1]
        with timer("basin"):
            b = basin_width(model, "cross_entropy", bundle.train, num_directions=config.num_directions,
                            threshold=config.threshold, threshold_kind="additive", seed=config.seed, point=pt)
        basins[name] = (b, pt)
        s = b.summary()
        recs[name] = {
            "clean_train_error": 1 - ev_train.evaluate(pt)["accuracy"],
            "test_error": 1 - ev_test.evaluate(pt)["accuracy"],
            **{k: s[k] for k in ("base_loss", "threshold_loss", "radius_mean", "radius_std", "radius_min", "radius_max",
                                 "width_mean", "euclidean_radius_mean", "log_volume", "effective_radius", "dim",
                                 "censored", "num_evaluations")},
            "radius_quantiles": s["radius_quantiles"],
            "radii": b.radii.tolist(),
            "run": r.path.name,
        }
        progress(f"{name}: mean radius {s['radius_mean']:.4g}, log-volume {s['log_volume']:.6g} "
                 f"({b.num_evaluations} loss evaluations)")
    wider = int(np.sum(basins["clean"][0].widths > basins["poisoned"][0].widths))
    m: dict[str, Any] = {"clean": recs["clean"], "poisoned": recs["poisoned"], "threshold": config.threshold,
                         "fit_tolerance": config.fit_tolerance, "num_directions": config.num_directions,
                         "directions_clean_wider": wider}
    verdict = judge(m)

    with timer("profiles"):
        seeds = basins["clean"][0].direction_seeds[: config.profile_directions]
        span = 2.5 * max(recs["clean"]["radius_quantiles"]["q50"], recs["poisoned"]["radius_quantiles"]["q50"])
        ts = np.linspace(-span, span, config.profile_points)
        prof = {name: _profiles(model, ev_train, basins[name][1], seeds, ts) for name in ("clean", "poisoned")}
        m["profiles"] = {"t": ts.tolist(), "seeds": seeds, **prof}
    with timer("plot"):
        fig, axes = new_figure(2, 1, width=4.6, height=3.4)
        ax = axes[0]
        for name, color in (("clean", "C0"), ("poisoned", "C3")):
            for i, ys in enumerate(prof[name]):
                ax.plot(ts, ys, color=color, alpha=0.8, lw=1.2, label=name if i == 0 else None)
            ax.axhline(recs[name]["threshold_loss"], color=color, ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("t  (θ* + t·d, d filter-normalized)")
        ax.set_ylabel("clean training loss")
        ax.set_title(f"loss along {len(seeds)} random directions (dotted: L(θ*) + {config.threshold:g})", fontsize=9)
        ax.legend(fontsize=8)
        ax = axes[1]
        data = [np.ravel(recs["clean"]["radii"]), np.ravel(recs["poisoned"]["radii"])]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks([1, 2], ["clean", "poisoned"])
        ax.set_ylabel("basin radius t (units of the direction)")
        ax.set_title(f"radii over {2 * config.num_directions} rays; log-volume "
                     f"{recs['clean']['log_volume']:.4g} vs {recs['poisoned']['log_volume']:.4g}", fontsize=8)
        fig_ref = save_figure(fig, work_dir, "basins",
                              "Left: clean training loss along random filter-normalized directions through the "
                              "clean (blue) and the poisoned (red) solution. Right: basin radii (loss rise "
                              f"{config.threshold:g}) over all rays (triangle: mean).")
    c, p = recs["clean"], recs["poisoned"]
    key = {
        "mean radius clean / poisoned": f"{c['radius_mean']:.3g} / {p['radius_mean']:.3g}",
        "log-volume clean - poisoned": c["log_volume"] - p["log_volume"],
        "effective radius clean / poisoned": f"{c['effective_radius']:.3g} / {p['effective_radius']:.3g}",
        "directions where clean is wider": f"{wider}/{config.num_directions}",
        "test error clean / poisoned": f"{c['test_error']:.3f} / {p['test_error']:.3f}",
    }
    comparison = (
        f"Along {config.num_directions} random filter-normalized directions (both signs) the clean solution's loss "
        f"stays within {config.threshold:g} of its minimum up to a mean radius {c['radius_mean']:.3g} (median "
        f"{c['radius_quantiles']['q50']:.3g}), the poisoned solution's up to {p['radius_mean']:.3g} (median "
        f"{p['radius_quantiles']['q50']:.3g}); the clean basin is wider along {wider} of {config.num_directions} "
        f"directions. Volume estimate: log V {c['log_volume']:.6g} vs {p['log_volume']:.6g} (D = {c['dim']}; "
        f"effective radius {c['effective_radius']:.3g} vs {p['effective_radius']:.3g}). Test error "
        f"{c['test_error']:.3f} (clean) vs {p['test_error']:.3f} (poisoned)."
    )
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"init/order/poison": config.clean.seeds.seed, "directions": config.seed},
        data=describe_data(bundle) + "; basins measured on the full clean training set", timings=timer.seconds,
        notes=["The runs are A4's (same configs, shared run cache). The volume uses Euclidean radii of "
               "filter-normalized directions (Huang et al.'s comparison between solutions of one network)."],
    )


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m["clean"]``/``m["poisoned"]``: ``clean_train_error``, ``radius_mean``, ``log_volume``;
    ``fit_tolerance``."""
    tol = float(m["fit_tolerance"])
    c, p = m["clean"], m["poisoned"]
    checks = [Check(f"{name} solution fits", r["clean_train_error"] <= tol,
                    f"clean-train error {r['clean_train_error']:.4f} (tolerance {tol:g})", precondition=True)
              for name, r in (("clean", c), ("poisoned", p))]
    rc, rp = float(c["radius_mean"]), float(p["radius_mean"])
    checks.append(Check("clean basin wider (mean radius)", rc > rp,
                        f"mean radius {rc:.4g} (clean) vs {rp:.4g} (poisoned), ratio {rc / rp:.2f}"))
    vc, vp = float(c["log_volume"]), float(p["log_volume"])
    checks.append(Check("clean basin larger (volume)", vc > vp,
                        f"log-volume {vc:.6g} (clean) vs {vp:.6g} (poisoned), difference {vc - vp:+.4g}"))
    return verdict_from_checks(checks)
