"""A5 — Saddles, not local minima: negative curvature fades as training proceeds (Dauphin et al. 2014;
Goodfellow et al. 2015).

Along the saved trajectories of the shared SGD runs (:func:`recipes.mnist1d_mlp`, also used by A1 and
C4; trained to train error 0), the Hessian :math:`H` of the mean cross-entropy on a fixed random subset
of the training set is measured at the initialization :math:`θ_0` and at the end of training
:math:`θ_T` (and, for the figure, at a few checkpoints in between):

* the extreme eigenvalues :math:`λ_{min}`, :math:`λ_{max}` (one Lanczos run on both ends,
  :func:`losslab.curvature.negative_curvature_ratio`);
* the *negative spectral mass* by stochastic Lanczos quadrature (:func:`losslab.curvature.slq_density`),

  .. math:: N_-(θ) = \\int_{λ<0} |λ|\\, dμ_θ(λ) ≈ \\frac1D \\sum_{λ_i < 0} |λ_i|,

  the weighted mass of the negative eigenvalues (the unweighted fraction below zero is reported but not
  judged: SLQ cannot resolve the sign of the many eigenvalues in the bulk at zero).

Dauphin et al. report that the critical points met early (high loss) have strong negative directions and
those met late are nearly minima. The decisive statistics are :math:`|λ_{min}|` itself and
:math:`N_-`, per seed, as :math:`\\log_{10}` of their late/early ratio: the former ratio
:math:`|λ_{min}|/λ_{max}` fell mostly because :math:`λ_{max}` grows (issue 14) and is now context only.

Negative control (:data:`CRITERIA`): the same measurements on a path that does not move, the trained
point :math:`θ_T` measured twice with the two probe seeds the run's start and end measurements use. It
satisfies the preconditions (it is a trained minimum), and nothing happens along it, so the claim must
fail unless the estimator alone (probe seeds, Lanczos accuracy at the point where :math:`|λ_{min}|` is
smallest and hardest to resolve) can produce an apparent shrinkage. A run at learning rate 0 (the
initialization repeated) would not do: it is not trained, so the precondition would make it
inconclusive whatever it measured, and such a control could never fire.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import ExperimentResult, Verdict
from .criteria import Control, Criteria, Criterion, lanczos_converged, SEED_PLAN_2026_12_04, trained_to_minimum
from .common import (
    describe_data, evaluator, example_subset, interval_bar, interval_text, label_axes, new_figure, row_result, RowConfig,
    same_seeds, save_figure, spread, Timer, train_run,
)

ID = "A5"
VERSION = 2
COST = {"quick": 30, "full": 200}

_HALF = math.log10(0.5)

CRITERIA = Criteria(
    preconditions=(
        trained_to_minimum("final train error",
                           "the late end of the path must be a minimum: train error <= 1% (issue 14, like with like)"),
        lanczos_converged("Lanczos runs (start and end of the path) that did not converge",
                          "an unconverged λmin is not a measurement"),
    ),
    claims=(
        Criterion("|λmin| shrinks", "log10(|λmin(θ_T)| / |λmin(θ_0)|)", "<", _HALF,
                  "Dauphin et al. 2014: negative eigenvalues shrink as training proceeds; 'shrinks' = at least "
                  "halves (log10 0.5), the factor of the previous check (shrink_factor 0.5), now on |λmin| itself"),
        Criterion("negative mass shrinks", "log10(N-(θ_T) / N-(θ_0)), N- = ∫_{λ<0} |λ| dμ by SLQ", "<", _HALF,
                  "Dauphin et al. 2014 (negative eigenvalues become fewer and smaller); same factor 0.5 as |λmin|"),
        Criterion("λmax grows", "log10(λmax(θ_T) / λmax(θ_0))", ">", 0.0,
                  "context: why the former ratio |λmin|/λmax was confounded", decisive=False),
        Criterion("positive mass shrinks", "log10(N+(θ_T) / N+(θ_0)), N+ = ∫_{λ>0} λ dμ by SLQ", "<", _HALF,
                  "context: whether positive curvature shrank alike (a mere change of scale)", decisive=False),
        Criterion("ratio shrinks", "log10 of (|λmin|/λmax)(θ_T) over (|λmin|/λmax)(θ_0)", "<", _HALF,
                  "context: the former decisive statistic (SURVEY's 'relative to λmax')", decisive=False),
    ),
    control="the trained point θ_T measured twice (a path that does not move), with the probe seeds of the run's "
            "start and end measurements: a trained minimum (the preconditions hold) along which nothing proceeds, so "
            "the claim must fail unless the estimator alone produces a shrinkage; same checks",
    seeds="5 independent runs (init and data order from each seed) in quick and in full; Hessian subset and "
          "Lanczos/SLQ probes seeded from the run's seed; control on the same runs",
    registered="2026-12-04",
    changes=(
        "criterion changed on 2026-12-04 because issue 14: the ratio |λmin|/λmax fell mostly because λmax grows; "
        "the decisive statistics are now |λmin| and the SLQ negative mass themselves (start vs end of training, "
        "same factor 0.5), the ratio is context; the Spearman-trend check on the ratio is dropped with it",
        "precondition changed on 2026-12-04 because issue 14: 'loss fell to half' is replaced by train error <= 1% "
        "(the shared recipe now trains to a minimum)",
        SEED_PLAN_2026_12_04,
    ),
)


@dataclass(frozen=True)
class Config(RowConfig):
    """A5 settings.

    Attributes:
        train: the runs whose trajectories are measured (shared recipe :func:`recipes.mnist1d_mlp`).
        seeds: seeds of the runs (init and data order); the Hessian subset and the probes derive from them.
        num_checkpoints: checkpoints with λmin/λmax for the figure, spread over the saved (log-spaced)
            ones, first and last included (0: all of them). Only the first and last are judged.
        hessian_examples: training examples of the Hessian (a fixed random subset per seed; 0: all).
        tol: relative Lanczos tolerance (λmin is accurate to about ``tol · λmax``; smaller |λmin| are
            floored there).
        max_iter: Lanczos steps at most per point.
        slq_probes, slq_steps: stochastic Lanczos quadrature of the negative mass.
    """

    train: TrainConfig = field(default_factory=lambda: recipes.mnist1d_mlp("quick"))
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    num_checkpoints: int = 4
    hessian_examples: int = 512
    tol: float = 1e-3
    max_iter: int = 300
    slq_probes: int = 2
    slq_steps: int = 30

    @classmethod
    def full(cls) -> "Config":
        return cls(train=recipes.mnist1d_mlp("full"), seeds=(0, 1, 2, 3, 4), num_checkpoints=8,
                   hessian_examples=2000, slq_probes=4, slq_steps=60)


def _probe_seed(seed: int, role: int) -> int:
    """The probe seed of one measurement: role 0 = start of the path, 1 = end, 2+ = figure checkpoints."""
    return 7919 * int(seed) + int(role)


def _measure_point(model: Any, data: Any, point: Any, config: Config, probe_seed: int, *, slq: bool) -> dict[str, Any]:
    import torch.nn.functional as F

    from ..curvature import HessianOperator, negative_curvature_ratio, slq_density

    H = HessianOperator(model, data, loss=F.cross_entropy, point=point)
    try:
        nc = negative_curvature_ratio(H, tol=config.tol, max_iter=config.max_iter, seed=probe_seed)
        rec: dict[str, Any] = {"lambda_min": nc.lambda_min, "lambda_max": nc.lambda_max,
                               "converged": bool(nc.converged), "matvecs": int(nc.num_matvecs),
                               "probe_seed": int(probe_seed)}
        if slq:
            s = slq_density(H, num_probes=config.slq_probes, lanczos_steps=config.slq_steps, seed=probe_seed)
            w = s.weights / s.num_probes
            rec.update(neg_mass=float((w * np.clip(-s.nodes, 0.0, None)).sum()),
                       pos_mass=float((w * np.clip(s.nodes, 0.0, None)).sum()),
                       neg_fraction=float(w[s.nodes < 0].sum()), slq_matvecs=int(s.num_matvecs))
    finally:
        H.release()
    return rec


def _measure_seed(config: Config, seed: int, cache_dir: Path, progress: Callable[[str], None],
                  timer: Timer) -> tuple[dict[str, Any], Any]:
    with timer("train"):
        r = train_run(recipes.with_seed(config.train, seed), cache_dir, progress)
    bundle = r.bundle()
    model = r.build_model()
    traj = r.trajectory()
    x, y = example_subset(bundle.train, config.hessian_examples, seed)
    ev = evaluator(model, (x, y))
    (s0, p0), (sT, pT) = traj[0], traj[-1]
    with timer("measure"):
        start = _measure_point(model, (x, y), p0, config, _probe_seed(seed, 0), slq=True)
        end = _measure_point(model, (x, y), pT, config, _probe_seed(seed, 1), slq=True)
        control = _measure_point(model, (x, y), pT, config, _probe_seed(seed, 0), slq=True)
    for rec, step, pt in ((start, s0, p0), (end, sT, pT), (control, sT, pT)):
        met = ev.evaluate(pt)
        rec.update(step=int(step), loss=float(met["loss"]), error=1 - float(met["accuracy"]))
    path = []
    picked = spread(range(len(traj)), config.num_checkpoints)
    for j, i in enumerate(picked):
        if i == 0:
            path.append({k: start[k] for k in ("step", "loss", "lambda_min", "lambda_max", "converged")})
            continue
        if i == len(traj) - 1:
            path.append({k: end[k] for k in ("step", "loss", "lambda_min", "lambda_max", "converged")})
            continue
        step, pt = traj[i]
        with timer("figure checkpoints"):
            rec = _measure_point(model, (x, y), pt, config, _probe_seed(seed, 2 + j), slq=False)
        met = ev.evaluate(pt)
        path.append({"step": int(step), "loss": float(met["loss"]), "lambda_min": rec["lambda_min"],
                     "lambda_max": rec["lambda_max"], "converged": rec["converged"]})
    out = {"seed": int(seed), "train_error": float(r.summary["train_error"]),
           "test_error": float(r.summary["test_error"]), "start": start, "end": end, "control_start": control,
           "path": path, "run": r.path.name}
    progress(f"seed {seed}: λmin {start['lambda_min']:.3g} -> {end['lambda_min']:.3g}, λmax "
             f"{start['lambda_max']:.3g} -> {end['lambda_max']:.3g}, negative mass {start['neg_mass']:.3g} -> "
             f"{end['neg_mass']:.3g} "
             f"(control at θ_T: λmin {control['lambda_min']:.3g}, mass {control['neg_mass']:.3g})")
    return out, bundle


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    timer = Timer()
    recs = []
    bundle = None
    for seed in config.seeds:
        rec, bundle = _measure_seed(config, seed, cache_dir, progress, timer)
        recs.append(rec)
    m = {"runs": recs, "tol": config.tol, "hessian_examples": int(config.hessian_examples)}
    verdict = judge(m)
    control = Control(CRITERIA.control, judge(control_measurements(m)))
    st = statistics(m)
    cst = statistics(control_measurements(m))

    with timer("plot"):
        fig_ref = _figure(recs, st, cst, work_dir)

    def iv(vals: Sequence[float]) -> str:
        return interval_text(vals, ".2f")

    def fac_num(vals: Sequence[float]) -> float:  # the factor a log10 ratio < 0 shrinks by (geometric mean)
        return float(10 ** -np.mean(vals))

    def fac(vals: Sequence[float]) -> str:
        return f"{fac_num(vals):.2g}"

    key = {
        "log10 |λmin| end/start (95% CI)": iv(st["lambda_min"]),
        "log10 neg. mass end/start (95% CI)": iv(st["neg_mass"]),
        "control (θ_T twice): log10 |λmin|, neg. mass": f"{iv(cst['lambda_min'])}; {iv(cst['neg_mass'])}",
        "log10 λmax end/start": iv(st["lambda_max"]),
        "log10 pos. mass end/start": iv(st["pos_mass"]),
    }
    per = "; ".join(
        f"seed {r['seed']}: λmin {r['start']['lambda_min']:.3g} → {r['end']['lambda_min']:.3g}, λmax "
        f"{r['start']['lambda_max']:.3g} → {r['end']['lambda_max']:.3g}, N- {r['start']['neg_mass']:.2e} → "
        f"{r['end']['neg_mass']:.2e}, N+ {r['start']['pos_mass']:.2e} → {r['end']['pos_mass']:.2e}" for r in recs)
    return row_result(ID, CRITERIA, config, m, verdict, control, key, fig_ref, timer,
        seeds=same_seeds(
            config.seeds, "init and data order from each run's seed; Hessian subset and Lanczos/SLQ probes derive "
                          "from it (start and end of the path use different probe seeds)"),
        data=describe_data(bundle) + f"; Hessian on {config.hessian_examples} training examples per seed",
        notes=["Dauphin et al.'s index (the fraction of negative eigenvalues) is not judged: SLQ cannot tell the sign "
               "of the many eigenvalues in the bulk at zero; the weighted negative mass N- is robust to them.",
               "The checkpoints between start and end (figure) are measured with Lanczos only."],
        comparison=(
            f"Hessian of the training loss on {config.hessian_examples} examples at the initialization and at "
            f"the end of training of {len(recs)} SGD runs (final train error "
            + ", ".join(f"{r['train_error']:.3f}" for r in recs)
            + f"; subset loss {np.mean([r['start']['loss'] for r in recs]):.3f} → "
            f"{np.mean([r['end']['loss'] for r in recs]):.3g} on average). {per}. Mean log10 ratio end/start over "
            f"seeds (95% t-interval): |λmin| {iv(st['lambda_min'])}, negative mass {iv(st['neg_mass'])} (threshold "
            f"{_HALF:.3f} = halving); λmax {iv(st['lambda_max'])}, positive mass {iv(st['pos_mass'])}. The control "
            f"(θ_T measured twice) gives |λmin| {iv(cst['lambda_min'])} and negative mass {iv(cst['neg_mass'])}. "
            "Negative eigenvalues can only come from the residual (non-Gauss-Newton) term of the cross-entropy "
            "Hessian, which vanishes as the training loss goes to zero; over the same path |λmin| fell "
            f"{fac(st['lambda_min'])}x and the negative mass {fac(st['neg_mass'])}x, the positive mass "
            f"{fac(st['pos_mass'])}x, while λmax grew {1 / fac_num(st['lambda_max']):.2g}x "
            "(geometric means over seeds)."
        ),
    )


def control_measurements(m: Mapping[str, Any]) -> dict[str, Any]:
    """The control in the measurement shape :func:`judge` reads: each run's trained point θ_T measured twice
    (``control_start``, with the start's probe seed, and ``end``)."""
    runs = [{**r, "start": r["control_start"]} for r in m["runs"]]
    return {**m, "runs": runs}


def _abs_min(rec: Mapping[str, Any], tol: float) -> float:
    """|λmin| of a negative λmin, floored at the Lanczos resolution ``tol · max(|λmax|, |λmin|)``."""
    scale = max(abs(float(rec["lambda_max"])), abs(float(rec["lambda_min"])))
    return max(-float(rec["lambda_min"]), tol * scale)


def _log_ratio(a: float, b: float) -> float:
    if not (a > 0 and b > 0):
        return float("nan")
    return math.log10(a / b)


def statistics(m: Mapping[str, Any]) -> dict[str, list[float]]:
    """Per-seed log10 ratios (end over start) of |λmin|, the negative and positive SLQ masses, λmax and the
    former ratio |λmin|/λmax."""
    tol = float(m.get("tol", 1e-3))
    out: dict[str, list[float]] = {k: [] for k in ("lambda_min", "neg_mass", "pos_mass", "lambda_max", "ratio")}
    for r in m["runs"]:
        a, b = r["start"], r["end"]
        out["lambda_min"].append(_log_ratio(_abs_min(b, tol), _abs_min(a, tol)))
        out["neg_mass"].append(_log_ratio(float(b["neg_mass"]), float(a["neg_mass"])))
        out["pos_mass"].append(_log_ratio(float(b["pos_mass"]), float(a["pos_mass"])))
        out["lambda_max"].append(_log_ratio(float(b["lambda_max"]), float(a["lambda_max"])))
        out["ratio"].append(_log_ratio(_abs_min(b, tol) / float(b["lambda_max"]),
                                       _abs_min(a, tol) / float(a["lambda_max"]))
                            if float(a["lambda_max"]) > 0 and float(b["lambda_max"]) > 0 else float("nan"))
    return out


def judge(m: Mapping[str, Any]) -> Verdict:
    """Judge ``m["runs"]`` (per seed: ``seed``, ``train_error``, ``start`` and ``end`` records with ``lambda_min``,
    ``lambda_max``, ``converged``, ``neg_mass``, ``pos_mass``) by :data:`CRITERIA`; ``m["tol"]`` is the
    Lanczos tolerance (the floor of |λmin|). The control is judged by calling this on
    :func:`control_measurements` of the same ``m``."""
    runs = list(m["runs"])
    st = statistics(m)
    unconv = [sum(not bool(r[k]["converged"]) for k in ("start", "end")) for r in runs]
    return CRITERIA.judge_records(runs, {
        "trained to a minimum": "train_error",
        "Lanczos converged": unconv,
        "|λmin| shrinks": st["lambda_min"],
        "negative mass shrinks": st["neg_mass"],
        "λmax grows": st["lambda_max"],
        "positive mass shrinks": st["pos_mass"],
        "ratio shrinks": st["ratio"],
    })


def _figure(recs: Sequence[Mapping[str, Any]], st: Mapping[str, list[float]], cst: Mapping[str, list[float]],
            work_dir: Path) -> Any:
    fig, axes = new_figure(2, 1, width=4.6, height=3.4)
    ax = axes[0]
    for i, r in enumerate(recs):
        xs = np.array([c["step"] for c in r["path"]], dtype=float) + 1
        ax.plot(xs, [max(-c["lambda_min"], 1e-6) for c in r["path"]], "o-", ms=3, color=f"C{i}",
                label=f"|λmin| seed {r['seed']}")
        ax.plot(xs, [c["lambda_max"] for c in r["path"]], "^--", ms=3, color=f"C{i}", alpha=0.5)
        ax.plot([xs[-1]], [max(-r["control_start"]["lambda_min"], 1e-6)], "kx", ms=7,
                label="control: θ_T again" if i == 0 else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    label_axes(ax, xlabel="step + 1", ylabel="|λmin| (solid), λmax (dashed)",
               title="extreme Hessian eigenvalues along training", title_size=9, legend=7, loc="lower left")
    ax = axes[1]
    groups = [("|λmin|", st["lambda_min"], "C0"), ("|λmin|\ncontrol", cst["lambda_min"], "0.4"),
              ("neg. mass", st["neg_mass"], "C3"), ("neg. mass\ncontrol", cst["neg_mass"], "0.4"),
              ("pos. mass\n(context)", st["pos_mass"], "C2"), ("λmax\n(context)", st["lambda_max"], "C1")]
    for j, (_, vals, color) in enumerate(groups):
        v = np.asarray(vals, dtype=float)
        ok = np.isfinite(v)
        ax.plot(np.full(ok.sum(), j) + np.linspace(-0.12, 0.12, ok.sum()), v[ok], "o", color=color, ms=4, alpha=0.8)
        if ok.sum() >= 2:
            interval_bar(ax, j + 0.25, v[ok], fmt="s", color=color, capsize=3, ms=4)
    ax.axhline(_HALF, color="k", ls="--", lw=0.8, label="halving (log10 0.5)")
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g[0] for g in groups], fontsize=7)
    label_axes(ax, ylabel="log10(end / start)", title="per seed (dots) and mean with 95% t-interval", title_size=9,
               legend=7)
    return save_figure(fig, work_dir, "negative_curvature",
                       "Left: |λmin| (solid) and λmax (dashed) of the Hessian along each SGD run (one colour per "
                       "seed); x: the control's second measurement of θ_T. Right: log10 of end/start per seed for "
                       "the decisive |λmin| and SLQ negative mass, their controls (θ_T measured twice) and, as "
                       "context, the positive mass and λmax; dashed: the halving threshold.")
