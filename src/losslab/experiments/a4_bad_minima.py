"""A4 — Bad global minima lie near good ones and near the trajectory (Huang et al. 2020).

Two MLPs start from the *same* initialization :math:`\\theta_0`: one trains on the clean training
set (:math:`\\theta_c`), the other on the clean set plus as many fresh same-distribution examples
with wrong labels (:func:`losslab.data.poison`; :math:`\\theta_p`). Both fit the clean training
set; the poisoned one generalizes worse. Measured: clean-train and test error of both, and the
distances

.. math::

    d(\\theta_0, \\theta_c), \\quad d(\\theta_c, \\theta_p), \\quad
    \\min_t d(\\theta_p, \\theta_c^{(t)}) \\ \\text{(nearest checkpoint of the clean trajectory)}.

Check: the poisoned model's test error exceeds the clean model's by at least ``gap_margin`` while
both fit the clean training set (precondition, ``<= fit_tolerance``), and the bad minimum is closer
to the good one than the good one is to the initialization, :math:`d(\\theta_c, \\theta_p) <
d(\\theta_0, \\theta_c)`. Sharpness (:math:`\\lambda_{max}`, 1-D width) is left to the curvature
module (a later VERSION).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import Check, ExperimentResult, Verdict, verdict_from_checks
from .common import Timer, describe_data, evaluator, interpolate, new_figure, save_figure, train_run

ID = "A4"
VERSION = 1
COST = {"quick": 40, "full": 400}


@dataclass(frozen=True)
class Config:
    """A4 settings.

    Attributes:
        clean, poisoned: the pair of runs (:func:`recipes.poison_pair`; same seeds, so same init).
        fit_tolerance: both must reach clean-train error ``<=`` this (matched).
        gap_margin: reproduced when poisoned test error >= clean test error + this.
        num_points: points of the clean -> poisoned path in the figure (a in [-0.5, 1.5]).
    """

    clean: TrainConfig = field(default_factory=lambda: recipes.poison_pair("quick")[0])
    poisoned: TrainConfig = field(default_factory=lambda: recipes.poison_pair("quick")[1])
    fit_tolerance: float = 0.02
    gap_margin: float = 0.05
    num_points: int = 21

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        c, p = recipes.poison_pair("full")
        return cls(clean=c, poisoned=p, num_points=41)


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    from .. import data, params

    timer = Timer()
    with timer("train"):
        rc = train_run(config.clean, cache_dir, progress)
        rp = train_run(config.poisoned, cache_dir, progress)
    clean_bundle = rc.bundle()
    pois_bundle = rp.bundle()
    model = rc.build_model()
    traj_c = rc.trajectory()
    traj_p = rp.trajectory()
    theta0, theta_c = traj_c[0][1], traj_c[-1][1]
    theta_p = traj_p[-1][1]
    same_init = params.distance(theta0, traj_p[0][1])
    mask = data.row_mask(pois_bundle.train, "poisoned")
    with timer("evaluate"):
        ev_clean = evaluator(model, clean_bundle.train)
        ev_test = evaluator(model, clean_bundle.test, bn_data=clean_bundle.train)
        ev_poison = evaluator(model, (pois_bundle.train.x[mask], pois_bundle.train.y[mask]))
        err = {}
        for name, pt in (("clean", theta_c), ("poisoned", theta_p)):
            err[name] = {
                "clean_train_error": 1 - ev_clean.evaluate(pt)["accuracy"],
                "test_error": 1 - ev_test.evaluate(pt)["accuracy"],
                "poison_fit_error": 1 - ev_poison.evaluate(pt)["accuracy"],
            }
    dists_traj = [(s, params.distance(theta_p, p)) for s, p in traj_c]
    nearest_step, nearest = min(dists_traj, key=lambda t: t[1])
    m = {
        "clean": err["clean"],
        "poisoned": err["poisoned"],
        "n_clean": int((~mask).sum()),
        "n_poison": int(mask.sum()),
        "distance_init_clean": params.distance(theta0, theta_c),
        "distance_init_poisoned": params.distance(theta0, theta_p),
        "distance_clean_poisoned": params.distance(theta_c, theta_p),
        "distance_poisoned_to_clean_trajectory": nearest,
        "nearest_clean_checkpoint_step": nearest_step,
        "same_init_distance": same_init,
        "fit_tolerance": config.fit_tolerance,
        "gap_margin": config.gap_margin,
        "sharpness": None,
    }
    m["distance_ratio"] = m["distance_clean_poisoned"] / m["distance_init_clean"]
    verdict = judge(m)
    progress(f"test error clean {err['clean']['test_error']:.3f} vs poisoned {err['poisoned']['test_error']:.3f}; "
             f"d(clean, poisoned)/d(init, clean) = {m['distance_ratio']:.2f}")

    with timer("path"):
        alphas = np.linspace(-0.5, 1.5, config.num_points)
        tr = interpolate(model, theta_c, theta_p, alphas, evaluator=ev_clean)
        te = interpolate(model, theta_c, theta_p, alphas, evaluator=ev_test)
        m["path"] = {"alpha": alphas.tolist(), "clean_train_error": tr["error"].tolist(),
                     "test_error": te["error"].tolist(), "clean_train_loss": tr["loss"].tolist()}
    with timer("plot"):
        fig, axes = new_figure(2, 1, width=4.4, height=3.3)
        ax = axes[0]
        ax.plot(alphas, tr["error"], "o-", ms=3, label="clean train error")
        ax.plot(alphas, te["error"], "s-", ms=3, label="test error")
        ax.axvline(0, color="0.6", lw=0.8)
        ax.axvline(1, color="0.6", lw=0.8)
        ax.set_xlabel("a  (θ = (1-a)·θ_clean + a·θ_poisoned)")
        ax.set_ylabel("error")
        ax.legend(fontsize=8)
        ax = axes[1]
        names = ["init→clean", "init→poisoned", "clean→poisoned", "poisoned→clean traj."]
        vals = [m["distance_init_clean"], m["distance_init_poisoned"], m["distance_clean_poisoned"],
                m["distance_poisoned_to_clean_trajectory"]]
        ax.bar(range(4), vals, color=["C0", "C1", "C3", "C2"])
        ax.set_xticks(range(4), names, rotation=15, fontsize=8)
        ax.set_ylabel("Euclidean distance in parameter space")
        fig_ref = save_figure(fig, work_dir, "poisoned",
                              "Left: errors along the line from the clean solution (a=0) to the poisoned one "
                              "(a=1). Right: distances between initialization, clean and poisoned solutions.")
    key = {
        "test error clean / poisoned": f"{err['clean']['test_error']:.3f} / {err['poisoned']['test_error']:.3f}",
        "clean-train error clean / poisoned": f"{err['clean']['clean_train_error']:.3f} / "
                                              f"{err['poisoned']['clean_train_error']:.3f}",
        "d(clean,poisoned) / d(init,clean)": m["distance_ratio"],
    }
    comparison = (
        f"Both models start from the same initialization (distance {same_init:.1e}). The clean model reaches "
        f"clean-train error {err['clean']['clean_train_error']:.3f} and test error {err['clean']['test_error']:.3f}; "
        f"the poisoned model (trained also on {m['n_poison']} wrongly labelled examples, fitting "
        f"{1 - err['poisoned']['poison_fit_error']:.0%} of them) reaches clean-train error "
        f"{err['poisoned']['clean_train_error']:.3f} but test error {err['poisoned']['test_error']:.3f}. It lies "
        f"{m['distance_clean_poisoned']:.2f} from the clean solution, while the clean solution lies "
        f"{m['distance_init_clean']:.2f} from the initialization (ratio {m['distance_ratio']:.2f}); its nearest "
        f"clean-trajectory checkpoint (step {nearest_step}) is {nearest:.2f} away."
    )
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"init/order/poison": config.clean.seeds.seed},
        data=describe_data(pois_bundle) + f"; clean runs on the first {m['n_clean']} rows",
        timings=timer.seconds,
        notes=["Sharpness (lambda_max, 1-D width) of the two minima is not measured yet: it waits for "
               "losslab.curvature."],
    )


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m["clean"]``/``m["poisoned"]``: ``clean_train_error``, ``test_error``; ``distance_clean_poisoned``,
    ``distance_init_clean``; thresholds ``fit_tolerance``, ``gap_margin``."""
    tol, margin = float(m["fit_tolerance"]), float(m["gap_margin"])
    c, p = m["clean"], m["poisoned"]
    checks = [
        Check("clean model fits", c["clean_train_error"] <= tol,
              f"clean-train error {c['clean_train_error']:.4f} (tolerance {tol:g})", precondition=True),
        Check("poisoned model fits the clean set", p["clean_train_error"] <= tol,
              f"clean-train error {p['clean_train_error']:.4f} (tolerance {tol:g})", precondition=True),
    ]
    gap = p["test_error"] - c["test_error"]
    checks.append(Check("poisoned generalizes worse", gap >= margin,
                        f"test error {p['test_error']:.3f} vs {c['test_error']:.3f} (gap {gap:+.3f}, needs >= {margin:g})"))
    d_cp, d_0c = m["distance_clean_poisoned"], m["distance_init_clean"]
    checks.append(Check("bad minimum near the good one", d_cp < d_0c,
                        f"d(clean, poisoned) = {d_cp:.2f} vs d(init, clean) = {d_0c:.2f} (ratio {d_cp / d_0c:.2f})"))
    return verdict_from_checks(checks)
