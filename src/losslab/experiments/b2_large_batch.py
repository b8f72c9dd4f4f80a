"""B2 — Large batches find sharp minima that generalize worse (Keskar et al. 2017), with Dinh et al.'s
(2017) reparametrization caveat.

Two MLPs from the same initialization are trained with Adam (Keskar et al.'s optimizer) on the same data:
small batches (SB) and large batches (LB, the full training set here). They are compared **matched**: on
each trajectory the first checkpoint whose training loss is ``<=`` :math:`L^* = \\max(L_{SB}, L_{LB})`
(the final losses) is taken, so both are compared at the same training loss, both with ~0 training error
(else the verdict is ``inconclusive``). At the two points:

* :math:`\\lambda_{max}` of the Hessian of the training loss (:func:`losslab.curvature.lambda_max`);
* Keskar et al.'s ε-sharpness :math:`100\\,(\\max_{|δ_i| ≤ ε(|θ_i|+1)} L(θ+δ) - L(θ)) / (1 + L(θ))`, the
  maximum found by L-BFGS-B in the full space (:func:`losslab.curvature.epsilon_sharpness`);
* the test error (the generalization gap is reported; at this scale it does not decide the verdict);
* the 1-D parametric plot :math:`f(a\\,θ_{LB} + (1-a)\\,θ_{SB})`, :math:`a ∈ [-1, 2]`, train and test.

**Dinh et al.'s caveat.** For a ReLU MLP, :math:`T_α: (W_1, b_1, W_2) ↦ (αW_1, αb_1, W_2/α)` leaves the
function unchanged (exactly, for :math:`α` a power of two) but rescales the Hessian blocks by
:math:`α^{-2}` and :math:`α^2`, so :math:`\\lambda_{max}` of the *same function* can be made as large as
wished. The adaptive (ASAM) sharpness :math:`\\max_{\\|δ/|θ|\\|_2 ≤ ρ} L(θ+δ) - L(θ)`
(:func:`losslab.curvature.adaptive_sharpness`, η = 0) is invariant under :math:`T_α`. Shown on the SB
solution: same outputs, λmax changed, adaptive sharpness unchanged.

Checks: LB's λmax and ε-sharpness exceed SB's (preconditions: both fit, losses matched); the caveat's
three facts hold.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import Check, ExperimentResult, Verdict, verdict_from_checks
from .common import Timer, describe_data, evaluator, interpolate, new_figure, save_figure, train_config, train_run

ID = "B2"
VERSION = 1
COST = {"quick": 35, "full": 300}

__all__ = ["ID", "VERSION", "COST", "Config", "run", "judge", "keskar_pair", "rescale_relu_layers"]


def keskar_pair(profile: str = "quick") -> tuple[TrainConfig, TrainConfig]:
    """(small-batch, large-batch) Adam MLPs on scikit-learn digits (1347 train / 450 test), same init.

    64-256-256-10, Adam lr 1e-3. SB: batch 32, 30 epochs, a checkpoint every epoch. LB: the full training
    set per step (batch 0), 250 epochs (steps), a checkpoint every 5. ``"full"``: 512 wide, 40 and 400
    epochs.
    """
    if profile not in ("quick", "full"):
        raise ValueError(profile)
    width, e_sb, e_lb = (256, 30, 250) if profile == "quick" else (512, 40, 400)
    kw = dict(dataset="digits", model="mlp", model_kwargs={"width": width, "depth": 2}, optimizer="adam", lr=1e-3)
    return (train_config(batch_size=32, epochs=e_sb, checkpoints="epoch:1", **kw),
            train_config(batch_size=0, epochs=e_lb, checkpoints="epoch:5", **kw))


@dataclass(frozen=True)
class Config:
    """B2 settings.

    Attributes:
        sb, lb: the small- and large-batch runs (:func:`keskar_pair`).
        seeds: seeds of the pairs (init, data order); each pair must show the effect.
        fit_tolerance: both matched points must have training error ``<=`` this.
        match_rtol: precondition: the two matched training losses differ by ``<=`` this, relative.
        epsilon: ε of the ε-sharpness box (Keskar et al.: 1e-3 and 5e-4).
        epsilon_steps: L-BFGS-B iterations (Keskar et al.: 10).
        num_points: points of the parametric plot on a ∈ [-1, 2].
        rescale: α of Dinh et al.'s rescaling (a power of two keeps the function bit-exact).
        rho: radius of the adaptive sharpness (η = 0, p = 2).
        rho_steps: ascent steps of the adaptive sharpness.
        output_rtol, lambda_change, adaptive_rtol: the caveat's checks: outputs equal to ``output_rtol``
            (relative to the largest logit), λmax changed by a factor ``>= lambda_change``, adaptive
            sharpness equal to ``adaptive_rtol`` (relative).
    """

    sb: TrainConfig = field(default_factory=lambda: keskar_pair("quick")[0])
    lb: TrainConfig = field(default_factory=lambda: keskar_pair("quick")[1])
    seeds: tuple[int, ...] = (0,)
    fit_tolerance: float = 0.01
    match_rtol: float = 0.25
    epsilon: float = 1e-3
    epsilon_steps: int = 10
    num_points: int = 31
    rescale: float = 0.25
    rho: float = 0.5
    rho_steps: int = 10
    output_rtol: float = 1e-5
    lambda_change: float = 2.0
    adaptive_rtol: float = 1e-4

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        sb, lb = keskar_pair("full")
        return cls(sb=sb, lb=lb, seeds=(0, 1, 2), num_points=61, epsilon_steps=20, rho_steps=20)


def rescale_relu_layers(point: Mapping[str, Any], alpha: float) -> dict[str, Any]:
    """Dinh et al.'s :math:`T_α`: the first weight matrix and its bias times α, the next weight matrix / α.

    For ``Linear -> ReLU -> Linear`` (the first two weight tensors of an MLP point, in order) the function
    is unchanged since :math:`\\mathrm{relu}(αz) = α\\,\\mathrm{relu}(z)` for :math:`α > 0`.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    weights = [k for k, v in point.items() if v.dim() == 2]
    if len(weights) < 2:
        raise ValueError("rescaling needs two weight matrices (an MLP with a hidden layer)")
    w1, w2 = weights[0], weights[1]
    b1 = w1[: -len("weight")] + "bias" if w1.endswith("weight") else None
    out = {k: v.clone() for k, v in point.items()}
    out[w1] = point[w1] * alpha
    if b1 in out:
        out[b1] = point[b1] * alpha
    out[w2] = point[w2] / alpha
    return out


def _matched(run: Any, ev: Any, target: float) -> tuple[int, dict[str, Any], dict[str, float]]:
    for step, pt in run.trajectory():
        met = ev.evaluate(pt)
        if met["loss"] <= target * (1 + 1e-6):
            return step, pt, met
    step, pt = run.trajectory()[-1]
    return step, pt, ev.evaluate(pt)


def _pair(config: Config, seed: int, cache_dir: Path, progress: Callable[[str], None], timer: Timer,
          ) -> tuple[dict[str, Any], Any]:
    import torch
    import torch.nn.functional as F

    from .. import params
    from ..curvature import HessianOperator, adaptive_sharpness, epsilon_sharpness, lambda_max

    runs = {}
    with timer("train"):
        for name, cfg in (("sb", config.sb), ("lb", config.lb)):
            runs[name] = train_run(recipes.with_seed(cfg, seed), cache_dir, progress)
    bundle = runs["sb"].bundle()
    model = runs["sb"].build_model()
    data = (bundle.train.x, bundle.train.y)
    ev_tr = evaluator(model, bundle.train)
    ev_te = evaluator(model, bundle.test, bn_data=bundle.train)
    target = max(float(r.summary["train_loss"]) for r in runs.values())
    rec: dict[str, Any] = {"seed": seed, "target_loss": target}
    points = {}
    for name, r in runs.items():
        with timer("match"):
            step, pt, met = _matched(r, ev_tr, target)
        points[name] = pt
        te = ev_te.evaluate(pt)
        with timer("sharpness"):
            H = HessianOperator(model, F.cross_entropy, data, point=pt)
            lam = lambda_max(H, seed=seed)
            H.release()
            eps = epsilon_sharpness(model, F.cross_entropy, data, epsilon=config.epsilon, steps=config.epsilon_steps,
                                    method="lbfgsb", point=pt)
            ada = adaptive_sharpness(model, F.cross_entropy, data, rho=config.rho, steps=config.rho_steps,
                                     point=pt, dtype=torch.float64, seed=seed)
        rec[name] = {"step": step, "batch_size": r.config.optim.batch_size, "epochs": r.config.optim.epochs,
                     "train_loss": met["loss"], "train_error": 1 - met["accuracy"], "test_loss": te["loss"],
                     "test_error": 1 - te["accuracy"], "lambda_max": lam, "eps_sharpness": eps.sharpness,
                     "adaptive_sharpness": ada.sharpness, "run": r.path.name}
        progress(f"seed {seed} {name.upper()} at step {step}: train loss {met['loss']:.4g}, test error "
                 f"{1 - te['accuracy']:.3f}, lambda_max {lam:.4g}, eps-sharpness {eps.sharpness:.4g}")
    with timer("parametric"):
        alphas = np.linspace(-1.0, 2.0, config.num_points)
        tr = interpolate(model, points["sb"], points["lb"], alphas, evaluator=ev_tr)
        te = interpolate(model, points["sb"], points["lb"], alphas, evaluator=ev_te)
    rec["parametric"] = {"alpha": alphas.tolist(), "train_loss": tr["loss"].tolist(), "test_loss": te["loss"].tolist(),
                         "train_error": tr["error"].tolist(), "test_error": te["error"].tolist()}
    with timer("dinh"):
        pt = points["sb"]
        resc = rescale_relu_layers(pt, config.rescale)
        with torch.no_grad():
            out0 = params.call(model, pt, bundle.test.x)
            out1 = params.call(model, resc, bundle.test.x)
        diff = float((out0 - out1).abs().max() / out0.abs().max().clamp_min(1e-30))
        H = HessianOperator(model, F.cross_entropy, data, point=resc)
        lam_r = lambda_max(H, seed=seed)
        H.release()
        ada_r = adaptive_sharpness(model, F.cross_entropy, data, rho=config.rho, steps=config.rho_steps, point=resc,
                                   dtype=torch.float64, seed=seed).sharpness
    ada0 = rec["sb"]["adaptive_sharpness"]
    rec["dinh"] = {"alpha": config.rescale, "output_rel_diff": diff, "lambda_max": rec["sb"]["lambda_max"],
                   "lambda_max_rescaled": lam_r, "adaptive": ada0, "adaptive_rescaled": ada_r,
                   "adaptive_rel_diff": abs(ada_r - ada0) / max(abs(ada0), 1e-30),
                   "distance_moved": params.distance(pt, resc)}
    progress(f"Dinh rescaling x{config.rescale:g}: outputs equal to {diff:.1e}, lambda_max "
             f"{rec['sb']['lambda_max']:.4g} -> {lam_r:.4g}, adaptive sharpness {ada0:.4g} -> {ada_r:.4g}")
    return rec, bundle


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    timer = Timer()
    pairs = []
    bundle = None
    for seed in config.seeds:
        rec, bundle = _pair(config, seed, cache_dir, progress, timer)
        pairs.append(rec)
    m = {"pairs": pairs, "fit_tolerance": config.fit_tolerance, "match_rtol": config.match_rtol,
         "output_rtol": config.output_rtol, "lambda_change": config.lambda_change,
         "adaptive_rtol": config.adaptive_rtol, "epsilon": config.epsilon}
    verdict = judge(m)

    r = pairs[0]
    with timer("plot"):
        fig, axes = new_figure(2, 1, width=4.6, height=3.4)
        ax = axes[0]
        p = r["parametric"]
        ax.plot(p["alpha"], p["train_loss"], "-", color="C0", label="train loss")
        ax.plot(p["alpha"], p["test_loss"], "--", color="C0", label="test loss")
        ax.set_yscale("log")
        ax.set_xlabel("a  (θ = a·θ_LB + (1-a)·θ_SB)")
        ax.set_ylabel("cross-entropy", color="C0")
        ax2 = ax.twinx()
        ax2.plot(p["alpha"], np.asarray(p["train_error"]) * 100, "-", color="C3", label="train error")
        ax2.plot(p["alpha"], np.asarray(p["test_error"]) * 100, "--", color="C3", label="test error")
        ax2.set_ylabel("error (%)", color="C3")
        for a in (0, 1):
            ax.axvline(a, color="0.6", lw=0.8)
        ax.set_title(f"SB (a=0, batch {r['sb']['batch_size']}) → LB (a=1, full batch)", fontsize=9)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center")
        ax = axes[1]
        d = r["dinh"]
        names = ["SB", "LB", f"SB rescaled\n(α={d['alpha']:g})"]
        lam = [r["sb"]["lambda_max"], r["lb"]["lambda_max"], d["lambda_max_rescaled"]]
        ada = [r["sb"]["adaptive_sharpness"], r["lb"]["adaptive_sharpness"], d["adaptive_rescaled"]]
        x = np.arange(3)
        ax.bar(x - 0.2, lam, 0.4, color="C1", label="λmax")
        ax.set_ylabel("λmax", color="C1")
        ax2 = ax.twinx()
        ax2.bar(x + 0.2, ada, 0.4, color="C2", label="adaptive sharpness")
        ax2.set_ylabel(f"adaptive sharpness (ρ={config.rho:g})", color="C2")
        ax.set_xticks(x, names, fontsize=8)
        ax.set_title(f"ε-sharpness SB {r['sb']['eps_sharpness']:.3g}, LB {r['lb']['eps_sharpness']:.3g} "
                     f"(ε={config.epsilon:g})", fontsize=9)
        fig_ref = save_figure(fig, work_dir, "large_batch",
                              "Left: Keskar et al.'s parametric plot between the small-batch (a=0) and the large-batch "
                              "(a=1) solutions (solid: train, dashed: test). Right: λmax (orange) and adaptive "
                              "sharpness (green) of SB, LB and of SB rescaled by Dinh et al.'s α (same function).")
    key = {
        "λmax SB / LB": f"{r['sb']['lambda_max']:.3g} / {r['lb']['lambda_max']:.3g}",
        "ε-sharpness SB / LB": f"{r['sb']['eps_sharpness']:.3g} / {r['lb']['eps_sharpness']:.3g}",
        "test error SB / LB": f"{r['sb']['test_error']:.3f} / {r['lb']['test_error']:.3f}",
        "matched train loss SB / LB": f"{r['sb']['train_loss']:.3g} / {r['lb']['train_loss']:.3g}",
        "rescaled SB: λmax ×, adaptive Δ": f"{r['dinh']['lambda_max_rescaled'] / r['dinh']['lambda_max']:.3g}× / "
                                          f"{r['dinh']['adaptive_rel_diff']:.1e}",
    }
    comparison = " ".join(
        f"Seed {x['seed']}: matched at training loss ≤ {x['target_loss']:.3g} (SB step {x['sb']['step']}, "
        f"LB step {x['lb']['step']}; train errors {x['sb']['train_error']:.4f} / {x['lb']['train_error']:.4f}), "
        f"LB has λmax {x['lb']['lambda_max']:.3g} vs SB {x['sb']['lambda_max']:.3g} and ε-sharpness "
        f"{x['lb']['eps_sharpness']:.3g} vs {x['sb']['eps_sharpness']:.3g}; test error {x['lb']['test_error']:.3f} "
        f"(LB) vs {x['sb']['test_error']:.3f} (SB), gap {x['lb']['test_error'] - x['sb']['test_error']:+.3f}. "
        f"Rescaling SB by α={x['dinh']['alpha']:g} (outputs equal to {x['dinh']['output_rel_diff']:.1e}) multiplies "
        f"its λmax by {x['dinh']['lambda_max_rescaled'] / x['dinh']['lambda_max']:.3g} (to "
        f"{x['dinh']['lambda_max_rescaled']:.3g}, {'above' if x['dinh']['lambda_max_rescaled'] > x['lb']['lambda_max'] else 'below'} "
        f"LB's) while its adaptive sharpness changes by {x['dinh']['adaptive_rel_diff']:.1e} (relative)."
        for x in pairs)
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"pairs": list(config.seeds), "note": "SB and LB of a pair share init and data-order seeds"},
        data=describe_data(bundle) + "; sharpness on the full training set", timings=timer.seconds,
        notes=["LB is full-batch Adam (Keskar et al. used 10% of the data); the runs are compared at the same "
               "training loss (first checkpoint at or below the larger final loss)."],
    )


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m["pairs"]``: records with ``seed``, ``sb``/``lb`` (``train_loss``, ``train_error``, ``test_error``,
    ``lambda_max``, ``eps_sharpness``) and ``dinh`` (``output_rel_diff``, ``lambda_max``,
    ``lambda_max_rescaled``, ``adaptive_rel_diff``); thresholds ``fit_tolerance``, ``match_rtol``,
    ``output_rtol``, ``lambda_change``, ``adaptive_rtol``."""
    tol, mt = float(m["fit_tolerance"]), float(m["match_rtol"])
    checks = []
    for x in m["pairs"]:
        s, sb, lb = x["seed"], x["sb"], x["lb"]
        checks.append(Check(f"seed {s} both fit", sb["train_error"] <= tol and lb["train_error"] <= tol,
                            f"train error SB {sb['train_error']:.4f}, LB {lb['train_error']:.4f} (tolerance {tol:g})",
                            precondition=True))
        top = max(sb["train_loss"], lb["train_loss"])
        rel = abs(sb["train_loss"] - lb["train_loss"]) / top if top > 0 else 0.0
        checks.append(Check(f"seed {s} losses matched", rel <= mt,
                            f"train loss SB {sb['train_loss']:.4g}, LB {lb['train_loss']:.4g} ({rel:.0%} apart, "
                            f"tolerance {mt:.0%})", precondition=True))
    for x in m["pairs"]:
        s, sb, lb = x["seed"], x["sb"], x["lb"]
        checks.append(Check(f"seed {s} LB sharper (λmax)", lb["lambda_max"] > sb["lambda_max"],
                            f"λmax LB {lb['lambda_max']:.4g} vs SB {sb['lambda_max']:.4g} "
                            f"(ratio {lb['lambda_max'] / sb['lambda_max']:.2f})"))
        checks.append(Check(f"seed {s} LB sharper (ε-sharpness)", lb["eps_sharpness"] > sb["eps_sharpness"],
                            f"ε-sharpness LB {lb['eps_sharpness']:.4g} vs SB {sb['eps_sharpness']:.4g} "
                            f"(ratio {lb['eps_sharpness'] / sb['eps_sharpness']:.2f})"))
        gap = lb["test_error"] - sb["test_error"]
        checks.append(Check(f"seed {s} LB generalizes worse", gap > 0,
                            f"test error LB {lb['test_error']:.3f} vs SB {sb['test_error']:.3f} (gap {gap:+.3f})",
                            decisive=False))
        d = x["dinh"]
        checks.append(Check(f"seed {s} rescaled net is the same function", d["output_rel_diff"] <= float(m["output_rtol"]),
                            f"max |f(θ) - f(T_α θ)| / max |f| = {d['output_rel_diff']:.1e}"))
        fac = max(d["lambda_max_rescaled"] / d["lambda_max"], d["lambda_max"] / d["lambda_max_rescaled"])
        checks.append(Check(f"seed {s} rescaling changes λmax", fac >= float(m["lambda_change"]),
                            f"λmax {d['lambda_max']:.4g} -> {d['lambda_max_rescaled']:.4g} ({fac:.3g}x, needs >= "
                            f"{float(m['lambda_change']):g}x)"))
        checks.append(Check(f"seed {s} adaptive sharpness invariant", d["adaptive_rel_diff"] <= float(m["adaptive_rtol"]),
                            f"relative change {d['adaptive_rel_diff']:.1e} (tolerance {float(m['adaptive_rtol']):g})"))
    return verdict_from_checks(checks)
