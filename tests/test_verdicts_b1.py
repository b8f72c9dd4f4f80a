"""B1 (Li et al. 2018, skip connections smooth the landscape): the pre-registered judge on synthetic
per-seed measurements, its negative control, and the roughness statistic."""
import numpy as np
import pytest

from losslab.experiments import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from losslab.experiments._base import PARTLY_REPRODUCED
from losslab.experiments.b1_filter_normalized import CRITERIA, Config, judge, nonconvexity_map, roughness
from losslab.experiments.criteria import Control, apply_control


def _net(nc, *, err=0.0, dev=1e-7, origin=0.0, radial=0.0, quad=0.2, minima=1, lap=5.0, skip=True):
    return {"train_error": err, "filter_norm_max_rel_deviation": dev, "max_abs_1d": 0.0, "origin_rel_error": origin,
            "nonconvexity": nc, "radial_nonmonotone_fraction": radial, "quadratic_unexplained": quad,
            "local_minima": minima, "mean_abs_laplacian_log": lap, "skip": skip}


def _m(diffs, *, base=(0.10, 0.14, 0.12), err_a=(0.0, 0.0, 0.0), dev=1e-7, quad_diff=0.0):
    """Pairs whose net A (no skips) has non-convexity base + diff over net B (skips)."""
    pairs = []
    for s, (d, b, e) in enumerate(zip(diffs, base, err_a)):
        pairs.append({"seed": s, "plane_seed": s, "a": _net(b + d, err=e, dev=dev, quad=0.2 + quad_diff, skip=False),
                      "b": _net(b, dev=dev)})
    return {"pairs": pairs}


def _check(v, name):
    return next(c for c in v.checks if c.name == name)


def test_b1_clear_pass_is_reproduced():
    v = judge(_m([0.10, 0.12, 0.11]))
    assert v.status == REPRODUCED
    c = _check(v, "rougher without skips")
    assert c.passed is True and c.ci[0] > 0 and c.seeds == 3 and c.per_seed == pytest.approx([0.10, 0.12, 0.11])


def test_b1_interval_straddling_zero_is_inconclusive():
    v = judge(_m([0.10, -0.05, 0.02]))
    assert v.status == INCONCLUSIVE
    assert _check(v, "rougher without skips").passed is None
    # a consistent but tiny positive difference with a wide spread is not enough either
    assert judge(_m([0.03, -0.01, 0.001])).status == INCONCLUSIVE


def test_b1_single_seed_cannot_decide():
    m = _m([0.5])
    m["pairs"] = m["pairs"][:1]
    assert judge(m).status == INCONCLUSIVE


def test_b1_contradicting_roughness_is_not_reproduced_or_partly():
    v = judge(_m([-0.10, -0.12, -0.11]))  # smoother without skips; the exact checks still hold
    assert v.status == PARTLY_REPRODUCED
    assert _check(v, "rougher without skips").passed is False
    assert "rougher without skips" in v.reason.split("fails:")[1]
    # ... and with broken filter normalization and a misplaced origin nothing holds
    m = _m([-0.10, -0.12, -0.11], dev=1e-3)
    m["pairs"][0]["b"]["origin_rel_error"] = 1e-2
    assert judge(m).status == NOT_REPRODUCED


def test_b1_exact_checks_are_decisive():
    v = judge(_m([0.10, 0.12, 0.11], dev=1e-3))
    assert v.status == PARTLY_REPRODUCED and _check(v, "per-filter norms equal the weights'").passed is False
    m = _m([0.10, 0.12, 0.11])
    m["pairs"][1]["a"]["origin_rel_error"] = 1e-2
    assert _check(judge(m), "surface at origin equals L(theta*)").passed is False


def test_b1_untrained_net_is_a_failed_precondition():
    # VERSION 1's situation: a clear roughness difference, but the net without skips never trained
    v = judge(_m([0.3, 0.35, 0.32], err_a=(0.0, 0.7, 0.0)))
    assert v.status == INCONCLUSIVE
    assert _check(v, "both nets trained to a minimum").passed is False
    # the bound is 1% on every seed, not "roughly trained"
    assert judge(_m([0.3, 0.35, 0.32], err_a=(0.0, 0.02, 0.0))).status == INCONCLUSIVE
    assert CRITERIA["both nets trained to a minimum"].threshold == 0.01


def test_b1_context_pointing_the_other_way_is_shown_not_decisive():
    v = judge(_m([0.10, 0.12, 0.11], quad_diff=-0.2))
    assert v.status == REPRODUCED
    q = _check(v, "quadratic misfit of log L")
    assert q.decisive is False and q.passed is False


def test_b1_control_same_judge_and_firing_control_flags_the_row():
    row = judge(_m([0.10, 0.12, 0.11]))
    # the null (skip vs skip of another seed): differences scatter around 0 -> not reproduced
    ctrl = judge(_m([0.02, -0.03, 0.01]))
    assert ctrl.status != REPRODUCED
    final = apply_control(row, Control(CRITERIA.control, ctrl))
    assert final.status == REPRODUCED and not final.flagged
    # a control that also shows "rougher" means the check does not discriminate
    fired = judge(_m([0.09, 0.11, 0.10]))
    assert fired.status == REPRODUCED
    final = apply_control(row, Control(CRITERIA.control, fired))
    assert final.status == INCONCLUSIVE and final.flagged


def test_b1_criteria_are_registered():
    c = CRITERIA["rougher without skips"]
    assert c.op == ">" and c.threshold == 0.0 and c.decisive and c.rule == "interval" and "Fig. 7" in c.source
    assert CRITERIA.registered == "2026-12-04" and all(x.startswith("criterion changed on 2026-12-04 because")
                                                     for x in CRITERIA.changes)
    q, f = Config.quick(), Config.full()
    assert len(q.seeds) >= 5 and len(f.seeds) >= 5 and len(q.control_seeds) == len(q.seeds)
    assert all(s < 1000 for s in (*f.seeds, *f.control_seeds))
    assert q.skip.model.model_kwargs["skip"] is True and q.noskip.model.model_kwargs["skip"] is False
    assert {k: v for k, v in q.skip.model.model_kwargs.items() if k != "skip"} == \
        {k: v for k, v in q.noskip.model.model_kwargs.items() if k != "skip"}
    assert q.skip.optim == q.noskip.optim and q.skip.data == q.noskip.data


def test_b1_nonconvexity_statistic():
    g = np.linspace(-1, 1, 11)
    X, Y = np.meshgrid(g, g)
    bowl = 1 + X**2 + 2 * Y**2
    r = roughness(bowl, g, g)
    assert r["nonconvexity"] == 0 and r["nonconvex_fraction"] == 0 and r["interior_points"] == 81
    saddle = 1 + X**2 - 0.25 * Y**2
    assert roughness(saddle, g, g)["nonconvexity"] == pytest.approx(0.25)
    cap = 5 - X**2 - Y**2  # concave: both eigenvalues negative -> ratio 1
    assert roughness(cap, g, g)["nonconvexity"] == pytest.approx(1.0)
    bumpy = bowl + 0.3 * np.sin(9 * X) * np.cos(9 * Y)
    assert roughness(bumpy, g, g)["nonconvexity"] > 0.2
    assert nonconvexity_map(bowl, g, g).shape == (9, 9)
    # a smooth basin that saturates inside the plane has concave walls: counted (documented caveat), but it
    # has no outward falls
    sat = 2.3 * (1 - np.exp(-4 * (X**2 + Y**2)))
    rs = roughness(sat, g, g)
    assert rs["nonconvexity"] > 0 and rs["radial_nonmonotone_fraction"] == 0
