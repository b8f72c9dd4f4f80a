"""C12 — Myths of generalization (Goldblum, Geiping, Schwarzschild, Moeller & Goldstein 2020, "Truth or
Backpropaganda?", arXiv 1910.00359; Geiping et al. 2022, arXiv 2109.14119): regularization toward small norm,
SGD noise and low-rank layers are not what makes nets generalize.

One MLP recipe on scikit-learn digits (64-64-64-10, SGD lr 0.05, momentum 0.9, batch 128, 40 epochs), trained
on each seed (init and data order shared by every variant of that seed) as five variants:

* ``sgd`` — no explicit regularization;
* ``wd_zero`` — decoupled weight decay toward norm 0, penalty :math:`\\lambda\\lVert\\theta\\rVert^2`
  (:class:`losslab.probes.NormDecay` with target 0, weights only);
* ``wd_norm`` — the same strength toward a *non-zero* norm, :math:`\\lambda(\\lVert\\theta\\rVert - \\mu)^2` with
  :math:`\\mu` = ``target_factor`` x the init's weight norm (Goldblum et al.'s norm-bias);
* ``gd_reg`` — full-batch gradient descent (``batch_size = 0``, lr ``gd_lr``, ``gd_epochs`` steps) plus the explicit
  regularizer (weight decay toward 0, as ``wd_zero``);
* ``rank_up`` — SGD with a decoupled spectral step that pulls every hidden weight matrix's singular values
  toward their mean (:class:`RankUp`): a regularizer that *raises* the effective rank.

Each sub-claim is a per-seed paired difference of test errors judged on a 95% t-interval over seeds against a
margin fixed in :data:`CRITERIA` (one-sided: the claims are "no worse", so a candidate that generalizes clearly
*better* supports them; a noisy comparison gives a wide interval and an undecided check, never a pass):

* (a) decay toward :math:`\\mu > 0` is no worse than toward 0: :math:`e(\\text{wd\\_norm}) - e(\\text{wd\\_zero})`;
* (b) SGD noise is not needed: :math:`e(\\text{gd\\_reg}) - e(\\text{sgd})`;
* (c) low rank is not needed: :math:`e(\\text{rank\\_up}) - e(\\text{sgd})`.

Preconditions: every compared run fits its training set (train error ``<= 3%``); the two decays end at
different norms; the rank regularizer did raise the effective rank. Negative control (same judge): the three
candidates (decay toward :math:`\\mu`, GD + decay, rank-raising SGD) trained on a quarter of the training set, so
each generalizes worse than its full-data baseline for a reason no myth concerns; every comparison must fail.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..config import TrainConfig
from ._base import ExperimentResult, Verdict, verdict_from_checks
from .common import (
    describe_data, interval_text, label_axes, new_figure, row_result, RowConfig, run_lock, save_figure, Timer,
    train_config, train_run,
)
from .criteria import Control, Criteria, Criterion, SEED_PLAN_2026_12_04

ID = "C12"
VERSION = 2
COST = {"quick": 40, "full": 100}

VARIANTS = ("sgd", "wd_zero", "wd_norm", "gd_reg", "rank_up")
LABELS = {"sgd": "SGD", "wd_zero": "SGD + decay to 0", "wd_norm": "SGD + decay to μ", "gd_reg": "full-batch GD + decay to 0",
          "rank_up": "SGD + rank-raising step"}
CONTROL_REPLACED = ("wd_norm", "gd_reg", "rank_up")
"""Candidates the control retrains on a quarter of the training set."""

MARGIN = 0.01
_TRAINED_SRC = ("as in v1: every compared run fits its training set to <= 3% (regularized nets leave 1-1.5% training "
                "error at λ = 0.01: the regime of this row)")
_MARGIN_SRC = ("non-inferiority margin 0.01 (1 percentage point = 4.5 of the 450 test digits, a third of the "
               "baseline's ~3% error), fixed 2026-12-04 for this row: the papers say 'as well' / 'comparable' and "
               "state no margin")

CRITERIA = Criteria(
    preconditions=(
        Criterion("(a) runs trained", "worst train error of the two decayed runs of a seed", "<=", 0.03,
                  _TRAINED_SRC, precondition=True),
        Criterion("(b) runs trained", "worst train error of the GD + decay and SGD runs of a seed", "<=", 0.03,
                  _TRAINED_SRC, precondition=True),
        Criterion("(c) runs trained", "worst train error of the rank-raised and SGD runs of a seed", "<=", 0.03,
                  _TRAINED_SRC, precondition=True),
        Criterion("(a) decays reach different norms", "weight norm after decay toward μ / after decay toward 0",
                  ">=", 1.1, "as in v1: otherwise (a) compares two equal-norm nets", precondition=True),
        Criterion("(c) rank raised", "mean normalized effective rank of the hidden layers, rank-raising run / "
                  "plain SGD", ">=", 1.2, "(c) needs a clearly higher-rank net: +20%", precondition=True),
    ),
    claims=(
        Criterion("(a) decay toward μ > 0 no worse than toward 0", "test error (decay to μ) - test error (decay to "
                  "0), same seed", "<", MARGIN,
                  "Goldblum et al. 2020: weight decay toward a large norm ('norm bias') generalizes as well as "
                  "ordinary weight decay; " + _MARGIN_SRC),
        Criterion("(b) full-batch GD + regularizer no worse than SGD", "test error (full-batch GD + decay) - test "
                  "error (SGD), same seed", "<", MARGIN,
                  "Geiping et al. 2022: full-batch GD with explicit regularization matches SGD; " + _MARGIN_SRC),
        Criterion("(c) higher rank no worse", "test error (rank-raising SGD) - test error (SGD), same seed", "<",
                  MARGIN, "Goldblum et al. 2020: low rank is not what generalizes; nets pushed to high rank do as well; "
                  + _MARGIN_SRC),
        Criterion("decay toward 0 vs none", "test error (decay to 0) - test error (SGD)", "<", MARGIN,
                  "context", decisive=False),
        Criterion("rank not tied to error", "Spearman correlation of effective rank and test error over the five "
                  "variants of a seed", "<", 0.5, "context: the low-rank story predicts a strong positive value",
                  decisive=False),
    ),
    control="the same judge with the three candidates (decay toward μ, full-batch GD + decay, rank-raising SGD) "
            "trained on a quarter of the training set (337 examples, as many optimizer steps): each generalizes "
            "worse than its full-data baseline for a reason no myth concerns, so every comparison must fail",
    seeds="8 independent seeds in quick, 12 in full (init and data order, shared by every variant of a seed); the "
          "control on the first 5 of them (in quick and in full)",
    registered="2026-12-04",
    changes=(
        "criterion changed on 2026-12-04 because v1 counted 'no significant difference' (difference within 2 "
        "binomial sd of the pooled test sets, ~0.017, on 2 seeds) as reproduction, which passes more easily the "
        "less data there is: each comparison is now a per-seed paired difference judged on a 95% t-interval "
        "against a fixed margin of 0.01 (non-inferiority)",
        "criterion changed on 2026-12-04 because of the CPU budget: plain full-batch GD (context in v1) is no longer "
        "run",
        "criterion changed on 2026-12-04 because v1's (c) picked the highest- and lowest-rank variants after "
        "measuring them: (c) now compares a fixed pair, a rank-raising regularizer against plain SGD (Goldblum et "
        "al.'s design), with the rank increase as a precondition",
        SEED_PLAN_2026_12_04,
    ),
)


def myths_mlp(epochs: int = 40) -> TrainConfig:
    """SGD MLP 64-64-64-10 on digits (lr 0.05, momentum 0.9, batch 128), no intermediate checkpoints."""
    return train_config(dataset="digits", model="mlp", model_kwargs={"width": 64, "depth": 2}, optimizer="sgd",
                        lr=0.05, momentum=0.9, epochs=epochs, checkpoints="none")


class RankUp:
    """Trainer callback: a decoupled step that raises the effective rank of every hidden weight matrix.

    After each optimizer step, each 2-D weight except the head's (the layer whose output size is the number of
    classes) is replaced by :math:`U(S + \\eta_t \\kappa (\\bar s - S))V^\\top` with :math:`W = USV^\\top`,
    :math:`\\bar s` the mean singular value and :math:`\\eta_t` the step's learning rate: singular values are
    pulled toward their mean (their sum, the nuclear norm, is unchanged), which flattens the spectrum. Its
    :meth:`cache_key` makes the run distinct from the plain one.

    Args:
        strength: :math:`\\kappa \\ge 0`.
    """

    def __init__(self, strength: float) -> None:
        if strength < 0:
            raise ValueError(f"strength must be >= 0, got {strength}")
        self.strength = float(strength)

    def cache_key(self) -> dict[str, Any]:
        return {"rank_up": self.strength}

    def on_step_end(self, state: Any) -> None:
        import torch

        c = min(1.0, state.lr * self.strength)
        if c <= 0:
            return
        with torch.no_grad():
            for p in state.model.parameters():
                if p.dim() != 2 or p.shape[0] == state.bundle.num_classes:
                    continue
                U, S, Vh = torch.linalg.svd(p, full_matrices=False)
                p.copy_((U * (S + c * (S.mean() - S))) @ Vh)


@dataclass(frozen=True)
class Config(RowConfig):
    """C12 settings.

    Attributes:
        train: the SGD recipe (variants change batch size / lr / epochs or add a callback).
        seeds: seeds of every variant.
        strength: lambda of both decays.
        target_factor: mu = target_factor x the init's weight norm for ``wd_norm``.
        gd_lr, gd_epochs: full-batch GD (momentum as in ``train``); one step per epoch.
        rank_strength: kappa of :class:`RankUp`.
        control_subsample: training examples of the control's candidates (a quarter of digits' 1347); their SGD
            runs get as many optimizer steps as the full-data runs.
        control_seeds: seeds of the control (a subset of ``seeds``).
    """

    train: TrainConfig = field(default_factory=myths_mlp)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
    strength: float = 0.01
    target_factor: float = 2.0
    gd_lr: float = 0.3
    gd_epochs: int = 100
    rank_strength: float = 0.05
    control_subsample: int = 337
    control_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)

    @classmethod
    def full(cls) -> "Config":
        return cls(train=myths_mlp(60), seeds=tuple(range(12)), gd_epochs=200, control_seeds=(0, 1, 2, 3, 4))


def _gd(config: Config, base: TrainConfig) -> TrainConfig:
    return dataclasses.replace(base, optim=dataclasses.replace(base.optim, batch_size=0, lr=config.gd_lr,
                                                               epochs=config.gd_epochs))


def _quarter(config: Config, base: TrainConfig, n_train: int) -> TrainConfig:
    """``base`` on ``control_subsample`` training examples with as many mini-batch steps as on ``n_train``."""
    n = int(config.control_subsample)
    b = base.optim.batch_size
    epochs = base.optim.epochs if not b else max(1, round(base.optim.epochs * math.ceil(n_train / b) / math.ceil(n / b)))
    return dataclasses.replace(base, data=dataclasses.replace(base.data, subsample=n),
                               optim=dataclasses.replace(base.optim, epochs=int(epochs)))


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


def _callback_run(config: TrainConfig, callback: Any, sub: str, cache_dir: Path, progress: Callable[[str], None]) -> Any:
    """``losslab.train.train`` with one callback in ``cache_dir/runs-<sub>`` under a lock (reused when done)."""
    from ..train import train

    out = Path(cache_dir) / f"runs-{sub}"
    key = "-".join(f"{v:g}" if isinstance(v, float) else str(v) for v in callback.cache_key().values())
    with run_lock(out / ".locks" / f"{sub}-{key}.lock"):
        r = train(config, out=out / f"{sub}-{key}", callbacks=[callback], progress=False)
    progress(f"{sub} {key} ({config.optim.batch_size or 'full'} batch, {config.data.subsample or 'all'} examples): "
             f"train error {r.summary['train_error']:.4f}, test error {r.summary['test_error']:.4f}")
    return r


def _norm_decay_run(config: TrainConfig, strength: float, target: float, cache_dir: Path,
                    progress: Callable[[str], None]) -> Any:
    """:func:`losslab.probes.train_with_norm_decay` in ``cache_dir/runs-normdecay`` under a lock (reused when done)."""
    from ..probes import train_with_norm_decay

    out = Path(cache_dir) / "runs-normdecay"
    with run_lock(out / ".locks" / f"nd-{strength:g}-{target:g}.lock"):
        r = train_with_norm_decay(config, strength, target, out=out, progress=False)
    progress(f"norm decay λ={strength:g} μ={target:.3g} ({config.optim.batch_size or 'full'} batch, "
             f"{config.data.subsample or 'all'} examples): train error {r.summary['train_error']:.4f}, test error "
             f"{r.summary['test_error']:.4f}")
    return r


def _record(r: Any, seed: int, w0: float, target: float | None) -> dict[str, Any]:
    model = r.build_model()
    ranks = _ranks(model)
    return {"seed": int(seed), "train_error": float(r.summary["train_error"]), "test_error": float(r.summary["test_error"]),
            "weight_norm": _weight_norm(model), "init_weight_norm": w0, "ranks": ranks,
            "rank": float(np.mean(list(ranks.values()))), "run": r.path.name, "target": target}


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    """Train the five variants (and the control's three) per seed, measure errors, norms and effective ranks;
    judge; plot."""
    from . import recipes

    timer = Timer()
    cells: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    ccells: dict[str, list[dict[str, Any]]] = {v: [] for v in CONTROL_REPLACED}
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
                "gd_reg": _norm_decay_run(_gd(config, base), config.strength, 0.0, cache_dir, progress),
                "rank_up": _callback_run(base, RankUp(config.rank_strength), "rankup", cache_dir, progress),
            }
        cruns = {}
        if s in config.control_seeds:
            with timer("control"):
                q = _quarter(config, base, len(bundle.train))
                cruns = {
                    "wd_norm": _norm_decay_run(q, config.strength, mu, cache_dir, progress),
                    "gd_reg": _norm_decay_run(_gd(config, q), config.strength, 0.0, cache_dir, progress),
                    "rank_up": _callback_run(q, RankUp(config.rank_strength), "rankup", cache_dir, progress),
                }
        with timer("measure"):
            targets = {"wd_norm": mu, "wd_zero": 0.0, "gd_reg": 0.0}
            for v, r in runs.items():
                cells[v].append(_record(r, s, w0, targets.get(v)))
            for v, r in cruns.items():
                ccells[v].append(_record(r, s, w0, targets.get(v)))
    assert bundle is not None
    cseeds = [c["seed"] for c in ccells[CONTROL_REPLACED[0]]]
    if len(cseeds) < 2:
        raise ValueError("the control needs at least 2 of the row's seeds (control_seeds must be a subset of seeds)")
    kept = {v: [c for c in cells[v] if c["seed"] in cseeds] for v in VARIANTS if v not in CONTROL_REPLACED}
    m: dict[str, Any] = {"cells": cells, "n_test": len(bundle.test), "margin": MARGIN,
                         "control": {"cells": {**kept, **ccells}, "replaced": list(CONTROL_REPLACED),
                                     "subsample": config.control_subsample}}
    verdict = judge(m)
    cverdict = judge(m["control"])
    control = Control(CRITERIA.control, cverdict)
    m["subclaims"] = {k: v.status for k, v in subclaims(m).items()}

    with timer("plot"):
        fig_ref = _figure(m, work_dir)
    S = summary(cells)
    d = differences(cells)
    cd = differences(m["control"]["cells"])

    def iv(x: list[float]) -> str:
        return interval_text(x, "+.4f")

    key = {
        "(a) decay to μ - decay to 0 (mean, 95% CI)": f"{iv(d['a'])} ({m['subclaims']['a']})",
        "(b) GD + decay - SGD": f"{iv(d['b'])} ({m['subclaims']['b']})",
        "(c) rank-raised - SGD": f"{iv(d['c'])} ({m['subclaims']['c']})",
        "effective rank, rank-raised vs SGD": f"{S['rank_up']['rank']:.3f} vs {S['sgd']['rank']:.3f}",
        "control (1/4 data): (a) / (b) / (c)": f"{np.mean(cd['a']):+.4f} / {np.mean(cd['b']):+.4f} / "
                                                f"{np.mean(cd['c']):+.4f} ({cverdict.status})",
    }
    comparison = " ".join([
        f"Paired per-seed differences of test error over {len(config.seeds)} seeds (mean, 95% t-interval; margin "
        f"{MARGIN:g}; one test digit = {1 / len(bundle.test):.4f}):",
        (f"(a) decay toward μ = {config.target_factor:g}x the init norm (weight norm {S['wd_norm']['weight_norm']:.2f}) "
         f"minus decay toward 0 (norm {S['wd_zero']['weight_norm']:.2f}), both λ = {config.strength:g}: {iv(d['a'])};"),
        f"(b) full-batch GD + decay minus SGD: {iv(d['b'])};",
        (f"(c) SGD with the rank-raising step (normalized effective rank {S['rank_up']['rank']:.3f}) minus plain SGD "
         f"({S['sgd']['rank']:.3f}): {iv(d['c'])}."),
        "Mean test error: " + ", ".join(f"{LABELS[v]} {S[v]['test_error']:.4f}" for v in VARIANTS) + ".",
        (f"Control, the three candidates trained on {config.control_subsample} examples: (a) {iv(cd['a'])}, "
         f"(b) {iv(cd['b'])}, (c) {iv(cd['c'])} (control verdict: {cverdict.status})."),
    ])
    return row_result(ID, CRITERIA, config, m, verdict, control, key, fig_ref, timer, comparison=comparison,
        seeds={"runs": list(config.seeds), "control": cseeds,
               "note": "every variant of a seed shares its init and data order"},
        data=describe_data(bundle),
        notes=[(f"GD: {config.gd_epochs} full-batch steps at lr {config.gd_lr:g}; SGD: {config.train.optim.epochs} epochs "
                f"of batch {config.train.optim.batch_size} at lr {config.train.optim.lr:g}; rank-raising step strength "
                f"{config.rank_strength:g}.")],
    )


def summary(cells: Mapping[str, list[Mapping[str, Any]]]) -> dict[str, dict[str, float]]:
    """Means over seeds of ``train_error``, ``test_error``, ``weight_norm``, ``rank`` per variant."""
    return {v: {k: float(np.mean([c[k] for c in cells[v]])) for k in ("train_error", "test_error", "weight_norm", "rank")}
            for v in cells}


def _by_seed(cells: Mapping[str, list[Mapping[str, Any]]], v: str) -> dict[Any, Mapping[str, Any]]:
    return {c["seed"]: c for c in cells[v]}


def differences(cells: Mapping[str, list[Mapping[str, Any]]]) -> dict[str, list[float]]:
    """Per-seed paired differences of test error: ``a`` (wd_norm - wd_zero), ``b`` (gd_reg - sgd), ``c`` (rank_up -
    sgd), ``wd`` (wd_zero - sgd), in the order of ``cells["sgd"]``'s seeds."""
    seeds = [c["seed"] for c in cells["sgd"]]
    B = {v: _by_seed(cells, v) for v in cells}
    pairs = {"a": ("wd_norm", "wd_zero"), "b": ("gd_reg", "sgd"), "c": ("rank_up", "sgd"), "wd": ("wd_zero", "sgd")}
    return {k: [float(B[x][s]["test_error"]) - float(B[y][s]["test_error"]) for s in seeds]
            for k, (x, y) in pairs.items() if x in B and y in B}


def spearman_per_seed(cells: Mapping[str, list[Mapping[str, Any]]]) -> list[float]:
    """Spearman correlation of effective rank and test error over the variants of each seed (NaN if undefined)."""
    from scipy.stats import spearmanr

    seeds = [c["seed"] for c in cells["sgd"]]
    B = {v: _by_seed(cells, v) for v in cells}
    out = []
    for s in seeds:
        xs = [B[v][s]["rank"] for v in B]
        ys = [B[v][s]["test_error"] for v in B]
        out.append(math.nan if len(set(xs)) < 2 or len(set(ys)) < 2 else float(spearmanr(xs, ys).statistic))
    return out


def _checks(m: Mapping[str, Any]) -> dict[str, list[Any]]:
    cells = m["cells"]
    seeds = [c["seed"] for c in cells["sgd"]]
    B = {v: _by_seed(cells, v) for v in cells}
    def worst(*vs: str) -> list[float]:
        return [max(B[v][s]["train_error"] for v in vs) for s in seeds]

    norm_ratio = [B["wd_norm"][s]["weight_norm"] / max(1e-12, B["wd_zero"][s]["weight_norm"]) for s in seeds]
    rank_ratio = [B["rank_up"][s]["rank"] / max(1e-12, B["sgd"][s]["rank"]) for s in seeds]
    d = differences(cells)
    pa = [CRITERIA["(a) runs trained"].judge(worst("wd_norm", "wd_zero"), seeds=seeds),
          CRITERIA["(a) decays reach different norms"].judge(norm_ratio, seeds=seeds, unit="x")]
    pb = [CRITERIA["(b) runs trained"].judge(worst("gd_reg", "sgd"), seeds=seeds)]
    pc = [CRITERIA["(c) runs trained"].judge(worst("rank_up", "sgd"), seeds=seeds),
          CRITERIA["(c) rank raised"].judge(rank_ratio, seeds=seeds, unit="x")]
    a = [CRITERIA["(a) decay toward μ > 0 no worse than toward 0"].judge(d["a"], seeds=seeds),
         CRITERIA["decay toward 0 vs none"].judge(d["wd"], seeds=seeds)]
    b = [CRITERIA["(b) full-batch GD + regularizer no worse than SGD"].judge(d["b"], seeds=seeds)]
    c = [CRITERIA["(c) higher rank no worse"].judge(d["c"], seeds=seeds),
         CRITERIA["rank not tied to error"].judge(spearman_per_seed(cells), seeds=seeds)]
    return {"pa": pa, "pb": pb, "pc": pc, "a": a, "b": b, "c": c}


def subclaims(m: Mapping[str, Any]) -> dict[str, Verdict]:
    """The verdict of each sub-claim on its own, with its own preconditions (the row's verdict, :func:`judge`,
    needs every precondition)."""
    ch = _checks(m)
    return {k: verdict_from_checks(ch["p" + k] + ch[k]) for k in ("a", "b", "c")}


def _figure(m: Mapping[str, Any], work_dir: Path) -> Any:
    fig, axes = new_figure(2, 1, width=4.8, height=3.6)
    cells = m["cells"]
    S = summary(cells)
    ax = axes[0]
    x = np.arange(len(VARIANTS))
    ax.bar(x, [S[v]["test_error"] for v in VARIANTS], color=[f"C{i}" for i in range(len(VARIANTS))], alpha=0.55)
    for i, v in enumerate(VARIANTS):
        ys = [c["test_error"] for c in cells[v]]
        ax.plot(i + np.linspace(-0.25, 0.25, len(ys)), ys, "k.", ms=4)
    cc = m["control"]["cells"]
    for v in CONTROL_REPLACED:
        i = VARIANTS.index(v)
        ax.plot([i] * len(cc[v]), [c["test_error"] for c in cc[v]], "x", color="C3", ms=5,
                label=f"control: trained on {m['control']['subsample']} examples" if v == CONTROL_REPLACED[0] else None)
    ax.set_xticks(x)
    ax.set_xticklabels([LABELS[v] for v in VARIANTS], rotation=30, ha="right", fontsize=7)
    label_axes(ax, ylabel="test error", title="test error by variant (bar: mean; dots: seeds)", title_size=10,
               legend=6.5, loc="upper left")
    ax = axes[1]
    d = differences(cells)
    cd = differences(cc)
    names = [("a", "(a) decay μ − decay 0"), ("b", "(b) GD+decay − SGD"), ("c", "(c) rank-up − SGD")]
    from .criteria import t_interval

    for j, (k, lab) in enumerate(names):
        for off, dd, col in ((-0.15, d[k], "C0"), (0.15, cd[k], "C3")):
            iv = t_interval(dd)
            ax.plot([j + off] * len(dd), dd, ".", color=col, alpha=0.5, ms=4)
            ax.errorbar([j + off], [iv.mean], yerr=[[iv.mean - iv.lo], [iv.hi - iv.mean]], fmt="o", color=col,
                        capsize=3, label=("row" if off < 0 else "control (1/4 data)") if j == 0 else None)
    ax.axhline(MARGIN, color="k", ls="--", lw=0.8, label=f"margin {MARGIN:g}")
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([lab for _, lab in names], fontsize=7, rotation=15)
    label_axes(ax, ylabel="paired test-error difference", title="each sub-claim: 95% t-interval over seeds",
               title_size=10, legend=6.5)
    return save_figure(fig, work_dir, "myths",
                       "Left: test error of each variant (bar: mean over seeds, dots: seeds; crosses: the control's "
                       "candidates trained on a quarter of the data). Right: the three decisive paired differences per "
                       "seed with their 95% t-intervals (blue: the row; red: the control); a sub-claim holds when the "
                       "whole interval lies below the margin.")


def judge(m: Mapping[str, Any]) -> Verdict:
    """Judge ``m["cells"][variant]`` (per-seed records with ``seed``, ``train_error``, ``test_error``,
    ``weight_norm``, ``rank`` for each of :data:`VARIANTS`) by :data:`CRITERIA`; the control is judged by
    calling this on ``m["control"]`` (the same shape)."""
    ch = _checks(m)
    return verdict_from_checks(ch["pa"] + ch["pb"] + ch["pc"] + ch["a"] + ch["b"] + ch["c"])
