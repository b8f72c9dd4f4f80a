"""C10, C11, C12 verdicts (issue 14): each judge on synthetic per-seed values — a clear pass, an interval
straddling its threshold, a contradicting measurement, a failed precondition — the negative control judged by the
same judge, a control that fires making the row inconclusive and flagged, and every run() on a tiny config."""
import copy
import math

import numpy as np
import pytest

from losslab.experiments import EXPERIMENTS, INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, common, run_experiment
from losslab.experiments import c10_wedges as C10
from losslab.experiments import c11_implicit_reg as C11
from losslab.experiments import c12_myths as C12
from losslab.experiments.criteria import Control, apply_control

PARTLY = "partly reproduced"


def _check(v, name):
    return next(c for c in v.checks if c.name == name)


def _fired(row_verdict, control_verdict):
    final = apply_control(row_verdict, Control("a control that passes", control_verdict))
    return final.status == INCONCLUSIVE and final.flagged and "negative control" in final.reason


# ---------------------------------------------------------------- C10: wedges


def _c10(rise=(0.0, 0.0, 0.0), spread=(1.2, 1.3, 1.4), train_error=(0.005, 0.004, 0.006), gain_far=(0.1, 0.2, 0.15)):
    radii = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    sols = []
    for s, (ri, e) in enumerate(zip(rise, train_error)):
        loss = [2.3, 0.4, 0.06, 0.05, 0.045, 0.044, 0.044]
        loss[-1] = 0.044 + ri * 2.3  # a rise of ri x L(0) at the last radius
        sols.append({"seed": s, "norm": 1.0, "radii": radii, "train_error": e, "train_loss": loss,
                     "init_train_loss": [2.3, 2.31, 2.35, 2.5, 2.8, 3.2, 3.7], "width_ratio": 2.0})
    ks = [0.25, 1.0, 4.0, 16.0]
    fo = [[5.0 * (1 + (sp - 1) * i / 3) for sp in spread] for i in range(4)]  # max/min = spread per seed
    fa = [[max(k, 5.0) for _ in spread] for k in ks]
    acc_o = [[0.6] * 3 for _ in ks]
    acc_a = [[0.6] * 3 for _ in ks[:-1]] + [[0.6 - g for g in gain_far]]
    return {"solutions": sols, "subspace": {"start_radii": ks, "seeds": [0, 1, 2], "d": 50,
                                            "final_radius": {"origin": fo, "affine": fa},
                                            "accuracy": {"origin": acc_o, "affine": acc_a}}}


def _toy_config(**kw):
    base = dict(toy_D=30, toy_n=15, toy_K=3, toy_d=10, toy_steps=60, toy_solution_steps=200, num_radii=13,
                width_dirs=2)
    base.update(kw)
    return C10.Config(**base)


def test_c10_judge_clear_pass_straddle_contradiction_precondition():
    v = C10.judge(_c10())
    assert v.status == REPRODUCED
    c = _check(v, "radial tunnel")
    assert c.seeds == 3 and c.op == "<" and c.threshold == 0.01 and c.ci[1] < 0.01
    # one seed's loss rises 3% of L(0) beyond the solution: the interval straddles 0.01 -> inconclusive
    assert C10.judge(_c10(rise=(0.0, 0.0, 0.03))).status == INCONCLUSIVE
    # origin runs end at radii spread 1.5x .. 3.2x: the interval straddles 2.5 -> inconclusive
    assert C10.judge(_c10(spread=(1.5, 2.4, 3.2))).status == INCONCLUSIVE
    # the loss rises ~2.7% of L(0) along every seed's ray: the radial tunnel fails, the radial pull holds
    v = C10.judge(_c10(rise=(0.027, 0.025, 0.028)))
    assert v.status == PARTLY and "radial tunnel" in v.reason
    # ... and when the origin runs stay where they started too: not reproduced
    assert C10.judge(_c10(rise=(0.027, 0.025, 0.028), spread=(40.0, 50.0, 60.0))).status == NOT_REPRODUCED
    # a solution not at a minimum (train error 2%): inconclusive whatever else holds
    v = C10.judge(_c10(train_error=(0.005, 0.02, 0.006)))
    assert v.status == INCONCLUSIVE and "trained to a minimum" in v.reason


def test_c10_context_checks_never_decide():
    # the accuracy gain from far out is context: a loss or a diverged cell changes nothing
    assert C10.judge(_c10(gain_far=(-0.2, -0.1, -0.15))).status == REPRODUCED
    m = _c10()
    m["subspace"]["accuracy"]["affine"][-1] = [np.nan, 0.5, 0.5]
    v = C10.judge(m)
    assert v.status == REPRODUCED and _check(v, "origin helps from far out").passed is None


def test_c10_toy_model_predictions_and_ball_control():
    cfg = C10.Config.quick()  # the row's own toy settings (about a second)
    toy = C10._toy_run(lambda s: C10.WedgeToy(D=cfg.toy_D, n=cfg.toy_n, K=cfg.toy_K, eps=cfg.toy_eps,
                                              beta=cfg.toy_beta, seed=s), cfg)
    st = C10.stats(toy)
    # the wedges are cones: the loss never rises along the solution's ray; widths double at twice the radius
    n = len(cfg.seeds)
    assert n >= 5 and st["rise"] == [0.0] * n and st["width_ratio"] == pytest.approx([2.0] * n, rel=0.15)
    assert all(e == 0.0 for e in st["train_error"])
    assert C10.judge(toy).status == REPRODUCED  # the criteria are the toy's predictions
    ball = C10._toy_run(lambda s: C10.BallToy(D=cfg.toy_D, radius=cfg.ball_radius, width=cfg.ball_width,
                                              beta=cfg.toy_beta, seed=s), cfg)
    cv = C10.judge(ball)
    assert cv.status in (PARTLY, NOT_REPRODUCED) and _check(cv, "radial tunnel").passed is False
    assert min(C10.stats(ball)["rise"]) > 1.0  # far past the minimum the loss is back above L(0)
    # the control does not fire: the row's verdict stands; a control that passed would make it inconclusive
    row = C10.judge(_c10())
    assert apply_control(row, Control(C10.CRITERIA.control, cv)) == row
    assert _fired(row, C10.judge(toy))


def test_c10_wedge_toy_geometry():
    t = C10.WedgeToy(D=20, n=10, K=2, eps=0.3, beta=4.0, seed=1)
    x = 3.0 * t.axis(1)
    assert t.s(x) < 0 and t.s(2 * x) == pytest.approx(2 * t.s(x))  # homogeneous: the ray stays inside
    assert float(t.loss(np.zeros(20))) == pytest.approx(math.log(2))
    g = t.grad(x + 0.1)
    h = 1e-6
    e = np.zeros(20)
    e[3] = h
    assert g[3] == pytest.approx((float(t.loss(x + 0.1 + e)) - float(t.loss(x + 0.1 - e))) / (2 * h), rel=1e-4)


# ---------------------------------------------------------------- C11: implicit regularization


@pytest.fixture(scope="module")
def facts():
    cfg = C11.Config(steps=20000)
    return ([C11._factorization(3, cfg, s) for s in (0, 1, 2)], [C11._factorization(1, cfg, s) for s in (0, 1, 2)])


def _c11(facts, test_last=(0.0222, 0.0244, 0.0222), train=None):
    widths = [8, 32, 128, 512]
    runs = []
    for s, t in enumerate(test_last):
        tr = list(train[s]) if train else [0.03, 0.008, 0.006, 0.004]
        runs.append({"seed": s, "train_error": tr, "test_error": [0.05, 0.0289, 0.0267, t]})
    return {"widths": widths, "runs": runs, "factorizations": copy.deepcopy(facts[0]),
            "min_nuclear": C11.min_nuclear_completion()}


def test_c11_judge_clear_pass_straddle_contradiction_precondition(facts):
    v = C11.judge(_c11(facts))
    assert v.status == REPRODUCED, v.reason
    c = _check(v, "no increase past interpolation")
    assert c.op == "<" and c.threshold == 0.005 and c.seeds == 3
    # widest - threshold = -0.0067, +0.0044, -0.0089: both width intervals straddle their thresholds
    v = C11.judge(_c11(facts, test_last=(0.0222, 0.0333, 0.02)))
    assert v.status == INCONCLUSIVE and _check(v, "keeps falling").passed is None
    # the widest net is 2 points worse on every seed: both width checks fail, the factorization holds
    v = C11.judge(_c11(facts, test_last=(0.049, 0.05, 0.048)))
    assert v.status == PARTLY and "no increase past interpolation" in v.reason and "keeps falling" in v.reason
    # no width fits its training set on one seed: inconclusive
    bad = [[0.03, 0.02, 0.015, 0.012]] + [[0.03, 0.008, 0.006, 0.004]] * 2
    v = C11.judge(_c11(facts, train=bad))
    assert v.status == INCONCLUSIVE and "some width interpolates" in v.reason


def test_c11_no_increase_is_one_sided_with_a_margin(facts):
    # a rise of 0.002-0.003 on every seed is within the 0.005 margin (no increase holds) but is not a fall
    v = C11.judge(_c11(facts, test_last=(0.0311, 0.0311, 0.0319)))
    assert v.status == PARTLY and _check(v, "no increase past interpolation").passed is True
    assert _check(v, "keeps falling").passed is False
    # a fall far beyond the margin supports the claim (a two-sided equivalence test would reject it)
    v = C11.judge(_c11(facts, test_last=(0.0089, 0.0111, 0.0067)))
    assert _check(v, "no increase past interpolation").passed is True and v.status == REPRODUCED


def test_c11_norms_that_shrink_contradict(facts):
    m = _c11(facts)
    for f in m["factorizations"]:
        for k in C11.NORMS:
            s = np.asarray(f[k])
            f[k] = (s[0] + s[-1] - s).tolist()
    v = C11.judge(m)
    assert v.status == PARTLY and "every norm grows" in v.reason and "|w11| grows" in v.reason


def test_c11_control_depth1_and_quarter_data(facts):
    m = _c11(facts)
    row = C11.judge(m)
    ctrl = _c11(facts, test_last=(0.0533, 0.0578, 0.0444))  # the widest net trained on a quarter of the data
    ctrl["factorizations"] = copy.deepcopy(facts[1])  # depth 1: w11 gets no gradient
    cv = C11.judge(ctrl)
    assert cv.status in (PARTLY, NOT_REPRODUCED)
    assert _check(cv, "|w11| grows").passed is False and _check(cv, "keeps falling").passed is False
    assert max(C11.factorization_stats(f, 2.0)["w11_growth"] for f in facts[1]) < 1.01
    assert apply_control(row, Control(C11.CRITERIA.control, cv)) == row
    assert _fired(row, C11.judge(m))


def test_min_nuclear_and_width_stats():
    assert C11.min_nuclear_completion()["nuclear"] == pytest.approx(2.0, abs=1e-9)
    s = C11.width_stats([8, 32, 128], {"train_error": [0.02, 0.02, 0.02], "test_error": [0.1, 0.05, 0.04]})
    assert s["threshold_width"] is None and s["n_past"] == 0 and math.isnan(s["rise"])
    s = C11.width_stats([8, 32, 128], {"train_error": [0.02, 0.005, 0.0], "test_error": [0.1, 0.03, 0.035]})
    assert s["threshold_width"] == 32 and s["rise"] == pytest.approx(0.005) and s["fall"] == pytest.approx(0.005)


# ---------------------------------------------------------------- C12: myths


BASE = {"sgd": (0.031, 0.005, 14.0, 0.65), "wd_zero": (0.035, 0.012, 11.5, 0.58), "wd_norm": (0.030, 0.004, 14.2, 0.66),
        "gd_reg": (0.033, 0.003, 16.0, 0.49), "rank_up": (0.034, 0.009, 13.2, 0.88)}
JIT = (0.0, 0.0022, -0.0022, 0.0011)


def _c12(shift=None, jitter=None, **over):
    """Four seeds; ``over[v] = (test, train, norm, rank)``; ``shift[v]``: per-seed test-error offsets."""
    vals = {**BASE, **over}
    cells = {}
    for v, (t, tr, w, r) in vals.items():
        off = (shift or {}).get(v, (0.0,) * 4)
        jit = (jitter or {}).get(v, JIT if v != "sgd" else (0.0,) * 4)
        cells[v] = [{"seed": s, "test_error": t + off[s] + jit[s], "train_error": tr, "weight_norm": w, "rank": r}
                    for s in range(4)]
    return {"cells": cells}


def test_c12_judge_clear_pass_straddle_contradiction_precondition():
    m = _c12()
    v = C12.judge(m)
    assert v.status == REPRODUCED, v.reason
    assert {k: s.status for k, s in C12.subclaims(m).items()} == {"a": REPRODUCED, "b": REPRODUCED, "c": REPRODUCED}
    c = _check(v, "(c) higher rank no worse")
    assert c.op == "<" and c.threshold == 0.01 and c.seeds == 4
    # (c): rank-raised - SGD = 0.003, 0.023, -0.002, 0.018: the interval straddles the margin -> inconclusive
    s = _c12(shift={"rank_up": (0.0, 0.0178, -0.0022, 0.0129)})
    assert C12.judge(s).status == INCONCLUSIVE and C12.subclaims(s)["c"].status == INCONCLUSIVE
    # (b): GD + decay 3 points worse than SGD on every seed -> (b) fails, the others hold
    b = _c12(gd_reg=(0.061, 0.003, 16.0, 0.49))
    assert C12.judge(b).status == PARTLY and C12.subclaims(b)["b"].status == NOT_REPRODUCED
    # every candidate clearly worse -> not reproduced
    w = _c12(wd_norm=(0.06, 0.004, 14.2, 0.66), gd_reg=(0.061, 0.003, 16.0, 0.49), rank_up=(0.064, 0.009, 13.2, 0.88))
    assert C12.judge(w).status == NOT_REPRODUCED
    # preconditions: equal norms, a rank not raised, a candidate that did not fit: inconclusive
    assert C12.judge(_c12(wd_norm=(0.030, 0.004, 11.6, 0.66))).status == INCONCLUSIVE
    assert C12.judge(_c12(rank_up=(0.034, 0.009, 13.2, 0.70))).status == INCONCLUSIVE
    u = _c12(rank_up=(0.034, 0.05, 13.2, 0.88))
    assert C12.judge(u).status == INCONCLUSIVE and "(c) runs trained" in C12.judge(u).reason
    assert {k: s.status for k, s in C12.subclaims(u).items()} == {"a": REPRODUCED, "b": REPRODUCED, "c": INCONCLUSIVE}


def test_c12_better_candidate_supports_the_claim():
    # decay toward mu clearly *better* than toward 0: a non-inferiority claim holds (TOST would reject it)
    v = C12.judge(_c12(wd_norm=(0.015, 0.004, 14.2, 0.66)))
    assert v.status == REPRODUCED and _check(v, "(a) decay toward μ > 0 no worse than toward 0").value < -0.01


def test_c12_control_quarter_data_candidates():
    row = C12.judge(_c12())
    ctrl = _c12(wd_norm=(0.058, 0.009, 12.7, 0.70), gd_reg=(0.066, 0.0, 18.0, 0.45), rank_up=(0.058, 0.012, 13.0, 0.80))
    cv = C12.judge(ctrl)
    assert cv.status == NOT_REPRODUCED
    assert apply_control(row, Control(C12.CRITERIA.control, cv)) == row
    assert _fired(row, C12.judge(_c12()))


def test_c12_rank_up_flattens_the_spectrum_and_keeps_the_nuclear_norm():
    import torch

    from losslab.probes import effective_rank

    torch.manual_seed(0)  # test-local; library code never seeds global RNGs
    lin = torch.nn.Linear(16, 16)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(16, 2) @ torch.randn(2, 16) + 0.01 * torch.randn(16, 16))

    class State:
        model = torch.nn.Sequential(lin, torch.nn.Linear(16, 10))
        lr = 1.0
        bundle = type("B", (), {"num_classes": 10})()

    before = lin.weight.detach().clone()
    head = State.model[1].weight.detach().clone()
    C12.RankUp(0.5).on_step_end(State)
    sv0, sv1 = torch.linalg.svdvals(before), torch.linalg.svdvals(lin.weight.detach())
    assert float(sv1.sum()) == pytest.approx(float(sv0.sum()), rel=1e-5)
    assert effective_rank(lin.weight.detach()) > effective_rank(before) + 1
    assert torch.equal(State.model[1].weight, head)  # the head is left alone


# ---------------------------------------------------------------- every run() on a tiny config


def _run_tiny(tmp_path, row, config):
    o = run_experiment(row, out=tmp_path, config=config)
    r = o.result
    assert r.status == "ok", (r.error, r.notes)
    assert r.verdict_status in (REPRODUCED, PARTLY, NOT_REPRODUCED, INCONCLUSIVE)
    assert r.profile == "custom" and r.figures and all((o.path.parent / f.path).stat().st_size > 0 for f in r.figures)
    assert r.key_numbers and r.comparison and r.data and r.timings["total"] > 0
    assert r.criteria and r.control and r.control["verdict"] in (REPRODUCED, PARTLY, NOT_REPRODUCED, INCONCLUSIVE)
    assert r.verdict == r.rejudge(EXPERIMENTS[row].judge)  # the verdict is a function of the saved numbers
    # the row's own verdict (before the control) is judge(measurements)
    if not r.verdict.flagged:
        assert r.verdict == EXPERIMENTS[row].judge(copy.deepcopy(r.measurements))
    return r


def _tiny_train(**kw):
    base = dict(dataset="digits", subsample=200, model="mlp", model_kwargs={"width": 8, "depth": 1}, optimizer="adam",
                lr=1e-2, epochs=2, batch_size=64, checkpoints="none")
    base.update(kw)
    return common.train_config(**base)


def test_c10_runs_tiny(tmp_path):
    cfg = _toy_config(train=_tiny_train(), seeds=(0, 1), num_radii=7, d=5, start_radii=(1.0, 4.0), epochs=1)
    r = _run_tiny(tmp_path, "C10", cfg)
    m = r.measurements
    s = m["solutions"][0]
    assert len(s["radii"]) == 7 and s["radii"][0] == 0.0 and s["radii"][-1] == pytest.approx(3 * s["norm"])
    assert s["train_loss"][0] == pytest.approx(math.log(10), abs=1e-6)  # all-zero net: uniform softmax
    assert s["width_ratio"] > 0 and len(m["toy"]["solutions"]) == 2 and len(m["control"]["solutions"]) == 2
    assert np.asarray(m["subspace"]["final_radius"]["origin"]).shape == (2, 2)
    assert r.control["setting"] == C10.CRITERIA.control


def test_c11_runs_tiny(tmp_path):
    cfg = C11.Config(train=_tiny_train(optimizer="sgd", lr=0.05), widths=(2, 8), seeds=(0, 1), steps=500,
                     control_subsample=50)
    r = _run_tiny(tmp_path, "C11", cfg)
    m = r.measurements
    assert m["widths"] == [2, 8] and [x["seed"] for x in m["runs"]] == [0, 1]
    assert m["min_nuclear"]["nuclear"] == pytest.approx(2.0, abs=1e-6)
    assert [f["depth"] for f in m["control"]["factorizations"]] == [1, 1]
    assert m["control"]["runs"][0]["test_error"][0] == m["runs"][0]["test_error"][0]  # only the widest is retrained


def test_c12_runs_tiny(tmp_path):
    cfg = C12.Config(train=_tiny_train(optimizer="sgd", lr=0.05, model_kwargs={"width": 8, "depth": 2}), seeds=(0, 1),
                     control_seeds=(0, 1), gd_epochs=3, control_subsample=50)
    r = _run_tiny(tmp_path, "C12", cfg)
    m = r.measurements
    assert set(m["cells"]) == set(C12.VARIANTS) and set(m["subclaims"]) == {"a", "b", "c"}
    mu = m["cells"]["wd_norm"][0]["target"]
    assert mu == pytest.approx(2.0 * m["cells"]["wd_norm"][0]["init_weight_norm"], rel=1e-3)
    assert all(0 < c["rank"] <= 1 for v in m["cells"].values() for c in v)
    assert m["cells"]["rank_up"][0]["rank"] > m["cells"]["sgd"][0]["rank"]
    assert m["control"]["cells"]["wd_norm"][0]["run"] != m["cells"]["wd_norm"][0]["run"]
