"""C3 — Linear mode connectivity emerges early in training: instability analysis (Frankle, Dziugaite,
Roy & Carbin 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis").

A parent network is trained for :math:`k` steps; two children copied from it (weights and optimizer
state) are trained to the end of the schedule with different data orders, and the test-error barrier on
the straight line between them is measured (:func:`losslab.connect.instability`, ``num_points`` points),

.. math::

    B(k) = \\max_\\alpha \\mathcal{E}\\bigl((1-\\alpha)\\theta^{(1)}_T + \\alpha\\,\\theta^{(2)}_T\\bigr)
    - \\tfrac12\\bigl(\\mathcal{E}(\\theta^{(1)}_T) + \\mathcal{E}(\\theta^{(2)}_T)\\bigr),

for a few spawn steps :math:`k`. The network is called stable at :math:`k` when :math:`B(k) < 0.02`
(Frankle et al.'s threshold). The regime is the survey's pilot: the zoo 1-D CNN on MNIST-1D, SGD with
momentum 0.9 at a constant learning rate of 0.2, batch 128, 20 epochs (640 steps); with several
``seeds`` (parents with different init and data order) the barrier per ``k`` is their mean. As a contrast
the small MLP of :func:`recipes.mnist1d_mlp` is spawned at :math:`k = 0` only (Frankle et al. find small
networks stable at initialization).

Check: the CNN's barrier at the last :math:`k` is at most ``max_ratio`` times the barrier at
:math:`k = 0`. Inconclusive when the CNN is already stable at :math:`k = 0` (not the regime the finding is
about) or a child did not train. Reported as context: the step from which every swept :math:`k` is
stable, and the MLP's barrier at :math:`k = 0`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import Check, ExperimentResult, Verdict, verdict_from_checks
from .common import (
    Timer,
    describe_data,
    new_figure,
    run_lock,
    save_figure,
    train_config,
)

ID = "C3"
VERSION = 1
COST = {"quick": 30, "full": 600}


def mnist1d_cnn(profile: str = "quick") -> TrainConfig:
    """The zoo 1-D CNN (32 channels, 3 conv layers) on MNIST-1D, SGD lr 0.2 constant, momentum 0.9, batch
    128, 20 epochs: unstable at initialization (the survey's C3 pilot). The same for both profiles."""
    return train_config(dataset="mnist1d", model="cnn1d", optimizer="sgd", lr=0.2, momentum=0.9, batch_size=128,
                        epochs=20, checkpoints="none")


@dataclass(frozen=True)
class Config:
    """C3 settings.

    Attributes:
        train: the parent's training config (:func:`mnist1d_cnn`).
        seeds: parent seeds (init and data order); barriers are averaged over them per ``k``.
        spawn_steps: the swept ``k`` (optimizer steps; must include 0).
        contrast: the small MLP spawned at ``k = 0`` only (``None`` skips it).
        num_points: points on each linear path between the children.
        threshold: stability threshold on the test-error barrier (Frankle et al.: 0.02).
        max_ratio: reproduced when barrier at the last ``k`` <= max_ratio x barrier at ``k = 0``.
        max_child_error: precondition: every child's test error at most this (training did not diverge).
    """

    train: TrainConfig = field(default_factory=lambda: mnist1d_cnn("quick"))
    seeds: tuple[int, ...] = (0,)
    spawn_steps: tuple[int, ...] = (0, 64, 256)
    contrast: TrainConfig | None = field(default_factory=lambda: recipes.mnist1d_mlp("quick"))
    num_points: int = 30
    threshold: float = 0.02
    max_ratio: float = 0.25
    max_child_error: float = 0.5

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        return cls(train=mnist1d_cnn("full"), seeds=(0, 1, 2), spawn_steps=(0, 1, 4, 16, 64, 256),
                   contrast=recipes.mnist1d_mlp("full"))


def _sweep(cfg: TrainConfig, ks: tuple[int, ...], config: Config, out: Path) -> Any:
    from ..connect import instability

    with run_lock(out / ".locks" / "instability.lock"):
        return instability(cfg, ks, out=out, threshold=config.threshold, num=config.num_points, splits=("test",))


def _record(res: Any, seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "k": [int(k) for k in res.spawn_steps],
        "barrier": res.barriers("error").tolist(),
        "barrier_interp": res.barriers("error", kind="interp").tolist(),
        "loss_barrier": res.barriers("loss").tolist(),
        "children_test_error": [[float(p.barriers["test"]["error"]["start"]), float(p.barriers["test"]["error"]["end"])]
                                for p in res.paths],
        "alpha": res.paths[0].alphas.tolist(),
        "path_test_error": [np.asarray(p.metrics["test"]["error"], dtype=float).tolist() for p in res.paths],
        "total_steps": int(res.total_steps),
        "reused": bool(res.meta.get("reused", False)),
    }


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    """Run (or reuse) the instability sweeps, judge, plot."""
    from ..train import build_bundle

    timer = Timer()
    out = Path(cache_dir) / "instability"
    ks = tuple(sorted(int(k) for k in config.spawn_steps))
    recs = []
    with timer("cnn sweep"):
        for seed in config.seeds:
            progress(f"CNN seed {seed}: spawning children at k = {', '.join(map(str, ks))}")
            res = _sweep(recipes.with_seed(config.train, seed), ks, config, out)
            rec = _record(res, seed)
            recs.append(rec)
            progress(f"CNN seed {seed}: test-error barrier " + ", ".join(
                f"k={k}: {b:.3f}" for k, b in zip(rec["k"], rec["barrier"])))
    mlp = None
    if config.contrast is not None:
        with timer("mlp contrast"):
            res = _sweep(recipes.with_seed(config.contrast, config.seeds[0]), (0,), config, out)
            mlp = _record(res, config.seeds[0])
        progress(f"MLP contrast: test-error barrier at k=0 {mlp['barrier'][0]:.3f}")
    mean = np.mean([r["barrier"] for r in recs], axis=0)
    m: dict[str, Any] = {
        "k": list(ks),
        "barrier_mean": mean.tolist(),
        "cnn": recs,
        "mlp": mlp,
        "total_steps": recs[0]["total_steps"],
        "threshold": config.threshold,
        "max_ratio": config.max_ratio,
        "max_child_error": config.max_child_error,
    }
    verdict = judge(m)

    with timer("plot"):
        fig_ref = _figure(m, work_dir)
    stable = _stable_from(m["k"], m["barrier_mean"], config.threshold)
    key = {
        "CNN barrier k=0": float(mean[0]),
        f"CNN barrier k={ks[-1]}": float(mean[-1]),
        "CNN stable (< 2%) from k": "never" if stable is None else stable,
        "MLP barrier k=0": "-" if mlp is None else mlp["barrier"][0],
    }
    bundle = build_bundle(config.train)
    ch = [e for r in recs for pair in r["children_test_error"] for e in pair]
    comparison = (
        f"Children of the 1-D CNN (SGD lr {config.train.optim.lr:g}, momentum {config.train.optim.momentum:g}, "
        f"{m['total_steps']} steps) spawned at k = {', '.join(map(str, ks))} have test-error barriers "
        f"{', '.join(f'{b:.3f}' for b in mean)}"
        + (f" (mean of {len(recs)} parents)" if len(recs) > 1 else "")
        + f"; children's test errors {min(ch):.3f}-{max(ch):.3f}. "
        + ("It is never stable (barrier < 2%) in the sweep. " if stable is None else f"Stable (< 2%) from k = {stable}. ")
        + ("" if mlp is None else
           f"The small MLP's children spawned at k = 0 have a barrier of {mlp['barrier'][0]:.3f} "
           f"({'stable' if mlp['barrier'][0] < config.threshold else 'unstable'} at initialization).")
    )
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"parents": list(config.seeds), "children": "order seeds: parent order seed + 1000003 x (1, 2)"},
        data=describe_data(bundle) + "; barriers on the full test set", timings=timer.seconds,
    )


def _stable_from(ks: list[int], barriers: list[float], threshold: float) -> int | None:
    out = None
    for k, b in zip(reversed(ks), reversed(barriers)):
        if b < threshold:
            out = int(k)
        else:
            break
    return out


def _figure(m: Mapping[str, Any], work_dir: Path) -> Any:
    fig, axes = new_figure(2, 1, width=4.4, height=3.4)
    ax = axes[0]
    ks = np.asarray(m["k"], dtype=float)
    for i, r in enumerate(m["cnn"]):
        ax.plot(ks, r["barrier"], "o-" if len(m["cnn"]) == 1 else "o:", ms=4, color="C0",
                alpha=1.0 if len(m["cnn"]) == 1 else 0.4, label="1-D CNN" if i == 0 else None)
    if len(m["cnn"]) > 1:
        ax.plot(ks, m["barrier_mean"], "o-", color="C0", lw=2, label="1-D CNN (mean)")
    if m.get("mlp"):
        ax.plot([0], m["mlp"]["barrier"], "s", ms=7, color="C1", label="small MLP (k = 0 only)")
    ax.axhline(m["threshold"], color="k", ls="--", lw=1, label=f"stability threshold {m['threshold']:g}")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(-0.3, ks.max() * 1.6)
    ax.set_xlabel("spawn step k")
    ax.set_ylabel("test-error barrier between children")
    ax.set_title(f"instability analysis ({m['total_steps']} training steps)", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1]
    r = m["cnn"][0]
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    for i, (k, e) in enumerate(zip(r["k"], r["path_test_error"])):
        ax.plot(r["alpha"], e, "-", color=cmap(i / max(1, len(r["k"]) - 1)), label=f"CNN, k = {k}")
    if m.get("mlp"):
        ax.plot(m["mlp"]["alpha"], m["mlp"]["path_test_error"][0], "--", color="C1", label="MLP, k = 0")
    ax.set_xlabel("α  (θ = (1-α)·θ1 + α·θ2)")
    ax.set_ylabel("test error")
    ax.set_title(f"linear path between the two children (seed {r['seed']})", fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(fig, work_dir, "instability",
                       "Left: test-error barrier between two children spawned at step k and trained with different "
                       "data orders; dashed: Frankle et al.'s stability threshold. Right: test error along the "
                       "straight line between the children for each k.")


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m``: ``k`` (increasing, starting at 0), ``barrier_mean`` per k, ``cnn`` (records with
    ``children_test_error``), optional ``mlp`` (``barrier``), thresholds ``threshold``, ``max_ratio``,
    ``max_child_error``."""
    ks, b = list(m["k"]), [float(x) for x in m["barrier_mean"]]
    thr, ratio, emax = float(m["threshold"]), float(m["max_ratio"]), float(m["max_child_error"])
    errs = [e for r in m["cnn"] for pair in r["children_test_error"] for e in pair]
    checks = [
        Check("children trained", bool(errs) and all(np.isfinite(e) and e <= emax for e in errs),
              f"children's test errors {min(errs):.3f}-{max(errs):.3f} (needs <= {emax:g})", precondition=True),
        Check("sweep starts at k = 0", len(ks) >= 2 and ks[0] == 0, f"spawn steps {ks}", precondition=True),
    ]
    if len(ks) >= 2 and ks[0] == 0:
        checks.append(Check("unstable at k = 0", np.isfinite(b[0]) and b[0] > thr,
                            f"test-error barrier {b[0]:.3f} at k = 0 (needs > {thr:g} for the regime)",
                            precondition=True))
        checks.append(Check("barrier falls with k", bool(np.isfinite(b[-1]) and b[-1] <= ratio * b[0]),
                            f"test-error barrier {b[0]:.3f} at k = 0 vs {b[-1]:.3f} at k = {ks[-1]} "
                            f"({b[-1] / b[0]:.0%} of it; needs <= {ratio:.0%})" if b[0] > 0 else
                            f"barrier {b[0]:.3f} at k = 0, {b[-1]:.3f} at k = {ks[-1]}"))
        st = _stable_from(ks, b, thr)
        checks.append(Check("stable by the last k", b[-1] < thr,
                            "never stable (< " + f"{thr:g}) in the sweep" if st is None else
                            f"stable (barrier < {thr:g}) from k = {st}", decisive=False))
    mlp = m.get("mlp")
    if mlp:
        mb = float(mlp["barrier"][0])
        checks.append(Check("small MLP stable at k = 0", mb < thr, f"MLP test-error barrier at k = 0: {mb:.3f}",
                            decisive=False))
    return verdict_from_checks(checks)
