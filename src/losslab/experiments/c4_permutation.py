"""C4 — Modulo permutation symmetry, solutions share one basin (Ainsworth et al. 2023, Git Re-Basin).

Two MLPs trained independently (different seeds: init and data order) are aligned by weight
matching (:func:`losslab.connect.align`: a linear assignment per hidden layer, then a check that
the permuted B computes the same function as B). The linear path between A and B is evaluated
before and after the alignment,

.. math::

    \\theta(a) = (1 - a)\\,\\theta_A + a\\,\\theta_B \\quad\\text{vs}\\quad
    \\theta(a) = (1 - a)\\,\\theta_A + a\\,\\pi(\\theta_B),

on train and test data, and both barriers of SURVEY.md are reported for loss and error
(:func:`losslab.experiments.common.barriers`).

Check (per pair): the permuted model's outputs equal the original's (``<= atol``) and the test-error
barrier (max minus the endpoints' mean) after alignment is at most ``max_ratio`` times the barrier
before. Inconclusive when the endpoints are not matched in train error or there was no barrier to
remove.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import Check, ExperimentResult, Verdict, verdict_from_checks
from .common import Timer, barriers, describe_data, evaluator, interpolate, new_figure, save_figure, train_run

ID = "C4"
VERSION = 1
COST = {"quick": 30, "full": 300}


@dataclass(frozen=True)
class Config:
    """C4 settings.

    Attributes:
        train: the recipe of both runs (:func:`recipes.mnist1d_mlp`, shared with A1, C2, C5).
        pairs: seed pairs (A, B) to align.
        num_points: points on [0, 1] of each linear path.
        atol: permuted outputs must equal the original's to this (float32).
        max_ratio: reproduced when barrier after <= max_ratio x barrier before (test error).
        min_barrier: the barrier before must exceed this (else there is nothing to remove).
        match_tolerance: endpoints' train errors must differ by at most this.
    """

    train: TrainConfig = field(default_factory=lambda: recipes.mnist1d_mlp("quick"))
    pairs: tuple[tuple[int, int], ...] = ((0, 1),)
    num_points: int = 25
    atol: float = 1e-5
    max_ratio: float = 0.5
    min_barrier: float = 0.02
    match_tolerance: float = 0.05

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        return cls(train=recipes.mnist1d_mlp("full"), pairs=((0, 1), (0, 2), (1, 2)), num_points=41)


def _curves(model: Any, a: Mapping[str, Any], b: Mapping[str, Any], alphas: np.ndarray, evs: Mapping[str, Any]
            ) -> dict[str, dict[str, list[float]]]:
    out = {}
    for split, ev in evs.items():
        c = interpolate(model, a, b, alphas, evaluator=ev)
        out[split] = {"loss": c["loss"].tolist(), "error": c["error"].tolist()}
    return out


def _barrier_table(alphas: np.ndarray, curves: Mapping[str, Mapping[str, list[float]]]) -> dict[str, float]:
    t = {}
    for split, c in curves.items():
        for metric, v in c.items():
            b = barriers(alphas, v)
            t[f"{split}_{metric}_mean"] = b["barrier_mean"]
            t[f"{split}_{metric}_linear"] = b["barrier_linear"]
    return t


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    import torch

    from .. import params
    from ..connect import align

    timer = Timer()
    alphas = np.linspace(0.0, 1.0, config.num_points)
    recs = []
    bundle = None
    for sa, sb in config.pairs:
        with timer("train"):
            ra = train_run(recipes.with_seed(config.train, sa), cache_dir, progress)
            rb = train_run(recipes.with_seed(config.train, sb), cache_dir, progress)
        model = ra.build_model()
        bundle = ra.bundle()
        pa = params.get_point(model, buffers=True)
        pb = params.get_point(rb.build_model(), buffers=True)
        with timer("align"):
            res = align(model, pa, pb, check_inputs=bundle.train.x[:256], atol=config.atol)
        names = {k for k, _ in model.named_parameters()}
        a_pt = {k: v for k, v in pa.items() if k in names}
        b_pt = {k: v for k, v in pb.items() if k in names}
        bp_pt = {k: v for k, v in res.point_b_aligned.items() if k in names}
        # the permuted B evaluated on all test data, against B: same function
        with torch.no_grad():
            out_b = params.call(model, pb, bundle.test.x)
            out_p = params.call(model, res.point_b_aligned, bundle.test.x)
        test_diff = float((out_b - out_p).abs().max())
        with timer("paths"):
            evs = {"train": evaluator(model, bundle.train), "test": evaluator(model, bundle.test, bn_data=bundle.train)}
            before = _curves(model, a_pt, b_pt, alphas, evs)
            after = _curves(model, a_pt, bp_pt, alphas, evs)
        rec = {
            "seeds": [sa, sb],
            "train_error": [ra.summary["train_error"], rb.summary["train_error"]],
            "test_error": [ra.summary["test_error"], rb.summary["test_error"]],
            "max_abs_output_diff": max(res.max_abs_output_diff, test_diff),
            "distance_before": params.distance(a_pt, b_pt),
            "distance_after": params.distance(a_pt, bp_pt),
            "barriers_before": _barrier_table(alphas, before),
            "barriers_after": _barrier_table(alphas, after),
            "alpha": alphas.tolist(),
            "before": before,
            "after": after,
            "runs": [ra.path.name, rb.path.name],
        }
        progress(f"pair {sa}-{sb}: test-error barrier {rec['barriers_before']['test_error_mean']:.3f} -> "
                 f"{rec['barriers_after']['test_error_mean']:.3f}; max output diff {rec['max_abs_output_diff']:.2e}")
        recs.append(rec)
    m = {"pairs": recs, "atol": config.atol, "max_ratio": config.max_ratio, "min_barrier": config.min_barrier,
         "match_tolerance": config.match_tolerance}
    verdict = judge(m)

    with timer("plot"):
        r = recs[0]
        fig, axes = new_figure(2, 1, width=4.4, height=3.3)
        for ax, split, metric in ((axes[0], "test", "error"), (axes[1], "train", "loss")):
            ax.plot(r["alpha"], r["before"][split][metric], "o-", ms=3, color="C3", label="naive (before)")
            ax.plot(r["alpha"], r["after"][split][metric], "o-", ms=3, color="C0", label="weight matching (after)")
            ax.set_xlabel("a  (θ = (1-a)·θA + a·θB)")
            ax.set_ylabel(f"{split} {metric}")
            ax.legend(fontsize=8)
        fig_ref = save_figure(fig, work_dir, "barrier",
                              f"Linear path between two independently trained MLPs (seeds {r['seeds'][0]} and "
                              f"{r['seeds'][1]}), before and after permuting B onto A by weight matching.")
    r = recs[0]
    bb, ba = r["barriers_before"], r["barriers_after"]
    key = {
        "test-error barrier before": bb["test_error_mean"],
        "test-error barrier after": ba["test_error_mean"],
        "train-loss barrier before/after": f"{bb['train_loss_mean']:.3g} / {ba['train_loss_mean']:.3g}",
        "max |output diff| (permuted)": max(x["max_abs_output_diff"] for x in recs),
    }
    comparison = " ".join(
        f"Seeds {x['seeds'][0]}-{x['seeds'][1]}: test-error barrier {x['barriers_before']['test_error_mean']:.3f} "
        f"before, {x['barriers_after']['test_error_mean']:.3f} after alignment (train loss "
        f"{x['barriers_before']['train_loss_mean']:.3f} -> {x['barriers_after']['train_loss_mean']:.3f}); "
        f"distance {x['distance_before']:.2f} -> {x['distance_after']:.2f}; permuted outputs equal to "
        f"{x['max_abs_output_diff']:.1e}." for x in recs)
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"pairs": [list(p) for p in config.pairs], "note": "init and data order from each run's seed"},
        data=describe_data(bundle) + "; paths evaluated on the full train and test sets", timings=timer.seconds,
    )


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m["pairs"]``: records with ``seeds``, ``train_error`` (two), ``max_abs_output_diff``,
    ``barriers_before``/``barriers_after`` (``test_error_mean`` used); thresholds ``atol``,
    ``max_ratio``, ``min_barrier``, ``match_tolerance``."""
    atol, ratio = float(m["atol"]), float(m["max_ratio"])
    min_b, tol = float(m["min_barrier"]), float(m["match_tolerance"])
    checks = []
    for r in m["pairs"]:
        s = f"{r['seeds'][0]}-{r['seeds'][1]}"
        ea, eb = r["train_error"]
        checks.append(Check(f"pair {s} matched", abs(ea - eb) <= tol,
                            f"train errors {ea:.3f} vs {eb:.3f} (tolerance {tol:g})", precondition=True))
        before = r["barriers_before"]["test_error_mean"]
        checks.append(Check(f"pair {s} has a barrier", before > min_b,
                            f"test-error barrier before alignment {before:.3f} (needs > {min_b:g})", precondition=True))
    for r in m["pairs"]:
        s = f"{r['seeds'][0]}-{r['seeds'][1]}"
        d = r["max_abs_output_diff"]
        checks.append(Check(f"pair {s} permutation exact", d <= atol, f"max |f(B) - f(pi(B))| = {d:.2e} (atol {atol:g})"))
        before = r["barriers_before"]["test_error_mean"]
        after = r["barriers_after"]["test_error_mean"]
        rel = after / before if before > 0 else float("inf")
        checks.append(Check(f"pair {s} barrier falls", after <= ratio * before,
                            f"test-error barrier {before:.3f} -> {after:.3f} ({rel:.0%} of before; needs <= {ratio:.0%})"))
    return verdict_from_checks(checks)
