"""C1 — Wide basins are found more often: the good solution's basin is wider than the bad one's
(Huang et al. 2020; Keskar et al. 2017).

Uses A4's clean and poisoned MLPs (:func:`recipes.poison_pair` with :func:`recipes.with_seed` for each seed of
``Config.seeds``: the same run directories as A4, so whichever row runs first trains them). For each
solution :math:`\\theta^*` the basin is probed on the clean training set along ``num_directions`` random
Gaussian directions :math:`d_j`, filter-normalized to that solution (Li et al. 2018; biases fixed), in both
signs (:func:`losslab.curvature.basin_width`). The radius along a ray is the first :math:`t > 0` with
:math:`L(\\theta^* + t d) > L(\\theta^*) + \\Delta` (an *additive* threshold, so both solutions are measured by
the same loss rise although their base losses differ). Huang et al.'s volume estimate over the :math:`2K` rays,

.. math:: \\log V \\approx \\log V_D(1) + \\log \\frac{1}{2K} \\sum_j \\rho_j^D, \\qquad \\rho_j = t_j \\|d_j\\|,

is reported with its effective radius :math:`(\\frac{1}{2K}\\sum_j \\rho_j^D)^{1/D}`.

The two solutions of a seed share the initialization and are probed along the same direction seeds, so each
seed gives one paired comparison: ``log(mean radius clean / mean radius poisoned)`` and the log-volume
difference. Pre-registered criteria: :data:`CRITERIA` (judged on 95% t-intervals over the seeds). Negative
control: the same comparison between two *clean* solutions of different seeds (seed ``s`` against seed
``control_seeds[i]``), where no width difference should appear.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import ExperimentResult, Verdict, verdict_from_checks
from .common import (
    describe_data, evaluator, label_axes, new_figure, ratio_panel, row_result, RowConfig, save_figure, Timer, train_run,
)
from .criteria import Control, Criteria, Criterion, SEED_PLAN_2026_12_04, t_interval, trained_to_minimum

ID = "C1"
VERSION = 2
COST = {"quick": 30, "full": 900}

CRITERIA = Criteria(
    preconditions=(
        trained_to_minimum("clean solution's error on its training set",
                           "basins of minima need minima: train error <= 1% (issue 14, like with like)",
                           name="clean solution fits"),
        trained_to_minimum("poisoned solution's error on its training set (clean + poison rows)",
                           "as above (Huang et al.'s bad minima fit the poison too)",
                           name="poisoned solution fits"),
    ),
    claims=(
        Criterion("wider (mean radius)", "log(mean basin radius of the clean solution / of the poisoned solution), "
                  "same direction seeds, loss rise 0.1 on the clean training set", ">", 0.0,
                  "SURVEY check: the clean solution's basin is wider than the poisoned solution's (Huang et al. 2020)"),
        Criterion("larger (volume)", "log-volume of the clean solution's basin - the poisoned solution's (Huang et "
                  "al.'s estimate from the same rays)", ">", 0.0,
                  "SURVEY 'volume estimate': Huang et al. 2020 compare basin volumes of good and bad minima"),
        Criterion("rays wider", "fraction of the directions along which the clean basin is wider", ">", 0.5,
                  "context: how consistent the difference is across directions", decisive=False),
    ),
    control="two clean solutions of different seeds (seed s in the clean role, a seed not otherwise used in the "
            "poisoned role), same directions and checks: no width difference should appear",
    seeds="5 paired seeds in quick (the clean and poisoned solutions of a seed share init, data order and "
          "directions; poison draw and labels from the seed), 5 in full; the control pairs each clean solution with "
          "the clean solution of one of control_seeds",
    registered="2026-12-04",
    changes=(
        "criterion changed on 2026-12-04 because issue 14 requires >= 3 seeds judged on a 95% t-interval: the "
        "one-seed comparisons rc > rp and logV_c > logV_p became per-seed paired log ratio / difference > 0",
        "criterion changed on 2026-12-04 because issue 14 requires train error <= 1% on the model's own training "
        "set (was <= 2% on the clean set)",
        SEED_PLAN_2026_12_04,
    ),
)


@dataclass(frozen=True)
class Config(RowConfig):
    """C1 settings.

    Attributes:
        clean, poisoned: A4's pair of runs (the same configs: shared through the run cache); each seed of
            ``seeds`` is applied with :func:`recipes.with_seed`.
        seeds: the paired seeds.
        control_seeds: the clean solutions paired with ``seeds`` in the negative control (one each).
        num_directions: random directions per solution (each measured in both signs).
        threshold: the loss rise :math:`\\Delta` that ends the basin.
        rtol: relative precision of each radius (bisection).
        profile_directions: directions drawn as 1-D loss profiles in the figure (first seed).
        profile_points: points per profile.
        seed: root seed of the directions (plus the pair's seed; the same for both solutions of a pair).
    """

    clean: TrainConfig = field(default_factory=lambda: recipes.poison_pair("quick")[0])
    poisoned: TrainConfig = field(default_factory=lambda: recipes.poison_pair("quick")[1])
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    control_seeds: tuple[int, ...] = (5, 6, 7, 8, 9)
    num_directions: int = 12
    threshold: float = 0.1
    rtol: float = 1e-2
    profile_directions: int = 2
    profile_points: int = 31
    seed: int = 0

    @classmethod
    def full(cls) -> "Config":
        c, p = recipes.poison_pair("full")
        return cls(clean=c, poisoned=p, seeds=(0, 1, 2, 3, 4), control_seeds=(5, 6, 7, 8, 9), num_directions=50,
                   rtol=1e-3)


def _profiles(model: Any, ev: Any, point: Mapping[str, Any], seeds: list[int], ts: np.ndarray) -> list[list[float]]:
    import torch

    from ..directions import random_direction

    out = []
    for s in seeds:
        d = random_direction(point, normalization="filter", ignore_1d=True, seed=s)
        pts = [{k: v + float(t) * d.vector[k].to(v.dtype) for k, v in point.items()} for t in ts]
        with torch.no_grad():
            out.append(np.asarray(ev.evaluate_many(pts)["loss"], dtype=float).tolist())
    return out


def _basin(model: Any, run: Any, bundle: Any, config: Config, dir_seed: int,
           ev_test: Any) -> tuple[dict[str, Any], Any]:
    from ..curvature import basin_width

    pt = run.trajectory()[-1][1]
    b = basin_width(model, bundle.train, loss="cross_entropy", num_directions=config.num_directions,
                    threshold=config.threshold, threshold_kind="additive", seed=dir_seed, point=pt, rtol=config.rtol)
    s = b.summary()
    rec = {
        "train_error": float(run.summary["train_error"]),
        "test_error": 1 - ev_test.evaluate(pt)["accuracy"],
        **{k: s[k] for k in ("base_loss", "threshold_loss", "radius_mean", "radius_std", "radius_min", "radius_max",
                             "width_mean", "euclidean_radius_mean", "log_volume", "effective_radius", "dim",
                             "censored", "num_evaluations")},
        "radius_quantiles": s["radius_quantiles"],
        "widths": b.widths.tolist(),
        "direction_seed": dir_seed,
        "run": run.path.name,
    }
    return rec, (b, pt)


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    from ..errors import LosslabError

    if len(config.control_seeds) != len(config.seeds):
        raise LosslabError("C1: control_seeds must pair one-to-one with seeds")
    timer = Timer()
    with timer("train"):
        pairs = [(train_run(recipes.with_seed(config.clean, s), cache_dir, progress),
                  train_run(recipes.with_seed(config.poisoned, s), cache_dir, progress)) for s in config.seeds]
        others = [train_run(recipes.with_seed(config.clean, s), cache_dir, progress) for s in config.control_seeds]
    bundle = pairs[0][0].bundle()
    model = pairs[0][0].build_model()
    ev_train = evaluator(model, bundle.train)
    ev_test = evaluator(model, bundle.test, bn_data=bundle.train)
    main, ctrl = [], []
    first = None
    for s, (rc, rp), so, ro in zip(config.seeds, pairs, config.control_seeds, others):
        ds = config.seed + s
        with timer("basin"):
            c, bc = _basin(model, rc, bundle, config, ds, ev_test)
            p, bp = _basin(model, rp, bundle, config, ds, ev_test)
            o, _ = _basin(model, ro, bundle, config, ds, ev_test)
        if first is None:
            first = (bc, bp)
        main.append({"seed": s, "clean": c, "poisoned": p})
        ctrl.append({"seed": s, "other_seed": so, "clean": c, "poisoned": o})
        progress(f"seed {s}: mean radius clean {c['radius_mean']:.4g} vs poisoned {p['radius_mean']:.4g} (control: "
                 f"clean seed {so} {o['radius_mean']:.4g}); log-volume difference "
                 f"{c['log_volume'] - p['log_volume']:+.4g}")
    m: dict[str, Any] = {"pairs": main, "control": ctrl, "threshold": config.threshold,
                         "num_directions": config.num_directions}
    verdict = judge(m)
    control = Control(CRITERIA.control, judge({"pairs": ctrl}))

    with timer("profiles"):
        (b_c, pt_c), (b_p, pt_p) = first
        dseeds = b_c.direction_seeds[: config.profile_directions]
        c0, p0 = main[0]["clean"], main[0]["poisoned"]
        span = 2.5 * max(c0["radius_quantiles"]["q50"], p0["radius_quantiles"]["q50"])
        ts = np.linspace(-span, span, config.profile_points)
        prof = {"clean": _profiles(model, ev_train, pt_c, dseeds, ts),
                "poisoned": _profiles(model, ev_train, pt_p, dseeds, ts)}
        m["profiles"] = {"seed": main[0]["seed"], "t": ts.tolist(), "direction_seeds": dseeds, **prof}
    with timer("plot"):
        fig_ref = _figure(m, work_dir)
    key, comparison = _text(m, control)
    return row_result(ID, CRITERIA, config, m, verdict, control, key, fig_ref, timer, comparison=comparison,
        seeds={"pairs": list(config.seeds), "control (other clean seeds)": list(config.control_seeds),
               "directions": [config.seed + s for s in config.seeds],
               "note": "init, data order, poison draw and labels derive from each run's seed"},
        data=describe_data(bundle) + "; basins measured on the full clean training set",
        notes=["The runs are A4's (same configs, shared run cache). The volume uses Euclidean radii of "
               "filter-normalized directions (Huang et al.'s comparison between solutions of one network)."],
    )


def _stats(pairs: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    def lr(a: float, b: float) -> float:
        a, b = float(a), float(b)
        return math.log(a / b) if a > 0 and b > 0 else math.nan

    out: dict[str, list[float]] = {"radius": [], "volume": [], "rays": []}
    for r in pairs:
        c, p = r["clean"], r["poisoned"]
        out["radius"].append(lr(c["radius_mean"], p["radius_mean"]))
        out["volume"].append(float(c["log_volume"]) - float(p["log_volume"]))
        wc, wp = c.get("widths"), p.get("widths")
        out["rays"].append(float(np.mean(np.asarray(wc) > np.asarray(wp))) if wc is not None and wp is not None
                           and len(wc) == len(wp) else math.nan)
    return out


def judge(m: Mapping[str, Any]) -> Verdict:
    """Judge C1 by :data:`CRITERIA` from the per-seed pairs ``m["pairs"]``: each ``{"seed", "clean": {...},
    "poisoned": {...}}`` with ``train_error``, ``radius_mean``, ``log_volume`` (and ``widths`` per direction).
    The control is judged by calling this on ``{"pairs": m["control"]}``."""
    pairs = list(m["pairs"])
    seeds = [r.get("seed") for r in pairs]
    st = _stats(pairs)
    return verdict_from_checks(CRITERIA.judge_each({
        "clean solution fits": [r["clean"]["train_error"] for r in pairs],
        "poisoned solution fits": [r["poisoned"]["train_error"] for r in pairs],
        "wider (mean radius)": st["radius"],
        "larger (volume)": st["volume"],
        "rays wider": st["rays"],
    }, seeds))


def _iv(vals: Sequence[float]) -> str:
    v = [x for x in vals if math.isfinite(x)]
    if len(v) < 2:
        return "n/a"
    iv = t_interval(v)
    return f"{iv.mean:.3g} [{iv.lo:.3g}, {iv.hi:.3g}]"


def _text(m: Mapping[str, Any], control: Control) -> tuple[dict[str, Any], str]:
    pairs, ctrl = m["pairs"], m["control"]
    st, cs = _stats(pairs), _stats(ctrl)
    per = lambda xs, f="{:.3g}": ", ".join(f.format(x) for x in xs)  # noqa: E731
    key = {
        "mean radius clean / poisoned (per seed)": "; ".join(
            f"{r['clean']['radius_mean']:.3g} / {r['poisoned']['radius_mean']:.3g}" for r in pairs),
        "log radius ratio clean/poisoned, mean [95% CI]": _iv(st["radius"]),
        "log-volume difference clean - poisoned, mean [95% CI]": _iv(st["volume"]),
        "control: log radius ratio clean/clean, mean [95% CI]": _iv(cs["radius"]),
        "test error clean / poisoned (per seed)": "; ".join(
            f"{r['clean']['test_error']:.3f} / {r['poisoned']['test_error']:.3f}" for r in pairs),
    }
    word = {True: "passes", False: "fails", None: "undecided"}
    ctrl_checks = "none" if control.verdict is None else ", ".join(
        f"{c.name} {word[c.passed]}" for c in control.verdict.checks if c.decisive and not c.precondition)
    comparison = (
        f"Along {m['num_directions']} random filter-normalized directions (both signs) per solution, the loss on the "
        f"clean training set stays within {m['threshold']:g} of its minimum up to a mean radius "
        f"{per([r['clean']['radius_mean'] for r in pairs])} for the clean solutions (seeds "
        f"{', '.join(str(r['seed']) for r in pairs)}) and {per([r['poisoned']['radius_mean'] for r in pairs])} for "
        f"the poisoned ones: log ratio clean/poisoned {per(st['radius'])}, mean and 95% t-interval "
        f"{_iv(st['radius'])}; log-volume difference {per(st['volume'])} (D = {pairs[0]['clean']['dim']}); the "
        f"clean basin is wider along a fraction {per(st['rays'], '{:.2f}')} of the directions. Test error "
        f"{per([r['clean']['test_error'] for r in pairs], '{:.3f}')} (clean) vs "
        f"{per([r['poisoned']['test_error'] for r in pairs], '{:.3f}')} (poisoned). Control (clean seed s vs clean "
        f"seed {', '.join(str(r['other_seed']) for r in ctrl)}): log radius ratio {per(cs['radius'])} "
        f"({_iv(cs['radius'])}); verdict {control.status} ({ctrl_checks})."
    )
    return key, comparison


def _figure(m: Mapping[str, Any], work_dir: Path) -> Any:
    fig, axes = new_figure(2, 1, width=4.6, height=3.4)
    ax = axes[0]
    pr = m["profiles"]
    ts = np.asarray(pr["t"])
    pairs = {r["seed"]: r for r in m["pairs"]}
    first = pairs[pr["seed"]]
    for name, color in (("clean", "C0"), ("poisoned", "C3")):
        for i, ys in enumerate(pr[name]):
            ax.plot(ts, ys, color=color, alpha=0.8, lw=1.2, label=name if i == 0 else None)
        ax.axhline(first[name]["threshold_loss"], color=color, ls=":", lw=1)
    ax.set_yscale("log")
    label_axes(ax, xlabel="t  (θ* + t·d, d filter-normalized)", ylabel="clean training loss")
    ax.set_title(f"seed {pr['seed']}: loss along {len(pr['clean'])} random directions "
                 f"(dotted: L(θ*) + {m['threshold']:g})", fontsize=8)
    ax.legend(fontsize=8)
    ax = axes[1]
    st, cs = _stats(m["pairs"]), _stats(m["control"])
    ratio_panel(ax, [(st["radius"], "clean / poisoned\n(same seed)", "C0"),
                     (cs["radius"], "control: clean / clean\n(other seed)", "0.5")], alpha=0.85)
    label_axes(ax, ylabel="log(mean radius ratio) per seed",
               title=f"basin radius over {2 * m['num_directions']} rays (black: mean, 95% t-interval)", title_size=8)
    return save_figure(fig, work_dir, "basins",
                       f"Left: clean training loss along random filter-normalized directions through the clean "
                       f"(blue) and the poisoned (red) solution of seed {pr['seed']}. Right: per-seed log ratio of the "
                       f"mean basin radius (loss rise {m['threshold']:g}), clean over poisoned solution of the same "
                       f"seed, and the negative control: clean over the clean solution of another seed.")
