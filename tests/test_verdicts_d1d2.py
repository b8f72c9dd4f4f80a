"""Issue 14 verdicts of rows D1 (intrinsic dimension) and D2 (Goldilocks zone): each judge on synthetic per-seed
measurements — (a) a clear pass, (b) an interval straddling a threshold, (c) a contradicting measurement,
(d) a failed precondition, (e) the negative control judged by the same judge, and a fired control flagging
the row — plus the bound rules of D1 and the registered criteria themselves."""
import math

import pytest

from losslab.experiments import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    PARTLY_REPRODUCED,
    REPRODUCED,
    ExperimentResult,
)
from losslab.experiments import d1_intrinsic_dim as D1
from losslab.experiments import d2_goldilocks as D2
from losslab.experiments.criteria import Control, apply_control

D = 4810
CLEAN_DIMS = [25, 50, 100, 200, 400, 800]
MEM_CLEAN = [12, 25, 50, 100, 200, 400]
MEM_RANDOM = [50, 100, 200, 400, 800, 1600]


# ---------------------------------------------------------------- D1


def sweep(d_star, dims, base=1.0):
    """A sweep record whose seed j reaches 0.9 x its own baseline at d_star[j] (accuracy linear in log10 d)."""
    acc = [[min(1.0, max(0.0, base * (0.9 + 0.3 * (math.log10(d) - math.log10(ds))))) for ds in d_star] for d in dims]
    return {"dims": list(dims), "seeds": list(range(len(d_star))), "accuracy": acc,
            "baseline_per_seed": [base] * len(d_star)}


def d1(clean=(110, 140, 120), mem_clean=(80, 90, 85), mem_random=(800, 700, 750), dims=CLEAN_DIMS,
       random_dims=MEM_RANDOM, other=(85, 80, 90)):
    return {"D": D, "projection": "dense", "sweeps": {"dense": sweep(clean, dims, 0.96)},
            "memorization": {"clean": sweep(mem_clean, MEM_CLEAN), "random": sweep(mem_random, random_dims)},
            "control_memorization": sweep(other, MEM_CLEAN)}


def check(v, name):
    return next(c for c in v.checks if c.name == name)


def test_d1_per_seed_crossings_recover_the_planted_d_int90():
    per = D1.seed_crossings(sweep([110, 140, 120], CLEAN_DIMS, 0.96))
    assert [p["crossing"]["d"] for p in per] == pytest.approx([110, 140, 120], rel=1e-9)
    assert [(p["crossing"]["d_lo"], p["crossing"]["d_hi"]) for p in per] == [(100, 200)] * 3


def test_d1_clear_pass_is_reproduced():
    v = D1.judge(d1())
    assert v.status == REPRODUCED
    small = check(v, "d_int90 small")
    assert small.passed and small.ci[1] < math.log10(0.1) and small.seeds == 3
    assert small.per_seed == pytest.approx([math.log10(x / D) for x in (110, 140, 120)])
    ratio = check(v, "random labels need much larger d")
    assert ratio.passed and ratio.ci[0] > math.log10(4)


def test_d1_straddling_intervals_are_inconclusive():
    # one seed needs 30% of D, two need 3%: the interval of log10(d/D) straddles log10(0.1)
    m = d1(clean=(150, 400, 1500), dims=[25, 50, 100, 200, 400, 800, 1600, 3200])
    v = D1.judge(m)
    assert check(v, "d_int90 small").passed is None
    assert v.status == INCONCLUSIVE and "straddles" in v.reason
    # the ratio straddles 4x: 2x, 8x, 16x
    r = D1.judge(d1(mem_random=(160, 720, 1360)))
    assert check(r, "random labels need much larger d").passed is None and r.status == INCONCLUSIVE


def test_d1_contradicting_measurements_are_not_reproduced():
    # random labels need about the same d as true labels: partly (small still holds)
    v = D1.judge(d1(mem_random=(100, 110, 95)))
    assert v.status == PARTLY_REPRODUCED and "random labels need much larger d" in v.reason
    # and the clean subspace needs a fifth of D as well: nothing holds
    both = d1(clean=(1000, 1100, 900), dims=[100, 200, 400, 800, 1600, 3200], mem_random=(100, 110, 95))
    assert D1.judge(both).status == NOT_REPRODUCED


def test_d1_failed_preconditions_are_inconclusive():
    # the quick profile's old defect: a grid that stops below 0.1 D cannot fail 'small'
    short = d1(dims=[25, 50, 100, 200, 400])
    v = D1.judge(short)
    assert v.status == INCONCLUSIVE and "grid reaches past 0.1 D" in v.reason
    # full-space training does not memorize the random labels on one seed
    pre = d1()
    pre["memorization"]["random"]["baseline_per_seed"] = [1.0, 0.3, 1.0]
    assert D1.judge(pre).status == INCONCLUSIVE
    # the full-space baseline did not learn the task
    base = d1()
    base["sweeps"]["dense"]["baseline_per_seed"] = [0.96, 0.96, 0.5]
    assert D1.judge(base).status == INCONCLUSIVE


def test_d1_grid_bounds_decide_only_when_they_can():
    # random labels never reach 90% by d = 1600: the bound 1600 / ~85 > 4x decides ...
    far = d1(mem_random=(10 ** 5,) * 3)
    v = D1.judge(far)
    assert v.status == REPRODUCED
    assert check(v, "random labels need much larger d").per_seed == pytest.approx(
        [math.log10(1600 / x) for x in (80, 90, 85)])
    # ... a grid stopping at 200 cannot (200 / 85 < 4x): undecided, never a failure
    near = d1(mem_random=(10 ** 5,) * 3, random_dims=[25, 50, 100, 200])
    c = check(D1.judge(near), "random labels need much larger d")
    assert c.passed is None and "no finite value" in c.detail
    # a clean subspace already at 90% at the first grid value: its upper bound 25 decides 'small'
    first = D1.judge(d1(clean=(5, 6, 7)))
    assert check(first, "d_int90 small").per_seed == pytest.approx([math.log10(25 / D)] * 3)


def test_d1_decide_rule():
    gt, lt = D1.CRITERIA["random labels need much larger d"], D1.CRITERIA["d_int90 small"]
    assert D1.decide(0.9, 0.9, gt) == 0.9
    assert D1.decide(0.9, math.inf, gt) == 0.9  # lower bound above the threshold: holds, conservatively
    assert D1.decide(-math.inf, 0.3, gt) == 0.3  # upper bound below: fails
    assert math.isnan(D1.decide(0.3, math.inf, gt))  # cannot decide
    assert D1.decide(-math.inf, -2.0, lt) == -2.0 and D1.decide(-0.5, math.inf, lt) == -0.5
    assert math.isnan(D1.decide(-2.0, math.inf, lt))


def test_d1_control_is_judged_by_the_same_judge_and_fails():
    m = d1()
    ctrl = D1.judge(D1.control_measurements(m))
    # random labels need 15% of D (not small); true vs true labels on another subset: ratio ~1
    assert ctrl.status == NOT_REPRODUCED
    assert check(ctrl, "d_int90 small").passed is False
    assert check(ctrl, "random labels need much larger d").passed is False
    final = apply_control(D1.judge(m), Control(D1.CRITERIA.control, ctrl))
    assert final.status == REPRODUCED and not final.flagged


def test_d1_fired_control_makes_the_row_inconclusive_and_flagged():
    m = d1()
    # a control whose random labels need only ~100 and whose null pair differs 10x would pass: the check
    # then does not discriminate
    fake = d1(mem_random=(800, 700, 750))
    fake["memorization"]["random"] = sweep((110, 120, 100), MEM_RANDOM)
    fake["control_memorization"] = sweep((900, 850, 800), MEM_RANDOM)
    ctrl = D1.judge(D1.control_measurements(fake))
    assert ctrl.status == REPRODUCED
    final = apply_control(D1.judge(m), Control(D1.CRITERIA.control, ctrl))
    assert final.status == INCONCLUSIVE and final.flagged


def test_d1_criteria_are_registered_and_can_fail():
    c = D1.CRITERIA
    assert c.registered == "2026-12-04" and c.changes and all(x.startswith("criterion changed on") for x in c.changes)
    assert c["d_int90 small"].threshold == pytest.approx(-1.0) and c["d_int90 small"].op == "<"
    assert c["random labels need much larger d"].threshold == pytest.approx(math.log10(4))
    q, f = D1.Config.quick(), D1.Config.full()
    # the grids go past 0.1 D, and enough seeds
    assert max(q.dims) > 0.1 * D and max(q.mem_random_dims) > 0.1 * D
    assert len(q.seeds) >= 5 and len(q.mem_seeds) >= 5 and len(f.seeds) >= 5 and len(f.mem_seeds) >= 5
    assert len(q.label_seeds) == len(q.mem_seeds) and len(set(q.label_seeds)) == len(q.label_seeds)


# ---------------------------------------------------------------- D2

RADII = [0.05, 0.15, 0.4, 1.0, 2.5, 6.0, 15.0, 40.0]
ZONE_RHO = [0.0, 0.05, 0.3, 1.4, 2.2, 1.3, 0.6, -0.4]
ZONE_SUCCESS = [0, 0, 0, 1, 1, 1, 0, 0]


def d2(rho=ZONE_RHO, success=ZONE_SUCCESS, n=5, scale=0.04, acc=None):
    """Cells ``(nr, n)``: seed j's rho = rho x (1 + scale (j - 2)) (same zone for every seed)."""
    col = lambda v, j, s: v * (1 + s * (j - 2))  # noqa: E731
    return {"radii": RADII, "d": 50, "seeds": list(range(n)),
            "cells": {"trace_over_frobenius": [[col(r, j, scale) for j in range(n)] for r in rho],
                      "success": [[float(s)] * n for s in success],
                      "test_accuracy": [[0.6 if s else 0.3] * n for s in success] if acc is None else acc,
                      "positive_fraction": [[0.5 + 0.05 * max(r, 0)] * n for r in rho]}}


def test_d2_clear_pass_is_reproduced():
    v = D2.judge(d2())
    assert v.status == REPRODUCED
    peak = check(v, "Tr(H)/|H| clearly > 0 in the zone")
    assert peak.passed and peak.ci[0] > 5 and peak.value == pytest.approx(2.2 / math.sqrt(2 / 50))
    assert check(v, "falls off on both sides").value == pytest.approx(0.0)
    assert check(v, "training succeeds more often inside").value == pytest.approx(1.0)


def test_d2_straddling_intervals_are_inconclusive():
    # one seed of five keeps rho high at the largest radius (as measured on some seeds): end/peak straddles 0.5
    m = d2()
    m["cells"]["trace_over_frobenius"][-1] = [-0.4, -0.3, 2.0, 0.1, -0.2]
    v = D2.judge(m)
    assert check(v, "falls off on both sides").passed is None and v.status == INCONCLUSIVE
    # success inside minus outside: 1, 1, -0.5, 0.8, 0.2 -> straddles 0
    s = d2()
    s["cells"]["success"] = [[0, 0, 1, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 0, 1], [1, 1, 0, 1, 1], [1, 1, 0, 1, 1],
                             [1, 1, 0, 1, 0], [0, 0, 1, 0, 1], [0, 0, 1, 0, 0]]
    c = check(D2.judge(s), "training succeeds more often inside")
    assert c.passed is None


def test_d2_contradicting_measurements():
    # rho keeps rising with the radius: no band
    mono = D2.judge(d2(rho=[0.1, 0.3, 0.6, 1.0, 1.5, 2.0, 2.5, 3.0]))
    assert mono.status == PARTLY_REPRODUCED and check(mono, "falls off on both sides").passed is False
    # rho within random-matrix noise everywhere and training succeeds outside the zone: nothing holds
    noise = D2.judge(d2(rho=[0.35, -0.1, 0.2, 0.3, 0.4, 0.2, 0.0, 0.3], success=[1, 1, 1, 0, 0, 0, 1, 1]))
    assert noise.status == NOT_REPRODUCED


def test_d2_failed_preconditions_are_inconclusive():
    assert D2.judge(d2(success=[0] * 8)).status == INCONCLUSIVE
    assert D2.judge(d2(success=[1] * 8)).status == INCONCLUSIVE


def test_d2_control_shape_judged_by_the_same_judge():
    # the linear control: convex, rho >= 1 at every radius, highest at the smallest radius (as measured)
    lin = d2(rho=[3.5, 3.5, 3.49, 3.42, 3.2, 2.8, 2.4, 2.2], success=[1, 1, 1, 1, 1, 0, 0, 0])
    v = D2.judge(lin)
    assert check(v, "falls off on both sides").passed is False
    assert v.status != REPRODUCED
    assert apply_control(D2.judge(d2()), Control(D2.CRITERIA.control, v)).status == REPRODUCED


def test_d2_fired_control_makes_the_row_inconclusive_and_flagged():
    fired = Control(D2.CRITERIA.control, D2.judge(d2()))  # a control showing the same zone
    assert fired.fired
    final = apply_control(D2.judge(d2()), fired)
    assert final.status == INCONCLUSIVE and final.flagged
    r = ExperimentResult.create("D2", {"x": 1}, measurements={}, verdict=D2.judge(d2()), criteria=D2.CRITERIA,
                                control=fired)
    assert r.verdict.status == INCONCLUSIVE and r.verdict.flagged and r.control["fired"]


def test_d2_verdict_survives_a_json_round_trip_with_undecided_seeds():
    # a seed whose zone covers every radius has no 'outside': undecided, and the saved verdict equals its rejudge
    lin = d2(rho=[3.5, 3.5, 3.49, 3.42, 3.2, 2.8, 2.4, 2.2], success=[1, 1, 1, 1, 1, 0, 0, 0])
    v = D2.judge(lin)
    assert check(v, "training succeeds more often inside").passed is None
    r = ExperimentResult.create("D2", {"x": 1}, measurements=lin, verdict=v, criteria=D2.CRITERIA)
    back = ExperimentResult.from_dict(r.to_dict())
    assert back.verdict == back.rejudge(D2.judge)


def test_d2_criteria_registered():
    c = D2.CRITERIA
    assert c.registered == "2026-12-04" and c.changes and all(x.startswith("criterion changed on") for x in c.changes)
    assert c["Tr(H)/|H| clearly > 0 in the zone"].threshold == 5.0
    assert c["falls off on both sides"].threshold == 0.5
    assert len(D2.Config.quick().seeds) >= 5 and len(D2.Config.full().seeds) >= 5
    assert D2.Config.quick().control_depth == 0
