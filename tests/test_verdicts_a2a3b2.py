"""Pre-registered verdicts of A2 (zero training error), A3 (random labels) and B2 (large batches, sharp
minima): each judge on synthetic per-seed values: a clear pass, an interval straddling its threshold, a
contradicting measurement, a failed precondition, the negative control's measurement shape, and a control
that fires (the row becomes inconclusive and flagged)."""
import copy

import pytest

from losslab.experiments import INCONCLUSIVE, NOT_REPRODUCED, PARTLY_REPRODUCED, REPRODUCED, Verdict
from losslab.experiments.a2_zero_train_error import CRITERIA as CRIT_A2, judge as judge_a2
from losslab.experiments.a3_random_labels import CRITERIA as CRIT_A3, judge as judge_a3, per_seed_statistics
from losslab.experiments.b2_large_batch import CRITERIA as CRIT_B2, judge as judge_b2, paired_statistics
from losslab.experiments.criteria import Control, apply_control


def _check(v, name):
    (c,) = [c for c in v.checks if c.name == name]
    return c


def _fired(judge, control_m):
    """A control that itself comes out reproduced: the row's own `reproduced` becomes inconclusive, flagged."""
    cv = judge(control_m)
    assert cv.status == REPRODUCED
    final = apply_control(Verdict(REPRODUCED, "row holds"), Control("a null that should fail", cv))
    assert final.status == INCONCLUSIVE and final.flagged and "negative control" in final.reason
    return final


# ---------------------------------------------------------------- A2


def _a2(errors=(0.0, 0.0, 0.0), n_params=78858, n_train=1000, fit_epochs=(41, 41, 42)):
    return {"main": [{"seed": s, "n_params": n_params, "n_train": n_train, "train_error": e, "fit_epoch": f,
                      "epochs": 60} for s, (e, f) in enumerate(zip(errors, fit_epochs))]}


def test_a2_criteria_are_registered_with_sources():
    assert CRIT_A2.registered == "2026-12-04" and CRIT_A2.control and CRIT_A2.changes
    assert CRIT_A2["train error ~0"].op == "<=" and CRIT_A2["train error ~0"].threshold == 0.01
    assert CRIT_A2["over-parameterized"].precondition and all(c.source for c in CRIT_A2.claims)


def test_a2_judge_pass_straddle_contradiction_precondition():
    assert judge_a2(_a2()).status == REPRODUCED
    # one seed far above the threshold: the interval [-0.033, 0.053] straddles 0.01
    v = judge_a2(_a2(errors=(0.0, 0.0, 0.03)))
    assert v.status == INCONCLUSIVE and "straddles" in v.reason
    v = judge_a2(_a2(errors=(0.08, 0.09, 0.07), fit_epochs=(None, None, None)))
    assert v.status == NOT_REPRODUCED and "0.08" in v.reason
    assert judge_a2(_a2(n_params=500)).status == INCONCLUSIVE  # under-parameterized: not the claim's regime
    # a single seed never decides an interval check
    one = {"main": _a2()["main"][:1]}
    assert judge_a2(one).status == INCONCLUSIVE


def test_a2_control_shape_fails_and_a_fitting_control_flags_the_row():
    ctrl = _a2(errors=(0.573, 0.598, 0.594), n_params=7434, fit_epochs=(None, None, None))
    v = judge_a2(ctrl)
    assert v.status == NOT_REPRODUCED and _check(v, "over-parameterized").passed  # decided by the claim
    _fired(judge_a2, _a2())


# ---------------------------------------------------------------- A3


PS = (0.0, 0.2, 0.5, 0.8, 1.0)


def _a3(steps=((320, 340, 360, 380, 400), (330, 350, 365, 390, 410), (320, 345, 370, 385, 405)),
        fit_hi=(0.0, 0.0, 0.0), test_hi=(0.89, 0.905, 0.9), n_params=78858, n_train=1000):
    runs = []
    for s, st in enumerate(steps):
        for p, k in zip(PS, st):
            runs.append({"seed": s, "p": p, "train_error": 0.0, "test_error": 0.55 + 0.35 * p, "fit_steps": k,
                         "epochs": 60, "steps_per_epoch": 8, "n_params": n_params, "n_train": n_train})
        runs[-1].update(train_error=fit_hi[s], test_error=test_hi[s])
    return {"runs": runs, "chance": 0.9}


def test_a3_criteria_are_registered_with_sources():
    assert CRIT_A3.registered == "2026-12-04" and CRIT_A3.control and CRIT_A3.changes
    assert CRIT_A3["p=1 test error at chance"].op == "equiv" and CRIT_A3["p=1 test error at chance"].threshold == 0.05
    assert CRIT_A3["steps to fit grow with p"].op == ">" and CRIT_A3["steps to fit grow with p"].threshold == 0
    assert all(c.source for c in CRIT_A3.claims)


def test_a3_judge_clear_pass():
    v = judge_a3(_a3())
    assert v.status == REPRODUCED
    assert _check(v, "p=1 test error at chance").interval == "t90 (TOST)"


def test_a3_straddling_slope_or_noisy_chance_is_inconclusive():
    mixed = ((320, 340, 360, 380, 400), (400, 380, 360, 340, 320), (330, 330, 330, 340, 340))
    v = judge_a3(_a3(steps=mixed))
    assert v.status == INCONCLUSIVE and _check(v, "steps to fit grow with p").passed is None
    # test errors scattered around chance: neither equivalence within 0.05 nor a difference beyond it
    v = judge_a3(_a3(test_hi=(0.84, 0.96, 0.9)))
    assert v.status == INCONCLUSIVE and _check(v, "p=1 test error at chance").passed is None


def test_a3_contradicting_measurements():
    v = judge_a3(_a3(fit_hi=(0.3, 0.35, 0.32)))  # random labels not fit
    assert v.status == PARTLY_REPRODUCED and "p=1 fitted" in v.reason
    v = judge_a3(_a3(test_hi=(0.6, 0.62, 0.61)))  # clearly better than chance: a difference beyond the margin
    assert _check(v, "p=1 test error at chance").passed is False and v.status == PARTLY_REPRODUCED
    falling = tuple(tuple(reversed(s)) for s in _a3.__defaults__[0])
    v = judge_a3(_a3(steps=falling, fit_hi=(0.3, 0.35, 0.32), test_hi=(0.6, 0.62, 0.61)))
    assert v.status == NOT_REPRODUCED


def test_a3_failed_precondition():
    assert judge_a3(_a3(n_params=500)).status == INCONCLUSIVE


def test_a3_never_fitting_runs_count_as_a_lower_bound_and_no_growth_is_exactly_zero():
    never = tuple((None,) * 5 for _ in range(3))
    st = per_seed_statistics(_a3(steps=never)["runs"], 0.9)
    assert st["slope"] == [0.0, 0.0, 0.0] and st["spearman"] == [0.0, 0.0, 0.0]  # not +1e-17
    late = ((320, 340, 360, 380, None),) * 3  # p=1 never fit: it counts as slower than every fitted run
    assert all(s > 0 for s in per_seed_statistics(_a3(steps=late)["runs"], 0.9)["slope"])


def test_a3_control_shape_is_not_reproduced_and_a_fitting_control_flags_the_row():
    # the deep linear control: never fits (p = 0 and 1), test error at chance at p = 1
    runs = []
    for s in range(3):
        for p, tr, te in ((0.0, 0.59, 0.70), (1.0, 0.79, 0.90 + 0.005 * s)):
            runs.append({"seed": s, "p": p, "train_error": tr, "test_error": te, "fit_steps": None, "epochs": 60,
                         "steps_per_epoch": 8, "n_params": 7434, "n_train": 1000})
    v = judge_a3({"runs": runs, "chance": 0.9})
    assert v.status != REPRODUCED
    assert _check(v, "p=1 fitted").passed is False and _check(v, "steps to fit grow with p").passed is False
    _fired(judge_a3, _a3())


# ---------------------------------------------------------------- B2


def _b2(lam=((2.0, 3.0), (1.7, 2.8), (3.0, 4.4)), eps=((2.0, 8.0), (3.7, 12.0), (5.1, 18.0)),
        test=((0.022, 0.029), (0.024, 0.033), (0.022, 0.033)), err=(0.0, 0.0), loss=(0.0043, 0.0051), dinh=None):
    pairs = []
    for s in range(len(lam)):
        def side(i):
            return {"train_loss": loss[i], "train_error": err[i], "test_error": test[s][i], "lambda_max": lam[s][i],
                    "eps_sharpness": eps[s][i]}

        pairs.append({"seed": s, "sb": side(0), "lb": side(1)})
    d = {"seed": 0, "output_rel_diff": 0.0, "lambda_max": lam[0][0], "lambda_max_rescaled": 12.4,
         "adaptive_rel_diff": 0.0}
    d.update(dinh or {})
    return {"pairs": pairs, "dinh": d, "epsilon": 1e-3}


def test_b2_criteria_are_registered_with_sources():
    assert CRIT_B2.registered == "2026-12-04" and CRIT_B2.control and CRIT_B2.changes
    assert CRIT_B2["LB generalizes worse"].decisive and CRIT_B2["LB generalizes worse"].op == ">"
    assert not CRIT_B2["Dinh: λmax changes"].decisive  # Dinh et al.'s caveat is context
    assert any("generalizes worse" in c for c in CRIT_B2.changes)
    assert all(c.source for c in CRIT_B2.claims if c.decisive)


def test_b2_judge_clear_pass_on_paired_log_ratios():
    v = judge_b2(_b2())
    assert v.status == REPRODUCED
    st = paired_statistics(_b2()["pairs"])
    assert st["lam_log"][0] == pytest.approx(0.405465, rel=1e-5) and st["gap"][0] == pytest.approx(0.007)


def test_b2_straddling_sharpness_is_inconclusive():
    lam = ((2.0, 3.0), (1.7, 2.8), (3.0, 2.2))  # one seed with SB sharper: interval straddles 0
    v = judge_b2(_b2(lam=lam))
    assert v.status == INCONCLUSIVE and _check(v, "LB sharper (λmax)").passed is None


def test_b2_contradicting_measurements():
    swap = lambda xs: tuple((b, a) for a, b in xs)  # noqa: E731
    base = _b2.__defaults__
    v = judge_b2(_b2(lam=swap(base[0]), eps=swap(base[1]), test=swap(base[2])))
    assert v.status == NOT_REPRODUCED and "λmax" in v.reason
    v = judge_b2(_b2(test=swap(base[2])))  # sharper but generalizes better: half the claim
    assert v.status == PARTLY_REPRODUCED and "LB generalizes worse" in v.reason


def test_b2_failed_preconditions():
    assert judge_b2(_b2(err=(0.0, 0.08))).status == INCONCLUSIVE  # LB not at a minimum
    assert judge_b2(_b2(loss=(0.001, 0.01))).status == INCONCLUSIVE  # losses not matched


def test_b2_dinh_caveat_is_context_only():
    v = judge_b2(_b2(dinh={"adaptive_rel_diff": 0.3, "lambda_max_rescaled": 2.1}))
    assert v.status == REPRODUCED
    assert _check(v, "Dinh: adaptive sharpness invariant").passed is False and not _check(
        v, "Dinh: adaptive sharpness invariant").decisive
    m = _b2()
    del m["dinh"]
    assert judge_b2(m).status == REPRODUCED


def test_b2_control_shape_is_not_reproduced_and_a_fitting_control_flags_the_row():
    # two small-batch runs: no systematic sharpness or test-error difference
    null = _b2(lam=((2.2, 2.4), (1.7, 1.8), (3.0, 2.0)), eps=((2.5, 2.1), (3.8, 1.5), (5.1, 2.7)),
               test=((0.024, 0.022), (0.024, 0.022), (0.022, 0.022)), loss=(0.0054, 0.0065))
    v = judge_b2(null)
    assert v.status != REPRODUCED
    assert all(_check(v, n).passed is not True for n in ("LB sharper (λmax)", "LB sharper (ε-sharpness)"))
    _fired(judge_b2, _b2())


def test_judges_are_pure_functions_of_the_measurements():
    for judge, m in ((judge_a2, _a2()), (judge_a3, _a3()), (judge_b2, _b2())):
        before = copy.deepcopy(m)
        assert judge(m) == judge(m) and m == before
