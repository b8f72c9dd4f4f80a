"""C11 — Implicit regularization: width beyond fitting keeps test error falling (Neyshabur, Tomioka & Srebro
2015, arXiv 1412.6614), and it is not norm minimization (Razin & Cohen 2020, arXiv 2005.06398).

1. **Width sweep.** One-hidden-layer ReLU MLPs of increasing width on scikit-learn digits, all trained with the
   same budget (SGD, no explicit regularization). The interpolation threshold is the first width whose train
   error is ``<= interp_threshold``. Past it, test error must not increase with width: every wider net's test
   error :math:`e_j` is at most the best narrower (interpolating) net's :math:`\\min_{i<j} e_i` plus the noise of
   the two test-error estimates,

   .. math::

       \\tau_{ij} = z\\,\\sqrt{e_i(1-e_i)/n + e_j(1-e_j)/n}, \\qquad n = n_{test} \\times \\#\\text{seeds}.

2. **Deep matrix factorization** (:func:`losslab.probes.deep_matrix_completion`): a depth-``depth`` product of
   2x2 matrices trained by gradient descent (balanced init :math:`0.1 I`) on Razin & Cohen's completion problem
   (observed :math:`w_{12} = w_{21} = 1`, :math:`w_{22} = 0`; :math:`w_{11}` unobserved). The minimum-nuclear-norm
   completion is :math:`w_{11} = 0` (nuclear norm 2, computed numerically here); gradient descent instead drives
   :math:`|w_{11}|` and every norm up while the loss goes to 0 (det W > 0 is kept, so fitting forces
   :math:`|w_{11}| \\to \\infty`): the implicit bias is toward low rank, not small norm.

Checks: precondition — some width interpolates and wider ones exist; decisive — test error non-increasing past
the threshold (within :math:`\\tau`); the factorization's loss falls below ``loss_drop`` of its start; once the
loss is below 10% of its start, :math:`|w_{11}|`, the nuclear, Frobenius and Schatten-1/2 and -1/4 (quasi-)norms
never decrease and end at least ``min_growth`` times higher; the final nuclear norm is at least ``min_growth``
times the minimum-nuclear-norm completion's. Context: the widest net's test error vs the threshold net's;
other depths (full profile); the effective rank falls to about 1.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

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
from .d1_intrinsic_dim import log_ticks

ID = "C11"
VERSION = 1
COST = {"quick": 20, "full": 240}

NORMS = ("unobserved", "nuclear", "frobenius", "schatten_half", "schatten_quarter")


def width_mlp(width: int = 64, epochs: int = 40) -> TrainConfig:
    """SGD one-hidden-layer MLP on digits (lr 0.05, momentum 0.9, batch 128), no checkpoints."""
    return train_config(dataset="digits", model="mlp", model_kwargs={"width": int(width), "depth": 1}, optimizer="sgd",
                        lr=0.05, momentum=0.9, epochs=epochs, checkpoints="none")


def with_width(config: TrainConfig, width: int) -> TrainConfig:
    """The same run with another hidden width."""
    kw = dict(config.model.model_kwargs)
    kw["width"] = int(width)
    return dataclasses.replace(config, model=dataclasses.replace(config.model, model_kwargs=kw))


@dataclass(frozen=True)
class Config:
    """C11 settings.

    Attributes:
        train: the run recipe (its width is replaced by each of ``widths``).
        widths: hidden widths (increasing).
        seeds: seeds per width.
        interp_threshold: a width interpolates when its mean train error is ``<=`` this.
        z: noise multiplier of the tolerance.
        depth, steps, init_scale, lr, step: the factorization (:func:`losslab.probes.deep_matrix_completion`).
        context_depths: further factorization depths shown for context.
        loss_drop: decisive: final loss <= loss_drop x initial loss.
        min_growth: decisive: norms end >= min_growth x their value when the loss reached 10% of its start,
            and the final nuclear norm >= min_growth x the minimum-nuclear-norm completion.
    """

    train: TrainConfig = field(default_factory=width_mlp)
    widths: tuple[int, ...] = (8, 32, 128, 512, 2048)
    seeds: tuple[int, ...] = (0,)
    interp_threshold: float = 0.01
    z: float = 2.0
    depth: int = 3
    steps: int = 20000
    init_scale: float = 0.1
    lr: float = 0.2
    step: str = "normalized"
    context_depths: tuple[int, ...] = ()
    loss_drop: float = 0.01
    min_growth: float = 2.0

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        return cls(train=width_mlp(epochs=60), widths=(4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
                   seeds=(0, 1, 2), steps=100000, context_depths=(2, 4))


def min_nuclear_completion(observed: Mapping[str, float] | None = None) -> dict[str, float]:
    """The completion of a 2x2 matrix with one unobserved entry that has the smallest nuclear norm
    (convex in the entry; bounded scalar search). ``observed`` as ``{"01": 1.0, ...}``; default Razin & Cohen's.

    Example:
        >>> r = min_nuclear_completion()
        >>> round(r["nuclear"], 6), round(abs(r["value"]), 4)
        (2.0, 0.0)
    """
    from scipy.optimize import minimize_scalar

    obs = {"01": 1.0, "10": 1.0, "11": 0.0} if observed is None else dict(observed)
    (u,) = [k for k in ("00", "01", "10", "11") if k not in obs]
    scale = 10.0 * (1.0 + max(abs(v) for v in obs.values()))

    def nuc(x: float) -> float:
        M = np.zeros((2, 2))
        for k, v in {**obs, u: x}.items():
            M[int(k[0]), int(k[1])] = v
        return float(np.linalg.svd(M, compute_uv=False).sum())

    res = minimize_scalar(nuc, bounds=(-scale, scale), method="bounded", options={"xatol": 1e-10})
    return {"value": float(res.x), "nuclear": float(res.fun), "entry": u}


def _factorization(depth: int, config: Config) -> dict[str, Any]:
    from ..probes import deep_matrix_completion

    r = deep_matrix_completion(depth, init_scale=config.init_scale, lr=config.lr, steps=config.steps,
                               step=config.step)  # type: ignore[arg-type]
    out = {k: np.asarray(getattr(r, k), dtype=float).tolist() for k in ("loss", *NORMS, "effective_rank", "det")}
    out.update(depth=depth, steps=np.asarray(r.steps).tolist(), product=np.asarray(r.product).tolist(),
               observed=r.meta["observed"], seconds=r.meta["seconds"])
    return out


def _weight_norm(model: Any) -> float:
    return float(math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in model.parameters() if p.dim() > 1)))


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    """Width sweep (trained runs, shared cache) and the factorization; judge; plot."""
    from . import recipes

    timer = Timer()
    widths = sorted(int(w) for w in config.widths)
    rows = []
    bundle = None
    for w in widths:
        tr, te, wn, names = [], [], [], []
        for s in config.seeds:
            with timer("train"):
                r = train_run(recipes.with_seed(with_width(config.train, w), s), cache_dir, progress)
            tr.append(r.summary["train_error"])
            te.append(r.summary["test_error"])
            wn.append(_weight_norm(r.build_model()))
            names.append(r.path.name)
            if bundle is None:
                bundle = r.bundle()
        rows.append({"width": w, "train_error": float(np.mean(tr)), "test_error": float(np.mean(te)),
                     "train_error_per_seed": tr, "test_error_per_seed": te, "weight_norm": float(np.mean(wn)),
                     "runs": names})
        progress(f"width {w}: train error {np.mean(tr):.4f}, test error {np.mean(te):.4f}")
    assert bundle is not None
    with timer("factorization"):
        fact = _factorization(config.depth, config)
        ctx = [_factorization(d, config) for d in config.context_depths if d != config.depth]
    mn = min_nuclear_completion(fact["observed"])
    progress(f"depth-{config.depth} factorization: loss {fact['loss'][0]:.3g} -> {fact['loss'][-1]:.3g}, |w11| "
             f"{fact['unobserved'][0]:.3g} -> {fact['unobserved'][-1]:.3g}")
    m = {"widths": rows, "n_test": len(bundle.test), "n_seeds": len(config.seeds),
         "interp_threshold": config.interp_threshold, "z": config.z, "factorization": fact,
         "context_factorizations": ctx, "min_nuclear": mn, "loss_drop": config.loss_drop,
         "min_growth": config.min_growth}
    verdict = judge(m)

    with timer("plot"):
        fig_ref = _figure(m, work_dir)
    a = width_analysis(m)
    f = fact
    key = {
        "interpolation threshold (width)": a["threshold_width"],
        "test error at threshold / widest": f"{a['e_threshold']:.4f} / {a['e_last']:.4f}"
        if a["threshold_width"] is not None else "n/a",
        "worst rise past threshold (tolerance)": f"{a['worst_excess']:+.4f}" if a["threshold_width"] is not None else "n/a",
        f"depth-{config.depth} loss first / last": f"{f['loss'][0]:.3g} / {f['loss'][-1]:.3g}",
        "|w11|, nuclear norm last (min completion)": f"{f['unobserved'][-1]:.3g}, {f['nuclear'][-1]:.3g} ({mn['nuclear']:.3g})",
    }
    te = ", ".join(f"{r['width']}: {r['test_error']:.3f}" for r in rows)
    comparison = (
        f"Test error by width (train error <= {config.interp_threshold:g} from width {a['threshold_width']}): {te}. "
        f"Depth-{config.depth} 2x2 factorization: loss {f['loss'][0]:.3g} -> {f['loss'][-1]:.3g} over {config.steps} GD "
        f"steps while |w11| {f['unobserved'][0]:.3g} -> {f['unobserved'][-1]:.3g}, nuclear norm {f['nuclear'][0]:.3g} -> "
        f"{f['nuclear'][-1]:.3g} (the minimum-nuclear-norm completion has {mn['nuclear']:.3g}, w11 = 0), effective rank "
        f"{f['effective_rank'][0]:.2f} -> {f['effective_rank'][-1]:.3f}."
    )
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"runs": list(config.seeds), "note": "init and data order from each run's seed; factorization: "
                                                  "deterministic identity init"},
        data=describe_data(bundle) + "; factorization: Razin & Cohen's 2x2 completion", timings=timer.seconds,
    )


def width_analysis(m: Mapping[str, Any]) -> dict[str, Any]:
    """Threshold width and the largest excess of a wider net's test error over the best narrower
    interpolating net's, relative to the tolerance (``excess - tolerance``; ``<= 0`` everywhere means
    non-increasing)."""
    rows = sorted(m["widths"], key=lambda r: r["width"])
    n = float(m["n_test"]) * float(m.get("n_seeds", 1))
    z = float(m["z"])
    thr = next((i for i, r in enumerate(rows) if r["train_error"] <= float(m["interp_threshold"])), None)
    out: dict[str, Any] = {"threshold_index": thr, "threshold_width": None if thr is None else rows[thr]["width"],
                           "n_past": 0 if thr is None else len(rows) - thr - 1, "steps": []}
    if thr is None:
        out.update(e_threshold=math.nan, e_last=math.nan, worst_excess=math.nan)
        return out
    worst = -math.inf
    for j in range(thr + 1, len(rows)):
        prev = [rows[i]["test_error"] for i in range(thr, j)]
        i_best = thr + int(np.argmin(prev))
        ei, ej = rows[i_best]["test_error"], rows[j]["test_error"]
        tol = z * math.sqrt(ei * (1 - ei) / n + ej * (1 - ej) / n)
        excess = ej - ei - tol
        out["steps"].append({"width": rows[j]["width"], "best_narrower": rows[i_best]["width"], "e": ej, "e_best": ei,
                             "tolerance": tol, "excess": excess})
        worst = max(worst, excess)
    out.update(e_threshold=rows[thr]["test_error"], e_last=rows[-1]["test_error"],
               worst_excess=worst if out["steps"] else math.nan)
    return out


def _growth(f: Mapping[str, Any], key: str) -> dict[str, Any]:
    loss = np.asarray(f["loss"], dtype=float)
    v = np.asarray(f[key], dtype=float)
    fit = np.nonzero(loss <= 0.1 * loss[0])[0]
    if fit.size == 0:
        return {"monotone": None, "growth": math.nan, "start": math.nan, "last": float(v[-1])}
    i = int(fit[0])
    tail = v[i:]
    mono = bool(np.all(np.diff(tail) >= -1e-9 * np.maximum(1.0, np.abs(tail[:-1]))))
    return {"monotone": mono, "growth": float(v[-1] / v[i]) if v[i] > 0 else math.inf, "start": float(v[i]),
            "last": float(v[-1]), "from_step": int(f["steps"][i])}


def _figure(m: Mapping[str, Any], work_dir: Path) -> Any:
    fig, axes = new_figure(2, 1, width=5.0, height=3.4)
    rows = sorted(m["widths"], key=lambda r: r["width"])
    w = [r["width"] for r in rows]
    ax = axes[0]
    ax.plot(w, [r["train_error"] for r in rows], "s--", color="C0", label="train error")
    ax.plot(w, [r["test_error"] for r in rows], "o-", color="C3", label="test error")
    for r in rows:
        if len(r["test_error_per_seed"]) > 1:
            ax.plot([r["width"]] * len(r["test_error_per_seed"]), r["test_error_per_seed"], ".", color="C3", alpha=0.4)
    a = width_analysis(m)
    if a["threshold_width"] is not None:
        ax.axvline(a["threshold_width"], color="0.4", ls=":", lw=1, label="interpolation threshold")
    log_ticks(ax, w)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("hidden width")
    ax.set_ylabel("error")
    ax.set_title("one-hidden-layer MLP on digits (SGD)", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1]
    f = m["factorization"]
    steps = np.asarray(f["steps"], dtype=float)
    x = np.maximum(steps, 1)
    ax.plot(x, f["loss"], color="k", label="loss")
    for k, c in zip(("unobserved", "nuclear", "frobenius", "schatten_half"), ("C3", "C0", "C1", "C2")):
        ax.plot(x, f[k], color=c, label={"unobserved": "|w11|", "schatten_half": "Schatten-1/2"}.get(k, k))
    ax.plot(x, f["effective_rank"], "--", color="C4", label="effective rank")
    ax.axhline(m["min_nuclear"]["nuclear"], color="C0", ls=":", lw=1, label="min nuclear-norm completion")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("GD step (+1)")
    ax.set_title(f"depth-{f['depth']} 2x2 matrix completion", fontsize=10)
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, work_dir, "implicit_reg",
                       "Left: train and test error vs hidden width (same SGD budget, no regularization); dotted: the "
                       "interpolation threshold. Right: gradient descent on a depth-3 factorization of Razin & Cohen's "
                       "2x2 completion: the loss goes to 0 while the unobserved entry and every norm grow (the "
                       "minimum-nuclear-norm completion has norm 2) and the effective rank falls to 1.")


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m["widths"]``: rows with ``width``, ``train_error``, ``test_error``; ``n_test``, ``n_seeds``,
    ``interp_threshold``, ``z``; ``m["factorization"]``: ``steps``, ``loss`` and the norm series of
    :data:`NORMS`; ``m["min_nuclear"]["nuclear"]``; ``loss_drop``, ``min_growth``."""
    a = width_analysis(m)
    checks = [Check("some width interpolates", a["threshold_width"] is not None and a["n_past"] >= 1,
                    f"first width with train error <= {float(m['interp_threshold']):g}: {a['threshold_width']}, "
                    f"{a['n_past']} wider", precondition=True)]
    if a["steps"]:
        bad = max(a["steps"], key=lambda s: s["excess"])
        checks.append(Check("test error non-increasing past interpolation", a["worst_excess"] <= 0,
                            f"largest rise: width {bad['width']} {bad['e']:.4f} vs best narrower (width "
                            f"{bad['best_narrower']}) {bad['e_best']:.4f}, tolerance {bad['tolerance']:.4f}"))
        checks.append(Check("test error keeps falling", a["e_last"] < a["e_threshold"],
                            f"widest {a['e_last']:.4f} vs threshold width {a['e_threshold']:.4f}", decisive=False))
    f = m["factorization"]
    drop = float(m["loss_drop"])
    lf, ll = float(f["loss"][0]), float(f["loss"][-1])
    checks.append(Check("factorization loss -> 0", ll <= drop * lf,
                        f"loss {lf:.3g} -> {ll:.3g} (needs <= {drop:g}x)"))
    g = float(m["min_growth"])
    for k in NORMS:
        r = _growth(f, k)
        ok = None if r["monotone"] is None else bool(r["monotone"] and r["growth"] >= g)
        label = {"unobserved": "|w11|"}.get(k, k)
        checks.append(Check(f"{label} grows while fitting", ok,
                            "loss never fell below 10% of its start" if r["monotone"] is None else
                            f"{r['start']:.3g} at step {r['from_step']} -> {r['last']:.3g} ({r['growth']:.1f}x, "
                            f"{'never decreasing' if r['monotone'] else 'decreases somewhere'}; needs >= {g:g}x)"))
    mn = float(m["min_nuclear"]["nuclear"])
    nl = float(f["nuclear"][-1])
    checks.append(Check("not nuclear-norm minimization", nl >= g * mn,
                        f"final nuclear norm {nl:.3g} vs minimum over completions {mn:.3g} (needs >= {g:g}x)"))
    checks.append(Check("effective rank -> 1", float(f["effective_rank"][-1]) < 1.05,
                        f"effective rank {f['effective_rank'][0]:.2f} -> {f['effective_rank'][-1]:.3f}", decisive=False))
    for c in m.get("context_factorizations", []):
        grew = all(_growth(c, k)["growth"] >= g for k in ("unobserved", "nuclear"))
        checks.append(Check(f"depth {c['depth']}: same picture", grew and c["loss"][-1] <= drop * c["loss"][0],
                            f"loss {c['loss'][0]:.3g} -> {c['loss'][-1]:.3g}, |w11| -> {c['unobserved'][-1]:.3g}",
                            decisive=False))
    return verdict_from_checks(checks)
