"""Pre-registered criteria: intervals over seeds, TOST equivalence, the verdict rules, negative controls,
master seeds, and the machine-readable row summary."""
import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats

from losslab.config import SeedConfig, TrainConfig
from losslab.errors import LosslabError
from losslab.experiments import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    PARTLY_REPRODUCED,
    REPRODUCED,
    Check,
    Control,
    Criteria,
    Criterion,
    ExperimentResult,
    Verdict,
    apply_control,
    config_for,
    shift_seeds,
    verdict_from_checks,
)
from losslab.experiments import EXPERIMENTS
from losslab.experiments.criteria import t_interval, tost


# ---------------------------------------------------------------- intervals


def test_t_interval_matches_closed_form():
    v = [0.3, 0.1, 0.25, 0.4, 0.2]
    iv = t_interval(v)
    half = stats.t.ppf(0.975, 4) * np.std(v, ddof=1) / math.sqrt(5)
    assert iv.mean == pytest.approx(np.mean(v), abs=1e-15)
    assert (iv.lo, iv.hi) == pytest.approx((np.mean(v) - half, np.mean(v) + half), abs=1e-15)
    assert iv.n == 5 and iv.method == "t"
    one = t_interval([0.2])
    assert one.lo == -math.inf and one.hi == math.inf  # one seed decides nothing
    with pytest.raises(LosslabError, match="non-finite"):
        t_interval([0.1, float("nan")])
    with pytest.raises(LosslabError):
        t_interval([])


def test_t_interval_coverage_is_close_to_nominal():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(4000):
        iv = t_interval(rng.normal(1.0, 2.0, size=4))
        hits += iv.lo < 1.0 < iv.hi
    assert 0.935 < hits / 4000 < 0.965


def test_tost_equivalence_difference_and_undecided():
    r = tost([0.001, -0.002, 0.0015, 0.0], margin=0.02)
    assert r["equivalent"] and not r["different"] and r["p"] < 0.05
    # the 90% interval is the TOST acceptance region: p < 0.05 exactly when it lies inside the margin
    lo, hi = r["ci90"]
    assert -0.02 < lo < hi < 0.02
    far = tost([0.10, 0.12, 0.11], margin=0.02)
    assert far["different"] and not far["equivalent"]
    noisy = tost([0.05, -0.06, 0.01], margin=0.02)  # too noisy to show either
    assert not noisy["equivalent"] and not noisy["different"] and noisy["p"] > 0.05
    with pytest.raises(LosslabError, match="margin"):
        tost([0.0, 0.1], margin=0)


def test_tost_p_value_is_the_larger_one_sided_p():
    d = np.array([0.004, 0.012, -0.003, 0.009, 0.001])
    m, se = d.mean(), d.std(ddof=1) / math.sqrt(d.size)
    p_lo = 1 - stats.t.cdf((m + 0.015) / se, d.size - 1)
    p_hi = stats.t.cdf((m - 0.015) / se, d.size - 1)
    assert tost(d, 0.015)["p"] == pytest.approx(max(p_lo, p_hi), rel=1e-12)


# ---------------------------------------------------------------- criteria -> checks


def test_interval_criterion_pass_fail_straddle():
    c = Criterion("barrier falls", "barrier after / before", "<", 0.25, "Ainsworth et al.")
    ok = c.judge([0.1, 0.12, 0.09], seeds=[0, 1, 2])
    assert ok.passed is True and ok.ci[1] < 0.25 and ok.seeds == 3 and ok.interval == "t95"
    bad = c.judge([0.5, 0.6, 0.55])
    assert bad.passed is False and bad.ci[0] >= 0.25
    mid = c.judge([0.1, 0.4, 0.2])  # mean 0.23 < 0.25, but the interval straddles: never a pass
    assert mid.passed is None and mid.ci[0] < 0.25 < mid.ci[1] and "straddles" in mid.detail
    assert c.judge([0.1]).passed is None  # one seed
    assert c.judge([0.1, float("nan"), 0.1]).passed is None
    g = Criterion("wider", "width clean - poisoned", ">", 0.0)
    assert g.judge([0.2, 0.3, 0.25]).passed is True and g.judge([-0.2, -0.3, -0.25]).passed is False


def test_all_rule_and_equivalence_criterion():
    pre = Criterion("trained", "train error", "<=", 0.01, precondition=True)
    assert pre.rule == "all"
    assert pre.judge([0.0, 0.01, 0.005]).passed is True
    chk = pre.judge([0.0, 0.02, 0.0])
    assert chk.passed is False and chk.value == 0.02 and chk.ci is None and "1 of 3" in chk.detail
    eq = Criterion("no gain", "test error with - without", "equiv", 0.02, "margin fixed in advance")
    assert eq.judge([0.003, -0.004, 0.001, 0.0]).passed is True
    assert eq.judge([0.1, 0.11, 0.12]).passed is False
    assert eq.judge([0.03, -0.04, 0.0]).passed is None
    with pytest.raises(LosslabError):
        Criterion("x", "y", "~", 1.0)
    with pytest.raises(LosslabError):
        Criterion("x", "y", "equiv", 1.0, rule="all")


def test_criteria_lines_are_verbatim_and_names_unique():
    cr = Criteria(claims=(Criterion("a", "stat a", ">", 1.0, "paper"), Criterion("b", "ctx", "<", 2.0, decisive=False)),
                  preconditions=(Criterion("trained", "train error", "<=", 0.01, precondition=True),),
                  control="shuffled labels", seeds="3 in quick", registered="2026-12-04",
                  changes=("criterion changed on 2026-12-04 because of X",))
    lines = cr.lines()
    assert lines[0].startswith("[precondition] trained: train error <= 0.01 (every seed)")
    assert lines[1].startswith("[decisive] a: stat a > 1 (95% t-interval over seeds); threshold from: paper")
    assert lines[2].startswith("[context] b")
    assert "negative control: shuffled labels" in lines and lines[-1].startswith("criterion changed on")
    assert cr["a"].threshold == 1.0
    with pytest.raises(LosslabError, match="no criterion"):
        cr["zz"]
    with pytest.raises(LosslabError, match="unique"):
        Criteria(claims=(Criterion("a", "s", ">", 0), Criterion("a", "t", ">", 0)))
    with pytest.raises(LosslabError, match="decisive"):
        Criteria(claims=(Criterion("a", "s", ">", 0, decisive=False),))


# ---------------------------------------------------------------- verdicts and controls


def _claims(*passed):
    return [Check(f"c{i}", p, "") for i, p in enumerate(passed)]


@pytest.mark.parametrize("passed, status", [
    ((True, True), REPRODUCED),
    ((True, False), PARTLY_REPRODUCED),
    ((False, False), NOT_REPRODUCED),
    ((True, None), INCONCLUSIVE),
    ((None, None), INCONCLUSIVE),
    ((True, False, None), PARTLY_REPRODUCED),
])
def test_verdict_rules(passed, status):
    assert verdict_from_checks(_claims(*passed)).status == status


def test_failed_precondition_beats_everything():
    checks = [Check("trained", False, "0.2", precondition=True)] + _claims(True, True)
    assert verdict_from_checks(checks).status == INCONCLUSIVE


def test_control_that_passes_flags_the_row():
    row = Verdict(REPRODUCED, "barrier 0.4 -> 0.03")
    assert apply_control(row, None) is row
    assert apply_control(row, Control("none: no meaningful control", None, "why")) is row
    quiet = Control("random permutation", Verdict(NOT_REPRODUCED, "0.4 -> 0.39"))
    assert apply_control(row, quiet) is row and quiet.status == NOT_REPRODUCED and not quiet.fired
    loud = Control("random permutation", Verdict(REPRODUCED, "0.4 -> 0.02"))
    v = apply_control(row, loud)
    assert v.status == INCONCLUSIVE and v.flagged and "do not discriminate" in v.reason
    part = apply_control(Verdict(PARTLY_REPRODUCED, "x"), loud)
    assert part.status == INCONCLUSIVE and part.flagged
    neg = apply_control(Verdict(NOT_REPRODUCED, "x"), loud)
    assert neg.status == NOT_REPRODUCED and neg.flagged


def test_result_summary_json_has_checks_control_and_no_nan(tmp_path):
    crit = Criteria(claims=(Criterion("falls", "after / before", "<", 0.25, "paper"),))
    verdict = verdict_from_checks([crit["falls"].judge([0.1, 0.12, 0.09]),
                                   Check("single", None, "one seed", value=float("nan"))])
    ctrl = Control("random permutation", verdict_from_checks([crit["falls"].judge([0.9, 0.95, 0.97])]))
    r = ExperimentResult.create("C4", {"seeds": [0, 1, 2]}, measurements={"x": float("nan")}, verdict=verdict,
                                criteria=crit, control=ctrl, seeds={"pairs": [[0, 1]]})
    s = r.summary()
    text = json.dumps(s, allow_nan=False)  # strict JSON: NaN written as null
    assert s["verdict"] == INCONCLUSIVE and s["control"]["verdict"] == NOT_REPRODUCED
    c = s["checks"][0]
    assert c["name"] == "falls" and c["passed"] is True and c["threshold"] == 0.25 and c["seeds"] == 3
    assert c["ci"][0] < c["value"] < c["ci"][1] < 0.25 and c["decisive"] is True
    assert s["checks"][1]["value"] is None and "null" in text
    assert s["criteria"] == crit.lines()
    back = ExperimentResult.load(r.save(tmp_path / "r.json"))
    assert back.verdict.checks[0] == r.verdict.checks[0] and back.verdict.status == r.verdict.status
    assert back.control == r.control and back.criteria == r.criteria
    assert back.rejudge(lambda m: verdict) is verdict  # the control did not fire: the judged verdict stands


# ---------------------------------------------------------------- master seed


def test_shift_seeds_moves_every_seed_and_nothing_else():
    @dataclasses.dataclass(frozen=True)
    class C:
        train: TrainConfig = TrainConfig(seeds=SeedConfig(seed=2, order_seed=5))
        seeds: tuple = (0, 1, 2)
        pairs: tuple = ((0, 1),)
        plane_seed: int = 3
        lr: float = 0.1
        n_seeds: int = 4  # a count, not a seed: left alone
        skip: bool = True

    s = shift_seeds(C(), 1000)
    assert s.seeds == (1000, 1001, 1002) and s.plane_seed == 1003 and s.lr == 0.1 and s.skip is True
    assert s.train.seeds == SeedConfig(seed=1002, order_seed=1005) and s.train.optim == C().train.optim
    assert s.pairs == ((0, 1),)  # not a seed field
    assert shift_seeds(C(), 0) == C()


@pytest.mark.parametrize("row", sorted(EXPERIMENTS))
def test_master_seed_gives_a_different_config_and_key(row):
    from losslab.experiments import result_key

    a, b = config_for(row, "quick"), config_for(row, "quick", seed=1)
    assert a != b and result_key(row, a) != result_key(row, b)
    with pytest.raises(LosslabError, match="master seed"):
        config_for(row, "quick", seed=-1)


@pytest.mark.parametrize("module", ["losslab.experiments.criteria", "losslab.experiments._base",
                                    "losslab.experiments._runner"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0
