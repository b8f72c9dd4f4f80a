"""C10 — Large-scale structure: low-loss regions are radially extended, in a shell of radii, and optimization
is drawn to them (Fort & Jastrzebski 2019, arXiv 1906.04724, "Large Scale Structure of Neural Network Loss
Landscapes").

Their phenomenological model: the low-loss set is a union of high-dimensional *wedges* — long in most
directions, including the radial one, narrow in a few — at a characteristic distance from the origin, and
optimization is drawn towards it. Measured here on a small ReLU MLP on digits (64-64-10, D = 4810):

1. **Radial profiles** (:func:`losslab.subspace.radial_profile`): the loss along the ray from the origin through a
   trained solution :math:`\\theta^*`, :math:`L(r\\,\\hat\\theta^*)` for :math:`r \\in [0, 3\\lVert\\theta^*\\rVert]`, and
   along the ray through its initialization. The *shell* of a ray is
   :math:`\\{r : L(r) \\le \\texttt{shell\\_factor} \\cdot \\min_r L\\}` (test loss: at large ``r`` the misclassified
   test points dominate, so it rises again; train loss on a perfectly fitted set would keep falling).
2. **Random subspaces with and without the origin** (:func:`losslab.subspace.train_subspace`): from the
   initialization rescaled to :math:`k\\,\\theta_0` (``start_radii``), SGD trains either in the affine subspace
   :math:`\\theta = k\\theta_0 + Pz` (does not contain the origin; the radius can only grow by
   :math:`\\lVert Pz\\rVert`) or in the linear subspace spanned by :math:`\\theta_0` and ``d - 1`` random directions
   (``origin=True``: contains the origin, the radius is one of the ``d`` trained coordinates). SGD, not Adam:
   Adam moves every coordinate by about ``lr`` per step, which caps how far the radial coordinate can travel.

Checks:

* precondition: the full-space solutions trained (train error ``<= max_train_error``);
* decisive: along the ray through each solution the test loss is low only in a bounded shell: the shell
  excludes both ``r = 0`` (loss :math:`\\ln C`) and the largest radius;
* decisive: subspaces containing the origin are drawn to one shell: their final radii, from start radii
  spanning a factor ``max(start)/min(start)``, agree within ``cluster_ratio`` (max / min);
* decisive: from the largest start radius the subspace containing the origin reaches a test accuracy at least
  ``min_gain`` higher than the one that does not (mean over seeds);
* context: the ray through the initialization never gets low (random directions miss the wedges); the test
  error along the solution's ray stays at the solution's from a small radius on (radially extended);
  at the default radius the two kinds of subspace do about equally well.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..config import TrainConfig
from ._base import Check, ExperimentResult, Verdict, verdict_from_checks
from .common import (
    Timer,
    describe_data,
    new_figure,
    save_figure,
    train_config,
    train_run,
)
from .d1_intrinsic_dim import fmax, fmin, log_ticks, mlp_factory, nanmean_rows

ID = "C10"
VERSION = 1
COST = {"quick": 20, "full": 240}


def digits_small_mlp(epochs: int = 20) -> TrainConfig:
    """Adam MLP 64-64-10 on digits (lr 0.003, batch 128), no intermediate checkpoints (init and final kept)."""
    return train_config(dataset="digits", model="mlp", model_kwargs={"width": 64, "depth": 1}, optimizer="adam",
                        lr=0.003, epochs=epochs, checkpoints="none")


@dataclass(frozen=True)
class Config:
    """C10 settings.

    Attributes:
        train: the full-space solutions (one per seed of ``seeds``).
        seeds: seeds of the solutions.
        num_radii, max_factor: radial grid: ``num_radii`` points in ``[0, max_factor * ||theta*||]``.
        shell_factor: the shell is where the loss is ``<= shell_factor x`` its minimum along the ray.
        max_train_error: precondition on the solutions.
        d: subspace dimension.
        start_radii: starts ``k * theta_0`` (multiples of the init).
        sub_seeds: seeds of the subspace runs (init, projection, data order).
        epochs, lr, momentum, batch_size: subspace training (SGD).
        cluster_ratio: decisive: final radii of the origin runs agree within this factor.
        min_gain: decisive: accuracy gain of the origin subspace at the largest start radius.
    """

    train: TrainConfig = field(default_factory=digits_small_mlp)
    seeds: tuple[int, ...] = (0,)
    num_radii: int = 41
    max_factor: float = 3.0
    shell_factor: float = 2.0
    max_train_error: float = 0.1
    d: int = 50
    start_radii: tuple[float, ...] = (0.25, 1.0, 4.0, 16.0)
    sub_seeds: tuple[int, ...] = (0, 1)
    epochs: int = 20
    lr: float = 0.5
    momentum: float = 0.9
    batch_size: int = 128
    cluster_ratio: float = 2.5
    min_gain: float = 0.05

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        return cls(train=digits_small_mlp(40), seeds=(0, 1, 2), num_radii=81, max_factor=4.0,
                   start_radii=(0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0), sub_seeds=(0, 1, 2, 3))


def shell(radii: Sequence[float], loss: Sequence[float], factor: float) -> dict[str, Any]:
    """The low-loss shell of a radial profile: the contiguous run of radii around the minimum with
    ``loss <= factor * min``; ``bounded`` when it excludes the first and the last radius.

    Example:
        >>> s = shell([0, 1, 2, 3, 4], [2.3, 0.5, 0.2, 0.3, 0.9], 2.0)
        >>> s["r_in"], s["r_out"], s["bounded"]
        (2.0, 3.0, True)
    """
    r = np.asarray(radii, dtype=float)
    v = np.asarray(loss, dtype=float)
    k = int(np.nanargmin(v))
    level = factor * float(v[k])
    lo = k
    while lo - 1 >= 0 and v[lo - 1] <= level:
        lo -= 1
    hi = k
    while hi + 1 < len(v) and v[hi + 1] <= level:
        hi += 1
    return {"r_min": float(r[k]), "loss_min": float(v[k]), "level": level, "r_in": float(r[lo]), "r_out": float(r[hi]),
            "loss_first": float(v[0]), "loss_last": float(v[-1]), "bounded": bool(lo > 0 and hi < len(v) - 1)}


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    """Radial profiles through trained solutions and inits; subspace training with / without the origin."""

    from .. import params
    from ..subspace import radial_profile, train_subspace

    timer = Timer()
    from . import recipes

    sols = []
    bundle = None
    for s in config.seeds:
        with timer("train"):
            run_ = train_run(recipes.with_seed(config.train, s), cache_dir, progress)
        bundle = run_.bundle()
        model = run_.build_model()
        traj = run_.trajectory()
        names = [k for k, v in model.named_parameters() if v.requires_grad]
        init = {k: traj[0][1][k] for k in names}
        final = {k: traj[-1][1][k] for k in names}
        nrm = float(params.flatten(final).norm())
        radii = np.linspace(0.0, config.max_factor * nrm, config.num_radii)
        rec: dict[str, Any] = {"seed": s, "norm": nrm, "init_norm": float(params.flatten(init).norm()),
                               "radii": radii.tolist(), "train_error": run_.summary["train_error"],
                               "test_error": run_.summary["test_error"], "run": run_.path.name}
        with timer("radial"):
            for ray, pt in (("solution", final), ("init", init)):
                for split in ("train", "test"):
                    p = radial_profile(model, getattr(bundle, split), pt, radii=radii)
                    rec[f"{ray}_{split}_loss"] = np.asarray(p.metrics["loss"], dtype=float).tolist()
                    rec[f"{ray}_{split}_error"] = (1.0 - np.asarray(p.metrics["accuracy"], dtype=float)).tolist()
        sh = shell(radii, rec["solution_test_loss"], config.shell_factor)
        rec["shell"] = sh
        rec["shell_train"] = shell(radii, rec["solution_train_loss"], config.shell_factor)
        progress(f"seed {s}: test-loss shell r/|θ*| in [{sh['r_in'] / nrm:.2f}, {sh['r_out'] / nrm:.2f}] "
                 f"(min {sh['loss_min']:.3f} at {sh['r_min'] / nrm:.2f}); init ray min loss "
                 f"{min(rec['init_test_loss']):.3f}")
        sols.append(rec)

    assert bundle is not None
    make = mlp_factory(bundle, config.train.model.model_kwargs.get("width", 64),
                       config.train.model.model_kwargs.get("depth", 1))
    ks, ss = list(config.start_radii), list(config.sub_seeds)
    acc = {o: np.full((len(ks), len(ss)), np.nan) for o in ("origin", "affine")}
    fin = {o: np.full((len(ks), len(ss)), np.nan) for o in ("origin", "affine")}
    with timer("subspace"):
        for j, s in enumerate(ss):
            model = make(s)
            theta0 = params.flatten({k: v.detach() for k, v in model.named_parameters() if v.requires_grad})
            rho = float(theta0.norm())
            for i, k in enumerate(ks):
                for o in ("affine", "origin"):
                    r = train_subspace(model, bundle, config.d, seed=104729 * int(s) + config.d, order_seed=int(s),
                                       theta0=theta0 * float(k), origin=(o == "origin"), epochs=config.epochs,
                                       lr=config.lr, optimizer="sgd", momentum=config.momentum,
                                       batch_size=config.batch_size)
                    acc[o][i, j] = r.test_accuracy if not r.diverged else math.nan
                    fin[o][i, j] = r.meta["final_norm"] / rho if not r.diverged else math.nan
            progress(f"subspace seed {s}: test acc with origin " +
                     " ".join(f"{v:.2f}" for v in acc["origin"][:, j]) + ", without " +
                     " ".join(f"{v:.2f}" for v in acc["affine"][:, j]) + f" (start radii {ks})")
    sub = {"start_radii": ks, "seeds": ss, "d": config.d,
           "accuracy": {o: v.tolist() for o, v in acc.items()},
           "final_radius": {o: v.tolist() for o, v in fin.items()}}
    m = {"solutions": sols, "subspace": sub, "shell_factor": config.shell_factor,
         "max_train_error": config.max_train_error, "cluster_ratio": config.cluster_ratio,
         "min_gain": config.min_gain, "num_classes": bundle.num_classes}
    verdict = judge(m)

    with timer("plot"):
        fig_ref = _figure(m, work_dir)
    s0 = sols[0]
    sh = s0["shell"]
    am = {o: nanmean_rows(v) for o, v in sub["accuracy"].items()}
    fm = {o: nanmean_rows(v) for o, v in sub["final_radius"].items()}
    key = {
        "test-loss shell (r / |θ*|)": f"{sh['r_in'] / s0['norm']:.2f} .. {sh['r_out'] / s0['norm']:.2f}",
        "test loss at r=0 / min / r_max": f"{sh['loss_first']:.2f} / {sh['loss_min']:.3f} / {sh['loss_last']:.2f}",
        "init ray: min test loss": min(s0["init_test_loss"]),
        f"final radius, origin runs (x init norm, starts {ks[0]:g}..{ks[-1]:g})":
            f"{fmin(fm['origin']):.1f} .. {fmax(fm['origin']):.1f}",
        f"test acc from {ks[-1]:g}x: with / without origin": f"{am['origin'][-1]:.3f} / {am['affine'][-1]:.3f}",
    }
    i1 = int(np.argmin(np.abs(np.log(np.asarray(ks)))))
    comparison = (
        f"Along the ray from the origin through the trained MLP (|θ*| = {s0['norm']:.1f}), the test loss is "
        f"{sh['loss_first']:.2f} (= ln {bundle.num_classes}) at r = 0, falls to {sh['loss_min']:.3f} at r = "
        f"{sh['r_min'] / s0['norm']:.2f}|θ*| and is within {config.shell_factor:g}x of that only for r/|θ*| in "
        f"[{sh['r_in'] / s0['norm']:.2f}, {sh['r_out'] / s0['norm']:.2f}] (a shell; {sh['loss_last']:.2f} at "
        f"{config.max_factor:g}|θ*|); the ray through the init never drops below {min(s0['init_test_loss']):.2f}. "
        f"SGD in random {config.d}-dim subspaces containing the origin ends at radii "
        f"{fmin(fm['origin']):.1f}-{fmax(fm['origin']):.1f} x the init norm from starts "
        f"{ks[0]:g}-{ks[-1]:g}x; without the origin at {fmin(fm['affine']):.1f}-{fmax(fm['affine']):.1f}x. "
        f"Test accuracy from {ks[-1]:g}x: {am['origin'][-1]:.3f} with the origin vs {am['affine'][-1]:.3f} without "
        f"(from {ks[i1]:g}x: {am['origin'][i1]:.3f} vs {am['affine'][i1]:.3f})."
    )
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"solutions": list(config.seeds), "subspace": ss,
               "note": "subspace seed s: init s, projection 104729 s + d, data order s"},
        data=describe_data(bundle) + "; radial losses on the full train and test sets", timings=timer.seconds,
    )


def _figure(m: Mapping[str, Any], work_dir: Path) -> Any:
    fig, axes = new_figure(3, 1, width=3.9, height=3.4)
    s0 = m["solutions"][0]
    x = np.asarray(s0["radii"]) / s0["norm"]
    ax = axes[0]
    ax.plot(x, s0["solution_test_loss"], "-", color="C3", label="ray through θ*: test")
    ax.plot(x, s0["solution_train_loss"], "--", color="C0", label="ray through θ*: train")
    ax.plot(x, s0["init_test_loss"], ":", color="0.4", label="ray through θ0: test")
    sh = s0["shell"]
    ax.axvspan(sh["r_in"] / s0["norm"], sh["r_out"] / s0["norm"], color="C3", alpha=0.12, label="test-loss shell")
    ax.axvline(1.0, color="k", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("r / |θ*|")
    ax.set_ylabel("loss")
    ax.set_title("loss along rays from the origin", fontsize=10)
    ax.legend(fontsize=7)
    sub = m["subspace"]
    ks = sub["start_radii"]
    for ax, what, ylabel in ((axes[1], "accuracy", "test accuracy"), (axes[2], "final_radius", "final |θ| / init norm")):
        for o, col, lab in (("origin", "C2", "contains the origin"), ("affine", "C1", "through θ0 only")):
            v = np.asarray(sub[what][o], dtype=float)
            for j in range(v.shape[1]):
                ax.plot(ks, v[:, j], color=col, alpha=0.3, lw=0.8)
            ax.plot(ks, nanmean_rows(v), "o-", color=col, label=lab)
        log_ticks(ax, ks)
        ax.set_xlabel("start radius / init norm")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    axes[1].set_title(f"SGD in random {sub['d']}-dim subspaces", fontsize=10)
    axes[2].plot(ks, ks, color="0.6", lw=0.8, ls=":", label="no radial motion")
    axes[2].axhspan(sh["r_in"] / s0["init_norm"], sh["r_out"] / s0["init_norm"], color="C3", alpha=0.12,
                    label="test-loss shell of θ* (left)")
    axes[2].set_yscale("log")
    axes[2].legend(fontsize=7)
    axes[2].set_title("where training ends", fontsize=10)
    return save_figure(fig, work_dir, "wedges",
                       "Left: loss along the ray from the origin through a trained solution θ* (shaded: the test-loss "
                       "shell, within 2x of its minimum) and through its initialization θ0. Middle/right: training in "
                       "random subspaces from rescaled inits; subspaces containing the origin can move radially and are "
                       "drawn to one shell of radii, affine ones started far out stay there.")


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m["solutions"]``: records with ``seed``, ``train_error``, ``radii``, ``solution_test_loss``,
    ``init_test_loss``, ``solution_test_error``, ``test_error``; ``m["subspace"]``: ``start_radii`` and
    ``accuracy`` / ``final_radius`` as ``{"origin"|"affine": (n_start, n_seeds)}``; thresholds ``shell_factor``,
    ``max_train_error``, ``cluster_ratio``, ``min_gain``; ``num_classes``."""
    fac, max_err = float(m["shell_factor"]), float(m["max_train_error"])
    checks = []
    for r in m["solutions"]:
        checks.append(Check(f"seed {r['seed']} trained", r["train_error"] <= max_err,
                            f"train error {r['train_error']:.3f} (needs <= {max_err:g})", precondition=True))
    for r in m["solutions"]:
        sh = shell(r["radii"], r["solution_test_loss"], fac)
        n = r["radii"][-1] / max(1e-12, r["norm"])
        checks.append(Check(f"seed {r['seed']} loss shell", sh["bounded"],
                            f"test loss {sh['loss_first']:.2f} at r=0, min {sh['loss_min']:.3f} at r/|θ*| = "
                            f"{sh['r_min'] / r['norm']:.2f}, {sh['loss_last']:.2f} at {n:.2f}; <= {fac:g}x min only for "
                            f"r/|θ*| in [{sh['r_in'] / r['norm']:.2f}, {sh['r_out'] / r['norm']:.2f}]"))
    sub = m["subspace"]
    ks = np.asarray(sub["start_radii"], dtype=float)
    fo = nanmean_rows(sub["final_radius"]["origin"])
    fa = nanmean_rows(sub["final_radius"]["affine"])
    spread_o = fmax(fo) / fmin(fo)
    spread_a = fmax(fa) / fmin(fa)
    span = float(ks.max() / ks.min())
    cr = float(m["cluster_ratio"])
    checks.append(Check("drawn to one shell (with origin)", None if math.isnan(spread_o) else spread_o <= cr,
                        f"final radii {fmin(fo):.2f}..{fmax(fo):.2f} x init norm (spread {spread_o:.2f}x, "
                        f"needs <= {cr:g}x) from starts spanning {span:g}x; without the origin spread "
                        f"{spread_a:.2f}x"))
    ao = nanmean_rows(sub["accuracy"]["origin"])
    aa = nanmean_rows(sub["accuracy"]["affine"])
    gain = float(ao[-1] - aa[-1])
    g = float(m["min_gain"])
    checks.append(Check("origin helps from far out", None if math.isnan(gain) else gain >= g,
                        f"test accuracy from {ks[-1]:g}x: {ao[-1]:.3f} with the origin vs {aa[-1]:.3f} without "
                        f"(gain {gain:+.3f}, needs >= {g:g})"))
    lnc = math.log(float(m.get("num_classes", 10)))
    for r in m["solutions"]:
        mn = float(np.min(r["init_test_loss"]))
        checks.append(Check(f"seed {r['seed']} init ray misses", mn >= 0.9 * lnc,
                            f"min test loss along the ray through θ0 {mn:.3f} (ln C = {lnc:.3f})", decisive=False))
        err = np.asarray(r["solution_test_error"], dtype=float)
        radii = np.asarray(r["radii"], dtype=float)
        ok = err <= r["test_error"] + 0.02
        first = int(np.argmax(ok)) if ok.any() else len(ok)
        ext = bool(ok[first:].all()) if ok.any() else False
        checks.append(Check(f"seed {r['seed']} low error radially extended", ext,
                            f"test error <= solution's + 0.02 for all r/|θ*| >= "
                            f"{radii[min(first, len(radii) - 1)] / r['norm']:.2f} up to {radii[-1] / r['norm']:.2f}",
                            decisive=False))
    i1 = int(np.argmin(np.abs(np.log(ks))))
    checks.append(Check("similar at the default radius", bool(abs(ao[i1] - aa[i1]) < g),
                        f"from {ks[i1]:g}x: {ao[i1]:.3f} with vs {aa[i1]:.3f} without the origin", decisive=False))
    return verdict_from_checks(checks)
