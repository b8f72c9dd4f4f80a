"""C12 — Myths of generalization (Goldblum, Geiping, Schwarzschild, Moeller & Goldstein 2020, "Truth or
Backpropaganda?", arXiv 1910.00359; Geiping et al. 2022, arXiv 2109.14119): regularization toward small norm,
SGD noise and low-rank layers are not what makes nets generalize.

One MLP recipe on scikit-learn digits (64-64-64-10, SGD lr 0.05, momentum 0.9, batch 128, 40 epochs), trained
per seed as five variants:

* ``sgd`` — no explicit regularization;
* ``wd_zero`` — decoupled weight decay toward norm 0, penalty :math:`\\lambda\\lVert\\theta\\rVert^2`
  (:class:`losslab.probes.NormDecay` with target 0, weights only);
* ``wd_norm`` — the same strength toward a *non-zero* norm, :math:`\\lambda(\\lVert\\theta\\rVert - \\mu)^2` with
  :math:`\\mu` = ``target_factor`` x the init's weight norm (Goldblum et al.'s norm-bias);
* ``gd`` — full-batch gradient descent (``batch_size = 0``, lr ``gd_lr``, ``gd_epochs`` steps);
* ``gd_reg`` — full-batch GD plus the explicit regularizer (weight decay toward 0, as ``wd_zero``).

Measured per variant (means over seeds): final train/test error, weight norm, and the effective rank
(Roy & Vetterli; :func:`losslab.probes.layer_effective_ranks`) of each hidden weight matrix divided by its
maximum :math:`\\min(m, n)` (head excluded). Differences of test errors are judged against their sampling noise,
:math:`\\tau = z\\sqrt{e_1(1-e_1)/n + e_2(1-e_2)/n}` with :math:`n = n_{test} \\times \\#\\text{seeds}`.

Sub-claims (each a measured comparison; the verdict combines them):

* (a) decay toward zero is not what matters: test error of ``wd_norm`` <= ``wd_zero`` + :math:`\\tau`
  (precondition: the two decays did reach different norms, ratio >= ``min_norm_ratio``);
* (b) SGD noise is not necessary: ``gd_reg`` <= ``sgd`` + :math:`\\tau` (plain ``gd`` as context);
* (c) low rank is not required: the variant with the highest mean normalized effective rank has test error
  <= the lowest-rank variant's + :math:`\\tau` (undecided when their ranks differ by less than
  ``min_rank_gap``, relative); Spearman's rank correlation over all runs as context.

Precondition: every run trained (train error <= ``max_train_error``).
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
    run_lock,
    save_figure,
    train_config,
    train_run,
)

ID = "C12"
VERSION = 1
COST = {"quick": 20, "full": 200}

VARIANTS = ("sgd", "wd_zero", "wd_norm", "gd", "gd_reg")
LABELS = {"sgd": "SGD", "wd_zero": "SGD + decay to 0", "wd_norm": "SGD + decay to μ", "gd": "full-batch GD",
          "gd_reg": "GD + decay to 0"}


def myths_mlp(epochs: int = 40) -> TrainConfig:
    """SGD MLP 64-64-64-10 on digits (lr 0.05, momentum 0.9, batch 128), no intermediate checkpoints."""
    return train_config(dataset="digits", model="mlp", model_kwargs={"width": 64, "depth": 2}, optimizer="sgd",
                        lr=0.05, momentum=0.9, epochs=epochs, checkpoints="none")


@dataclass(frozen=True)
class Config:
    """C12 settings.

    Attributes:
        train: the SGD recipe (variants change batch size / lr / epochs or add a NormDecay callback).
        seeds: seeds of every variant.
        strength: lambda of both decays.
        target_factor: mu = target_factor x the init's weight norm for ``wd_norm``.
        gd_lr, gd_epochs: full-batch GD (momentum as in ``train``); one step per epoch.
        z: noise multiplier of the tolerance.
        max_train_error: precondition: every run fits its training set to this.
        min_norm_ratio: precondition of (a): weight norm of wd_norm / wd_zero.
        min_rank_gap: (c) is undecided when the highest and lowest variant ranks differ by less (relative).
    """

    train: TrainConfig = field(default_factory=myths_mlp)
    seeds: tuple[int, ...] = (0, 1)
    strength: float = 0.01
    target_factor: float = 2.0
    gd_lr: float = 0.3
    gd_epochs: int = 100
    z: float = 2.0
    max_train_error: float = 0.03
    min_norm_ratio: float = 1.1
    min_rank_gap: float = 0.03

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        return cls(train=myths_mlp(60), seeds=(0, 1, 2, 3, 4), gd_epochs=200)


def _gd(config: Config, base: TrainConfig) -> TrainConfig:
    return dataclasses.replace(base, optim=dataclasses.replace(base.optim, batch_size=0, lr=config.gd_lr,
                                                               epochs=config.gd_epochs))


def _weights(model: Any) -> dict[str, Any]:
    return {k: p.detach() for k, p in model.named_parameters() if p.dim() > 1}


def _weight_norm(model: Any) -> float:
    return float(math.sqrt(sum(float((p.double() ** 2).sum()) for p in _weights(model).values())))


def _ranks(model: Any) -> dict[str, float]:
    """Normalized effective rank (erank / min(m, n)) of each hidden weight matrix (the head excluded)."""
    from ..probes import layer_effective_ranks

    w = _weights(model)
    er = layer_effective_ranks(model)
    return {k: er[k] / min(w[k].shape[0], int(np.prod(w[k].shape[1:]))) for k in er if not k.startswith("head")}


def _norm_decay_run(config: TrainConfig, strength: float, target: float, cache_dir: Path,
                    progress: Callable[[str], None]) -> Any:
    """:func:`losslab.probes.train_with_norm_decay` in ``cache_dir/runs-normdecay`` under a lock (reused when done)."""
    from ..probes import train_with_norm_decay

    out = Path(cache_dir) / "runs-normdecay"
    with run_lock(out / ".locks" / f"nd-{strength:g}-{target:g}.lock"):
        r = train_with_norm_decay(config, strength, target, out=out, progress=False)
    progress(f"norm decay λ={strength:g} μ={target:.3g} ({config.optim.batch_size or 'full'} batch): train error "
             f"{r.summary['train_error']:.4f}, test error {r.summary['test_error']:.4f}")
    return r


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    """Train the five variants per seed, measure errors, norms and effective ranks; judge; plot."""
    from . import recipes

    timer = Timer()
    cells: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    bundle = None
    for s in config.seeds:
        base = recipes.with_seed(config.train, s)
        with timer("train"):
            sgd = train_run(base, cache_dir, progress)
            if bundle is None:
                bundle = sgd.bundle()
            w0 = _weight_norm(sgd.build_model(step=0))
            mu = round(config.target_factor * w0, 4)
            runs = {
                "sgd": sgd,
                "wd_zero": _norm_decay_run(base, config.strength, 0.0, cache_dir, progress),
                "wd_norm": _norm_decay_run(base, config.strength, mu, cache_dir, progress),
                "gd": train_run(_gd(config, base), cache_dir, progress),
                "gd_reg": _norm_decay_run(_gd(config, base), config.strength, 0.0, cache_dir, progress),
            }
        with timer("measure"):
            for v, r in runs.items():
                model = r.build_model()
                ranks = _ranks(model)
                cells[v].append({"seed": s, "train_error": r.summary["train_error"], "test_error": r.summary["test_error"],
                                 "weight_norm": _weight_norm(model), "init_weight_norm": w0, "ranks": ranks,
                                 "rank": float(np.mean(list(ranks.values()))), "run": r.path.name,
                                 "target": mu if v == "wd_norm" else (0.0 if v in ("wd_zero", "gd_reg") else None)})
    assert bundle is not None
    summary = {v: {k: float(np.mean([c[k] for c in cells[v]])) for k in ("train_error", "test_error", "weight_norm", "rank")}
               for v in VARIANTS}
    m = {"cells": cells, "summary": summary, "n_test": len(bundle.test), "n_seeds": len(config.seeds), "z": config.z,
         "max_train_error": config.max_train_error, "min_norm_ratio": config.min_norm_ratio,
         "min_rank_gap": config.min_rank_gap}
    verdict = judge(m)
    subs = subclaims(m)
    m["subclaims"] = {k: v.status for k, v in subs.items()}

    with timer("plot"):
        fig_ref = _figure(m, work_dir)
    S = summary
    hi, lo = _extremes(S)
    key = {
        "(a) test error, decay to μ vs to 0": f"{S['wd_norm']['test_error']:.4f} vs {S['wd_zero']['test_error']:.4f} "
                                               f"({subs['a'].status})",
        "(b) test error, GD + decay vs SGD": f"{S['gd_reg']['test_error']:.4f} vs {S['sgd']['test_error']:.4f} "
                                              f"({subs['b'].status})",
        "(c) test error, highest vs lowest rank": f"{S[hi]['test_error']:.4f} vs {S[lo]['test_error']:.4f} "
                                                   f"({subs['c'].status})",
        "effective rank, highest vs lowest": f"{S[hi]['rank']:.3f} ({LABELS[hi]}) vs {S[lo]['rank']:.3f} ({LABELS[lo]})",
    }
    comparison = " ".join([
        (f"(a) Weight decay with λ = {config.strength:g} toward 0 ends at weight norm {S['wd_zero']['weight_norm']:.2f} with "
        f"test error {S['wd_zero']['test_error']:.4f}; toward μ = {config.target_factor:g}x the init norm at "
        f"{S['wd_norm']['weight_norm']:.2f} with {S['wd_norm']['test_error']:.4f} (no decay: {S['sgd']['test_error']:.4f})."),
        (f"(b) Full-batch GD: {S['gd']['test_error']:.4f}, with the decay {S['gd_reg']['test_error']:.4f}, vs SGD "
        f"{S['sgd']['test_error']:.4f}."),
        "(c) Mean normalized effective rank of the hidden layers: " +
        ", ".join(f"{LABELS[v]} {S[v]['rank']:.3f}" for v in VARIANTS) +
        f"; Spearman(rank, test error) over runs {spearman(m):+.2f}.",
    ])
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"runs": list(config.seeds), "note": "every variant of a seed shares its init and data order"},
        data=describe_data(bundle), timings=timer.seconds,
        notes=[(f"GD: {config.gd_epochs} full-batch steps at lr {config.gd_lr:g}; SGD: {config.train.optim.epochs} epochs "
               f"of batch {config.train.optim.batch_size} at lr {config.train.optim.lr:g}. Tolerances are 2 standard "
               f"deviations of a difference of test errors on {len(bundle.test)} x {len(config.seeds)} examples.")],
    )


def _tol(e1: float, e2: float, m: Mapping[str, Any]) -> float:
    n = float(m["n_test"]) * float(m.get("n_seeds", 1))
    return float(m["z"]) * math.sqrt(max(e1 * (1 - e1), 0.0) / n + max(e2 * (1 - e2), 0.0) / n)


def _extremes(S: Mapping[str, Mapping[str, float]]) -> tuple[str, str]:
    order = sorted(S, key=lambda v: S[v]["rank"])
    return order[-1], order[0]


def spearman(m: Mapping[str, Any]) -> float:
    """Spearman rank correlation of effective rank vs test error over all runs (NaN if undefined)."""
    from scipy.stats import spearmanr

    xs = [c["rank"] for v in m["cells"] for c in m["cells"][v]]
    ys = [c["test_error"] for v in m["cells"] for c in m["cells"][v]]
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return math.nan
    return float(spearmanr(xs, ys).statistic)


def _checks(m: Mapping[str, Any]) -> dict[str, list[Check]]:
    S = m["summary"]
    e = {v: S[v]["test_error"] for v in S}
    pre = []
    max_err = float(m["max_train_error"])
    for v in VARIANTS:
        worst = max(c["train_error"] for c in m["cells"][v])
        pre.append(Check(f"{LABELS[v]} trained", worst <= max_err,
                         f"train error {worst:.4f} (worst seed; needs <= {max_err:g})", precondition=True))
    a: list[Check] = []
    ratio = S["wd_norm"]["weight_norm"] / max(1e-12, S["wd_zero"]["weight_norm"])
    a.append(Check("(a) the decays reached different norms", ratio >= float(m["min_norm_ratio"]),
                   f"weight norm {S['wd_norm']['weight_norm']:.2f} (to μ) vs {S['wd_zero']['weight_norm']:.2f} (to 0): "
                   f"{ratio:.2f}x (needs >= {float(m['min_norm_ratio']):g}x)", precondition=True))
    t = _tol(e["wd_norm"], e["wd_zero"], m)
    a.append(Check("(a) decay toward μ > 0 generalizes as well as toward 0", e["wd_norm"] <= e["wd_zero"] + t,
                   f"test error {e['wd_norm']:.4f} (to μ) vs {e['wd_zero']:.4f} (to 0), tolerance {t:.4f}"))
    t0 = _tol(e["wd_zero"], e["sgd"], m)
    a.append(Check("(a) decay toward 0 vs none", e["wd_zero"] <= e["sgd"] + t0,
                   f"test error {e['wd_zero']:.4f} vs {e['sgd']:.4f} without decay (tolerance {t0:.4f})", decisive=False))
    b: list[Check] = []
    t = _tol(e["gd_reg"], e["sgd"], m)
    b.append(Check("(b) full-batch GD + regularizer matches SGD", e["gd_reg"] <= e["sgd"] + t,
                   f"test error {e['gd_reg']:.4f} (GD + decay) vs {e['sgd']:.4f} (SGD), tolerance {t:.4f}"))
    t = _tol(e["gd"], e["sgd"], m)
    b.append(Check("(b) plain full-batch GD vs SGD", e["gd"] <= e["sgd"] + t,
                   f"test error {e['gd']:.4f} vs {e['sgd']:.4f} (tolerance {t:.4f})", decisive=False))
    c: list[Check] = []
    hi, lo = _extremes(S)
    gap = (S[hi]["rank"] - S[lo]["rank"]) / max(1e-12, S[lo]["rank"])
    t = _tol(e[hi], e[lo], m)
    decided = gap >= float(m["min_rank_gap"])
    c.append(Check("(c) higher effective rank generalizes as well", (e[hi] <= e[lo] + t) if decided else None,
                   f"highest rank {LABELS[hi]} {S[hi]['rank']:.3f} test error {e[hi]:.4f} vs lowest {LABELS[lo]} "
                   f"{S[lo]['rank']:.3f} test error {e[lo]:.4f} (tolerance {t:.4f}; rank gap {gap:.1%}, needs >= "
                   f"{float(m['min_rank_gap']):.0%})"))
    rho = spearman(m)
    c.append(Check("(c) higher rank not tied to higher error", None if math.isnan(rho) else rho < 0.5,
                   f"Spearman(effective rank, test error) = {rho:+.2f} over all runs (the low-rank story predicts a "
                   f"strong positive value)", decisive=False))
    return {"pre": pre, "a": a, "b": b, "c": c}


def subclaims(m: Mapping[str, Any]) -> dict[str, Verdict]:
    """The verdict of each sub-claim on its own (with the shared preconditions)."""
    ch = _checks(m)
    return {k: verdict_from_checks(ch["pre"] + ch[k]) for k in ("a", "b", "c")}


def _figure(m: Mapping[str, Any], work_dir: Path) -> Any:
    fig, axes = new_figure(2, 1, width=4.6, height=3.4)
    S = m["summary"]
    ax = axes[0]
    x = np.arange(len(VARIANTS))
    err = [S[v]["test_error"] for v in VARIANTS]
    tol = [_tol(S[v]["test_error"], S[v]["test_error"], m) / math.sqrt(2) for v in VARIANTS]
    ax.bar(x, err, yerr=tol, capsize=3, color=["C0", "C1", "C2", "C3", "C4"], alpha=0.8)
    for v_i, v in enumerate(VARIANTS):
        for c in m["cells"][v]:
            ax.plot(v_i, c["test_error"], "k.", ms=4)
    ax.set_xticks(x)
    ax.set_xticklabels([LABELS[v] for v in VARIANTS], rotation=25, ha="right", fontsize=7)
    ax.set_ylabel("test error")
    ax.set_title("test error by variant (bars: mean, ±2 sd noise)", fontsize=10)
    ax = axes[1]
    for i, v in enumerate(VARIANTS):
        ax.plot([c["rank"] for c in m["cells"][v]], [c["test_error"] for c in m["cells"][v]], "o", color=f"C{i}",
                label=f"{LABELS[v]} (|θ_w| {S[v]['weight_norm']:.1f})")
    ax.set_xlabel("mean normalized effective rank of hidden layers")
    ax.set_ylabel("test error")
    ax.set_title(f"rank vs generalization (Spearman {spearman(m):+.2f})", fontsize=10)
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    return save_figure(fig, work_dir, "myths",
                       "Left: test error of each variant (dots: seeds). Right: effective rank of the hidden weight "
                       "matrices (divided by its maximum) vs test error; legend: final weight norm.")


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m["summary"][variant]``: ``train_error``, ``test_error``, ``weight_norm``, ``rank`` for the variants of
    :data:`VARIANTS`; ``m["cells"][variant]``: per-seed records (``train_error``, ``test_error``, ``rank``); ``n_test``,
    ``n_seeds``, ``z``, ``max_train_error``, ``min_norm_ratio``, ``min_rank_gap``. The (a) norm precondition makes
    only the verdict inconclusive, as every precondition does."""
    ch = _checks(m)
    return verdict_from_checks(ch["pre"] + ch["a"] + ch["b"] + ch["c"])
