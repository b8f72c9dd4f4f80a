"""Pre-registered verdicts of A5 (saddles), C8 (break-even point) and C9 (Hessian outliers): each judge on
synthetic per-seed values — a clear pass, an interval straddling its threshold, a contradicting measurement,
a failed precondition — and the negative control judged by the same judge (and, when it fires, the row
made inconclusive and flagged by :func:`losslab.experiments.criteria.apply_control`)."""
import math

import pytest
import torch

from losslab.experiments import INCONCLUSIVE, NOT_REPRODUCED, PARTLY_REPRODUCED, REPRODUCED
from losslab.experiments import a5_saddles as A5
from losslab.experiments import c8_break_even as C8
from losslab.experiments import c9_hessian_outliers as C9
from losslab.experiments.criteria import Control, apply_control

SEEDS = (0, 1, 2)


def _check(v, name):
    return next(c for c in v.checks if c.name == name)


def _fired(judge, m_row, m_ctrl):
    """The row's verdict after a control that is judged by the same judge."""
    return apply_control(judge(m_row), Control("synthetic control", judge(m_ctrl)))


# ---------------------------------------------------------------- A5


def _pt(lmin, lmax=1.0, neg=4e-3, pos=4e-3, conv=True):
    return {"lambda_min": lmin, "lambda_max": lmax, "converged": conv, "neg_mass": neg, "pos_mass": pos}


def _a5(lmin_end=(-0.010, -0.008, -0.012), neg_end=(3e-4, 3.2e-4, 2.8e-4), errs=(0.0, 0.0, 0.0), conv=True,
        ctrl_lmin=None, ctrl_neg=None):
    runs = []
    for i, s in enumerate(SEEDS):
        end = _pt(lmin_end[i], 2.0, neg_end[i], 9e-4, conv)
        cl = lmin_end[i] * 1.02 if ctrl_lmin is None else ctrl_lmin[i]
        cn = neg_end[i] * 0.97 if ctrl_neg is None else ctrl_neg[i]
        runs.append({"seed": s, "train_error": errs[i], "start": _pt(-0.5 - 0.02 * i, 0.8, 4e-3 + 1e-4 * i, 4e-3),
                     "end": end, "control_start": _pt(cl, 2.0, cn, 9e-4, conv)})
    return {"runs": runs, "tol": 1e-3}


def test_a5_clear_pass():
    v = A5.judge(_a5())
    assert v.status == REPRODUCED
    c = _check(v, "|λmin| shrinks")
    assert c.passed and c.seeds == 3 and c.ci[1] < math.log10(0.5)
    assert _check(v, "negative mass shrinks").passed


def test_a5_straddling_interval_is_inconclusive():
    # |λmin| end/start ratios 0.8, 0.3, 0.5 of |λmin(θ_0)|: the interval straddles a halving
    lmin_end = tuple(-f * (0.5 + 0.02 * i) for i, f in enumerate((0.8, 0.3, 0.5)))
    v = A5.judge(_a5(lmin_end=lmin_end))
    assert _check(v, "|λmin| shrinks").passed is None
    assert v.status == INCONCLUSIVE and "straddles" in v.reason


def test_a5_contradiction_and_weak_shrinkage_fail():
    # negative curvature grows: not reproduced
    v = A5.judge(_a5(lmin_end=(-0.9, -1.0, -1.1), neg_end=(8e-3, 9e-3, 7e-3)))
    assert v.status == NOT_REPRODUCED
    # shrinks, but only by 20% (ratio 0.8 on every seed) while the mass halves: partly, the |λmin| check fails
    lmin_end = tuple(-0.8 * (0.5 + 0.02 * i) for i in range(3))
    v = A5.judge(_a5(lmin_end=lmin_end))
    assert v.status == PARTLY_REPRODUCED and _check(v, "|λmin| shrinks").passed is False


def test_a5_failed_preconditions_are_inconclusive():
    assert A5.judge(_a5(errs=(0.0, 0.05, 0.0))).status == INCONCLUSIVE  # one seed is not at a minimum
    assert A5.judge(_a5(conv=False)).status == INCONCLUSIVE


def test_a5_control_shape_and_firing():
    m = _a5()
    ctrl = A5.judge(A5.control_measurements(m))  # θ_T measured twice: nothing shrinks
    assert ctrl.status == NOT_REPRODUCED
    final = apply_control(A5.judge(m), Control(A5.CRITERIA.control, ctrl))
    assert final.status == REPRODUCED and not final.flagged
    # a control that "shrinks" too (its start looks like the initialization) fires: the row is flagged
    bad = _a5(ctrl_lmin=(-0.5, -0.52, -0.54), ctrl_neg=(4e-3, 4.1e-3, 4.2e-3))
    fired = _fired(A5.judge, m, A5.control_measurements(bad))
    assert fired.status == INCONCLUSIVE and fired.flagged


def test_a5_floor_at_lanczos_resolution():
    # λmin >= 0 at the end (no negative curvature left): |λmin| is floored at tol·λmax, the check still decides
    v = A5.judge(_a5(lmin_end=(1e-5, 0.0, 2e-5)))
    assert _check(v, "|λmin| shrinks").passed is True


# ---------------------------------------------------------------- C8


def _c8(levels=None, loss_end=0.6, lrs=(0.1, 0.25, 0.5)):
    levels = levels or {0.1: (8.0, 8.3, 7.8), 0.25: (6.5, 6.7, 6.3), 0.5: (3.4, 3.6, 3.5)}
    runs = []
    for arm, lr in enumerate(lrs):
        for i, s in enumerate(SEEDS):
            lv = levels[lr][i] if isinstance(levels, dict) else levels[arm][i]
            runs.append({"seed": s, "arm": arm, "lr": lr, "post_early_median": lv, "post_early_max": 1.4 * lv,
                         "train_loss": [2.3, 1.5, loss_end]})
    return {"runs": runs, "early_fraction": 0.25}


def test_c8_clear_pass():
    v = C8.judge(_c8())
    assert v.status == REPRODUCED
    names = [c.name for c in v.checks if c.decisive and not c.precondition]
    assert names == ["η=0.25 below η=0.1", "η=0.5 below η=0.25", "η=0.1: λmax ≲ 2/η", "η=0.25: λmax ≲ 2/η",
                     "η=0.5: λmax ≲ 2/η"]


def test_c8_straddling_interval_is_inconclusive():
    v = C8.judge(_c8(levels={0.1: (8.0, 8.3, 7.8), 0.25: (6.5, 6.7, 6.3), 0.5: (3.5, 4.5, 3.9)}))
    assert _check(v, "η=0.5: λmax ≲ 2/η").passed is None
    assert v.status == INCONCLUSIVE


def test_c8_contradiction_and_no_tolerance_on_2_over_lr():
    # a larger LR sits higher on every seed: that pair fails
    v = C8.judge(_c8(levels={0.1: (6.0, 6.2, 5.8), 0.25: (7.0, 7.2, 6.9), 0.5: (3.4, 3.6, 3.5)}))
    assert v.status == PARTLY_REPRODUCED and _check(v, "η=0.25 below η=0.1").passed is False
    # η=0.5 at 1.08-1.12 x 2/η on every seed: the former 15% tolerance would pass it; the registered bound does not
    v = C8.judge(_c8(levels={0.1: (8.0, 8.3, 7.8), 0.25: (6.5, 6.7, 6.3), 0.5: (4.3, 4.4, 4.5)}))
    assert _check(v, "η=0.5: λmax ≲ 2/η").passed is False and v.status == PARTLY_REPRODUCED
    # everything contradicts (rising with η, above 2/η): not reproduced
    v = C8.judge(_c8(levels={0.1: (25.0, 26.0, 25.5), 0.25: (30.0, 31.0, 30.5), 0.5: (40.0, 41.0, 40.5)}))
    assert v.status == NOT_REPRODUCED


def test_c8_failed_precondition_is_inconclusive():
    m = _c8()
    m["runs"][4]["train_loss"] = [2.3, 2.25, 2.2]  # one run does not train
    assert C8.judge(m).status == INCONCLUSIVE
    m = _c8()
    del m["runs"][4]  # a missing run
    assert C8.judge(m).status == INCONCLUSIVE


def test_c8_control_shape_and_firing():
    # the control: every arm at η=0.25, differing only in data order -> no ordering
    ctrl = _c8(levels=[(7.3, 7.8, 7.7), (7.2, 7.7, 7.2), (7.0, 7.5, 7.7)], lrs=(0.25, 0.25, 0.25))
    cv = C8.judge(ctrl)
    assert cv.status != REPRODUCED
    assert _check(cv, "η=0.25 (arm 1) below η=0.25 (arm 0)").passed is None
    assert apply_control(C8.judge(_c8()), Control(C8.CRITERIA.control, cv)).status == REPRODUCED
    # a control whose arms happen to be ordered fires: the row is flagged
    ordered = _c8(levels=[(7.5, 7.6, 7.4), (6.5, 6.6, 6.4), (5.5, 5.6, 5.4)], lrs=(0.25, 0.25, 0.25))
    fired = _fired(C8.judge, _c8(), ordered)
    assert fired.status == INCONCLUSIVE and fired.flagged


def test_c8_config_seeds_are_shifted_and_paired():
    from losslab.experiments._runner import config_for

    q = C8.Config.quick()
    assert len(q.seeds) >= 5 and len(C8.Config.full().seeds) >= 5 and all(s < 1000 for s in q.seeds)
    assert config_for("C8", "quick", seed=1).seeds == tuple(s + 1000 for s in q.seeds)
    assert config_for("C8", "quick", seed=1).control_order_offsets == q.control_order_offsets
    assert q.control_lr in q.lrs


# ---------------------------------------------------------------- C9


def _c9(nouts=(10, 9, 10), overlaps=(0.80, 0.75, 0.78), errs=(0.0, 0.0, 0.0), conv=True):
    runs = [{"seed": s, "train_error": errs[i], "median_n_out": nouts[i], "median_overlap": overlaps[i],
             "checkpoints": [{"converged": conv}, {"converged": True}]} for i, s in enumerate(SEEDS)]
    return {"runs": runs, "num_classes": 10, "chance": 10 / 78858}


def test_c9_clear_pass():
    v = C9.judge(_c9())
    assert v.status == REPRODUCED
    c = _check(v, "about C outliers")
    assert c.op == "equiv" and c.passed and c.interval.startswith("t90")


def test_c9_straddling_interval_is_inconclusive():
    v = C9.judge(_c9(overlaps=(0.40, 0.62, 0.55)))
    assert _check(v, "gradient in the top-C space").passed is None and v.status == INCONCLUSIVE
    v = C9.judge(_c9(nouts=(7, 10, 12)))  # too spread to show equivalence, not far enough to show a difference
    assert _check(v, "about C outliers").passed is None and v.status == INCONCLUSIVE


def test_c9_contradiction():
    v = C9.judge(_c9(nouts=(3, 2, 2)))
    assert v.status == PARTLY_REPRODUCED and _check(v, "about C outliers").passed is False
    v = C9.judge(_c9(nouts=(3, 2, 2), overlaps=(0.1, 0.05, 0.2)))
    assert v.status == NOT_REPRODUCED
    # 10x chance (the former criterion) is not enough: an overlap of 0.01 is ~80x chance and fails
    v = C9.judge(_c9(overlaps=(0.01, 0.012, 0.009)))
    assert _check(v, "gradient in the top-C space").passed is False and _check(v, "overlap ≫ chance").passed


def test_c9_failed_preconditions_are_inconclusive():
    assert C9.judge(_c9(errs=(0.0, 0.03, 0.0))).status == INCONCLUSIVE
    assert C9.judge(_c9(conv=False)).status == INCONCLUSIVE


def test_c9_control_shape_and_firing():
    # merged labels (5 classes) judged against C = 10: about 5 outliers -> the count check fails
    ctrl = C9.judge(_c9(nouts=(5, 5, 4), overlaps=(0.62, 0.55, 0.60)))
    assert ctrl.status in (NOT_REPRODUCED, PARTLY_REPRODUCED, INCONCLUSIVE) and ctrl.status != REPRODUCED
    assert _check(ctrl, "about C outliers").passed is False
    assert apply_control(C9.judge(_c9()), Control(C9.CRITERIA.control, ctrl)).status == REPRODUCED
    # if the 5-class model also showed ~10 outliers the control fires and the row is flagged
    fired = _fired(C9.judge, _c9(), _c9(nouts=(10, 10, 9)))
    assert fired.status == INCONCLUSIVE and fired.flagged


def test_c9_merged_dataset_and_config():
    from losslab.data import load, mnist1d

    b = load(C9.MERGED_DATASET, num_samples=200, merge=2)
    o = mnist1d(num_samples=200)
    assert b.num_classes == 5 and torch.equal(b.train.x, o.train.x)
    assert torch.equal(b.train.y, o.train.y // 2) and torch.equal(b.test.y, o.test.y // 2)
    q = C9.Config.quick()
    mc = C9.merged_config(q.train, 2)
    assert mc.data.dataset == C9.MERGED_DATASET and mc.data.dataset_kwargs["merge"] == 2
    assert mc.model == q.train.model and mc.optim == q.train.optim
    with pytest.raises(Exception):
        load(C9.MERGED_DATASET, num_samples=200, merge=3)


def test_quick_profiles_have_seeds_and_share_trained_runs():
    from losslab.experiments import EXPERIMENTS
    from losslab.runs import run_dir_for
    from losslab.experiments import recipes

    for mod in (A5, C8, C9):
        assert len(mod.Config.quick().seeds) >= 5 and len(mod.Config.full().seeds) >= 5
        assert all(s < 1000 for s in mod.Config.quick().seeds)
    # A5 measures A1's runs and C9 A4's clean runs: the run cache trains them once
    a1, a4 = EXPERIMENTS["A1"].Config.quick(), EXPERIMENTS["A4"].Config.quick()
    a5, c9 = A5.Config.quick(), C9.Config.quick()
    assert {run_dir_for(recipes.with_seed(a5.train, s)) for s in a5.seeds} <= {
        run_dir_for(recipes.with_seed(a1.train, s)) for s in a1.seeds}
    assert {run_dir_for(recipes.with_seed(c9.train, s)) for s in c9.seeds} <= {
        run_dir_for(recipes.with_seed(a4.clean, s)) for s in a4.seeds}
