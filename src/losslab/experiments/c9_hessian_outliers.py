"""C9 — Hessian bulk + outliers: about C outlier eigenvalues, and the gradient lives in their subspace
(Sagun et al. 2017; Fort & Ganguli 2019; Papyan 2019).

The Hessian of the mean cross-entropy of a trained MLP on MNIST-1D (C = 10 classes; A4's clean run, shared
through the run cache) is measured on a fixed subset of the training set at several checkpoints after the
early phase (subset loss at most ``early_loss_ratio`` × the initial one), the final one included:

* the top-:math:`k` eigenvalues, :math:`k = ` ``k_factor`` × C, by Lanczos
  (:func:`losslab.curvature.lanczos_eigs`);
* at the final checkpoint the spectral density by stochastic Lanczos quadrature
  (:func:`losslab.curvature.slq_density`) for the figure;
* the overlap of the gradient :math:`g` of the same loss with the top-C eigenspace :math:`V_C`,
  :math:`\\|V_Cᵀ g\\|^2 / \\|g\\|^2`, against chance :math:`C/D` (a random direction in :math:`ℝ^D`).

**Outliers (definition).** With the top-:math:`k` eigenvalues sorted,
:math:`λ_1 ≥ … ≥ λ_k > 0`, the outliers are the eigenvalues above the largest *relative* gap,

.. math:: n_{out} = \\arg\\max_{1 ≤ i < k} \\log(λ_i / λ_{i+1}),

i.e. the bulk edge is where consecutive eigenvalues differ by the largest factor. The literature reports
C outliers (Papyan: one per class mean of the logit gradients) or C − 1 (the softmax is invariant to a
common shift of the logits); the check allows :math:`|n_{out} - C| ≤` ``band``.

Checks: precondition — the run trained and Lanczos converged; the median :math:`n_{out}` over the
measured checkpoints is within the band, and the median gradient overlap with the top-C space is
``>= overlap_factor`` × chance.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import Check, ExperimentResult, Verdict, verdict_from_checks
from .common import Timer, describe_data, evaluator, new_figure, save_figure, train_run

ID = "C9"
VERSION = 1
COST = {"quick": 15, "full": 200}

__all__ = ["ID", "VERSION", "COST", "Config", "run", "judge", "count_outliers"]


@dataclass(frozen=True)
class Config:
    """C9 settings.

    Attributes:
        train: the trained model's run (A4's clean run: :func:`recipes.poison_pair`).
        hessian_examples: training examples of the Hessian (a fixed random subset; 0: all).
        num_checkpoints: checkpoints measured after the early phase, spread over them, final included.
        early_loss_ratio: the early phase ends at the first checkpoint with subset loss ``<=`` this × the
            initial loss.
        k_factor: top-k with ``k = k_factor × C``.
        band: the check allows ``|n_out - C| <= band``.
        overlap_factor: the gradient overlap must be ``>=`` this × chance (``C / D``).
        tol: Lanczos relative tolerance.
        max_iter: Lanczos steps at most.
        slq_probes, slq_steps: stochastic Lanczos quadrature at the final checkpoint.
        seed: seed of the subset, the Lanczos start vectors and the SLQ probes.
    """

    train: TrainConfig = field(default_factory=lambda: recipes.poison_pair("quick")[0])
    hessian_examples: int = 1000
    num_checkpoints: int = 4
    early_loss_ratio: float = 0.5
    k_factor: int = 2
    band: int = 2
    overlap_factor: float = 10.0
    tol: float = 1e-3
    max_iter: int = 400
    slq_probes: int = 3
    slq_steps: int = 60
    seed: int = 0

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        return cls(train=recipes.poison_pair("full")[0], hessian_examples=4000, num_checkpoints=8, slq_probes=8,
                   slq_steps=90)


def count_outliers(eigenvalues: Sequence[float]) -> dict[str, Any]:
    """Outliers of a top-k spectrum: the eigenvalues above the largest ratio between consecutive ones.

    Args:
        eigenvalues: the top-k eigenvalues (any order; sorted descending here).

    Returns:
        ``{"n_out", "gap_ratio" (the largest λ_i/λ_{i+1}), "second_gap_ratio", "edge" (geometric middle of
        the gap)}``; a non-positive λ_{i+1} counts as an infinite gap.

    Example:
        >>> count_outliers([50, 30, 20, 10, 1.1, 1.0, 0.9])["n_out"]
        4
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=float))[::-1]
    if lam.size < 2:
        return {"n_out": int(lam.size), "gap_ratio": float("nan"), "second_gap_ratio": float("nan"),
                "edge": float("nan")}
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(lam[1:] > 0, lam[:-1] / np.where(lam[1:] > 0, lam[1:], 1.0), np.inf)
    i = int(np.argmax(ratio))
    rest = np.delete(ratio, i)
    edge = float(np.sqrt(lam[i] * lam[i + 1])) if lam[i + 1] > 0 else float(lam[i] / 2)
    return {"n_out": i + 1, "gap_ratio": float(ratio[i]), "second_gap_ratio": float(rest.max()) if rest.size else 1.0,
            "edge": edge}


def _spread(idx: list[int], k: int) -> list[int]:
    if k <= 0 or k >= len(idx):
        return idx
    pos = sorted({int(round(p)) for p in np.linspace(0, len(idx) - 1, k)})
    return [idx[p] for p in pos]


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    import torch
    import torch.nn.functional as F

    from ..curvature import HessianOperator, density_curve, gradient, lanczos_eigs, slq_density

    timer = Timer()
    with timer("train"):
        r = train_run(config.train, cache_dir, progress)
    bundle = r.bundle()
    model = r.build_model()
    C = int(bundle.num_classes)
    k = config.k_factor * C
    x, y = bundle.train.x, bundle.train.y
    if 0 < config.hessian_examples < len(x):
        g = torch.Generator().manual_seed(config.seed)
        idx = torch.sort(torch.randperm(len(x), generator=g)[: config.hessian_examples]).values
        x, y = x[idx], y[idx]
    ev = evaluator(model, (x, y))
    traj = r.trajectory()
    losses = [ev.evaluate(pt)["loss"] for _, pt in traj]
    post = [i for i, lo in enumerate(losses) if lo <= config.early_loss_ratio * losses[0]] or [len(traj) - 1]
    chosen = _spread(post, config.num_checkpoints)
    recs = []
    slq = None
    dim = 0
    for i in chosen:
        step, pt = traj[i]
        with timer("lanczos"):
            H = HessianOperator(model, F.cross_entropy, (x, y), point=pt)
            dim = H.shape[0]
            res = lanczos_eigs(H, k=k, which="LA", tol=config.tol, max_iter=config.max_iter, seed=config.seed)
            gvec = H.flatten(gradient(model, F.cross_entropy, (x, y), point=pt)).to(torch.float64)
            V = res.eigenvectors.to(torch.float64)
            gg = float(gvec @ gvec)
            proj = (V.T @ gvec.to(V.device)) ** 2
            ov_c = float(proj[:C].sum()) / gg if gg > 0 else float("nan")
            ov_k = float(proj.sum()) / gg if gg > 0 else float("nan")
        if i == len(traj) - 1:
            with timer("slq"):
                slq = slq_density(H, num_probes=config.slq_probes, lanczos_steps=config.slq_steps, seed=config.seed)
        H.release()
        ev_ = res.eigenvalues.numpy().astype(float)
        out = count_outliers(ev_)
        rec = {"step": step, "loss": losses[i], "eigenvalues": ev_.tolist(), "converged": bool(res.converged),
               "matvecs": int(res.num_matvecs), **out, "overlap_top_c": ov_c, "overlap_top_k": ov_k,
               "grad_norm": gg ** 0.5}
        recs.append(rec)
        progress(f"step {step}: top-{k} {ev_[0]:.3g} ... {ev_[-1]:.3g}; {out['n_out']} outliers (gap x"
                 f"{out['gap_ratio']:.2f}); gradient overlap with top-{C} {ov_c:.3f} (chance {C / dim:.1e})")
    m: dict[str, Any] = {"checkpoints": recs, "num_classes": C, "k": k, "dim": dim, "band": config.band,
                         "overlap_factor": config.overlap_factor, "chance": C / dim, "hessian_examples": int(len(x)),
                         "initial_loss": losses[0], "final_loss": losses[-1], "run": r.path.name}
    if slq is not None:
        last = recs[-1]
        w = slq.weights / slq.num_probes
        m["slq"] = {"nodes": slq.nodes.tolist(), "weights": slq.weights.tolist(), "num_matvecs": slq.num_matvecs,
                    "count_above_edge": float(dim * w[slq.nodes > last["edge"]].sum()),
                    "mass_below_zero": float(w[slq.nodes < 0].sum())}
    verdict = judge(m)

    with timer("plot"):
        fig, axes = new_figure(3, 1, width=4.2, height=3.3)
        ax = axes[0]
        last = recs[-1]
        if slq is not None:
            nodes = slq.nodes[slq.weights > 0]
            lo, hi = float(nodes.min()), float(max(nodes.max(), last["eigenvalues"][0]))
            grid = np.linspace(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo), 1500)
            dens = density_curve(slq, grid, sigma=0.01 * (hi - lo))
            ax.semilogy(grid, np.maximum(dens, 1e-12), color="C0", label="SLQ density")
            ax.set_ylim(max(1e-8, dens[dens > 0].min()), dens.max() * 3)
        for j, lam in enumerate(last["eigenvalues"]):
            ax.axvline(lam, color="C3" if j < last["n_out"] else "0.6", lw=0.8, alpha=0.8)
        ax.set_xlabel("eigenvalue")
        ax.set_ylabel("density")
        ax.set_title(f"step {last['step']}: SLQ density; top-{k} (red: {last['n_out']} outliers)", fontsize=9)
        ax = axes[1]
        for j, rc in enumerate(recs):
            lam = np.asarray(rc["eigenvalues"])
            ax.semilogy(np.arange(1, k + 1), lam, "o-", ms=3, color=f"C{j}",
                        label=f"step {rc['step']}: n_out={rc['n_out']}")
            ax.plot(rc["n_out"], lam[rc["n_out"] - 1], "k*", ms=8)
        ax.axvline(C + 0.5, color="0.5", ls="--", lw=0.8)
        ax.set_xlabel("rank i")
        ax.set_ylabel("λ_i")
        ax.set_title(f"top-{k} eigenvalues (*: last outlier; dashed: C = {C})", fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[2]
        steps = [rc["step"] for rc in recs]
        ax.semilogy(steps, [rc["overlap_top_c"] for rc in recs], "o-", color="C2", label=f"top-{C} subspace")
        ax.semilogy(steps, [rc["overlap_top_k"] for rc in recs], "s:", color="C2", alpha=0.6, label=f"top-{k}")
        ax.axhline(C / dim, color="k", ls="--", lw=0.8, label=f"chance C/D = {C / dim:.1e}")
        ax.set_xlabel("step")
        ax.set_ylabel("‖V_kᵀ g‖² / ‖g‖²")
        ax.set_title("gradient overlap with the top eigenspace", fontsize=9)
        ax.legend(fontsize=7)
        fig_ref = save_figure(fig, work_dir, "hessian_outliers",
                              "Left: spectral density (stochastic Lanczos quadrature) of the Hessian at the final "
                              "checkpoint with its top eigenvalues (red: outliers by the largest-gap rule). Middle: "
                              "top eigenvalues at several checkpoints. Right: fraction of the gradient in the top "
                              "eigenspace against chance.")
    s = _summaries(recs)
    key = {
        "outliers (median over checkpoints)": f"{s['median_n_out']:g} (C = {C})",
        "outliers per checkpoint": ", ".join(str(rc["n_out"]) for rc in recs),
        f"gradient overlap with top-{C} (median)": s["median_overlap"],
        "overlap / chance": s["median_overlap"] / (C / dim),
        "largest gap λ_n/λ_n+1 (final)": recs[-1]["gap_ratio"],
    }
    comparison = (
        f"Hessian of the mean cross-entropy on {len(x)} training examples (D = {dim} parameters) at "
        f"{len(recs)} checkpoints after the early phase (steps {', '.join(str(rc['step']) for rc in recs)}; subset "
        f"loss {losses[0]:.3f} → {losses[-1]:.3f}): the largest relative gap in the top-{k} spectrum leaves "
        + ", ".join(str(rc["n_out"]) for rc in recs) + f" outliers (median {s['median_n_out']:g}, C = {C}; gap "
        "factors " + ", ".join(f"{rc['gap_ratio']:.2f}" for rc in recs) + " vs next-largest "
        + ", ".join(f"{rc['second_gap_ratio']:.2f}" for rc in recs) + "). The gradient has "
        + ", ".join(f"{rc['overlap_top_c']:.2f}" for rc in recs) + f" of its squared norm in the top-{C} "
        f"eigenspace (chance {C / dim:.1e})."
        + (f" SLQ at the final checkpoint puts {m['slq']['count_above_edge']:.1f} eigenvalues above the gap."
           if "slq" in m else "")
    )
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"run": config.train.seeds.seed, "subset/lanczos/slq": config.seed},
        data=describe_data(bundle) + f"; Hessian on {len(x)} training examples", timings=timer.seconds,
        notes=["Outliers = eigenvalues above the largest ratio between consecutive top-k eigenvalues; as the loss "
               "approaches zero the outliers shrink toward the bulk and the gap blurs (see the middle panel)."],
    )


def _summaries(recs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    return {"median_n_out": float(np.median([rc["n_out"] for rc in recs])),
            "median_overlap": float(np.median([rc["overlap_top_c"] for rc in recs]))}


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m["checkpoints"]``: records with ``step``, ``loss``, ``n_out``, ``overlap_top_c``, ``converged``;
    ``num_classes``, ``band``, ``overlap_factor``, ``chance``, ``initial_loss``, ``final_loss``."""
    recs = list(m["checkpoints"])
    C, band = int(m["num_classes"]), int(m["band"])
    chance, fac = float(m["chance"]), float(m["overlap_factor"])
    s = _summaries(recs)
    bad = [rc["step"] for rc in recs if not rc["converged"]]
    checks = [
        Check("run trained", m["final_loss"] <= 0.5 * m["initial_loss"],
              f"subset loss {m['initial_loss']:.3f} -> {m['final_loss']:.3f} (needs <= 0.5x)", precondition=True),
        Check("Lanczos converged", not bad, "all checkpoints" if not bad else f"not converged at steps {bad}",
              precondition=True),
    ]
    n = s["median_n_out"]
    checks.append(Check("about C outliers", abs(n - C) <= band,
                        f"median {n:g} outliers over checkpoints (" + ", ".join(str(rc["n_out"]) for rc in recs)
                        + f") vs C = {C} (allowed {C - band}..{C + band})"))
    ov = s["median_overlap"]
    checks.append(Check("gradient in the top-C space", ov >= fac * chance,
                        f"median overlap {ov:.3g} = {ov / chance:.3g}x chance {chance:.2e} (needs >= {fac:g}x)"))
    return verdict_from_checks(checks)
