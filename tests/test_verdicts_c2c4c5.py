"""C2, C4, C5 verdicts (issue 14): each judge on synthetic per-pair values — a clear pass, an interval
straddling its threshold, a contradicting measurement, a failed precondition — the negative control
judged by the same judge, and a control that fires making the row inconclusive and flagged."""
import pytest

from losslab.experiments import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, config_for
from losslab.experiments import c2_mode_connectivity as C2
from losslab.experiments import c4_permutation as C4
from losslab.experiments import c5_function_space as C5
from losslab.experiments.criteria import Control, apply_control

PARTLY = "partly reproduced"
PAIRS = [[0, 1], [2, 3], [4, 5]]


def _check(v, name):
    return next(c for c in v.checks if c.name == name)


# ---------------------------------------------------------------- C2: mode connectivity


def _c2(cur=(0.04, 0.035, 0.05), lin=(0.36, 0.35, 0.39), errs=(0.0, 0.0, 0.0), cur_loss=(0.6, 0.6, 0.6)):
    recs = []
    for s, c, l, e, cl in zip(PAIRS, cur, lin, errs, cur_loss):
        line = {"barriers": {"test_error_mean": l, "train_loss_mean": 2.0}}
        recs.append({"seeds": s, "train_error": [0.0, e], "linear": line,
                     "curve": {"barriers": {"test_error_mean": c, "train_loss_mean": cl}},
                     "control_curve": {"barriers": {"test_error_mean": l, "train_loss_mean": 2.0}}})
    return {"pairs": recs}


def test_c2_judge_clear_pass_straddle_contradiction_precondition():
    v = C2.judge(_c2())
    assert v.status == REPRODUCED
    c = _check(v, "curve removes the barrier")
    assert c.seeds == 3 and c.op == "<" and c.threshold == pytest.approx(1 / 3) and c.ci[1] < 1 / 3
    # ratios 0.11, 0.11, 0.56: the interval straddles 1/3 -> inconclusive, never a pass
    assert C2.judge(_c2(cur=(0.04, 0.04, 0.22))).status == INCONCLUSIVE
    # the curve keeps most of the barrier on every pair -> not reproduced
    v = C2.judge(_c2(cur=(0.25, 0.3, 0.28)))
    assert v.status == NOT_REPRODUCED and "curve removes the barrier" in v.reason
    # an endpoint not at a minimum, or a line without a barrier: inconclusive whatever the curve does
    assert C2.judge(_c2(errs=(0.0, 0.05, 0.0))).status == INCONCLUSIVE
    assert C2.judge(_c2(lin=(0.36, 0.01, 0.39), cur=(0.04, 0.0, 0.05))).status == INCONCLUSIVE
    # the train-loss ratio is context: a high curve train loss does not decide
    v = C2.judge(_c2(cur_loss=(1.9, 1.9, 1.9)))
    assert v.status == REPRODUCED and _check(v, "train-loss barrier removed too").passed is False


def test_c2_one_pair_cannot_decide():
    m = _c2()
    m["pairs"] = m["pairs"][:1]
    assert C2.judge(m).status == INCONCLUSIVE


def test_c2_control_is_the_untrained_curve_judged_by_the_same_checks():
    m = _c2()
    row = C2.judge(m)
    ctl = Control(C2.CRITERIA.control, C2.judge(C2.control_measurements(m)))
    # the untrained curve is the line: ratio 1 on every pair -> the decisive check fails
    assert ctl.status == NOT_REPRODUCED and not ctl.fired
    assert _check(ctl.verdict, "curve removes the barrier").value == pytest.approx(1.0)
    assert apply_control(row, ctl) == row
    # a control that came out reproduced (e.g. a bug making every curve look flat) flags the row
    fired = Control(C2.CRITERIA.control, C2.judge(_c2()))
    final = apply_control(row, fired)
    assert fired.fired and final.status == INCONCLUSIVE and final.flagged


def test_pairs_are_disjoint_and_seeds_shift_with_the_master_seed():
    assert C2.pairs_of((0, 1, 2, 3, 4, 5)) == [(0, 1), (2, 3), (4, 5)]
    for bad in ((0, 1, 2), (0, 0), (1,)):
        with pytest.raises(Exception, match="even number"):
            C4.pairs_of(bad)
    for mod in (C2, C4, C5):
        q = mod.Config.quick()
        assert len(mod.pairs_of(q.seeds)) >= 3 and len(mod.pairs_of(mod.Config.full().seeds)) >= 5
        assert max(q.seeds) < 1000
        assert config_for(mod.ID, "quick", 1).seeds == tuple(s + 1000 for s in q.seeds)
    assert config_for("C2", "quick", 1).curve_seed == 1000 and config_for("C4", "quick", 1).perm_seed == 1000


# ---------------------------------------------------------------- C4: permutation symmetry


def _c4(after=(0.045, 0.047, 0.033), before=(0.34, 0.365, 0.387), rand=(0.37, 0.36, 0.39), diff=(8e-6,) * 3,
        errs=(0.0, 0.0, 0.0), after_loss=(0.4, 0.4, 0.4)):
    recs = []
    for s, a, b, r, d, e, al in zip(PAIRS, after, before, rand, diff, errs, after_loss):
        recs.append({"seeds": s, "train_error": [e, 0.0], "max_abs_output_diff": d,
                     "barriers_before": {"test_error_mean": b, "train_loss_mean": 2.0},
                     "barriers_after": {"test_error_mean": a, "train_loss_mean": al},
                     "control": {"max_abs_output_diff": 5e-6,
                                 "barriers_after": {"test_error_mean": r, "train_loss_mean": 2.1}}})
    return {"pairs": recs}


def test_c4_judge_clear_pass_straddle_contradiction_precondition():
    v = C4.judge(_c4())
    assert v.status == REPRODUCED
    c = _check(v, "barrier falls")
    assert c.seeds == 3 and c.op == "<" and c.threshold == 0.5 and c.ci[1] < 0.5
    # ratios 0.13, 0.13, 0.9: straddles 0.5 -> inconclusive
    assert C4.judge(_c4(after=(0.045, 0.047, 0.35))).status == INCONCLUSIVE
    # the barrier stays after matching on every pair -> not reproduced
    v = C4.judge(_c4(after=(0.3, 0.33, 0.36)))
    assert v.status == NOT_REPRODUCED and "barrier falls" in v.reason
    # preconditions: not at a minimum; a permutation that changes the outputs; no barrier before
    assert C4.judge(_c4(errs=(0.0, 0.0, 0.02))).status == INCONCLUSIVE
    v = C4.judge(_c4(diff=(8e-6, 1e-3, 8e-6)))
    assert v.status == INCONCLUSIVE and "permutation exact" in v.reason
    assert C4.judge(_c4(before=(0.34, 0.015, 0.387), after=(0.045, 0.0, 0.033))).status == INCONCLUSIVE
    # train loss is context only
    assert C4.judge(_c4(after_loss=(1.9, 1.9, 1.9))).status == REPRODUCED


def test_c4_control_random_permutation_judged_by_the_same_checks():
    m = _c4()
    row = C4.judge(m)
    ctl = Control(C4.CRITERIA.control, C4.judge(C4.control_measurements(m)))
    assert ctl.status == NOT_REPRODUCED and not ctl.fired
    assert _check(ctl.verdict, "permutation exact").passed  # the random permutation is exact too
    assert apply_control(row, ctl) == row
    # if a random permutation also removed the barrier, the check would not discriminate: flagged
    fired = Control(C4.CRITERIA.control, C4.judge(C4.control_measurements(_c4(rand=(0.04, 0.05, 0.03)))))
    final = apply_control(row, fired)
    assert fired.fired and final.status == INCONCLUSIVE and final.flagged and "control" in final.reason


# ---------------------------------------------------------------- C5: function-space diversity


def _c5(across=(0.22, 0.19, 0.20), within=(0.07, 0.05, 0.08), ind=(0.677, 0.676, 0.672),
        traj=(0.671, 0.6705, 0.6675), errs=(0.0, 0.0, 0.0), accs=((0.673, 0.66),) * 3, matched=(10, 4, 12)):
    recs = []
    for s, a, w, i, t, e, acc, k in zip(PAIRS, across, within, ind, traj, errs, accs, matched):
        recs.append({"seeds": s, "train_error": [0.0, e], "final_accuracy": list(acc), "matched_checkpoints": [k, 20],
                     "across_disagreement": a, "within_disagreement": [w, w], "ensemble_independent": i,
                     "ensemble_trajectory": [t, t]})
    null = [{**r, "seeds": [r["seeds"][0]] * 2, "across_disagreement": 0.0, "final_accuracy": [0.67, 0.67],
             "ensemble_independent": 0.667} for r in recs]
    return {"pairs": recs, "control_pairs": null}


def test_c5_judge_clear_pass_straddle_contradiction_precondition():
    v = C5.judge(_c5())
    assert v.status == REPRODUCED
    assert {c.name for c in v.checks if c.decisive and not c.precondition} == {
        "across runs > within trajectory", "independent ensemble wins"}
    # ensemble gains +0.006, +0.0055, -0.01: the interval straddles 0 -> inconclusive
    assert C5.judge(_c5(ind=(0.677, 0.676, 0.6575))).status == INCONCLUSIVE
    # within-trajectory checkpoints disagree more than independent runs -> that claim fails
    v = C5.judge(_c5(across=(0.05, 0.04, 0.06), within=(0.1, 0.11, 0.12)))
    assert v.status == PARTLY and "across runs > within trajectory" in v.reason
    # both claims contradicted -> not reproduced
    v = C5.judge(_c5(across=(0.05, 0.04, 0.06), within=(0.1, 0.11, 0.12), ind=(0.66, 0.66, 0.66)))
    assert v.status == NOT_REPRODUCED
    # preconditions: a run not at a minimum; finals far apart in accuracy; no checkpoint at equal accuracy
    assert C5.judge(_c5(errs=(0.0, 0.2, 0.0))).status == INCONCLUSIVE
    assert C5.judge(_c5(accs=((0.67, 0.66), (0.67, 0.55), (0.67, 0.66)))).status == INCONCLUSIVE
    v = C5.judge(_c5(matched=(10, 0, 12)))
    assert v.status == INCONCLUSIVE and "checkpoint at equal accuracy" in v.reason


def test_c5_null_control_judged_by_the_same_checks():
    m = _c5()
    row = C5.judge(m)
    ctl = Control(C5.CRITERIA.control, C5.judge(C5.control_measurements(m)))
    # partner = the run itself: no across-run disagreement, no ensemble gain -> the checks fail
    assert ctl.status == NOT_REPRODUCED and not ctl.fired
    assert apply_control(row, ctl) == row
    # a null that passes means the statistic is biased: the row is flagged
    fired = Control(C5.CRITERIA.control, C5.judge({"pairs": m["pairs"]}))
    final = apply_control(row, fired)
    assert fired.fired and final.status == INCONCLUSIVE and final.flagged


def test_criteria_are_registered_with_sources_and_changes():
    for mod in (C2, C4, C5):
        cr = mod.CRITERIA
        assert cr.registered == "2026-12-04" and cr.control and cr.seeds
        assert all(c.source for c in (*cr.preconditions, *cr.claims))
        assert all(ch.startswith("criterion changed on 2026-12-04 because") for ch in cr.changes)
        assert cr["trained to a minimum"].threshold == 0.01 and cr["trained to a minimum"].precondition
    assert C4.CRITERIA["permutation exact"].threshold == 1e-5
