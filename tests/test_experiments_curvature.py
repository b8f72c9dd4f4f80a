"""Curvature rows of `losslab reproduce` (A4 v2, A5, B2, C1, C8, C9): verdict logic on synthetic
measurements (a contradicting measurement gives `not reproduced`, a failed precondition `inconclusive`),
the helpers they define, and every run() on a tiny config."""
import copy
import dataclasses

import numpy as np
import pytest
import torch

from losslab import models, params
from losslab.experiments import (
    BROKEN,
    EXPERIMENTS,
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    common,
    result_key,
    run_experiment,
)
from losslab.experiments.a4_bad_minima import (TrustRegion, judge as judge_a4, layer_relative_distance,
                                               nearest_bad_minimum, train_warm_started)
from losslab.experiments.a5_saddles import judge as judge_a5
from losslab.experiments.b2_large_batch import judge as judge_b2, rescale_relu_layers
from losslab.experiments.c1_wide_basins import judge as judge_c1
from losslab.experiments.c8_break_even import judge as judge_c8, train_tracked
from losslab.experiments.c9_hessian_outliers import count_outliers, judge as judge_c9

ROWS = ["A4", "A5", "B2", "C1", "C8", "C9"]


@pytest.mark.parametrize("row", ROWS)
def test_rows_registered_with_distinct_frozen_profiles(row):
    assert row not in BROKEN, BROKEN.get(row)
    mod = EXPERIMENTS[row]
    q, f = mod.Config.quick(), mod.Config.full()
    assert type(q).__dataclass_params__.frozen and q == mod.Config.quick() and q != f
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(q, dataclasses.fields(q)[0].name, None)
    assert result_key(row, q) != result_key(row, f)
    assert mod.COST["quick"] <= 90  # a scheduling hint; the whole quick profile stays under 10 minutes


def test_a4_c1_c9_share_the_runs():
    a4, c1, c9 = (EXPERIMENTS[r].Config.quick() for r in ("A4", "C1", "C9"))
    assert a4.clean == c1.clean == c9.train and a4.poisoned == c1.poisoned
    assert EXPERIMENTS["A4"].VERSION >= 2


# ---------------------------------------------------------------- A4


def _a4(*, dist=15.0, bad_test=0.6, bad_fit=0.0, lam=(5.0, 8.0), width=(0.4, 0.2), test_p=0.65):
    return {"clean": {"clean_train_error": 0.0, "test_error": 0.44},
            "poisoned": {"clean_train_error": 0.0, "test_error": test_p},
            "distance_init_clean": 20.0, "distance_clean_poisoned": 28.0, "fit_tolerance": 0.02, "gap_margin": 0.05,
            "minefield": [{"start_step": 960, "clean_train_error": bad_fit, "test_error": bad_test, "distance": dist}],
            "sharpness": {"clean": {"lambda_max": lam[0], "width_mean": width[0]},
                          "poisoned": {"lambda_max": lam[1], "width_mean": width[1]}}}


def test_a4_judge_v2():
    v = judge_a4(_a4())
    assert v.status == REPRODUCED and any(c.name == "bad minimum near step 960" for c in v.checks)
    v = judge_a4(_a4(dist=21.0))  # the warm-started bad minimum is farther than the init: contradiction
    assert v.status == NOT_REPRODUCED and "ratio 1.05" in v.reason
    v = judge_a4(_a4(lam=(8.0, 5.0)))
    assert v.status == NOT_REPRODUCED and "lambda_max" in v.reason
    assert judge_a4(_a4(width=(0.2, 0.4))).status == NOT_REPRODUCED
    assert judge_a4(_a4(bad_test=0.46)).status == NOT_REPRODUCED  # found minimum generalizes fine
    assert judge_a4(_a4(bad_fit=0.3)).status == INCONCLUSIVE  # not a minimum of the clean loss
    # without the v2 keys the distance check falls back to the independently poisoned model (VERSION 1)
    old = {k: v for k, v in _a4().items() if k not in ("minefield", "sharpness")}
    v = judge_a4(old)
    assert v.status == NOT_REPRODUCED and "ratio 1.40" in v.reason


def _trust(rho, *, fit=0.0, test=0.6, dist=None):
    return {"rho": rho, "radius": rho * 20.0, "distance": 20.0 * rho if dist is None else dist,
            "clean_train_error": fit, "test_error": test, "poison_fit_error": 0.2}


def test_a4_judge_v3_nearest_bad_minimum():
    # the unconstrained search ends farther than the init (ratio 1.05), a ball search finds a nearer bad minimum
    m = _a4(dist=21.0)
    m["minefield"][0]["trust"] = [_trust(0.25, fit=0.06), _trust(0.5, fit=0.03), _trust(0.75, fit=0.004)]
    v = judge_a4(m)
    near = next(c for c in v.checks if c.name == "bad minimum near step 960")
    assert v.status == REPRODUCED and "within 0.75 d(init, clean)" in near.detail and "ratio 0.75" in near.detail
    # no search fits the clean set and generalizes badly, but the unconstrained end is farther than the init
    m["minefield"][0]["trust"] = [_trust(0.5, fit=0.03), _trust(0.75, test=0.46)]
    v = judge_a4(m)
    assert v.status == NOT_REPRODUCED and "ratio 1.05" in v.reason and "ball 0.75: not bad" in v.reason
    # the unconstrained end is itself the nearest bad minimum when the balls find none
    m = _a4(dist=15.0)
    m["minefield"][0]["trust"] = [_trust(0.5, fit=0.5)]
    assert judge_a4(m).status == REPRODUCED
    # an unconstrained end that generalizes fine and no bad minimum in any ball: contradiction
    m = _a4(dist=15.0, bad_test=0.46)
    m["minefield"][0]["trust"] = [_trust(0.5, fit=0.5)]
    v = judge_a4(m)
    assert v.status == NOT_REPRODUCED
    assert any(not c.passed and "no search from checkpoint 960 found a bad minimum" in c.detail for c in v.checks)


def test_nearest_bad_minimum_picks_the_closest_qualifying_search():
    rec = {"clean_train_error": 0.0, "test_error": 0.6, "distance": 21.0,
           "trust": [_trust(0.25, fit=0.1), _trust(0.5, test=0.45), _trust(0.75)]}
    nb = nearest_bad_minimum(rec, 0.44, fit_tolerance=0.02, gap_margin=0.05)
    assert nb["rho"] == 0.75 and nb["distance"] == 15.0 and nb["search"] == "trust region"
    rec["trust"] = [_trust(0.75, fit=0.5)]
    assert nearest_bad_minimum(rec, 0.44, fit_tolerance=0.02, gap_margin=0.05)["search"] == "unconstrained"
    assert nearest_bad_minimum(rec, 0.58, fit_tolerance=0.02, gap_margin=0.05) is None


class _State:
    def __init__(self, model):
        self.model = model


def test_trust_region_projects_onto_the_ball_exactly():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).double()
    center = {k: v.detach().clone() for k, v in net.named_parameters()}
    region = TrustRegion(center, 0.5, {"rho": 0.5})
    g = torch.Generator().manual_seed(1)
    step = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in center.items()}
    norm = params.norm(step)
    with torch.no_grad():  # a point inside the ball is left exactly as it is
        for k, p in net.named_parameters():
            p.copy_(center[k] + step[k] * (0.3 / norm))
    inside = {k: v.detach().clone() for k, v in net.named_parameters()}
    region.on_step_end(_State(net))
    assert region.projections == 0 and all(torch.equal(inside[k], p) for k, p in net.named_parameters())
    with torch.no_grad():  # outside: projected along the same ray onto the sphere of radius 0.5
        for k, p in net.named_parameters():
            p.copy_(center[k] + step[k] * (2.0 / norm))
    region.on_step_end(_State(net))
    now = {k: v.detach() for k, v in net.named_parameters()}
    assert region.projections == 1
    assert params.distance(center, now) == pytest.approx(0.5, rel=1e-12)
    for k in center:
        torch.testing.assert_close(now[k] - center[k], step[k] * (0.5 / norm), rtol=1e-12, atol=1e-14)
    assert TrustRegion(center, 0.5, {"rho": 0.5}).cache_key() != TrustRegion(center, 0.75, {"rho": 0.75}).cache_key()
    with pytest.raises(Exception, match="radius must be > 0"):
        TrustRegion(center, 0.0)


def test_layer_relative_distance_exact():
    a = {"w": torch.ones(2, 2), "b": torch.ones(2), "v": torch.full((1, 2), 2.0)}
    b = {"w": torch.zeros(2, 2), "b": torch.zeros(2), "v": torch.full((1, 2), 2.0)}
    assert layer_relative_distance(a, b, a) == pytest.approx(0.5)  # (1 + 0) / 2; biases ignored


def test_warm_started_run_starts_at_the_given_point_and_is_cached(tmp_path):
    cfg = common.train_config(dataset="moons", dataset_kwargs={"n_train": 64, "n_test": 32}, model="mlp",
                              model_kwargs={"width": 8, "depth": 1}, optimizer="sgd", lr=0.1, epochs=2,
                              batch_size=32, checkpoints="epoch:1")
    m = models.build("mlp", input_shape=(2,), num_classes=2, width=8, depth=1, seed=123)
    start = params.get_point(m)
    msgs = []
    r1 = train_warm_started(cfg, start, cache_dir=tmp_path, tag="src-step5", progress=msgs.append)
    traj = r1.trajectory()
    assert all(torch.equal(traj[0][1][k], start[k]) for k in start) and len(traj) == 3
    assert not torch.equal(traj[-1][1]["fc0.weight"], start["fc0.weight"])
    assert (r1.path / "warm_start.json").is_file()
    r2 = train_warm_started(cfg, start, cache_dir=tmp_path, tag="src-step5", progress=msgs.append)
    assert r2.path == r1.path and msgs[-1].startswith("reusing")


# ---------------------------------------------------------------- A5


def _a5(ratios=(0.6, 0.5, 0.3, 0.05, 0.04, 0.03), losses=(2.3, 2.2, 1.8, 1.2, 0.9, 0.6), conv=True):
    recs = [{"step": s, "loss": lo, "ratio": r, "converged": conv} for s, lo, r in zip((0, 2, 8, 40, 150, 480), losses, ratios)]
    return {"checkpoints": recs, "shrink_factor": 0.5, "trained_ratio": 0.5}


def test_a5_judge():
    assert judge_a5(_a5()).status == REPRODUCED
    v = judge_a5(_a5(ratios=(0.05, 0.04, 0.06, 0.3, 0.4, 0.5)))  # negative curvature grows: contradiction
    assert v.status == NOT_REPRODUCED and "Spearman" in v.reason
    v = judge_a5(_a5(ratios=(0.6, 0.55, 0.5, 0.45, 0.45, 0.4)))  # falls, but too little
    assert v.status == NOT_REPRODUCED and "negative curvature shrinks" in v.reason
    assert judge_a5(_a5(losses=(2.3, 2.3, 2.2, 2.2, 2.1, 2.0))).status == INCONCLUSIVE
    assert judge_a5(_a5(conv=False)).status == INCONCLUSIVE


# ---------------------------------------------------------------- B2


def _b2(*, lam=(2.0, 3.0), eps=(2.0, 8.0), err=(0.0, 0.0), loss=(0.0043, 0.0051), test=(0.022, 0.029),
        out_diff=0.0, lam_r=12.0, ada=0.0):
    def side(i):
        return {"train_loss": loss[i], "train_error": err[i], "test_error": test[i], "lambda_max": lam[i],
                "eps_sharpness": eps[i]}

    return {"pairs": [{"seed": 0, "sb": side(0), "lb": side(1),
                       "dinh": {"output_rel_diff": out_diff, "lambda_max": lam[0], "lambda_max_rescaled": lam_r,
                                "adaptive_rel_diff": ada}}],
            "fit_tolerance": 0.01, "match_rtol": 0.25, "output_rtol": 1e-5, "lambda_change": 2.0, "adaptive_rtol": 1e-4}


def test_b2_judge():
    assert judge_b2(_b2()).status == REPRODUCED
    assert judge_b2(_b2(test=(0.03, 0.02))).status == REPRODUCED  # the test gap is reported, not decisive
    v = judge_b2(_b2(lam=(3.0, 2.0)))  # SB sharper: contradiction
    assert v.status == NOT_REPRODUCED and "λmax LB 2" in v.reason
    assert judge_b2(_b2(eps=(5.0, 4.0))).status == NOT_REPRODUCED
    assert judge_b2(_b2(err=(0.0, 0.08))).status == INCONCLUSIVE  # LB did not fit: not matched
    assert judge_b2(_b2(loss=(0.001, 0.01))).status == INCONCLUSIVE  # losses not matched
    assert judge_b2(_b2(ada=0.3)).status == NOT_REPRODUCED  # adaptive sharpness not invariant
    assert judge_b2(_b2(lam_r=2.5)).status == NOT_REPRODUCED  # rescaling did not change λmax
    assert judge_b2(_b2(out_diff=0.1)).status == NOT_REPRODUCED  # not the same function


def test_dinh_rescaling_keeps_the_function_exactly_and_changes_lambda_max():
    import torch.nn.functional as F

    from losslab.curvature import HessianOperator, adaptive_sharpness, lambda_max

    m = models.build("mlp", input_shape=(5,), num_classes=3, width=7, depth=2, seed=0)
    pt = params.get_point(m)
    resc = rescale_relu_layers(pt, 0.25)
    assert torch.equal(resc["fc0.weight"], pt["fc0.weight"] * 0.25) and torch.equal(resc["fc0.bias"], pt["fc0.bias"] / 4)
    assert torch.equal(resc["fc1.weight"], pt["fc1.weight"] * 4) and torch.equal(resc["head.weight"], pt["head.weight"])
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)
    assert torch.equal(params.call(m, pt, x), params.call(m, resc, x))
    l0 = lambda_max(HessianOperator(m, F.cross_entropy, (x, y), point=pt, dtype=torch.float64), seed=0)
    l1 = lambda_max(HessianOperator(m, F.cross_entropy, (x, y), point=resc, dtype=torch.float64), seed=0)
    assert l1 > 2 * l0
    a0 = adaptive_sharpness(m, F.cross_entropy, (x, y), rho=0.3, steps=5, point=pt, dtype=torch.float64).sharpness
    a1 = adaptive_sharpness(m, F.cross_entropy, (x, y), rho=0.3, steps=5, point=resc, dtype=torch.float64).sharpness
    assert a0 > 0 and a1 == pytest.approx(a0, rel=1e-9)


# ---------------------------------------------------------------- C1


def _c1(rc=0.2, rp=0.12, vc=-1.9e5, vp=-2.1e5, fit=0.0):
    return {"clean": {"clean_train_error": 0.0, "radius_mean": rc, "log_volume": vc},
            "poisoned": {"clean_train_error": fit, "radius_mean": rp, "log_volume": vp}, "fit_tolerance": 0.02}


def test_c1_judge():
    assert judge_c1(_c1()).status == REPRODUCED
    v = judge_c1(_c1(rc=0.1))  # the poisoned basin is wider: contradiction
    assert v.status == NOT_REPRODUCED and "ratio 0.83" in v.reason
    assert judge_c1(_c1(vc=-2.2e5)).status == NOT_REPRODUCED
    assert judge_c1(_c1(fit=0.2)).status == INCONCLUSIVE


# ---------------------------------------------------------------- C8


def _c8(levels=(8.0, 6.5, 4.3), losses_end=(1.3, 1.2, 1.1), matched=None):
    runs = []
    for i, (lr, lv) in enumerate(zip((0.1, 0.25, 0.5), levels)):
        r = {"lr": lr, "two_over_lr": 2 / lr, "post_early_median": lv, "post_early_max": lv * 1.5,
             "train_loss": [2.3, 1.8, losses_end[i]]}
        if matched:
            r["matched_lambda_max"] = matched[i]
        runs.append(r)
    return {"runs": runs, "edge_tolerance": 0.15, "early_fraction": 0.25}


def test_c8_judge():
    assert judge_c8(_c8()).status == REPRODUCED
    v = judge_c8(_c8(levels=(6.0, 7.0, 4.0)))  # a larger LR sits higher: contradiction
    assert v.status == NOT_REPRODUCED and "η=0.25 flatter than η=0.1" in v.reason
    v = judge_c8(_c8(levels=(8.0, 6.5, 5.0)))  # 5.0 > 1.15 * 2/0.5
    assert v.status == NOT_REPRODUCED and "ratio 1.25" in v.reason
    assert judge_c8(_c8(losses_end=(2.3, 1.2, 1.1))).status == INCONCLUSIVE  # one LR did not train
    v = judge_c8(_c8(matched=(5.0, 6.0, 7.0)))  # context only
    assert v.status == REPRODUCED and not next(c for c in v.checks if c.name == "ordered at matched loss").passed


# ---------------------------------------------------------------- C9


def test_count_outliers_largest_relative_gap():
    lam = [30, 22, 15, 11, 9, 7, 6, 5, 4.5, 4, 1.2, 1.1, 1.0, 0.95, 0.9]
    out = count_outliers(lam[::-1])
    assert out["n_out"] == 10 and out["gap_ratio"] == pytest.approx(4 / 1.2)
    assert out["edge"] == pytest.approx(np.sqrt(4 * 1.2))
    assert count_outliers([5.0, 4.0, -0.1])["n_out"] == 2  # a non-positive next eigenvalue is an infinite gap


def _c9(nouts=(10, 10, 9, 8), overlap=0.85, conv=True, final_loss=0.04):
    recs = [{"step": s, "n_out": n, "overlap_top_c": overlap, "converged": conv} for s, n in zip((150, 240, 600, 960), nouts)]
    return {"checkpoints": recs, "num_classes": 10, "band": 2, "overlap_factor": 10.0, "chance": 10 / 78858,
            "initial_loss": 2.3, "final_loss": final_loss}


def test_c9_judge():
    assert judge_c9(_c9()).status == REPRODUCED
    v = judge_c9(_c9(nouts=(3, 2, 1, 1)))  # a handful of outliers, not C: contradiction
    assert v.status == NOT_REPRODUCED and "median 1.5 outliers" in v.reason
    v = judge_c9(_c9(overlap=5e-4))
    assert v.status == NOT_REPRODUCED and "x chance" in v.reason
    assert judge_c9(_c9(conv=False)).status == INCONCLUSIVE
    assert judge_c9(_c9(final_loss=2.0)).status == INCONCLUSIVE


# ---------------------------------------------------------------- every run() on tiny configs


def _tiny(**kw):
    base = dict(dataset="digits", model="mlp", model_kwargs={"width": 24, "depth": 1}, optimizer="adam", lr=1e-2,
                epochs=3, batch_size=256)
    base.update(kw)
    return common.train_config(**base)


def _runs(tmp_path, row, config):
    o = run_experiment(row, out=tmp_path, config=config)
    r = o.result
    assert r.status == "ok", (r.error, r.notes)
    assert r.verdict_status in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
    assert r.figures and all((o.path.parent / f.path).is_file() for f in r.figures)
    assert r.key_numbers and r.comparison and r.data and r.timings["total"] > 0
    assert r.verdict == EXPERIMENTS[row].judge(copy.deepcopy(r.measurements))
    return r


_MOONS = dict(dataset="moons", dataset_kwargs={"n_train": 200, "n_test": 200}, model_kwargs={"width": 32, "depth": 2},
              epochs=20, batch_size=64)


@pytest.mark.slow
def test_a4_c1_run_tiny_and_share_runs(tmp_path):
    A4, C1 = EXPERIMENTS["A4"], EXPERIMENTS["C1"]
    clean, pois = _tiny(**_MOONS), _tiny(poison=100, **_MOONS)
    r = _runs(tmp_path, "A4", A4.Config(clean=clean, poisoned=pois, num_points=5, warm_epochs=5, basin_directions=2,
                                        trust_radii=(0.1, 0.5)))
    m = r.measurements
    assert m["same_init_distance"] == 0.0 and m["n_poison"] == 100 and m["n_clean"] == 200
    (mine,) = m["minefield"]
    # the ball searches stay inside their balls, and their runs are distinct from the unconstrained one
    assert [t["rho"] for t in mine["trust"]] == [0.1, 0.5]
    assert all(t["distance"] <= t["radius"] * (1 + 1e-5) for t in mine["trust"])
    assert mine["trust"][0]["distance"] == pytest.approx(mine["trust"][0]["radius"], rel=1e-4)  # 0.1: on the sphere
    warm_runs = [p for p in (tmp_path / "cache" / "warm").glob("*/train-*") if p.is_dir()]
    assert len(warm_runs) == 3
    assert mine["distance_to_clean_trajectory"] <= mine["distance"] + 1e-9  # its start is on the trajectory
    assert mine["curve"]["distance"][0] == 0.0 and mine["curve"]["step"][-1] == 5 * 5  # 300 rows / 64: 5 steps/epoch
    assert mine["distance"] == pytest.approx(mine["curve"]["distance"][-1])
    s = m["sharpness"]
    assert s["clean"]["lambda_max"] > 0 and len(s["poisoned"]["widths"]) == 2 and "bad_from_final" in s
    rc = _runs(tmp_path, "C1", C1.Config(clean=clean, poisoned=pois, num_directions=2, profile_directions=1,
                                         profile_points=5))
    mc = rc.measurements
    assert mc["clean"]["radius_mean"] > 0 and len(mc["profiles"]["clean"][0]) == 5
    assert np.asarray(mc["poisoned"]["radii"]).shape == (2, 2)
    # C1 reused A4's runs (one run directory per config in the shared cache)
    assert len(list((tmp_path / "cache" / "runs").glob("train-*"))) == 2


def test_a5_runs_tiny(tmp_path):
    cfg = EXPERIMENTS["A5"].Config(train=_tiny(optimizer="sgd", lr=0.1, checkpoints="log:6"), num_checkpoints=4,
                                   hessian_examples=128)
    r = _runs(tmp_path, "A5", cfg)
    recs = r.measurements["checkpoints"]
    assert len(recs) == 4 and recs[0]["step"] == 0 and all(c["lambda_min"] <= c["lambda_max"] for c in recs)
    assert r.measurements["hessian_examples"] == 128


def test_b2_runs_tiny(tmp_path):
    sb = _tiny(batch_size=64, epochs=3, checkpoints="epoch:1")
    lb = _tiny(batch_size=0, epochs=10, checkpoints="epoch:2")
    cfg = EXPERIMENTS["B2"].Config(sb=sb, lb=lb, epsilon_steps=2, rho_steps=2, num_points=5)
    r = _runs(tmp_path, "B2", cfg)
    (p,) = r.measurements["pairs"]
    assert p["dinh"]["output_rel_diff"] == 0.0 and p["dinh"]["adaptive_rel_diff"] < 1e-9
    assert len(p["parametric"]["alpha"]) == 5 and p["parametric"]["alpha"][0] == -1.0
    assert max(p["sb"]["train_loss"], p["lb"]["train_loss"]) <= p["target_loss"] * (1 + 1e-6)


def test_c8_runs_tiny_and_reuses_tracked_runs(tmp_path):
    base = _tiny(model_kwargs={"width": 16, "depth": 1}, optimizer="sgd", momentum=0.0, epochs=2, checkpoints="none")
    cfg = EXPERIMENTS["C8"].Config(train=base, lrs=(0.05, 0.2), every=2, data_subset=128)
    r = _runs(tmp_path, "C8", cfg)
    runs = r.measurements["runs"]
    assert [x["lr"] for x in runs] == [0.05, 0.2] and runs[0]["step"][0] == 0 and runs[0]["total_steps"] == 12
    msgs = []
    cfg2 = dataclasses.replace(base, optim=dataclasses.replace(base.optim, lr=0.05))
    _, recs = train_tracked(cfg2, {"every": 2, "data_subset": 128, "seed": 0, "tol": 1e-3},
                            cache_dir=tmp_path / "cache", progress=msgs.append)
    assert msgs and msgs[0].startswith("reusing") and [x["lambda_max"] for x in recs] == runs[0]["lambda_max"]


def test_c9_runs_tiny(tmp_path):
    cfg = EXPERIMENTS["C9"].Config(train=_tiny(checkpoints="log:6"), hessian_examples=128, num_checkpoints=2,
                                   slq_probes=1, slq_steps=5, early_loss_ratio=0.9)
    r = _runs(tmp_path, "C9", cfg)
    m = r.measurements
    assert m["k"] == 20 and all(len(c["eigenvalues"]) == 20 for c in m["checkpoints"])
    assert all(0 <= c["overlap_top_c"] <= c["overlap_top_k"] <= 1 + 1e-9 for c in m["checkpoints"])
    assert "slq" in m and m["checkpoints"][-1]["step"] == r.measurements["checkpoints"][-1]["step"]
