"""B2 — Large batches find sharp minima that generalize worse (Keskar et al. 2017), with Dinh et al.'s
(2017) reparametrization caveat.

For each of several seeds, two MLPs from the same initialization and data order are trained with Adam
(Keskar et al.'s optimizer) on the same data: small batches (SB) and large batches (LB, the full training
set here). They are compared **matched**: on each trajectory the first checkpoint whose recorded training
loss is ``<=`` :math:`L^* = \\max(L_{SB}, L_{LB})` (the final losses) is taken, so both are compared at
the same training loss, both with ~0 training error (else the verdict is ``inconclusive``). At the two
points:

* :math:`\\lambda_{max}` of the Hessian of the training loss (:func:`losslab.curvature.lambda_max`);
* Keskar et al.'s ε-sharpness :math:`100\\,(\\max_{|δ_i| ≤ ε(|θ_i|+1)} L(θ+δ) - L(θ)) / (1 + L(θ))`, the
  maximum found by L-BFGS-B in the full space (:func:`losslab.curvature.epsilon_sharpness`);
* the test error;
* (first seed, figure) the 1-D parametric plot :math:`f(a\\,θ_{LB} + (1-a)\\,θ_{SB})`, :math:`a ∈ [-1, 2]`.

Pre-registered criteria (:data:`CRITERIA`), each on per-seed *paired* differences judged on a 95%
t-interval over seeds: ``ln(λmax_LB / λmax_SB) > 0``, ``ln(φ_ε(LB) / φ_ε(SB)) > 0`` and
``test error_LB - test error_SB > 0`` (the "generalize worse" half is decisive). Preconditions on every
seed: both runs at train error <= 1% and matched losses (within 25%).

Negative control: the same comparison between two *small-batch* runs of each seed (same initialization,
another data order), a null in which no batch-size effect exists; it is judged by the same checks with
the second small-batch run in LB's place.

**Dinh et al.'s caveat** (context, first seed). For a ReLU MLP,
:math:`T_α: (W_1, b_1, W_2) ↦ (αW_1, αb_1, W_2/α)` leaves the function unchanged (exactly, for :math:`α` a
power of two) but rescales the Hessian blocks by :math:`α^{-2}` and :math:`α^2`, so :math:`\\lambda_{max}`
of the *same function* can be made as large as wished. The adaptive (ASAM) sharpness
:math:`\\max_{\\|δ/|θ|\\|_2 ≤ ρ} L(θ+δ) - L(θ)` (:func:`losslab.curvature.adaptive_sharpness`, η = 0) is
invariant under :math:`T_α`. Shown on the SB solution: same outputs, λmax changed, adaptive sharpness
unchanged. It does not decide the verdict.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import ExperimentResult, Verdict, verdict_from_checks
from .common import (
    describe_data, evaluator, interpolate, interval_bar, label_axes, new_figure, row_result, RowConfig, save_figure,
    Timer, train_config, train_run,
)
from .criteria import Control, Criteria, Criterion, SEED_PLAN_2026_12_04, t_interval, trained_to_minimum

ID = "B2"
VERSION = 2
COST = {"quick": 60, "full": 600}

__all__ = ["ID", "VERSION", "COST", "CRITERIA", "Config", "run", "judge", "keskar_pair", "rescale_relu_layers",
           "paired_statistics"]

CRITERIA = Criteria(
    preconditions=(
        trained_to_minimum(
            "the larger train error of the pair at the matched points",
            "SURVEY check 'both runs trained to ~0 train error (matched!)'; 1% is the project's 'trained to a "
            "minimum' (issue 14) and the row's earlier tolerance",
            name="both trained to a minimum"),
        Criterion("losses matched", "|L_SB - L_LB| / max(L_SB, L_LB) at the matched points", "<=", 0.25,
                  "SURVEY 'matched': compared at the same training loss; 25% is the row's tolerance registered "
                  "before this change", precondition=True),
    ),
    claims=(
        Criterion("LB sharper (λmax)", "ln(λmax_LB / λmax_SB), paired per seed", ">", 0.0,
                  "Keskar et al. 2017: large-batch minima have larger Hessian eigenvalues; SURVEY check 'LB lambda_max "
                  "> SB' (direction only)"),
        Criterion("LB sharper (ε-sharpness)", "ln(φε_LB / φε_SB), ε = 1e-3, L-BFGS-B, paired per seed", ">", 0.0,
                  "Keskar et al. 2017, Table 3 (ε-sharpness of LB above SB's for every network, ε = 1e-3 and 5e-4, "
                  "maximized with L-BFGS-B); SURVEY check 'LB eps-sharpness > SB' (direction only)"),
        Criterion("LB generalizes worse", "test error_LB - test error_SB, paired per seed", ">", 0.0,
                  "Keskar et al. 2017, Table 2 (LB test accuracy below SB's for every network); the claim's second "
                  "half, decisive since issue 14 (direction only)"),
        Criterion("λmax ratio", "λmax_LB / λmax_SB", ">", 1.0, "context", decisive=False),
        Criterion("ε-sharpness ratio", "φε_LB / φε_SB", ">", 1.0, "context", decisive=False),
        Criterion("Dinh: same function", "max |f(θ) - f(T_α θ)| / max |f| on the test set (SB, first seed)", "<=",
                  1e-5, "context: Dinh et al. 2017's rescaling is exact for α a power of two", decisive=False,
                  rule="all"),
        Criterion("Dinh: λmax changes", "max(λ'/λ, λ/λ') for λmax of SB before/after T_α (first seed)", ">=", 2.0,
                  "context: Dinh et al. 2017, sharpness is not reparametrization-invariant", decisive=False, rule="all"),
        Criterion("Dinh: adaptive sharpness invariant", "relative change of the adaptive sharpness under T_α "
                  "(first seed)", "<=", 1e-4, "context: ASAM's sharpness is invariant under T_α", decisive=False,
                  rule="all"),
    ),
    control="the same comparison between two small-batch runs of each seed (batch 32, same initialization, another "
            "data order), the second in LB's place: a null with no batch-size difference, where LB-vs-SB sharpness "
            "and test-error differences should not appear; same checks",
    seeds="5 independent seeds in quick and in full; SB and LB of a pair share init and data order; the control's "
          "second SB run has the pair's init and its own data-order seed (control_order_seeds)",
    registered="2026-12-04",
    changes=(
        "criterion changed on 2026-12-04 because issue 14: 'LB generalizes worse' (test error LB - SB > 0) is "
        "decisive (it was context only, though it is half of the claim); 'LB sharper' (λmax, ε-sharpness) is "
        "judged on per-seed paired log ratios on a 95% t-interval over >= 3 seeds (was: every one of 1 seed's "
        "pairs); Dinh et al.'s caveat is context (it was decisive, but it is a caveat of the claim, not the claim)",
        SEED_PLAN_2026_12_04,
    ),
)


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
class Config(RowConfig):
    """B2 settings.

    Attributes:
        sb, lb: the small- and large-batch runs (:func:`keskar_pair`).
        seeds: seeds of the pairs (init and data order of SB and LB).
        control_order_seeds: data-order seeds of the control's second small-batch run, one per seed (its
            init is the pair's).
        epsilon: ε of the ε-sharpness box (Keskar et al.: 1e-3 and 5e-4).
        epsilon_steps: L-BFGS-B iterations (Keskar et al.: 10).
        num_points: points of the parametric plot on a ∈ [-1, 2] (first seed).
        rescale: α of Dinh et al.'s rescaling (a power of two keeps the function bit-exact).
        rho: radius of the adaptive sharpness (η = 0, p = 2).
        rho_steps: ascent steps of the adaptive sharpness.
    """

    sb: TrainConfig = field(default_factory=lambda: keskar_pair("quick")[0])
    lb: TrainConfig = field(default_factory=lambda: keskar_pair("quick")[1])
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    control_order_seeds: tuple[int, ...] = (500, 501, 502, 503, 504)
    epsilon: float = 1e-3
    epsilon_steps: int = 10
    num_points: int = 31
    rescale: float = 0.25
    rho: float = 0.5
    rho_steps: int = 10

    def __post_init__(self) -> None:
        if len(self.control_order_seeds) != len(self.seeds):
            raise ValueError("control_order_seeds needs one data-order seed per seed")

    @classmethod
    def full(cls) -> "Config":
        sb, lb = keskar_pair("full")
        return cls(sb=sb, lb=lb, seeds=(0, 1, 2, 3, 4), control_order_seeds=(500, 501, 502, 503, 504),
                   num_points=61, epsilon_steps=20, rho_steps=20)


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


def _matched_step(run: Any, target: float) -> int:
    """The first checkpoint whose recorded training loss (``metrics.json``, evaluated on the full training set
    at the end of each epoch) is ``<= target``; the last checkpoint when none is."""
    ckpts = [s for s, _ in run.checkpoints()]
    loss_at = {int(x["step"]): float(x["train_loss"]) for x in run.metrics}
    for s in ckpts:
        if s in loss_at and loss_at[s] <= target * (1 + 1e-6):
            return s
    return ckpts[-1]


class _Measurer:
    """λmax, ε-sharpness, train and test metrics at (run, step), computed once per point."""

    def __init__(self, config: Config, model: Any, bundle: Any, timer: Timer) -> None:
        self.config, self.model, self.bundle, self.timer = config, model, bundle, timer
        self.names = {n for n, _ in model.named_parameters()}
        self.ev_tr = evaluator(model, bundle.train)
        self.ev_te = evaluator(model, bundle.test, bn_data=bundle.train)
        self.data = (bundle.train.x, bundle.train.y)
        self.cache: dict[tuple[str, int], tuple[dict[str, Any], dict[str, Any]]] = {}

    def point(self, run: Any, step: int) -> dict[str, Any]:
        return {k: v for k, v in run.state_dict(step).items() if k in self.names}

    def __call__(self, run: Any, step: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        import torch.nn.functional as F

        from ..curvature import HessianOperator, epsilon_sharpness, lambda_max

        key = (run.path.name, int(step))
        if key in self.cache:
            return self.cache[key]
        pt = self.point(run, step)
        with self.timer("evaluate"):
            tr = self.ev_tr.evaluate(pt)
            te = self.ev_te.evaluate(pt)
        with self.timer("sharpness"):
            H = HessianOperator(self.model, self.data, loss=F.cross_entropy, point=pt)
            lam = lambda_max(H, seed=seed)
            H.release()
            eps = epsilon_sharpness(self.model, self.data, loss=F.cross_entropy, epsilon=self.config.epsilon,
                                    steps=self.config.epsilon_steps, method="lbfgsb", point=pt)
        o = run.config.optim
        rec = {"step": int(step), "batch_size": o.batch_size, "epochs": o.epochs,
               "order_seed": run.config.seeds.resolved()["order"], "train_loss": tr["loss"],
               "train_error": 1 - tr["accuracy"], "test_loss": te["loss"], "test_error": 1 - te["accuracy"],
               "lambda_max": lam, "eps_sharpness": eps.sharpness, "run": run.path.name}
        self.cache[key] = (rec, pt)
        return rec, pt


def _compare(a: Any, b: Any, seed: int, measure: _Measurer, names: tuple[str, str],
             progress: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Match runs ``a`` (SB) and ``b`` (LB, or the control's second SB) at the same training loss and measure."""
    target = max(float(a.summary["train_loss"]), float(b.summary["train_loss"]))
    rec: dict[str, Any] = {"seed": seed, "target_loss": target}
    points = {}
    with measure.timer("match"):
        steps = {"sb": _matched_step(a, target), "lb": _matched_step(b, target)}
    for slot, r, name in (("sb", a, names[0]), ("lb", b, names[1])):
        rec[slot], points[slot] = measure(r, steps[slot], seed)
        rec[slot]["role"] = name
        x = rec[slot]
        progress(f"seed {seed} {name} at step {x['step']}: train loss {x['train_loss']:.4g}, test error "
                 f"{x['test_error']:.3f}, lambda_max {x['lambda_max']:.4g}, eps-sharpness {x['eps_sharpness']:.4g}")
    return rec, points


def _dinh(config: Config, measure: _Measurer, pt: Mapping[str, Any], lam0: float, seed: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from .. import params
    from ..curvature import HessianOperator, adaptive_sharpness, lambda_max

    model, data, x = measure.model, measure.data, measure.bundle.test.x
    resc = rescale_relu_layers(pt, config.rescale)
    with torch.no_grad():
        out0 = params.call(model, pt, x)
        out1 = params.call(model, resc, x)
    diff = float((out0 - out1).abs().max() / out0.abs().max().clamp_min(1e-30))
    H = HessianOperator(model, data, loss=F.cross_entropy, point=resc)
    lam_r = lambda_max(H, seed=seed)
    H.release()
    ada0, ada_r = (adaptive_sharpness(model, data, loss=F.cross_entropy, rho=config.rho, steps=config.rho_steps, point=p,
                                      dtype=torch.float64, seed=seed).sharpness for p in (pt, resc))
    return {"seed": seed, "alpha": config.rescale, "output_rel_diff": diff, "lambda_max": lam0,
            "lambda_max_rescaled": lam_r, "adaptive": ada0, "adaptive_rescaled": ada_r,
            "adaptive_rel_diff": abs(ada_r - ada0) / max(abs(ada0), 1e-30), "distance_moved": params.distance(pt, resc)}


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    from ..config import SeedConfig

    timer = Timer()
    pairs, controls = [], []
    measure = None
    dinh = parametric = None
    for seed, oseed in zip(config.seeds, config.control_order_seeds):
        with timer("train"):
            sb = train_run(recipes.with_seed(config.sb, seed), cache_dir, progress)
            lb = train_run(recipes.with_seed(config.lb, seed), cache_dir, progress)
            sb2 = train_run(dataclasses.replace(config.sb, seeds=SeedConfig(seed=int(seed), order_seed=int(oseed))),
                            cache_dir, progress)
        if measure is None:
            model = sb.build_model()
            measure = _Measurer(config, model, sb.bundle(), timer)
        rec, points = _compare(sb, lb, seed, measure, ("SB", "LB"), progress)
        pairs.append(rec)
        crec, _ = _compare(sb, sb2, seed, measure, ("SB", f"SB (order seed {oseed})"), progress)
        crec["order_seed"] = int(oseed)
        controls.append(crec)
        if dinh is None:
            with timer("dinh"):
                dinh = _dinh(config, measure, points["sb"], rec["sb"]["lambda_max"], seed)
            progress(f"Dinh rescaling x{config.rescale:g}: outputs equal to {dinh['output_rel_diff']:.1e}, lambda_max "
                     f"{dinh['lambda_max']:.4g} -> {dinh['lambda_max_rescaled']:.4g}, adaptive sharpness "
                     f"{dinh['adaptive']:.4g} -> {dinh['adaptive_rescaled']:.4g}")
            with timer("parametric"):
                alphas = np.linspace(-1.0, 2.0, config.num_points)
                tr = interpolate(measure.model, points["sb"], points["lb"], alphas, evaluator=measure.ev_tr)
                te = interpolate(measure.model, points["sb"], points["lb"], alphas, evaluator=measure.ev_te)
            parametric = {"seed": seed, "alpha": alphas.tolist(), "train_loss": tr["loss"].tolist(),
                          "test_loss": te["loss"].tolist(), "train_error": tr["error"].tolist(),
                          "test_error": te["error"].tolist()}
    m = {"pairs": pairs, "control": controls, "dinh": dinh, "parametric": parametric, "epsilon": config.epsilon}
    verdict = judge(m)
    cverdict = judge({**m, "pairs": controls})
    control = Control(CRITERIA.control, cverdict)
    st, cst = paired_statistics(pairs), paired_statistics(controls)

    with timer("plot"):
        fig_ref = _figure(m, st, cst, config, work_dir)

    iv = {k: t_interval(st[k]) for k in ("lam_ratio", "eps_ratio", "gap")}
    civ = {k: t_interval(cst[k]) for k in ("lam_ratio", "eps_ratio", "gap")}
    d = dinh
    key = {
        "λmax LB / SB (mean over seeds)": iv["lam_ratio"].mean,
        "ε-sharpness LB / SB": iv["eps_ratio"].mean,
        "test error LB - SB": f"{iv['gap'].mean:+.4f}",
        "control (SB' / SB): λmax, ε, gap": f"{civ['lam_ratio'].mean:.3g}, {civ['eps_ratio'].mean:.3g}, "
                                            f"{civ['gap'].mean:+.4f}",
        "Dinh rescaled SB: λmax ×, adaptive Δ": f"{d['lambda_max_rescaled'] / d['lambda_max']:.3g}× / "
                                                f"{d['adaptive_rel_diff']:.1e}",
    }

    def ivs(i: Any, f: str = ".3g") -> str:
        return f"mean {i.mean:{f}}, 95% interval [{i.lo:{f}}, {i.hi:{f}}]"

    per = "; ".join(
        f"seed {x['seed']}: matched at loss <= {x['target_loss']:.3g} (SB step {x['sb']['step']}, LB step "
        f"{x['lb']['step']}), λmax {x['sb']['lambda_max']:.3g} -> {x['lb']['lambda_max']:.3g}, ε-sharpness "
        f"{x['sb']['eps_sharpness']:.3g} -> {x['lb']['eps_sharpness']:.3g}, test error {x['sb']['test_error']:.3f} -> "
        f"{x['lb']['test_error']:.3f}" for x in pairs)
    return row_result(ID, CRITERIA, config, m, verdict, control, key, fig_ref, timer,
        seeds={"pairs": list(config.seeds), "control_order": list(config.control_order_seeds),
               "note": "SB and LB of a pair share init and data-order seeds; the control's second SB run shares the "
                       "init and uses its own data-order seed"},
        data=describe_data(measure.bundle) + "; sharpness on the full training set",
        notes=["LB is full-batch Adam (Keskar et al. used 10% of the data); the runs are compared at the same "
               "training loss (first checkpoint at or below the larger final loss).",
               "Dinh et al. 2017: λmax and ε-sharpness are not invariant under reparametrizations that keep the "
               "function, so 'sharper' here is a statement about these parametrizations, not about the functions."],
        comparison=(
            f"SB (batch {pairs[0]['sb']['batch_size']}) vs LB (full batch), same init and data order, over "
            f"{len(pairs)} seeds: {per}. LB/SB λmax ratio {ivs(iv['lam_ratio'])}; ε-sharpness ratio "
            f"{ivs(iv['eps_ratio'])}; test-error gap LB - SB {ivs(iv['gap'], '+.4f')}. Control (two SB runs, other "
            f"data order): λmax ratio {ivs(civ['lam_ratio'])}, ε-sharpness ratio {ivs(civ['eps_ratio'])}, gap "
            f"{ivs(civ['gap'], '+.4f')}; control verdict {cverdict.status}. Dinh et al.'s caveat (seed {d['seed']}): "
            f"rescaling SB by α={d['alpha']:g} (outputs equal to {d['output_rel_diff']:.1e}) multiplies its λmax by "
            f"{d['lambda_max_rescaled'] / d['lambda_max']:.3g} (to {d['lambda_max_rescaled']:.3g}, "
            f"{'above' if d['lambda_max_rescaled'] > pairs[0]['lb']['lambda_max'] else 'below'} LB's "
            f"{pairs[0]['lb']['lambda_max']:.3g}) while its adaptive sharpness changes by {d['adaptive_rel_diff']:.1e} "
            f"(relative)."
        ),
    )


def _figure(m: Mapping[str, Any], st: Mapping[str, list[float]], cst: Mapping[str, list[float]], config: Config,
            work_dir: Path) -> Any:
    fig, axes = new_figure(3, 1, width=4.2, height=3.7)
    # (a) Keskar et al.'s parametric plot, first seed
    ax = axes[0]
    p = m["parametric"]
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
    ax.set_title(f"seed {p['seed']}: SB (a=0) → LB (a=1)", fontsize=9)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    # (b) per-seed sharpness ratios, LB/SB vs the control's SB'/SB, with 95% t-intervals; Dinh's rescaling beside
    ax = axes[1]
    groups = [("λmax", "lam_ratio"), ("ε-sharpness", "eps_ratio")]
    for g, (name, k) in enumerate(groups):
        for off, s, col, lab in ((-0.15, st, "C1", "LB/SB"), (0.15, cst, "0.45", "control SB'/SB")):
            v = np.asarray(s[k], dtype=float)
            ax.plot(g + off + _jitter(v.size), v, "o", color=col, mfc="none", ms=5,
                    label=f"{lab}, each seed" if g == 0 else None)
            if v.size >= 2 and np.all(v > 0):
                iv = t_interval(np.log(v))
                ax.errorbar([g + off], [math.exp(iv.mean)], yerr=[[math.exp(iv.mean) - math.exp(iv.lo)],
                                                                   [math.exp(iv.hi) - math.exp(iv.mean)]],
                            fmt="_", color=col, ms=12, capsize=3, label=f"{lab}, 95% CI" if g == 0 else None)
    d = m["dinh"]
    ax.plot([2], [d["lambda_max_rescaled"] / d["lambda_max"]], "D", color="C2",
            label=f"Dinh α={d['alpha']:g}: λmax ratio")
    ax.plot([2], [d["adaptive_rescaled"] / d["adaptive"]], "s", color="C4", mfc="none",
            label="Dinh: adaptive-sharpness ratio")
    ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xticks([0, 1, 2], ["λmax", "ε-sharpness", "Dinh\n(same function)"], fontsize=8)
    ax.set_xlim(-0.6, 2.6)
    label_axes(ax, ylabel="ratio (log scale)", title="sharpness ratios, one point per seed", title_size=9, legend=7,
               loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    # (c) per-seed test-error gaps
    ax = axes[2]
    for x, s, col, lab in ((0, st, "C1", "LB - SB"), (1, cst, "0.45", "control SB' - SB")):
        v = np.asarray(s["gap"], dtype=float) * 100
        ax.plot(x + _jitter(v.size), v, "o", color=col, mfc="none", ms=5, label=f"{lab}, each seed")
        if v.size >= 2:
            interval_bar(ax, x + 0.15, v, fmt="_", color=col, ms=12, capsize=3, label=f"{lab}, 95% CI")
    ax.axhline(0.0, color="0.5", lw=0.8, ls=":")
    ax.set_xticks([0, 1], ["LB vs SB", "control"], fontsize=8)
    ax.set_xlim(-0.5, 1.6)
    label_axes(ax, ylabel="test-error gap (% points)", title="test-error gap, one point per seed", title_size=9,
               legend=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    return save_figure(fig, work_dir, "large_batch",
                       "Left: Keskar et al.'s parametric plot between the small-batch (a=0) and the large-batch (a=1) "
                       "solutions of the first seed (solid: train, dashed: test). Middle: per-seed sharpness ratios "
                       "LB/SB (orange) and, for the negative control, SB'/SB between two small-batch runs (grey), "
                       "with 95% t-intervals (of the log ratio); right of them, Dinh et al.'s rescaling of the same SB "
                       "function (green: λmax ratio, purple: adaptive sharpness ratio). Right: per-seed test-error "
                       "gaps with 95% t-intervals.")


def _jitter(n: int, width: float = 0.05) -> np.ndarray:
    """Small horizontal offsets so that equal per-seed values do not hide each other."""
    return (np.arange(n) - (n - 1) / 2) * width


def paired_statistics(pairs: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Per-seed statistics of matched pairs (records with ``seed`` and ``sb``/``lb`` holding ``train_loss``,
    ``train_error``, ``test_error``, ``lambda_max``, ``eps_sharpness``): ``seeds``, ``fit`` (the larger train
    error), ``match`` (relative loss difference), ``lam_log``/``eps_log`` (log ratios LB/SB, NaN when not
    positive), ``lam_ratio``/``eps_ratio``, ``gap`` (test error LB - SB)."""
    out: dict[str, list[float]] = {k: [] for k in ("seeds", "fit", "match", "lam_log", "eps_log", "lam_ratio",
                                                   "eps_ratio", "gap")}

    def log_ratio(a: float, b: float) -> float:
        return math.log(b / a) if a > 0 and b > 0 else float("nan")

    for x in pairs:
        sb, lb = x["sb"], x["lb"]
        top = max(sb["train_loss"], lb["train_loss"])
        out["seeds"].append(x["seed"])
        out["fit"].append(max(float(sb["train_error"]), float(lb["train_error"])))
        out["match"].append(abs(sb["train_loss"] - lb["train_loss"]) / top if top > 0 else 0.0)
        out["lam_log"].append(log_ratio(sb["lambda_max"], lb["lambda_max"]))
        out["eps_log"].append(log_ratio(sb["eps_sharpness"], lb["eps_sharpness"]))
        out["lam_ratio"].append(lb["lambda_max"] / sb["lambda_max"] if sb["lambda_max"] else float("nan"))
        out["eps_ratio"].append(lb["eps_sharpness"] / sb["eps_sharpness"] if sb["eps_sharpness"] else float("nan"))
        out["gap"].append(float(lb["test_error"]) - float(sb["test_error"]))
    return out


def judge(m: Mapping[str, Any]) -> Verdict:
    """Judge ``m["pairs"]`` (see :func:`paired_statistics`) by :data:`CRITERIA`; ``m["dinh"]`` (``output_rel_diff``,
    ``lambda_max``, ``lambda_max_rescaled``, ``adaptive_rel_diff``; optional) gives the context checks of Dinh et
    al.'s caveat. The control is judged by calling this on ``{**m, "pairs": m["control"]}``."""
    st = paired_statistics(m["pairs"])
    seeds = st["seeds"]
    checks = CRITERIA.judge_each({
        "both trained to a minimum": st["fit"],
        "losses matched": st["match"],
        "LB sharper (λmax)": st["lam_log"],
        "LB sharper (ε-sharpness)": st["eps_log"],
        "LB generalizes worse": st["gap"],
        "λmax ratio": st["lam_ratio"],
        "ε-sharpness ratio": st["eps_ratio"],
    }, seeds)
    d = m.get("dinh")
    if d:
        fac = max(d["lambda_max_rescaled"] / d["lambda_max"], d["lambda_max"] / d["lambda_max_rescaled"])
        s = [d.get("seed", seeds[0] if seeds else 0)]
        checks += [
            CRITERIA["Dinh: same function"].judge([d["output_rel_diff"]], seeds=s),
            CRITERIA["Dinh: λmax changes"].judge([fac], seeds=s),
            CRITERIA["Dinh: adaptive sharpness invariant"].judge([d["adaptive_rel_diff"]], seeds=s),
        ]
    return verdict_from_checks(checks)
