"""C6 — After a short chaotic phase the neural tangent kernel stabilizes and linearized training works
(Fort, Dziugaite, Paul, Kharaghani, Roy & Ganguli 2020, "Deep learning versus kernel learning").

One SGD MLP on MNIST-1D (the shared recipe :func:`recipes.mnist1d_mlp`, log-spaced checkpoints) is
probed along its trajectory:

* the empirical NTK (trace over the outputs) :math:`K_t = \\sum_k J_t(x)_k J_t(x)_k^\\top` on
  ``n_examples`` test inputs at every checkpoint, the kernel distance
  :math:`d(K, K') = 1 - \\langle K, K' \\rangle_F / (\\lVert K \\rVert_F \\lVert K' \\rVert_F)` between
  consecutive checkpoints and the kernel velocity :math:`d / \\Delta t` per optimizer step
  (:func:`losslab.probes.run_kernel_velocity`);
* the velocity averaged over a window of steps, :math:`\\bar v_{[a, b]} = \\sum_i d_i / \\sum_i \\Delta t_i`
  over the transitions inside :math:`[a, b]` (path length of the kernel per step), early
  :math:`[0, T/4]` vs late :math:`[T/2, T]`;
* the network linearized at checkpoint :math:`t`, :math:`f^{lin}(\\theta) = f_{\\theta_t} + J_{\\theta_t}
  (\\theta - \\theta_t)`, trained by the same SGD loop for ``lin_epochs`` epochs, and the full network
  trained by that loop from the same point (:func:`losslab.probes.linearized_vs_full`), for ``t`` at
  init and at the checkpoints nearest the fractions ``linearize_at`` of training.

Check: the late kernel velocity is at most ``max_velocity_ratio`` times the early one, and the model
linearized at the latest of those checkpoints reaches a lower test error than the one linearized at
init, with a smaller gap to the full network trained from the same point. Inconclusive when the run
did not train.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import Check, ExperimentResult, Verdict, verdict_from_checks
from .common import Timer, describe_data, new_figure, save_figure, train_run

ID = "C6"
VERSION = 1
COST = {"quick": 20, "full": 240}


@dataclass(frozen=True)
class Config:
    """C6 settings.

    Attributes:
        train: the probed run (shared recipe :func:`recipes.mnist1d_mlp`, seed 0 as A1 and C4).
        seed: its seed; also the seed of the NTK subset and of the linearized training's data order.
        n_examples: test inputs the NTK is computed on.
        early, late: windows (fractions of the last step) whose mean velocities are compared.
        max_velocity_ratio: reproduced when late velocity <= ratio x early velocity.
        linearize_at: fractions of training at whose nearest checkpoints the model is linearized (init is
            always included; the largest fraction is the "later" point judged).
        lin_epochs: epochs of linearized / full training from each point.
        trained_drop: precondition: final test error at least this below the initial one.
    """

    train: TrainConfig = field(default_factory=lambda: recipes.mnist1d_mlp("quick"))
    seed: int = 0
    n_examples: int = 40
    early: tuple[float, float] = (0.0, 0.25)
    late: tuple[float, float] = (0.5, 1.0)
    max_velocity_ratio: float = 0.5
    linearize_at: tuple[float, ...] = (0.0625, 0.25)
    lin_epochs: int = 3
    trained_drop: float = 0.1

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        return cls(train=recipes.mnist1d_mlp("full"), n_examples=100, linearize_at=(0.0625, 0.125, 0.25, 0.5),
                   lin_epochs=10)


def window_velocity(steps: Sequence[int], distance: Sequence[float], lo: float, hi: float) -> float:
    """Mean kernel velocity over the transitions :math:`t_i \\to t_{i+1}` inside ``[lo, hi]`` (in steps).

    .. math:: \\bar v = \\sum_i d_i / \\sum_i (t_{i+1} - t_i)

    (NaN when no transition lies inside).

    Example:
        >>> window_velocity([0, 1, 3, 7], [0.25, 0.5, 1.0], 0, 3)
        0.25
    """
    s = np.asarray(steps, dtype=float)
    d = np.asarray(distance, dtype=float)
    inside = (s[:-1] >= lo - 1e-9) & (s[1:] <= hi + 1e-9)
    dt = (s[1:] - s[:-1])[inside]
    return float(d[inside].sum() / dt.sum()) if inside.any() and dt.sum() > 0 else float("nan")


def _nearest(steps: Sequence[int], target: float) -> int:
    return int(min(steps, key=lambda s: (abs(s - target), s)))


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    """Train (or reuse) the run, measure the kernel's motion and linearized training, judge, plot."""
    from ..probes import linearized_vs_full, run_kernel_velocity

    timer = Timer()
    with timer("train"):
        run_ = train_run(recipes.with_seed(config.train, config.seed), cache_dir, progress)
    bundle = run_.bundle()
    with timer("kernel velocity"):
        kv = run_kernel_velocity(run_, n_examples=config.n_examples, split="test", seed=config.seed)
    steps = [int(s) for s in kv.steps]
    T = steps[-1]
    early = window_velocity(steps, kv.distance, config.early[0] * T, config.early[1] * T)
    late = window_velocity(steps, kv.distance, config.late[0] * T, config.late[1] * T)
    rel = late / early if early > 0 else float("nan")
    progress(f"kernel velocity per step: early {early:.3g}, late {late:.3g} ({rel:.2g}x)")
    ckpts = [s for s, _ in run_.checkpoints()]
    lin_steps = sorted({ckpts[0], *(_nearest(ckpts, f * T) for f in config.linearize_at)})
    with timer("linearized training"):
        lz = linearized_vs_full(run_, lin_steps, epochs=config.lin_epochs, seed=config.seed)
    progress("linearized at steps " + ", ".join(
        f"{s}: test error {a:.3f} (full {b:.3f})" for s, a, b in zip(lin_steps, lz.linear_test_error, lz.full_test_error)))
    m: dict[str, Any] = {
        "run": run_.path.name,
        "train_error": run_.summary["train_error"],
        "test_error": run_.summary["test_error"],
        "initial_test_error": float(lz.start_test_error[0]) if lin_steps[0] == ckpts[0] else float("nan"),
        "steps": steps,
        "kernel_distance": kv.distance.tolist(),
        "velocity_step": kv.velocity_step.tolist(),
        "distance_from_init": kv.distance_from_init.tolist(),
        "distance_to_final": kv.distance_to_final.tolist(),
        "velocity_early": early,
        "velocity_late": late,
        "early_window": [config.early[0] * T, config.early[1] * T],
        "late_window": [config.late[0] * T, config.late[1] * T],
        "n_examples": config.n_examples,
        "linearization": {
            "steps": lin_steps, "epochs": config.lin_epochs,
            "linear_test_error": lz.linear_test_error.tolist(), "full_test_error": lz.full_test_error.tolist(),
            "start_test_error": lz.start_test_error.tolist(),
            "linear_train_error": lz.linear_train_error.tolist(), "full_train_error": lz.full_train_error.tolist(),
        },
        "max_velocity_ratio": config.max_velocity_ratio,
        "trained_drop": config.trained_drop,
    }
    verdict = judge(m)

    with timer("plot"):
        fig_ref = _figure(m, work_dir)
    lin = m["linearization"]
    key = {
        "kernel velocity early / late": f"{early:.2e} / {late:.2e}",
        "late / early": rel,
        f"lin. test error at step {lin_steps[0]} / {lin_steps[-1]}":
            f"{lin['linear_test_error'][0]:.3f} / {lin['linear_test_error'][-1]:.3f}",
        "lin. - full gap at init / later":
            f"{lin['linear_test_error'][0] - lin['full_test_error'][0]:.3f} / "
            f"{lin['linear_test_error'][-1] - lin['full_test_error'][-1]:.3f}",
        "kernel distance init -> final": float(kv.distance_from_init[-1]),
    }
    comparison = (
        f"The trace-NTK on {config.n_examples} test inputs moved {early:.2e} per step (cosine kernel distance) over "
        f"steps {m['early_window'][0]:.0f}-{m['early_window'][1]:.0f} and {late:.2e} per step over "
        f"{m['late_window'][0]:.0f}-{m['late_window'][1]:.0f} ({rel:.2g}x); the kernel at the end is at "
        f"distance {kv.distance_from_init[-1]:.3f} from the initial one. Trained for {config.lin_epochs} epochs with the "
        f"run's SGD settings, the model linearized at step " + ", ".join(
            f"{s} reaches test error {a:.3f} (full network from the same point {b:.3f}; start {c:.3f})"
            for s, a, b, c in zip(lin_steps, lin["linear_test_error"], lin["full_test_error"], lin["start_test_error"]))
        + f"; the run itself ends at {m['test_error']:.3f} after {T} steps."
    )
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"run": config.seed, "ntk_subset_and_linearized_order": config.seed},
        data=describe_data(bundle) + f"; NTK on {config.n_examples} test inputs, errors on the full test set",
        timings=timer.seconds,
    )


def _figure(m: Mapping[str, Any], work_dir: Path) -> Any:
    fig, axes = new_figure(3, 1, width=4.0, height=3.3)
    steps = np.asarray(m["steps"], dtype=float)
    mid = np.sqrt(np.maximum(steps[:-1], 0.5) * steps[1:])
    ax = axes[0]
    v = np.asarray(m["velocity_step"])
    ax.plot(mid, np.where(v > 0, v, np.nan), "o-", ms=3, color="C0", label="between checkpoints")
    for (lo, hi), val, c, name in ((m["early_window"], m["velocity_early"], "C3", "early mean"),
                                   (m["late_window"], m["velocity_late"], "C2", "late mean")):
        ax.hlines(val, max(lo, 0.5), hi, color=c, lw=2.5, label=f"{name} {val:.2g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("kernel velocity  d(K_t, K_t') / Δt")
    ax.set_title("NTK velocity", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1]
    x = np.maximum(steps, 0.5)
    ax.plot(x, m["distance_from_init"], "o-", ms=3, label="from init K_0")
    ax.plot(x, m["distance_to_final"], "s-", ms=3, label="to final K_T")
    ax.set_xscale("log")
    ax.set_xlabel("optimizer step (step 0 drawn at 0.5)")
    ax.set_ylabel("kernel distance")
    ax.set_title("NTK distance", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[2]
    lin = m["linearization"]
    ls = np.maximum(np.asarray(lin["steps"], dtype=float), 0.5)
    ax.plot(ls, lin["linear_test_error"], "o-", color="C1", label=f"linearized, {lin['epochs']} epochs")
    ax.plot(ls, lin["full_test_error"], "s-", color="C0", label=f"full network, {lin['epochs']} epochs")
    ax.plot(ls, lin["start_test_error"], "^:", color="0.5", label="starting point")
    ax.axhline(m["test_error"], color="k", ls="--", lw=1, label=f"run's final ({m['test_error']:.3f})")
    ax.set_xscale("log")
    ax.set_xlabel("step t linearized at (step 0 drawn at 0.5)")
    ax.set_ylabel("test error")
    ax.set_title("training the model linearized at t", fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(fig, work_dir, "ntk",
                       "Left: velocity of the empirical NTK between consecutive checkpoints, with the early and "
                       "late window means. Middle: kernel distance to the initial and final kernels. Right: test "
                       "error after training the model linearized at step t (and the full network from the same "
                       "point) with the run's SGD settings.")


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m``: ``test_error``, ``initial_test_error``, ``velocity_early``, ``velocity_late``,
    ``linearization`` (``steps``, ``linear_test_error``, ``full_test_error``), thresholds
    ``max_velocity_ratio``, ``trained_drop``."""
    drop = float(m.get("trained_drop", 0.1))
    e0, eT = float(m["initial_test_error"]), float(m["test_error"])
    checks = [Check("run trained", eT <= e0 - drop, f"test error {e0:.3f} -> {eT:.3f} (needs a drop >= {drop:g})",
                    precondition=True)]
    ve, vl, ratio = float(m["velocity_early"]), float(m["velocity_late"]), float(m["max_velocity_ratio"])
    ok = bool(np.isfinite(ve) and np.isfinite(vl) and vl <= ratio * ve)
    checks.append(Check("kernel velocity falls", ok if np.isfinite(ve) and np.isfinite(vl) else None,
                        f"mean velocity per step {ve:.3g} early vs {vl:.3g} late "
                        f"({vl / ve:.2g}x; needs <= {ratio:g}x)" if ve > 0 else f"early velocity {ve:.3g}, late {vl:.3g}"))
    lin = m["linearization"]
    s, le, fe = lin["steps"], lin["linear_test_error"], lin["full_test_error"]
    if len(s) < 2:
        checks.append(Check("linearizing later helps", None, "only one linearization point"))
    else:
        checks.append(Check("linearizing later helps", le[-1] < le[0],
                            f"linearized at step {s[-1]}: test error {le[-1]:.3f} vs {le[0]:.3f} at step {s[0]}"))
        g0, g1 = le[0] - fe[0], le[-1] - fe[-1]
        checks.append(Check("linear-vs-full gap shrinks", g1 < g0,
                            f"linearized minus full test error {g0:+.3f} at step {s[0]} vs {g1:+.3f} at step {s[-1]}"))
    return verdict_from_checks(checks)
