"""A4 and C1 verdicts (issue 14): the judges on synthetic per-seed measurements, their negative controls and the
helpers that decide which search end counts as a bad minimum."""
import copy
import math

import pytest

from losslab.experiments import INCONCLUSIVE, NOT_REPRODUCED, PARTLY_REPRODUCED, REPRODUCED
from losslab.experiments.a4_bad_minima import (CRITERIA as A4_CRITERIA, judge as judge_a4, nearest_bad_minimum,
                                               qualifies, seed_statistics)
from losslab.experiments.c1_wide_basins import CRITERIA as C1_CRITERIA, judge as judge_c1
from losslab.experiments.criteria import Control, apply_control

D0C = 20.0


# ---------------------------------------------------------------- A4


def _search(rho=None, *, dist=15.0, err=0.0, test=0.62, grad=0.1, bound=0.3):
    return {"search": "unconstrained" if rho is None else "ball", "rho": rho,
            "radius": None if rho is None else rho * D0C, "distance": dist, "train_error": err, "test_error": test,
            "grad_norm": grad, "grad_bound": bound}


def _seed(seed, *, gv=None, ball=None, null=None, null_ball=None, clean_test=0.44, pois_test=0.65, pois_err=0.0,
          clean_err=0.0, lam=(5.0, 8.0), width=(0.4, 0.2)):
    """One seed's record; ``gv``/``ball``/``null``/``null_ball`` override the searches' fields."""
    j = 0.01 * seed  # a little seed-to-seed spread, so intervals have a width
    searches = [_search(**{"dist": 15.0 + 10 * j, **(gv or {})}),
                _search(0.5, **{"dist": 10.0, "err": 0.28, "test": 0.56, "grad": 0.8, **(ball or {})})]
    nulls = [_search(**{"dist": 12.0, "test": 0.37, "grad": 0.06, "bound": 0.2, **(null or {})}),
             _search(0.5, **{"dist": 10.0, "test": 0.39, "grad": 0.28, "bound": 0.2, **(null_ball or {})})]
    return {"seed": seed, "distance_init_clean": D0C,
            "clean": {"train_error": clean_err, "test_error": clean_test, "lambda_max": lam[0], "width_mean": width[0]},
            "poisoned": {"train_error": pois_err, "test_error": pois_test + j, "lambda_max": lam[1] * (1 + j),
                         "width_mean": width[1] * (1 + j)},
            "searches": searches, "null_searches": nulls}


def _a4(n=3, **kw):
    per = {k: v for k, v in kw.items() if isinstance(v, list)}
    same = {k: v for k, v in kw.items() if not isinstance(v, list)}
    return {"seeds": [_seed(s, **same, **{k: v[s] for k, v in per.items()}) for s in range(n)]}


def _check(v, name):
    return next(c for c in v.checks if c.name == name)


def test_a4_qualifies_needs_fit_badness_and_stationarity_in_a_ball():
    assert qualifies(_search(), 0.44)  # unconstrained end: fits and is bad (no stationarity asked)
    assert not qualifies(_search(err=0.02), 0.44)  # does not fit its (poisoned) training set
    assert not qualifies(_search(test=0.48), 0.44)  # generalizes about as well as the clean solution
    assert qualifies(_search(0.5, grad=0.2, bound=0.3), 0.44)
    assert not qualifies(_search(0.5, grad=0.5, bound=0.3), 0.44)  # pinned on the sphere: not stationary
    assert not qualifies(_search(0.5, err=0.28, grad=0.1), 0.44)  # VERSION 3 counted this "bad" ball end
    nb = nearest_bad_minimum([_search(dist=21.0), _search(0.5, dist=9.0, grad=0.1), _search(0.25, dist=5.0, err=0.3)],
                             0.44)
    assert nb["rho"] == 0.5 and nb["distance"] == 9.0
    assert nearest_bad_minimum([_search(test=0.45)], 0.44) is None


def test_a4_bracket_and_null_statistics():
    rec = _seed(0, gv={"dist": 18.0}, ball={"grad": 0.2, "err": 0.0, "dist": 9.0})
    s = seed_statistics(rec)
    assert s["upper"] == 9.0 and s["nearest"] == "ball 0.5" and s["lower"] == 0.0 and s["near"] == pytest.approx(0.45)
    rec = _seed(0, gv={"dist": 18.0})  # the ball end does not count: bracket [ball radius, gen-viz distance]
    s = seed_statistics(rec)
    assert (s["lower"], s["upper"], s["nearest"]) == (10.0, 18.0, "unconstrained") and math.isinf(s["null"])
    # without poison the same ball search ends at a 'bad minimum' 8 away: the reference becomes 8, not d(init, clean)
    rec = _seed(0, gv={"dist": 18.0}, null_ball={"dist": 8.0, "test": 0.6, "grad": 0.1})
    s = seed_statistics(rec)
    assert s["null"] == 8.0 and s["near"] == pytest.approx(18.0 / 8.0)


def test_a4_judge_clear_pass():
    v = judge_a4(_a4())
    assert v.status == REPRODUCED, v.reason
    near = _check(v, "near")
    assert near.passed and near.seeds == 3 and near.threshold == 1.0 and near.op == "<" and near.ci[1] < 1.0


def test_a4_judge_interval_straddling_is_inconclusive():
    v = judge_a4(_a4(gv=[{"dist": 12.0}, {"dist": 18.0}, {"dist": 26.0}]))  # ratios 0.6, 0.9, 1.3
    assert _check(v, "near").passed is None and v.status == INCONCLUSIVE
    v = judge_a4(_a4(pois_test=[0.47, 0.52, 0.55]))  # the test-error gap straddles 0.05
    assert _check(v, "generalizes worse").passed is None and v.status == INCONCLUSIVE


def test_a4_judge_contradictions():
    # the paper's own protocol gives ~1.03 x d(init, clean) and no ball end counts: nearness fails
    v = judge_a4(_a4(gv={"dist": 20.6}))
    assert _check(v, "near").passed is False and v.status == PARTLY_REPRODUCED and "near" in v.reason
    # ... and the poisoned solution generalizes as well and is no sharper, no narrower: not reproduced
    v = judge_a4(_a4(gv={"dist": 20.6}, pois_test=0.45, lam=(8.0, 5.0), width=(0.2, 0.4)))
    assert v.status == NOT_REPRODUCED
    # VERSION 3's construction: a "bad" ball end inside the ball that fits nothing no longer makes it pass
    v = judge_a4(_a4(gv={"dist": 20.6}, ball={"err": 0.3, "test": 0.6, "grad": 0.9}))
    assert _check(v, "near").passed is False


def test_a4_near_fails_when_the_bad_minimum_is_not_nearer_than_the_null():
    # a fitting, stationary bad minimum in the 0.5-ball on every seed ...
    good = _a4(gv={"dist": 20.6}, ball={"err": 0.0, "grad": 0.1, "dist": 9.5})
    assert _check(judge_a4(good), "near").passed is True
    # ... but the same ball search without poison ends at a 'bad minimum' just as near (or nearer): it fails
    for null_dist in (9.5, 9.0):
        m = _a4(gv={"dist": 20.6}, ball={"err": 0.0, "grad": 0.1, "dist": 9.5},
                null_ball={"dist": null_dist, "test": 0.6, "grad": 0.1})
        near = _check(judge_a4(m), "near")
        assert near.passed is False and near.ci[0] >= 1.0


def test_a4_failed_precondition_is_inconclusive():
    assert judge_a4(_a4(gv=[{"err": 0.0}, {"err": 0.03}, {"err": 0.0}])).status == INCONCLUSIVE  # primary not a minimum
    assert judge_a4(_a4(pois_err=[0.0, 0.0, 0.02])).status == INCONCLUSIVE
    v = judge_a4(_a4(clean_err=0.05))
    assert v.status == INCONCLUSIVE and "clean model fits" in v.reason


def test_a4_control_is_judged_by_the_same_checks_and_can_flag_the_row():
    row = judge_a4(_a4())
    # the protocol without poison: the from-scratch model generalizes better, no search end is a bad minimum
    ctrl_m = {"seeds": [dict(copy.deepcopy(r), poisoned={**r["poisoned"], "test_error": 0.40},
                             searches=copy.deepcopy(r["null_searches"]), null_searches=[])
                        for r in _a4()["seeds"]]}
    ctrl = Control(A4_CRITERIA.control, judge_a4(ctrl_m))
    assert ctrl.status in (NOT_REPRODUCED, PARTLY_REPRODUCED) and not ctrl.fired
    assert apply_control(row, ctrl) == row
    # a control that passes the same checks makes the row inconclusive and flagged
    fired = Control(A4_CRITERIA.control, judge_a4(_a4()))
    final = apply_control(row, fired)
    assert fired.fired and final.status == INCONCLUSIVE and final.flagged


def test_a4_criteria_are_preregistered():
    lines = A4_CRITERIA.lines()
    assert any(line.startswith("[decisive] near:") and "< 1" in line for line in lines)
    assert A4_CRITERIA["gen-viz distance"].decisive is False and A4_CRITERIA["near"].decisive
    assert A4_CRITERIA["clean model fits"].threshold == 0.01 and A4_CRITERIA["generalizes worse"].threshold == 0.05
    assert any("criterion changed on 2026-12-04" in c for c in A4_CRITERIA.changes)


# ---------------------------------------------------------------- C1


def _pair(seed, rc, rp, vc=-1.90e5, vp=-1.95e5, fit=0.0, wider=0.8):
    n = 10
    k = int(round(wider * n))
    return {"seed": seed,
            "clean": {"train_error": 0.0, "radius_mean": rc, "log_volume": vc, "widths": [1.0] * n},
            "poisoned": {"train_error": fit, "radius_mean": rp, "log_volume": vp,
                         "widths": [0.5] * k + [2.0] * (n - k)}}


def _c1(rcs=(0.20, 0.21, 0.19), rps=(0.12, 0.13, 0.12), vcs=(-1.90e5, -1.89e5, -1.91e5),
        vps=(-1.95e5, -1.94e5, -1.96e5), fit=(0.0, 0.0, 0.0)):
    rows = zip(rcs, rps, vcs, vps, fit)
    return {"pairs": [_pair(s, rc, rp, vc, vp, f) for s, (rc, rp, vc, vp, f) in enumerate(rows)]}


def test_c1_judge_clear_pass():
    v = judge_c1(_c1())
    assert v.status == REPRODUCED
    c = _check(v, "wider (mean radius)")
    assert c.seeds == 3 and c.op == ">" and c.threshold == 0.0 and c.ci[0] > 0


def test_c1_judge_straddling_is_inconclusive():
    v = judge_c1(_c1(rcs=(0.20, 0.12, 0.13), rps=(0.12, 0.13, 0.12), vcs=(-1.90e5, -1.96e5, -1.91e5)))
    assert _check(v, "wider (mean radius)").passed is None and v.status == INCONCLUSIVE


def test_c1_judge_contradictions():
    v = judge_c1(_c1(rcs=(0.10, 0.11, 0.10), vcs=(-2.0e5, -2.01e5, -1.99e5)))  # poisoned wider everywhere
    assert v.status == NOT_REPRODUCED
    v = judge_c1(_c1(vcs=(-2.0e5, -2.01e5, -1.99e5)))  # wider in radius, smaller in volume
    assert v.status == PARTLY_REPRODUCED and "larger (volume)" in v.reason


def test_c1_failed_precondition_is_inconclusive():
    assert judge_c1(_c1(fit=(0.0, 0.02, 0.0))).status == INCONCLUSIVE


def test_c1_control_is_judged_by_the_same_checks_and_can_flag_the_row():
    row = judge_c1(_c1())
    # two clean solutions of different seeds: no systematic width difference
    null = _c1(rcs=(0.20, 0.18, 0.21), rps=(0.19, 0.20, 0.20), vcs=(-1.90e5, -1.92e5, -1.89e5),
               vps=(-1.91e5, -1.90e5, -1.90e5))
    ctrl = Control(C1_CRITERIA.control, judge_c1(null))
    assert ctrl.status in (INCONCLUSIVE, NOT_REPRODUCED) and not ctrl.fired and apply_control(row, ctrl) == row
    fired = Control(C1_CRITERIA.control, judge_c1(_c1()))
    final = apply_control(row, fired)
    assert final.status == INCONCLUSIVE and final.flagged


# ---------------------------------------------------------------- A4's null: the poison rows correctly labelled


def test_true_labels_relabels_the_poison_rows_and_is_part_of_the_run_identity(tmp_path):
    from types import SimpleNamespace

    import torch

    from losslab import data
    from losslab.experiments import common
    from losslab.experiments.a4_bad_minima import TrueLabels, train_with_callbacks
    from losslab.runs import run_dir_for
    from losslab.train import build_bundle, build_model

    cfg = common.train_config(dataset="moons", dataset_kwargs={"n_train": 64, "n_test": 32}, poison=32, model="mlp",
                              model_kwargs={"width": 16, "depth": 1}, optimizer="adam", lr=1e-2, epochs=30,
                              batch_size=32)
    b = build_bundle(cfg)
    y = b.train.y
    mask = data.row_mask(b.train, "poisoned")
    assert bool((y[mask] != b.train.clean_y[mask]).all())
    TrueLabels().on_train_start(SimpleNamespace(bundle=b, model=build_model(cfg, b)))
    assert b.train.y is y and torch.equal(y, b.train.clean_y)  # in place: the trainer's own tensor
    assert run_dir_for(cfg, tmp_path, [TrueLabels()]) != run_dir_for(cfg, tmp_path)
    null = train_with_callbacks(cfg, cache_dir=tmp_path, tag="null", callbacks=[TrueLabels()])
    pois = train_with_callbacks(cfg, cache_dir=tmp_path, tag="pois", callbacks=[])
    # the trainer's recorded train error is against the labels it trained on: the null fits, the poison cannot
    assert null.summary["train_error"] + 0.15 < pois.summary["train_error"], (null.summary, pois.summary)
