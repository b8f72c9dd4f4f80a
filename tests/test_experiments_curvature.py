"""Curvature rows of `losslab reproduce` (A4, A5, B2, C1, C8, C9): verdict logic on synthetic
measurements (a contradicting measurement gives `not reproduced`, a failed precondition `inconclusive`),
the helpers they define, and every run() on a tiny config."""
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
from losslab.experiments.a4_bad_minima import TrustRegion, layer_relative_distance, train_warm_started
from losslab.experiments.a5_saddles import judge as judge_a5
from losslab.experiments.b2_large_batch import judge as judge_b2, rescale_relu_layers
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


# A4's verdict (VERSION 4, issue 14) is tested in tests/test_verdicts_a4c1.py.


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


def _a5(lmin_end=-0.01, neg_end=3e-4, err=0.0, conv=True):
    def pt(lmin, lmax, neg):
        return {"lambda_min": lmin, "lambda_max": lmax, "converged": conv, "neg_mass": neg, "pos_mass": 4e-3}

    runs = [{"seed": s, "train_error": err, "start": pt(-0.5 - 0.01 * s, 0.8, 4e-3 + 1e-4 * s),
             "end": pt(lmin_end * (1 + 0.1 * s), 2.0, neg_end * (1 + 0.1 * s))} for s in range(3)]
    return {"runs": runs, "tol": 1e-3}


def test_a5_judge():  # the full set (straddling, control, firing) is in test_verdicts_a5c8c9.py
    from losslab.experiments import PARTLY_REPRODUCED

    assert judge_a5(_a5()).status == REPRODUCED
    v = judge_a5(_a5(lmin_end=-0.9, neg_end=8e-3))  # negative curvature grows: contradiction
    assert v.status == NOT_REPRODUCED and "|λmin| shrinks" in v.reason
    v = judge_a5(_a5(lmin_end=-0.4))  # |λmin| falls, but by less than half
    assert v.status == PARTLY_REPRODUCED and "|λmin| shrinks" in v.reason
    assert judge_a5(_a5(err=0.05)).status == INCONCLUSIVE  # not a minimum
    assert judge_a5(_a5(conv=False)).status == INCONCLUSIVE


# ---------------------------------------------------------------- B2


def _b2(*, lam=((2.0, 3.0), (1.7, 2.8), (3.0, 4.4)), eps=((2.0, 8.0), (3.7, 12.0), (5.1, 18.0)), err=(0.0, 0.0),
        loss=(0.0043, 0.0051), test=((0.022, 0.029), (0.024, 0.033), (0.022, 0.033)), ada=0.0):
    def side(s, i):
        return {"train_loss": loss[i], "train_error": err[i], "test_error": test[s][i], "lambda_max": lam[s][i],
                "eps_sharpness": eps[s][i]}

    return {"pairs": [{"seed": s, "sb": side(s, 0), "lb": side(s, 1)} for s in range(len(lam))],
            "dinh": {"seed": 0, "output_rel_diff": 0.0, "lambda_max": lam[0][0], "lambda_max_rescaled": 12.0,
                     "adaptive_rel_diff": ada}}


def test_b2_judge():  # the full set (straddling, control, context) is in test_verdicts_a2a3b2.py
    assert judge_b2(_b2()).status == REPRODUCED
    v = judge_b2(_b2(lam=((3.0, 2.0), (2.8, 1.7), (4.4, 3.0)), eps=((8.0, 2.0), (12.0, 3.7), (18.0, 5.1)),
                     test=((0.029, 0.022), (0.033, 0.024), (0.033, 0.022))))  # SB sharper and better: contradiction
    assert v.status == NOT_REPRODUCED and "λmax" in v.reason
    v = judge_b2(_b2(test=((0.029, 0.022), (0.033, 0.024), (0.033, 0.022))))  # the test gap is decisive now
    assert v.status == "partly reproduced" and "LB generalizes worse" in v.reason
    assert judge_b2(_b2(err=(0.0, 0.08))).status == INCONCLUSIVE  # LB did not fit: not matched
    assert judge_b2(_b2(loss=(0.001, 0.01))).status == INCONCLUSIVE  # losses not matched
    assert judge_b2(_b2(ada=0.3)).status == REPRODUCED  # Dinh et al.'s caveat is context only


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
    l0 = lambda_max(HessianOperator(m, (x, y), loss=F.cross_entropy, point=pt, dtype=torch.float64), seed=0)
    l1 = lambda_max(HessianOperator(m, (x, y), loss=F.cross_entropy, point=resc, dtype=torch.float64), seed=0)
    assert l1 > 2 * l0
    a0 = adaptive_sharpness(m, (x, y), loss=F.cross_entropy, rho=0.3, steps=5, point=pt, dtype=torch.float64).sharpness
    a1 = adaptive_sharpness(m, (x, y), loss=F.cross_entropy, rho=0.3, steps=5, point=resc, dtype=torch.float64).sharpness
    assert a0 > 0 and a1 == pytest.approx(a0, rel=1e-9)


# ---------------------------------------------------------------- C1


# C1's verdict (VERSION 2, issue 14) is tested in tests/test_verdicts_a4c1.py.


# ---------------------------------------------------------------- C8


def _c8(levels=(8.0, 6.5, 3.6), losses_end=(1.3, 1.2, 1.1), matched=None):
    runs = []
    for arm, (lr, lv) in enumerate(zip((0.1, 0.25, 0.5), levels)):
        for s in range(3):
            r = {"seed": s, "arm": arm, "lr": lr, "post_early_median": lv * (1 + 0.02 * s),
                 "post_early_max": lv * 1.5, "train_loss": [2.3, 1.8, losses_end[arm]]}
            if matched:
                r["matched_lambda_max"] = matched[arm] * (1 + 0.01 * s)
            runs.append(r)
    return {"runs": runs, "early_fraction": 0.25}


def test_c8_judge():  # the full set (straddling, control, firing) is in test_verdicts_a5c8c9.py
    from losslab.experiments import PARTLY_REPRODUCED

    assert judge_c8(_c8()).status == REPRODUCED
    v = judge_c8(_c8(levels=(6.0, 7.0, 3.6)))  # a larger LR sits higher: contradiction
    assert v.status == PARTLY_REPRODUCED and "η=0.25 below η=0.1" in v.reason
    v = judge_c8(_c8(levels=(8.0, 6.5, 4.3)))  # 4.3 > 2/0.5: no tolerance any more
    assert v.status == PARTLY_REPRODUCED and "η=0.5: λmax ≲ 2/η" in v.reason
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


def _c9(nouts=(10, 9, 10), overlap=0.8, conv=True, err=0.0):
    runs = [{"seed": s, "train_error": err, "median_n_out": n, "median_overlap": overlap * (1 + 0.02 * s),
             "checkpoints": [{"converged": conv}]} for s, n in enumerate(nouts)]
    return {"runs": runs, "num_classes": 10, "chance": 10 / 78858}


def test_c9_judge():  # the full set (straddling, control, firing) is in test_verdicts_a5c8c9.py
    from losslab.experiments import PARTLY_REPRODUCED

    assert judge_c9(_c9()).status == REPRODUCED
    v = judge_c9(_c9(nouts=(3, 2, 2)))  # a handful of outliers, not C: contradiction
    assert v.status == PARTLY_REPRODUCED and "about C outliers" in v.reason
    v = judge_c9(_c9(overlap=5e-3))  # 40x chance, but not most of the gradient
    assert v.status == PARTLY_REPRODUCED and "gradient in the top-C space" in v.reason
    assert judge_c9(_c9(conv=False)).status == INCONCLUSIVE
    assert judge_c9(_c9(err=0.2)).status == INCONCLUSIVE


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
    assert r.verdict_status in (REPRODUCED, "partly reproduced", NOT_REPRODUCED, INCONCLUSIVE)
    assert r.figures and all((o.path.parent / f.path).is_file() for f in r.figures)
    assert r.key_numbers and r.comparison and r.data and r.timings["total"] > 0
    assert r.verdict == r.rejudge(EXPERIMENTS[row].judge)
    return r


_MOONS = dict(dataset="moons", dataset_kwargs={"n_train": 200, "n_test": 200}, model_kwargs={"width": 32, "depth": 2},
              epochs=20, batch_size=64)


@pytest.mark.slow
def test_a4_c1_run_tiny_and_share_runs(tmp_path):
    A4, C1 = EXPERIMENTS["A4"], EXPERIMENTS["C1"]
    clean, pois = _tiny(**_MOONS), _tiny(poison=100, **_MOONS)
    r = _runs(tmp_path, "A4", A4.Config(clean=clean, poisoned=pois, seeds=(0, 1), warm_epochs=5, basin_directions=2,
                                        trust_radii=(0.1, 0.5)))
    m = r.measurements
    assert [x["seed"] for x in m["seeds"]] == [0, 1] == [x["seed"] for x in m["control"]]
    for rec in m["seeds"]:
        assert rec["same_init_distance"] == 0.0 and rec["n_extra"] == 100 and rec["n_clean"] == 200
        # the ball searches stay inside their balls; the null repeats every search with the true labels
        for searches, labels in ((rec["searches"], "poison"), (rec["null_searches"], "true")):
            assert [t["rho"] for t in searches] == [None, 0.1, 0.5] and {t["labels"] for t in searches} == {labels}
            assert all(t["distance"] <= t["radius"] * (1 + 1e-5) for t in searches if t["rho"] is not None)
            assert searches[1]["distance"] == pytest.approx(searches[1]["radius"], rel=1e-4)  # 0.1: on the sphere
            gv = searches[0]
            assert gv["curve"]["distance"][0] == 0.0 and gv["curve"]["step"][-1] == 5 * 5  # 300 rows / 64: 5 steps/epoch
            assert gv["distance"] == pytest.approx(gv["curve"]["distance"][-1])
            assert all(t["grad_norm"] > 0 for t in searches)
        assert rec["searches"][0]["grad_bound"] == rec["poisoned"]["grad_norm"]
        assert rec["clean"]["lambda_max"] > 0 and len(rec["poisoned"]["widths"]) == 2
    # the control is the protocol without poison: the null model in the poisoned role, the null searches as searches
    c0 = m["control"][0]
    assert c0["searches"] == m["seeds"][0]["null_searches"] and c0["null_searches"] == []
    assert c0["poisoned"]["labels"] == "true" and r.control["setting"] == A4.CRITERIA.control
    assert r.criteria == A4.CRITERIA.lines()
    # per seed: 3 poisoned searches, 3 null searches and the null model trained from scratch
    warm_runs = [p for p in (tmp_path / "cache" / "warm").glob("*/train-*") if p.is_dir()]
    assert len(warm_runs) == 2 * 7
    rc = _runs(tmp_path, "C1", C1.Config(clean=clean, poisoned=pois, seeds=(0, 1), control_seeds=(2, 3),
                                         num_directions=2, profile_directions=1, profile_points=5))
    mc = rc.measurements
    assert [p["seed"] for p in mc["pairs"]] == [0, 1] and [p["other_seed"] for p in mc["control"]] == [2, 3]
    assert mc["pairs"][0]["clean"]["radius_mean"] > 0 and len(mc["profiles"]["clean"][0]) == 5
    assert mc["control"][0]["clean"] == mc["pairs"][0]["clean"] and len(mc["pairs"][1]["poisoned"]["widths"]) == 2
    assert rc.control["setting"] == C1.CRITERIA.control
    # C1 reused A4's runs (one run directory per config in the shared cache) and trained the control's clean runs
    assert {p["clean"]["run"] for p in mc["pairs"]} == {x["runs"]["clean"] for x in m["seeds"]}
    assert len(list((tmp_path / "cache" / "runs").glob("train-*"))) == 4 + 2


def _runs_a5c8c9(tmp_path, row, config):
    """Like _runs, but "partly reproduced" is a possible verdict of A5, C8 and C9, and the control is required."""
    o = run_experiment(row, out=tmp_path, config=config)
    r = o.result
    assert r.status == "ok", (r.error, r.notes)
    assert r.figures and all((o.path.parent / f.path).is_file() for f in r.figures)
    assert r.key_numbers and r.comparison and r.data and r.timings["total"] > 0
    assert r.criteria and r.control["verdict"] not in (None, "none")
    assert r.verdict == r.rejudge(EXPERIMENTS[row].judge)
    return r


def test_a5_runs_tiny(tmp_path):
    cfg = EXPERIMENTS["A5"].Config(train=_tiny(optimizer="sgd", lr=0.1, checkpoints="log:6"), seeds=(0, 1),
                                   num_checkpoints=4, hessian_examples=128, slq_probes=1, slq_steps=8)
    r = _runs_a5c8c9(tmp_path, "A5", cfg)
    runs = r.measurements["runs"]
    assert [x["seed"] for x in runs] == [0, 1] and r.measurements["hessian_examples"] == 128
    for x in runs:
        assert len(x["path"]) == 4 and x["path"][0]["step"] == 0 and x["start"]["step"] == 0
        assert all(c["lambda_min"] <= c["lambda_max"] for c in x["path"])
        assert x["control_start"]["step"] == x["end"]["step"] and x["start"]["neg_mass"] >= 0
        assert x["control_start"]["probe_seed"] == x["start"]["probe_seed"] != x["end"]["probe_seed"]


def test_b2_runs_tiny(tmp_path):
    sb = _tiny(batch_size=64, epochs=3, checkpoints="epoch:1")
    lb = _tiny(batch_size=0, epochs=10, checkpoints="epoch:2")
    cfg = EXPERIMENTS["B2"].Config(sb=sb, lb=lb, seeds=(0, 1), control_order_seeds=(500, 501), epsilon_steps=2,
                                   rho_steps=2, num_points=5)
    o = run_experiment("B2", out=tmp_path, config=cfg)
    r = o.result  # like _runs, but "partly reproduced" is a possible verdict here
    assert r.status == "ok", (r.error, r.notes)
    assert r.figures and all((o.path.parent / f.path).is_file() for f in r.figures)
    assert r.key_numbers and r.comparison and r.criteria and r.control["verdict"] != "none"
    assert r.verdict == r.rejudge(EXPERIMENTS["B2"].judge)
    m = r.measurements
    assert [p["seed"] for p in m["pairs"]] == [0, 1] and [c["order_seed"] for c in m["control"]] == [500, 501]
    assert m["dinh"]["output_rel_diff"] == 0.0 and m["dinh"]["adaptive_rel_diff"] < 1e-9
    assert len(m["parametric"]["alpha"]) == 5 and m["parametric"]["alpha"][0] == -1.0
    for p in m["pairs"] + m["control"]:
        assert max(p["sb"]["train_loss"], p["lb"]["train_loss"]) <= p["target_loss"] * (1 + 1e-5)
    assert m["control"][0]["lb"]["order_seed"] == 500 and m["control"][0]["sb"]["order_seed"] == 0
    # SB, LB and the control's second SB run per seed
    assert len(list((tmp_path / "cache" / "runs").glob("train-*"))) == 6


def test_c8_runs_tiny_and_reuses_tracked_runs(tmp_path):
    base = _tiny(model_kwargs={"width": 16, "depth": 1}, optimizer="sgd", momentum=0.0, epochs=2, checkpoints="none")
    cfg = EXPERIMENTS["C8"].Config(train=base, lrs=(0.05, 0.2), seeds=(0, 1), every=2, data_subset=128,
                                   control_lr=0.2, control_order_offsets=(100,))
    r = _runs_a5c8c9(tmp_path, "C8", cfg)
    runs = r.measurements["runs"]
    assert [(x["seed"], x["lr"]) for x in runs] == [(0, 0.05), (0, 0.2), (1, 0.05), (1, 0.2)]
    assert runs[0]["step"][0] == 0 and runs[0]["total_steps"] == 12
    ctrl = r.measurements["control"]  # the seed's own run at 0.2, then one with data order seed + 100
    assert [(x["seed"], x["arm"], x["lr"], x["order_seed"]) for x in ctrl] == [(0, 0, 0.2, 0), (0, 1, 0.2, 100),
                                                                                (1, 0, 0.2, 1), (1, 1, 0.2, 101)]
    msgs = []
    cfg2 = dataclasses.replace(base, optim=dataclasses.replace(base.optim, lr=0.05))
    _, recs = train_tracked(cfg2, {"every": 2, "data_subset": 128, "seed": 0, "tol": 1e-3},
                            cache_dir=tmp_path / "cache", progress=msgs.append)
    assert msgs and msgs[0].startswith("reusing") and [x["lambda_max"] for x in recs] == runs[0]["lambda_max"]


def test_c9_runs_tiny(tmp_path):
    train = _tiny(dataset="mnist1d", dataset_kwargs={"num_samples": 400}, checkpoints="log:6", epochs=4)
    cfg = EXPERIMENTS["C9"].Config(train=train, seeds=(0, 1), hessian_examples=128, num_checkpoints=2, slq_probes=1,
                                   slq_steps=5, early_loss_ratio=0.9)
    r = _runs_a5c8c9(tmp_path, "C9", cfg)
    m = r.measurements
    assert m["k"] == 20 and [x["seed"] for x in m["runs"]] == [0, 1]
    for x in m["runs"] + m["control"]:
        assert all(len(c["eigenvalues"]) == 20 for c in x["checkpoints"])
        assert all(0 <= c["overlap_top_c"] <= c["overlap_top_k"] <= 1 + 1e-9 for c in x["checkpoints"])
    assert [x["model_classes"] for x in m["runs"]] == [10, 10] and [x["model_classes"] for x in m["control"]] == [5, 5]
    assert "slq" in m["runs"][0] and "slq" not in m["control"][0]
