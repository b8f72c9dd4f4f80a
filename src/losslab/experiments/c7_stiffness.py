"""C7 — Stiffness: gradients of same-class examples align, and the input distance over which they align
shrinks with training (Fort, Nowak, Jastrzebski & Narayanan 2019, "Stiffness: a new perspective on
generalization in neural networks").

With per-example gradients :math:`g_i = \\nabla_\\theta \\ell(f_\\theta(x_i), y_i)` of ``n_per_class``
training examples per class (:func:`losslab.probes.stiffness`),

.. math::

    S^{\\cos}_{ij} = \\frac{g_i \\cdot g_j}{\\lVert g_i \\rVert \\lVert g_j \\rVert}, \\qquad
    S^{\\mathrm{sign}}_{ij} = \\operatorname{sign}(g_i \\cdot g_j),

averaged over same-class pairs :math:`i \\ne j` (within) and different-class pairs (between). The
*stiffness length* :math:`\\xi` (Fort et al.'s dynamical critical length: the input distance below which
an update on one example still helps its neighbours) is measured on the same-class pairs as the input
distance at which the least-squares line through their cosine stiffness vs input distance
:math:`\\lVert x_i - x_j \\rVert` reaches zero (:func:`stiffness_length`; every same-class pair enters, no
binning). Measured at several checkpoints of the shared SGD MLP on MNIST-1D
(:func:`recipes.mnist1d_mlp`, one run per seed, the runs A1, C4 and C6 use).

Pre-registered criteria (:data:`CRITERIA`), each on a 95% t-interval over seeds: at the trained solution
within-class minus between-class stiffness > 0 (cosine and sign), and :math:`\\xi_{trained} / \\xi_{init} < 1`.
Negative control: the same gradients with the probed examples' class labels randomly permuted, so that
"same class" is a grouping independent of the gradients (within = between in expectation).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import ExperimentResult, Verdict
from .common import (
    describe_data, label_axes, new_figure, row_result, RowConfig, same_seeds, save_figure, Timer, train_run,
)
from .criteria import Control, Criteria, Criterion, error_drop, per_seed, run_trained, SEED_PLAN_2026_12_04, t_interval

ID = "C7"
VERSION = 2
COST = {"quick": 25, "full": 200}

CRITERIA = Criteria(
    preconditions=(
        run_trained("initial minus final train error of the probed run",
                    "stiffness 'at the trained solution' and 'with training' need a run that learned its training set"),
    ),
    claims=(
        Criterion("within > between (cos)", "within-class minus between-class mean cosine stiffness at the trained "
                  "solution", ">", 0.0, "Fort et al. 2019: gradients of same-class examples align more than those of "
                  "different classes (direction only)"),
        Criterion("within > between (sign)", "within-class minus between-class mean sign stiffness at the trained "
                  "solution", ">", 0.0, "Fort et al. 2019, with their sign definition of stiffness (direction only)"),
        Criterion("stiffness length shrinks", "xi(trained) / xi(init), xi = input distance where the least-squares "
                  "line of same-class cosine stiffness vs input distance reaches 0", "<", 1.0,
                  "Fort et al. 2019: the dynamical critical length (the input distance over which stiffness stays "
                  "positive) shrinks during training; 1 = no change"),
    ),
    control="the same gradients, pairs and statistics with the probed examples' class labels randomly permuted (a "
            "grouping independent of the gradients, so within-class = between-class in expectation); same checks. An "
            "untrained network is no control here: the cross-entropy gradient carries the label, so same-class "
            "gradients already align at initialization (measured at step 0 and shown)",
    seeds="5 independent runs (init and data order from each seed; the seed also draws the probed examples and the "
          "control's permutation) in quick and in full",
    registered="2026-12-04",
    changes=(
        "criterion changed on 2026-12-04 because 'the stiffness length shrinks with training' (the second half of "
        "the claim) was context only (issue 14); it is decisive now, measured as the zero crossing of a least-squares "
        "line through all same-class pairs (the old half-distance was relative to the nearest distance bin, which "
        "held 5 pairs in the quick run)",
        SEED_PLAN_2026_12_04,
    ),
)


@dataclass(frozen=True)
class Config(RowConfig):
    """C7 settings.

    Attributes:
        train: the probed runs (shared recipe :func:`recipes.mnist1d_mlp`).
        seeds: one run per seed; each seed also draws the example sample and the control's permutation.
        n_per_class: training examples drawn per class.
        fractions: fractions of training at whose nearest checkpoints stiffness is measured (0 = init and 1 =
            the trained solution, which are judged, are always included; the others are shown).
        n_bins: input-distance bins of the figure (equal width, common to all checkpoints).
    """

    train: TrainConfig = field(default_factory=lambda: recipes.mnist1d_mlp("quick"))
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    n_per_class: int = 30
    fractions: tuple[float, ...] = (0.0, 0.1, 1.0)
    n_bins: int = 10

    @classmethod
    def full(cls) -> "Config":
        return cls(train=recipes.mnist1d_mlp("full"), seeds=(0, 1, 2, 3, 4), n_per_class=60,
                   fractions=(0.0, 0.01, 0.03, 0.1, 0.3, 1.0))


def pair_distances(x: np.ndarray) -> np.ndarray:
    """``(N, N)`` Euclidean distances between the flattened rows of ``x``."""
    xf = np.asarray(x, dtype=float).reshape(len(x), -1)
    sq = (xf ** 2).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * xf @ xf.T, 0.0))


def stiffness_length(S: np.ndarray, labels: np.ndarray, D: np.ndarray) -> dict[str, float]:
    """The stiffness length of same-class pairs: fit :math:`S_{ij} \\approx a + b\\,d_{ij}` by least squares
    over all pairs :math:`i < j` with :math:`y_i = y_j`, and return ``{"length": -a/b, "intercept": a,
    "slope": b}``; the length is ``inf`` when the line does not fall (:math:`b \\ge 0`) and NaN when it is
    below zero already at distance 0 (:math:`a \\le 0`).

    Example:
        >>> D = np.array([[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [3.0, 2.0, 0.0]])
        >>> S = 0.8 - 0.2 * D          # stiffness reaches 0 at distance 4
        >>> round(stiffness_length(S, np.array([0, 0, 0]), D)["length"], 6)
        4.0
    """
    S = np.asarray(S, dtype=float)
    lab = np.asarray(labels)
    iu = np.triu_indices(len(S), k=1)
    same = (lab[:, None] == lab[None, :])[iu]
    d, s = np.asarray(D, dtype=float)[iu][same], S[iu][same]
    if d.size < 2 or np.ptp(d) == 0:
        return {"length": float("nan"), "intercept": float("nan"), "slope": float("nan")}
    b, a = np.polyfit(d, s, 1)
    length = float("nan") if a <= 0 else (float("inf") if b >= 0 else float(-a / b))
    return {"length": length, "intercept": float(a), "slope": float(b)}


def by_distance(S: np.ndarray, labels: np.ndarray, D: np.ndarray, edges: np.ndarray) -> dict[str, list[float]]:
    """Mean of ``S`` over pairs ``i < j`` per input-distance bin (distances ``D``), separately for same- and
    different-class pairs.

    Returns ``{"same": [...], "different": [...], "same_count": [...], "different_count": [...]}`` (NaN for
    an empty bin).

    Example:
        >>> S = np.array([[1.0, 0.5, -0.2], [0.5, 1.0, 0.1], [-0.2, 0.1, 1.0]])
        >>> D = pair_distances(np.array([[0.0], [1.0], [3.0]]))
        >>> r = by_distance(S, np.array([0, 0, 1]), D, np.array([0.0, 1.5, 3.5]))
        >>> r["same"], r["different"]
        ([0.5, nan], [nan, -0.05])
    """
    S = np.asarray(S, dtype=float)
    lab = np.asarray(labels)
    iu = np.triu_indices(len(S), k=1)
    dv, sv, same = np.asarray(D, dtype=float)[iu], S[iu], (lab[:, None] == lab[None, :])[iu]
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


def _stats(cos: np.ndarray, sign: np.ndarray, labels: np.ndarray, D: np.ndarray) -> dict[str, float]:
    from ..probes.stiffness import within_between

    wc, bc = within_between(cos, labels)
    ws, bs = within_between(sign, labels)
    ln = stiffness_length(cos, labels, D)
    return {"within_cos": wc, "between_cos": bc, "within_sign": ws, "between_sign": bs, "length": ln["length"],
            "length_intercept": ln["intercept"], "length_slope": ln["slope"]}


def _ratio(a: float, b: float) -> float:
    return float(a / b) if np.isfinite(a) and np.isfinite(b) and b > 0 else float("nan")


def _summary(seed: int, train_error: float, init_error: float, first: Mapping[str, float],
             last: Mapping[str, float], **extra: Any) -> dict[str, Any]:
    return {"seed": int(seed), "train_error": float(train_error), "initial_train_error": float(init_error),
            "gap_cos": last["within_cos"] - last["between_cos"], "gap_sign": last["within_sign"] - last["between_sign"],
            "length_init": first["length"], "length_final": last["length"],
            "length_ratio": _ratio(last["length"], first["length"]), **extra}


def _measure_run(seed: int, config: Config, cache_dir: Path, progress: Callable[[str], None],
                 timer: Timer) -> tuple[dict[str, Any], dict[str, Any], Any]:
    from ..probes import stiffness

    with timer("train"):
        run_ = train_run(recipes.with_seed(config.train, seed), cache_dir, progress)
    bundle = run_.bundle()
    traj = run_.trajectory()
    steps_all = [s for s, _ in traj]
    T = steps_all[-1]
    chosen = sorted({min(steps_all, key=lambda s: (abs(s - f * T), s)) for f in (0.0, *config.fractions, 1.0)})
    points = dict(traj)
    model = run_.build_model()
    perm_rng = np.random.default_rng(int(seed))
    cks, ctrl_cks = [], []
    D = edges = labels = perm = None
    with timer("stiffness"):
        for step in chosen:
            r = stiffness(model, bundle.train, point=points[step], n_per_class=config.n_per_class, seed=seed,
                          n_bins=config.n_bins)
            if D is None:  # the same sample at every checkpoint (drawn from the seed)
                labels = np.asarray(r.labels)
                D = pair_distances(bundle.train.x[r.indices].cpu().numpy())
                edges = np.linspace(0.0, float(D.max()), config.n_bins + 1)
                perm = labels[perm_rng.permutation(len(labels))]
            st = _stats(r.cos, r.sign, labels, D)
            cks.append({"step": int(step), **st, "class_cos": r.class_cos.tolist(),
                        "by_distance": by_distance(r.cos, labels, D, edges)})
            if step in (chosen[0], chosen[-1]):
                ctrl_cks.append({"step": int(step), **_stats(r.cos, r.sign, perm, D)})
    init_err = next((float(e["train_error"]) for e in run_.metrics if "train_error" in e), float("nan"))
    rec = _summary(seed, run_.summary["train_error"], init_err, cks[0], cks[-1], run=run_.path.name,
                   test_error=float(run_.summary["test_error"]), checkpoints=cks, distance_edges=edges.tolist(),
                   classes=np.unique(labels).tolist())
    ctrl = _summary(seed, run_.summary["train_error"], init_err, ctrl_cks[0], ctrl_cks[-1], checkpoints=ctrl_cks)
    f = cks[-1]
    progress(f"seed {seed}: trained within/between {f['within_cos']:.3f}/{f['between_cos']:.3f} (cos), "
             f"{f['within_sign']:.3f}/{f['between_sign']:.3f} (sign); stiffness length {rec['length_init']:.3g} -> "
             f"{rec['length_final']:.3g}; permuted-label control gap {ctrl['gap_cos']:.3g} (cos)")
    return rec, ctrl, bundle


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    """Train (or reuse) the runs, measure stiffness along them and its permuted-label control, judge, plot."""
    timer = Timer()
    recs, ctrls, bundle = [], [], None
    for seed in config.seeds:
        rec, ctrl, bundle = _measure_run(seed, config, cache_dir, progress, timer)
        recs.append(rec)
        ctrls.append(ctrl)
    m: dict[str, Any] = {"runs": recs, "control": {"runs": ctrls}, "n_per_class": config.n_per_class}
    verdict = judge(m)
    control = Control(CRITERIA.control, judge(m["control"]))

    with timer("plot"):
        fig_ref = _figure(m, work_dir)
    fmt = lambda iv: f"{iv.mean:.3g} [{iv.lo:.3g}, {iv.hi:.3g}]"  # noqa: E731
    iv = {k: t_interval(per_seed(recs, k)) for k in ("gap_cos", "gap_sign")}
    lr = [r["length_ratio"] for r in recs]
    lr_txt = fmt(t_interval(lr)) if all(np.isfinite(lr)) else ", ".join(f"{x:.3g}" for x in lr)
    civ = {k: t_interval(per_seed(ctrls, k)) for k in ("gap_cos", "gap_sign")}
    key = {
        "within - between (cos), trained, mean [95% CI]": fmt(iv["gap_cos"]),
        "within - between (sign), trained, mean [95% CI]": fmt(iv["gap_sign"]),
        "stiffness length trained / init, mean [95% CI]": lr_txt,
        "control (permuted labels) within - between (cos)": fmt(civ["gap_cos"]),
    }
    row = lambda rs, k, spec=".3f": ", ".join(format(r[k], spec) for r in rs)  # noqa: E731
    init = [r["checkpoints"][0] for r in recs]
    return row_result(ID, CRITERIA, config, m, verdict, control, key, fig_ref, timer,
        seeds=same_seeds(
            config.seeds, "init and data order of each run, its probed examples and the control's label permutation "
                          "derive from its seed"),
        data=describe_data(bundle) + f"; {config.n_per_class} training examples per class",
        comparison=(
            f"On {config.n_per_class} training examples per class of {len(recs)} runs (train error "
            f"{row(recs, 'train_error')}), "
            f"at the trained solution same-class minus different-class gradient cosine is {fmt(iv['gap_cos'])} (95% "
            f"t-interval over seeds; per seed {row(recs, 'gap_cos')}) and sign stiffness {fmt(iv['gap_sign'])}; at "
            f"initialization the cosine gap is already "
            + ", ".join(format(c["within_cos"] - c["between_cos"], ".3f") for c in init)
            + ". The same-class stiffness length (zero of the fitted line) goes from "
              f"{row(recs, 'length_init', '.3g')} at "
            f"init to {row(recs, 'length_final', '.3g')} trained (ratio {lr_txt}; claim < 1). With the class labels "
            f"permuted the cosine gap is {fmt(civ['gap_cos'])} and the sign gap {fmt(civ['gap_sign'])}."
        ),
    )


def _figure(m: Mapping[str, Any], work_dir: Path) -> Any:
    fig, axes = new_figure(4, 1, width=3.7, height=3.4)
    recs = m["runs"]
    r0 = recs[0]
    f, i0 = r0["checkpoints"][-1], r0["checkpoints"][0]
    ax = axes[0]
    C = np.asarray(f["class_cos"])
    lim = float(np.nanmax(np.abs(C)))
    im = ax.imshow(C, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(C)), r0["classes"], fontsize=7)
    ax.set_yticks(range(len(C)), r0["classes"], fontsize=7)
    label_axes(ax, xlabel="class of j", ylabel="class of i",
               title=f"class stiffness (cos), seed {r0['seed']}, step {f['step']}", title_size=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax = axes[1]
    edges = np.asarray(r0["distance_edges"])
    centers = 0.5 * (edges[1:] + edges[:-1])
    for rec, c, name in ((i0, "C2", "init"), (f, "C4", "trained")):
        bd = rec["by_distance"]
        ax.plot(centers, bd["same"], "o-", ms=3, color=c, label=f"{name}: same class (ξ = {rec['length']:.3g})")
        ax.plot(centers, bd["different"], "s:", ms=3, color=c, label=f"{name}: different class")
        if np.isfinite(rec["length_slope"]):
            ax.plot(edges[[0, -1]], rec["length_intercept"] + rec["length_slope"] * edges[[0, -1]], "--", lw=0.9,
                    color=c)
    ax.axhline(0, color="k", lw=0.6)
    label_axes(ax, xlabel="input distance ||x_i - x_j||", ylabel="mean cosine stiffness",
               title=f"stiffness vs distance, seed {r0['seed']} (dashed: fit)", title_size=9, legend=6)
    ax = axes[2]
    for i, r in enumerate(recs):
        st = np.maximum(np.asarray([c["step"] for c in r["checkpoints"]], dtype=float), 0.5)
        ax.plot(st, [c["within_cos"] - c["between_cos"] for c in r["checkpoints"]], "o-", ms=3, color="C0",
                alpha=0.7, label="cos, each seed" if i == 0 else None)
        ax.plot(st, [c["within_sign"] - c["between_sign"] for c in r["checkpoints"]], "s:", ms=3, color="C1",
                alpha=0.7, label="sign, each seed" if i == 0 else None)
    for i, r in enumerate(m["control"]["runs"]):
        st = np.maximum(np.asarray([c["step"] for c in r["checkpoints"]], dtype=float), 0.5)
        ax.plot(st, [c["within_cos"] - c["between_cos"] for c in r["checkpoints"]], "x--", ms=5, color="C3",
                label="control (permuted labels), cos" if i == 0 else None)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xscale("log")
    label_axes(ax, xlabel="optimizer step (step 0 drawn at 0.5)", ylabel="within - between stiffness",
               title="class gap along training", title_size=9, legend=6)
    ax = axes[3]
    for j, (name, rs, color) in enumerate((("runs", recs, "C0"), ("control (permuted)", m["control"]["runs"], "C3"))):
        for i, r in enumerate(rs):
            y = [r["length_init"], r["length_final"]]
            ax.plot([j * 2.5, j * 2.5 + 1], [v if np.isfinite(v) else np.nan for v in y], "o-", color=color,
                    alpha=0.8, label=f"{name}, each seed" if i == 0 else None)
    ax.set_xticks([0, 1, 2.5, 3.5], ["init", "trained", "init", "trained"], fontsize=8)
    label_axes(ax, ylabel="stiffness length ξ (input distance)", title="same-class stiffness length", title_size=9,
               legend=6)
    return save_figure(fig, work_dir, "stiffness",
                       "(1) mean cosine stiffness between examples of class i and class j at the trained solution. "
                       "(2) stiffness vs input distance for same- and different-class pairs at init and trained, with "
                       "the least-squares lines whose zero is the stiffness length ξ. (3) within- minus between-class "
                       "stiffness along training for each seed, and for the permuted-label control. (4) ξ at init and "
                       "trained for each seed (and the control's 'same-class' pairs).")


def judge(m: Mapping[str, Any]) -> Verdict:
    """Judge ``m["runs"]`` (one record per seed with ``seed``, ``train_error``, ``initial_train_error``,
    ``gap_cos``, ``gap_sign``, ``length_ratio``) by :data:`CRITERIA`; the control is judged by calling this
    on ``m["control"]`` (the same shape)."""
    recs = m["runs"]
    return CRITERIA.judge_records(recs, {"run trained": error_drop(recs), "within > between (cos)": "gap_cos",
                                         "within > between (sign)": "gap_sign",
                                         "stiffness length shrinks": "length_ratio"})
