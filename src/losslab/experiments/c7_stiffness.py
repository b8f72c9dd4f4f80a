"""C7 — Stiffness: gradients of same-class examples align (Fort, Nowak, Jastrzebski & Narayanan 2019,
"Stiffness: a new perspective on generalization in neural networks").

With per-example gradients :math:`g_i = \\nabla_\\theta \\ell(f_\\theta(x_i), y_i)` of ``n_per_class``
training examples per class (:func:`losslab.probes.stiffness`),

.. math::

    S^{\\cos}_{ij} = \\frac{g_i \\cdot g_j}{\\lVert g_i \\rVert \\lVert g_j \\rVert}, \\qquad
    S^{\\mathrm{sign}}_{ij} = \\operatorname{sign}(g_i \\cdot g_j),

averaged over same-class pairs :math:`i \\ne j` (within) and different-class pairs (between), and binned
by the input distance :math:`\\lVert x_i - x_j \\rVert` separately for same- and different-class pairs.
Measured at several checkpoints of the shared SGD MLP on MNIST-1D (:func:`recipes.mnist1d_mlp`, the
run A1, C4 and C6 use).

Check: at the trained solution, within-class stiffness exceeds between-class stiffness for both the
cosine and the sign definitions. Fort et al.'s second observation — the input distance over which
stiffness decays shrinks with training — is reported as context (it does not decide the verdict;
measured as the input distance at which same-class cosine stiffness falls to half its value for the
nearest pairs, :func:`half_distance`). Inconclusive when the run did not train.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import Check, ExperimentResult, Verdict, verdict_from_checks
from .common import Timer, describe_data, new_figure, save_figure, train_run

ID = "C7"
VERSION = 1
COST = {"quick": 10, "full": 120}


@dataclass(frozen=True)
class Config:
    """C7 settings.

    Attributes:
        train: the probed run (shared recipe :func:`recipes.mnist1d_mlp`).
        seed: its seed, also the seed of the example sample.
        n_per_class: training examples drawn per class.
        fractions: fractions of training at whose nearest checkpoints stiffness is measured (0 = init,
            1 = the final solution, which is judged).
        n_bins: input-distance bins (equal width, common to all checkpoints).
        trained_drop: precondition: final train error at least this below the initial one.
    """

    train: TrainConfig = field(default_factory=lambda: recipes.mnist1d_mlp("quick"))
    seed: int = 0
    n_per_class: int = 30
    fractions: tuple[float, ...] = (0.0, 0.02, 0.1, 0.3, 1.0)
    n_bins: int = 10
    trained_drop: float = 0.1

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        return cls(train=recipes.mnist1d_mlp("full"), n_per_class=60, fractions=(0.0, 0.01, 0.03, 0.1, 0.3, 1.0))


def by_distance(S: np.ndarray, labels: np.ndarray, x: np.ndarray, edges: np.ndarray) -> dict[str, list[float]]:
    """Mean of ``S`` over pairs ``i < j`` per input-distance bin, separately for same- and different-class pairs.

    Returns ``{"same": [...], "different": [...], "same_count": [...], "different_count": [...]}`` (NaN for
    an empty bin).

    Example:
        >>> S = np.array([[1.0, 0.5, -0.2], [0.5, 1.0, 0.1], [-0.2, 0.1, 1.0]])
        >>> r = by_distance(S, np.array([0, 0, 1]), np.array([[0.0], [1.0], [3.0]]), np.array([0.0, 1.5, 3.5]))
        >>> r["same"], r["different"]
        ([0.5, nan], [nan, -0.05])
    """
    S = np.asarray(S, dtype=float)
    lab = np.asarray(labels)
    xf = np.asarray(x, dtype=float).reshape(len(S), -1)
    d = np.sqrt(np.maximum(((xf[:, None, :] - xf[None, :, :]) ** 2).sum(-1), 0.0))
    iu = np.triu_indices(len(S), k=1)
    dv, sv, same = d[iu], S[iu], (lab[:, None] == lab[None, :])[iu]
    nb = len(edges) - 1
    idx = np.clip(np.searchsorted(edges, dv, side="right") - 1, 0, nb - 1)
    out: dict[str, list[float]] = {}
    for name, mask in (("same", same), ("different", ~same)):
        cnt = np.bincount(idx[mask], minlength=nb)
        tot = np.bincount(idx[mask], weights=sv[mask], minlength=nb)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan).tolist()
        out[f"{name}_count"] = cnt.tolist()
    return out


def half_distance(centers: np.ndarray, values: np.ndarray) -> float:
    """Input distance at which a decaying stiffness curve first falls to half its value in the nearest
    non-empty bin (linear interpolation between bin centres; NaN when it never does or starts <= 0).

    Example:
        >>> half_distance(np.array([1.0, 2.0, 3.0]), np.array([0.8, 0.6, 0.2]))
        2.5
    """
    c = np.asarray(centers, dtype=float)
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    c, v = c[ok], v[ok]
    if v.size < 2 or v[0] <= 0:
        return float("nan")
    half = 0.5 * v[0]
    below = np.nonzero(v <= half)[0]
    if not below.size:
        return float("nan")
    j = int(below[0])
    return float(c[j - 1] + (v[j - 1] - half) / (v[j - 1] - v[j]) * (c[j] - c[j - 1]))


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    """Train (or reuse) the run, measure stiffness along it, judge, plot."""
    from ..probes import stiffness

    timer = Timer()
    with timer("train"):
        run_ = train_run(recipes.with_seed(config.train, config.seed), cache_dir, progress)
    bundle = run_.bundle()
    traj = run_.trajectory()
    steps_all = [s for s, _ in traj]
    T = steps_all[-1]
    chosen = sorted({min(steps_all, key=lambda s: (abs(s - f * T), s)) for f in config.fractions})
    points = dict(traj)
    model = run_.build_model()
    x_all = bundle.train.x
    recs = []
    edges = None
    with timer("stiffness"):
        for step in chosen:
            r = stiffness(model, points[step], bundle.train, n_per_class=config.n_per_class, seed=config.seed,
                          n_bins=config.n_bins, distance_edges=edges)
            if edges is None:  # the same sample at every checkpoint: the first result's bins fit all
                edges = r.distance_edges
            xs = x_all[r.indices].cpu().numpy()
            bd = {k: by_distance(S, r.labels, xs, edges) for k, S in (("cos", r.cos), ("sign", r.sign))}
            centers = 0.5 * (np.asarray(edges)[1:] + np.asarray(edges)[:-1])
            rec = {"step": int(step), **{k: float(r.summary[k]) for k in (
                "within_cos", "between_cos", "within_sign", "between_sign", "zero_crossing_distance",
                "mean_grad_norm")}, "same_class_half_distance": half_distance(centers, np.asarray(bd["cos"]["same"])),
                "class_cos": r.class_cos.tolist(), "distance_cos": r.distance_cos.tolist(),
                "distance_count": r.distance_count.tolist(), "by_distance": bd}
            recs.append(rec)
            progress(f"step {step}: stiffness within {rec['within_cos']:.3f} vs between {rec['between_cos']:.3f} (cos), "
                     f"{rec['within_sign']:.3f} vs {rec['between_sign']:.3f} (sign)")
    init_err = None
    for e in run_.metrics:
        if "train_error" in e:
            init_err = float(e["train_error"])
            break
    m: dict[str, Any] = {
        "run": run_.path.name,
        "train_error": run_.summary["train_error"],
        "test_error": run_.summary["test_error"],
        "initial_train_error": init_err,
        "checkpoints": recs,
        "distance_edges": np.asarray(edges).tolist(),
        "classes": np.unique(bundle.train.y.cpu().numpy()).tolist(),
        "n_per_class": config.n_per_class,
        "trained_drop": config.trained_drop,
    }
    verdict = judge(m)

    with timer("plot"):
        fig_ref = _figure(m, work_dir)
    f, i0 = recs[-1], recs[0]
    key = {
        "within / between (cos), trained": f"{f['within_cos']:.3f} / {f['between_cos']:.3f}",
        "within / between (sign), trained": f"{f['within_sign']:.3f} / {f['between_sign']:.3f}",
        "within / between (cos), init": f"{i0['within_cos']:.3f} / {i0['between_cos']:.3f}",
        "same-class stiffness length init -> trained":
            f"{i0['same_class_half_distance']:.3g} -> {f['same_class_half_distance']:.3g}",
    }
    comparison = (
        f"On {config.n_per_class} training examples per class, at the trained solution (step {f['step']}, train error "
        f"{m['train_error']:.3f}) the gradients of same-class pairs have mean cosine {f['within_cos']:.3f} vs "
        f"{f['between_cos']:.3f} for different-class pairs (sign stiffness {f['within_sign']:.3f} vs "
        f"{f['between_sign']:.3f}). At init: {i0['within_cos']:.3f} vs {i0['between_cos']:.3f} (cos). Stiffness of all "
        f"pairs reaches zero at input distance {i0['zero_crossing_distance']:.3g} at init and "
        f"{f['zero_crossing_distance']:.3g} at the end (Fort et al. report it shrinking with training)."
    )
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"run": config.seed, "example_sample": config.seed},
        data=describe_data(bundle) + f"; {config.n_per_class} training examples per class",
        timings=timer.seconds,
    )


def _figure(m: Mapping[str, Any], work_dir: Path) -> Any:
    fig, axes = new_figure(3, 1, width=4.0, height=3.4)
    recs = m["checkpoints"]
    f, i0 = recs[-1], recs[0]
    ax = axes[0]
    C = np.asarray(f["class_cos"])
    lim = float(np.nanmax(np.abs(C)))
    im = ax.imshow(C, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(C)), m["classes"], fontsize=7)
    ax.set_yticks(range(len(C)), m["classes"], fontsize=7)
    ax.set_xlabel("class of j")
    ax.set_ylabel("class of i")
    ax.set_title(f"class stiffness (cos), step {f['step']}", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax = axes[1]
    edges = np.asarray(m["distance_edges"])
    centers = 0.5 * (edges[1:] + edges[:-1])
    for rec, c, name in ((i0, "C7", "init"), (f, "C3", "trained")):
        bd = rec["by_distance"]["cos"]
        ax.plot(centers, bd["same"], "o-", ms=3, color=c, label=f"{name}: same class")
        ax.plot(centers, bd["different"], "s--", ms=3, color=c, label=f"{name}: different class")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("input distance ||x_i - x_j||")
    ax.set_ylabel("mean cosine stiffness")
    ax.set_title("stiffness vs input distance", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[2]
    st = np.maximum(np.asarray([r["step"] for r in recs], dtype=float), 0.5)
    for key, ls, name in (("cos", "-", "cos"), ("sign", ":", "sign")):
        ax.plot(st, [r[f"within_{key}"] for r in recs], "o" + ls, ms=4, color="C0", label=f"within class ({name})")
        ax.plot(st, [r[f"between_{key}"] for r in recs], "s" + ls, ms=4, color="C1", label=f"between classes ({name})")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("optimizer step (step 0 drawn at 0.5)")
    ax.set_ylabel("mean stiffness")
    ax.set_title("within vs between along training", fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(fig, work_dir, "stiffness",
                       "Left: mean cosine stiffness between examples of class i and class j at the trained solution. "
                       "Middle: stiffness vs input distance for same-class and different-class pairs, at init and "
                       "trained. Right: within- and between-class stiffness (cosine, sign) along training.")


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m``: ``checkpoints`` (records with ``step``, ``within_cos``, ``between_cos``, ``within_sign``,
    ``between_sign``, ``same_class_half_distance``; the last one is the trained solution), ``train_error``,
    ``initial_train_error``, ``trained_drop``."""
    recs = m["checkpoints"]
    f, i0 = recs[-1], recs[0]
    drop = float(m.get("trained_drop", 0.1))
    e0, eT = m.get("initial_train_error"), float(m["train_error"])
    checks = [Check("run trained", e0 is not None and eT <= float(e0) - drop,
                    f"train error {float('nan') if e0 is None else float(e0):.3f} -> {eT:.3f} (needs a drop >= {drop:g})",
                    precondition=True)]
    for key in ("cos", "sign"):
        w, b = float(f[f"within_{key}"]), float(f[f"between_{key}"])
        checks.append(Check(f"within > between ({key})", w > b,
                            f"step {f['step']}: within-class {w:.3f} vs between-class {b:.3f}"))
    z0, z1 = float(i0["same_class_half_distance"]), float(f["same_class_half_distance"])
    checks.append(Check("stiffness length shrinks", (z1 < z0) if np.isfinite(z0) and np.isfinite(z1) else None,
                        f"same-class cosine stiffness halves at input distance {z0:.3g} at step {i0['step']} vs "
                        f"{z1:.3g} at step {f['step']}", decisive=False))
    return verdict_from_checks(checks)
