"""The experiment framework: registry, results, runner, shared measurements, and every row's verdict
logic on synthetic measurements (a contradicting measurement must give `not reproduced`)."""
import dataclasses
import json
import types

import numpy as np
import pytest
import torch

from losslab import directions, models, params
from losslab.errors import LosslabError
from losslab.experiments import (
    EXPERIMENTS,
    BROKEN,
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    ROWS,
    Check,
    ExperimentResult,
    FigureRef,
    Verdict,
    common,
    config_for,
    get,
    recipes,
    result_key,
    run_experiment,
    run_many,
    verdict_from_checks,
)
from losslab.experiments import _registry as registry
from losslab.experiments.a1_monotonic import judge as judge_a1
from losslab.experiments.a2_zero_train_error import judge as judge_a2
from losslab.experiments.a3_random_labels import judge as judge_a3
from losslab.experiments.b1_filter_normalized import filter_norm_deviation, judge as judge_b1, roughness
from losslab.experiments.c4_permutation import judge as judge_c4

LANDED = ["A1", "A2", "A3", "A4", "B1", "C4"]


# ---------------------------------------------------------------- registry and configs


def test_registry_has_the_landed_rows_in_survey_order():
    assert not BROKEN, BROKEN
    assert [r for r in EXPERIMENTS if r in LANDED] == LANDED
    assert list(EXPERIMENTS) == sorted(EXPERIMENTS, key=registry.row_order)
    assert set(EXPERIMENTS) <= set(ROWS)
    assert len(ROWS) == 21 and registry.row_order("C10") > registry.row_order("C9")


@pytest.mark.parametrize("row", LANDED)
def test_profiles_are_frozen_hashable_and_distinct(row):
    module = EXPERIMENTS[row]
    q, f = module.Config.quick(), module.Config.full()
    assert dataclasses.is_dataclass(q) and type(q).__dataclass_params__.frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(q, dataclasses.fields(q)[0].name, None)
    assert result_key(row, q) == result_key(row, module.Config.quick())
    assert result_key(row, q) != result_key(row, f)
    assert result_key(row, q) != result_key(row, q, version=99)
    assert callable(module.judge) and callable(module.run)
    assert isinstance(module.COST["quick"], (int, float))


def test_unknown_and_unimplemented_rows_are_one_line_errors(monkeypatch):
    with pytest.raises(LosslabError, match="unknown survey row"):
        get("Z7")
    # a survey row whose module is absent (simulated by hiding D2) is "not yet implemented"
    monkeypatch.delitem(EXPERIMENTS, "D2", raising=False)
    with pytest.raises(LosslabError, match="not yet implemented"):
        get("D2")
    assert get("a1").ID == "A1"
    with pytest.raises(LosslabError, match="profile"):
        config_for("A1", "medium")


def test_recipes_share_runs_between_rows():
    from losslab.runs import run_dir_for

    a1 = EXPERIMENTS["A1"].Config.quick()
    c4 = EXPERIMENTS["C4"].Config.quick()
    a2 = EXPERIMENTS["A2"].Config.quick()
    a3 = EXPERIMENTS["A3"].Config.quick()
    assert run_dir_for(recipes.with_seed(a1.train, 0)) == run_dir_for(recipes.with_seed(c4.train, c4.seeds[0]))
    assert a2.seeds == a3.seeds and a2.control == a3.control  # A2's runs and control are A3's p=0 runs
    assert run_dir_for(recipes.with_seed(a2.train, a2.seeds[0])) == run_dir_for(recipes.with_seed(a3.train, a3.seeds[0]))
    assert recipes.with_seed(a1.train, 3).seeds.resolved() == {"init": 3, "order": 3, "label": 3}
    clean, poisoned = recipes.poison_pair("quick")
    assert clean.seeds == poisoned.seeds and poisoned.data.poison > 0 and clean.data.poison == 0


# ---------------------------------------------------------------- verdicts and results


def test_verdict_from_checks_precedence():
    pre_bad = Check("trained", False, "loss did not fall", precondition=True)
    bad = Check("claim", False, "3 of 50 rise")
    good = Check("claim", True, "0 of 50 rise")
    ctx = Check("contrast", False, "no bump", decisive=False)
    assert verdict_from_checks([pre_bad, bad]).status == INCONCLUSIVE
    v = verdict_from_checks([Check("trained", True, "", precondition=True), bad, ctx])
    assert v.status == NOT_REPRODUCED and v.reason == "claim: 3 of 50 rise" and len(v.checks) == 3
    assert verdict_from_checks([good, ctx]).status == REPRODUCED  # a context check never decides
    assert verdict_from_checks([Check("x", None, "undecided")]).status == INCONCLUSIVE
    assert verdict_from_checks([ctx]).status == INCONCLUSIVE
    # some sub-claims hold and some fail: partly reproduced, naming both
    other = Check("other", True, "fine")
    v = verdict_from_checks([good, other, Check("third", False, "no")])
    assert v.status == "partly reproduced" and "claim, other" in v.reason and "third: no" in v.reason
    assert verdict_from_checks([good, Check("x", None, "straddles")]).status == INCONCLUSIVE
    assert verdict_from_checks([bad, Check("x", None, "straddles")]).status == NOT_REPRODUCED
    with pytest.raises(LosslabError):
        Verdict("probably", "")


def test_result_json_round_trip_keeps_order_and_types(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class C:
        n: int = 3
        seeds: tuple = (0, 1)

    v = verdict_from_checks([Check("a", True, "fine")])
    r = ExperimentResult.create("A1", C(), measurements={"x": np.float32(0.5), "curve": np.arange(3),
                                                         "t": torch.tensor([1.0, 2.0])},
                                verdict=v, key_numbers={"zeta": 0.123456, "alpha": 2, "mid": "3/50"},
                                figures=[FigureRef("f.png", "cap")], seeds={"s": 0}, data="d", timings={"x": 1.23456})
    assert r.title == ROWS["A1"].title and r.config == {"n": 3, "seeds": [0, 1]}
    assert r.key_numbers == {"zeta": "0.123", "alpha": "2", "mid": "3/50"}
    path = r.save(tmp_path / "r" / "result.json")
    raw = json.loads(path.read_text())
    assert raw["format"] == "losslab.experiment-result" and raw["measurements"]["curve"] == [0, 1, 2]
    back = ExperimentResult.load(path)
    assert list(back.key_numbers) == ["zeta", "alpha", "mid"]
    assert back.verdict == v and back.figures == r.figures and back.measurements["t"] == [1.0, 2.0]
    assert not list(tmp_path.glob("r/.*.tmp"))
    (tmp_path / "bad.json").write_text("{\"format\": \"other\"}")
    with pytest.raises(LosslabError, match="not a losslab experiment result"):
        ExperimentResult.load(tmp_path / "bad.json")


# ---------------------------------------------------------------- shared measurements


def test_barriers_both_definitions_exact():
    from losslab.connect.paths import barriers

    a = np.linspace(0, 1, 5)
    v = np.array([1.0, 2.0, 4.0, 3.0, 3.0])
    b = barriers(v, a)
    assert b["mean"] == pytest.approx(4.0 - 2.0)
    assert b["interp"] == pytest.approx(4.0 - (0.5 * 1 + 0.5 * 3))
    assert barriers(2 - a, a)["interp"] == pytest.approx(0.0, abs=1e-15)


def test_monotonicity_counts_rises_above_noise_only():
    from losslab.experiments.a1_monotonic import ATOL, _monotonicity

    v = np.array([3.0, 2.0, 2.0 + 1e-9, 2.5, 1.0, 1.2])
    m = _monotonicity(np.linspace(0, 1, len(v)), v, 1e-5)
    assert ATOL == 1e-6
    assert m["nonmonotone_steps"] == 2 and m["steps"] == 5 and m["first_rise_index"] == 2
    assert m["bump_height"] == pytest.approx(0.5)
    assert _monotonicity(np.linspace(0, 1, 51), np.linspace(2, 0, 51), 1e-5)["nonmonotone_steps"] == 0


def test_roughness_on_known_surfaces():
    g = np.linspace(-1, 1, 9)
    bowl = 0.1 + 3 * g[None, :] ** 2 + g[:, None] ** 2
    saturating = 1 - np.exp(-(g[None, :] ** 2 + g[:, None] ** 2) * 4) + 0.01  # sharp basin with concave walls
    rng = np.random.default_rng(0)
    bumpy = bowl + 0.8 * rng.random(bowl.shape)
    r_bowl, r_sat, r_bumpy = roughness(bowl, g, g), roughness(saturating, g, g), roughness(bumpy, g, g)
    assert r_bowl["radial_nonmonotone_fraction"] == 0 and r_bowl["local_minima"] == 1
    assert r_sat["radial_nonmonotone_fraction"] == 0 and r_sat["nonconvex_fraction"] > 0.3
    assert r_bumpy["radial_nonmonotone_fraction"] > 0.05 and r_bumpy["local_minima"] > 1


def test_filter_norm_deviation_is_exact_for_filter_normalized_directions():
    net = models.build("resnet", input_shape=(1, 8, 8), num_classes=3, seed=0, width=4, depth=1).double()
    w = params.get_point(net)
    d = directions.random_direction(net, seed=5)
    dev = filter_norm_deviation(d.vector, w)
    assert dev["max_rel_deviation"] < 1e-13 and dev["max_abs_1d"] == 0.0
    raw = params.randn_like(w, generator=torch.Generator().manual_seed(0))
    assert filter_norm_deviation(raw, w)["max_rel_deviation"] > 0.1


def test_train_run_lock_shares_one_training(tmp_path):
    cfg = common.train_config(dataset="digits", model="mlp", model_kwargs={"width": 8, "depth": 1}, epochs=1,
                              checkpoints="none")
    msgs = []
    r1 = common.train_run(cfg, tmp_path, msgs.append)
    r2 = common.train_run(cfg, tmp_path, msgs.append)
    assert r1.path == r2.path and r1.done
    assert any(m.startswith("training") for m in msgs) and msgs[-1].startswith("reusing")
    assert (tmp_path / "runs" / ".locks" / f"{r1.path.name}.lock").exists()


# ---------------------------------------------------------------- the verdicts on synthetic measurements


def _a1(bumps=(0.0, 0.0, 0.0), errs=(0.0, 0.0, 0.0), k=None):
    recs = []
    for seed, (b, e) in enumerate(zip(bumps, errs)):
        recs.append({"seed": seed, "loss_init": 2.3, "loss_final": 0.002, "train_error": e,
                     "nonmonotone_steps": (k if k is not None else int(b > 0)), "steps": 50, "bump_height": b})
    return {"main": recs}


def test_a1_judge():
    assert judge_a1(_a1()).status == REPRODUCED
    # every seed bumps clearly: the whole interval of the relative bump lies above 1e-3
    v = judge_a1(_a1(bumps=(0.04, 0.05, 0.045), k=3))
    assert v.status == NOT_REPRODUCED and "monotone" in v.reason
    # one seed bumps, two do not: the interval straddles 1e-3 -> inconclusive, never a pass
    assert judge_a1(_a1(bumps=(0.0, 0.0, 0.05))).status == INCONCLUSIVE
    # one seed cannot decide an interval check
    assert judge_a1(_a1(bumps=(0.0,), errs=(0.0,))).status == INCONCLUSIVE
    # a run that is not at a minimum makes the row inconclusive whatever the path does
    assert judge_a1(_a1(errs=(0.0, 0.2, 0.0))).status == INCONCLUSIVE
    c = judge_a1(_a1()).checks
    mono = next(x for x in c if x.name == "monotone")
    assert mono.seeds == 3 and mono.ci == [0.0, 0.0] and mono.threshold == 1e-3 and mono.op == "<"


def test_a1_control_is_judged_by_the_same_checks_and_can_flag_the_row():
    from losslab.experiments.criteria import Control, apply_control
    from losslab.experiments.a1_monotonic import CRITERIA

    row = judge_a1(_a1())
    bumpy = Control(CRITERIA.control, judge_a1(_a1(bumps=(0.03, 0.05, 0.04), k=4)))
    assert bumpy.status == NOT_REPRODUCED and not bumpy.fired
    assert apply_control(row, bumpy) == row
    flat = Control(CRITERIA.control, judge_a1(_a1()))
    final = apply_control(row, flat)
    assert flat.fired and final.status == INCONCLUSIVE and final.flagged and "control" in final.reason


def _a2(errs=(0.0, 0.0, 0.0), n_params=80000):
    return {"main": [{"seed": s, "n_params": n_params, "n_train": 1000, "train_error": e, "fit_epoch": 40, "epochs": 60}
                     for s, e in enumerate(errs)]}


def test_a2_judge():  # the full set (straddling, control) is in test_verdicts_a2a3b2.py
    assert judge_a2(_a2()).status == REPRODUCED
    v = judge_a2(_a2(errs=(0.08, 0.09, 0.07)))
    assert v.status == NOT_REPRODUCED and "0.08" in v.reason
    assert judge_a2(_a2(errs=(0.0, 0.0, 0.03))).status == INCONCLUSIVE  # interval straddles 0.01
    assert judge_a2(_a2(n_params=100)).status == INCONCLUSIVE


def _a3(steps=(300, 320, 350, 380, 400), train_err_hi=0.0, test_hi=(0.89, 0.9, 0.91)):
    runs = []
    for s in range(3):
        for p, k in zip((0.0, 0.2, 0.5, 0.8, 1.0), steps):
            runs.append({"seed": s, "p": p, "train_error": 0.0, "test_error": 0.5 + 0.4 * p, "fit_steps": k,
                         "epochs": 60, "steps_per_epoch": 8, "n_params": 80000, "n_train": 1000})
        runs[-1].update(train_error=train_err_hi, test_error=test_hi[s])
    return {"runs": runs, "chance": 0.9}


def test_a3_judge():  # the full set (straddling, control) is in test_verdicts_a2a3b2.py
    assert judge_a3(_a3()).status == REPRODUCED
    assert judge_a3(_a3(steps=(300, 320, 350, 380, None))).status == REPRODUCED  # never fit = a lower bound
    v = judge_a3(_a3(train_err_hi=0.3, steps=(300, 320, 350, 380, None)))
    assert v.status == "partly reproduced" and "p=1 fitted" in v.reason
    v = judge_a3(_a3(test_hi=(0.6, 0.61, 0.62)))
    assert v.status == "partly reproduced" and "test error at chance" in v.reason
    v = judge_a3(_a3(steps=(400, 380, 350, 320, 300), train_err_hi=0.3, test_hi=(0.6, 0.61, 0.62)))
    assert v.status == NOT_REPRODUCED


# A4's verdict (VERSION 4, issue 14) is tested in tests/test_verdicts_a4c1.py.


def _b1(diffs=(0.1, 0.12, 0.11), dev=1e-7, origin=0.0, err_noskip=0.0):
    def net(nc, err):
        return {"train_error": err, "filter_norm_max_rel_deviation": dev, "max_abs_1d": 0.0, "origin_rel_error": origin,
                "nonconvexity": nc, "radial_nonmonotone_fraction": 0.0, "quadratic_unexplained": 0.2,
                "local_minima": 1, "mean_abs_laplacian_log": 5.0}

    return {"pairs": [{"seed": s, "a": net(0.1 + d, err_noskip), "b": net(0.1, 0.0)} for s, d in enumerate(diffs)]}


def test_b1_judge():
    assert judge_b1(_b1()).status == REPRODUCED
    v = judge_b1(_b1(diffs=(-0.1, -0.12, -0.11)))
    assert v.status == "partly reproduced" and "rougher without skips" in v.reason
    assert judge_b1(_b1(diffs=(0.1, -0.05, 0.02))).status == INCONCLUSIVE
    assert judge_b1(_b1(diffs=(-0.1, -0.12, -0.11), dev=1e-3, origin=1e-2)).status == NOT_REPRODUCED
    assert judge_b1(_b1(err_noskip=0.7)).status == INCONCLUSIVE


def _c4(before=0.4, after=(0.05, 0.04, 0.06), diff=1e-7, err=0.0):
    # three disjoint pairs; more cases (straddling interval, control) in tests/test_verdicts_c2c4c5.py
    bar = lambda e: {"test_error_mean": e, "train_loss_mean": 2 * e}  # noqa: E731
    return {"pairs": [{"seeds": [2 * i, 2 * i + 1], "train_error": [err, 0.0], "max_abs_output_diff": diff,
                       "barriers_before": bar(before), "barriers_after": bar(a)} for i, a in enumerate(after)]}


def test_c4_judge():
    assert judge_c4(_c4()).status == REPRODUCED
    v = judge_c4(_c4(after=(0.3, 0.32, 0.31)))
    assert v.status == NOT_REPRODUCED and "barrier falls" in v.reason
    assert judge_c4(_c4(diff=1e-3)).status == INCONCLUSIVE  # a permutation that changes B: nothing tested
    assert judge_c4(_c4(err=0.3)).status == INCONCLUSIVE
    assert judge_c4(_c4(before=0.01, after=(0.0, 0.0, 0.0))).status == INCONCLUSIVE


# ---------------------------------------------------------------- the runner (a fake row, no training)


def _fake_module(calls, fail=False):
    @dataclasses.dataclass(frozen=True)
    class Config:
        n: int = 1

        @classmethod
        def quick(cls):
            return cls()

        @classmethod
        def full(cls):
            return cls(n=2)

    def judge(m):
        return verdict_from_checks([Check("n positive", m["n"] > 0, f"n = {m['n']}")])

    def run(config, *, cache_dir, work_dir, progress):
        calls.append(config.n)
        progress("working")
        if fail:
            raise RuntimeError("boom\nsecond line")
        m = {"n": config.n}
        fig, ax = common.new_figure()
        ax.plot([0, 1], [1, 0])
        ref = common.save_figure(fig, work_dir, "fig", "a line")
        return ExperimentResult.create("A9", config, measurements=m, verdict=judge(m), figures=[ref],
                                       key_numbers={"n": config.n})

    return types.SimpleNamespace(ID="A9", VERSION=1, Config=Config, run=run, judge=judge, __name__="fake_a9")


def test_runner_saves_reuses_and_records_failures(tmp_path, monkeypatch, capsys):
    import io

    calls = []
    monkeypatch.setitem(EXPERIMENTS, "A9", _fake_module(calls))
    log = io.StringIO()
    o1 = run_experiment("A9", "quick", out=tmp_path, stream=log)
    assert not o1.cached and o1.result.verdict_status == REPRODUCED and calls == [1]
    assert (o1.path.parent / "fig.png").stat().st_size > 0
    assert o1.path.parent.name == result_key("A9", EXPERIMENTS["A9"].Config())
    assert "[ A9" in log.getvalue() and "working" in log.getvalue()
    assert o1.result.timings["total"] >= 0 and o1.result.profile == "quick" and o1.result.env["threads"] >= 1
    o2 = run_experiment("A9", "quick", out=tmp_path)
    assert o2.cached and calls == [1] and o2.result.created == o1.result.created
    run_experiment("A9", "quick", out=tmp_path, force=True)
    assert calls == [1, 1]
    outs = run_many(["a9"], "full", out=tmp_path, jobs=1)
    assert [o.id for o in outs] == ["A9"] and calls == [1, 1, 2]
    assert run_many(["A9", "A9"], "full", out=tmp_path, jobs=4)[0].cached and calls == [1, 1, 2]

    monkeypatch.setitem(EXPERIMENTS, "A9", _fake_module(calls, fail=True))
    o3 = run_experiment("A9", "quick", out=tmp_path / "other")
    assert o3.result.status == "failed" and o3.result.verdict_status == "failed"
    assert o3.result.error == "RuntimeError: boom" and "Traceback" in o3.result.notes[0]
    o4 = run_experiment("A9", "quick", out=tmp_path / "other")
    assert not o4.cached  # a failed result is retried


# ---------------------------------------------------------------- every run() on tiny configs (seconds each)


def _tiny(**kw):
    base = dict(dataset="digits", model="mlp", model_kwargs={"width": 24, "depth": 1}, optimizer="adam", lr=1e-2,
                epochs=3, batch_size=256)
    base.update(kw)
    return common.train_config(**base)


def _tiny_runs(tmp_path, row, config):
    o = run_experiment(row, out=tmp_path, config=config)
    r = o.result
    assert r.status == "ok", (r.error, r.notes)
    assert r.verdict_status in (REPRODUCED, "partly reproduced", NOT_REPRODUCED, INCONCLUSIVE)
    assert r.profile == "custom" and r.figures and all((o.path.parent / f.path).is_file() for f in r.figures)
    assert r.key_numbers and r.comparison and r.data and r.timings["total"] > 0
    assert r.verdict == r.rejudge(EXPERIMENTS[row].judge)  # judge is a function of the saved numbers
    return r


def test_a1_runs_tiny(tmp_path):
    A1 = EXPERIMENTS["A1"]
    cfg = A1.Config(train=_tiny(optimizer="sgd", lr=0.1), contrast=_tiny(optimizer="sgd", lr=2.0, momentum=0.0),
                    num_steps=10, extend=0.2, seeds=(0, 1, 2))
    r = _tiny_runs(tmp_path, "A1", cfg)
    main = r.measurements["main"][0]
    assert main["steps"] == 10 and len(main["alpha"]) == 15 and main["alpha"][2] == 0.0
    assert [x["seed"] for x in r.measurements["main"]] == [0, 1, 2] == [x["seed"] for x in r.measurements["contrast"]]
    assert r.control["setting"] == EXPERIMENTS["A1"].CRITERIA.control and r.control["verdict"] in (
        REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
    assert r.criteria == EXPERIMENTS["A1"].CRITERIA.lines()


def test_a2_a3_run_tiny(tmp_path):
    def tiny_run(row, config):  # like _tiny_runs, but "partly reproduced" is a possible verdict here
        o = run_experiment(row, out=tmp_path, config=config)
        r = o.result
        assert r.status == "ok", (r.error, r.notes)
        assert r.figures and all((o.path.parent / f.path).is_file() for f in r.figures)
        assert r.key_numbers and r.comparison and r.criteria and r.control["verdict"] != "none"
        assert r.verdict == r.rejudge(EXPERIMENTS[row].judge)  # judge is a function of the saved numbers
        return r

    lin = _tiny(model_kwargs={"width": 24, "depth": 1, "activation": "identity"})
    r2 = tiny_run("A2", EXPERIMENTS["A2"].Config(train=_tiny(), control=lin, seeds=(0, 1)))
    assert r2.measurements["main"][0]["n_params"] > r2.measurements["main"][0]["n_train"]
    assert [x["seed"] for x in r2.measurements["control"]] == [0, 1]
    r3 = tiny_run("A3", EXPERIMENTS["A3"].Config(train=_tiny(), control=lin, noise=(0.0, 1.0), seeds=(0, 1),
                                                 fit_threshold=0.5))
    m3 = r3.measurements
    assert [(x["seed"], x["p"]) for x in m3["runs"]] == [(0, 0.0), (0, 1.0), (1, 0.0), (1, 1.0)]
    assert m3["chance"] == 0.9 and [x["p"] for x in m3["control"]] == [0.0, 1.0, 0.0, 1.0]
    # A3 reused A2's clean and control runs (p = 0) through the run cache: 4 + 4 new runs
    assert len(list((tmp_path / "cache" / "runs").glob("train-*"))) == 8


def test_a4_runs_tiny(tmp_path):
    kw = dict(dataset="moons", dataset_kwargs={"n_train": 200, "n_test": 200}, model_kwargs={"width": 32, "depth": 2},
              epochs=20, batch_size=64)
    cfg = EXPERIMENTS["A4"].Config(clean=_tiny(**kw), poisoned=_tiny(poison=100, **kw), seeds=(0,), warm_epochs=2,
                                   trust_radii=(0.5,), basin_directions=1)
    r = _tiny_runs(tmp_path, "A4", cfg)
    (rec,) = r.measurements["seeds"]
    assert rec["same_init_distance"] == 0.0 and rec["n_extra"] == 100 and rec["n_clean"] == 200
    assert [s["rho"] for s in rec["searches"]] == [None, 0.5] == [s["rho"] for s in rec["null_searches"]]
    assert r.control["verdict"] != REPRODUCED  # one seed decides no interval


def test_b1_runs_tiny(tmp_path):
    rn = dict(model="resnet", optimizer="sgd", lr=0.05, epochs=2)
    cfg = EXPERIMENTS["B1"].Config(skip=_tiny(model_kwargs={"width": 4, "depth": 1, "skip": True}, **rn),
                                   noskip=_tiny(model_kwargs={"width": 4, "depth": 1, "skip": False}, **rn),
                                   seeds=(0, 1), control_seeds=(500, 501), grid=3, eval_examples=64)
    r = _tiny_runs(tmp_path, "B1", cfg)
    assert [p["seed"] for p in r.measurements["pairs"]] == [0, 1]
    assert [p["a"]["seed"] for p in r.measurements["control"]] == [500, 501]
    for pair in r.measurements["pairs"]:
        assert pair["a"]["skip"] is False and pair["b"]["skip"] is True
        for p in (pair["a"], pair["b"]):
            assert p["filter_norm_max_rel_deviation"] < 1e-5 and p["max_abs_1d"] == 0.0
            assert p["origin_rel_error"] < 1e-5 and np.asarray(p["loss"]).shape == (3, 3)
    assert r.control["setting"] == EXPERIMENTS["B1"].CRITERIA.control
    with pytest.raises(LosslabError, match="odd"):
        EXPERIMENTS["B1"].run(dataclasses.replace(cfg, grid=4), cache_dir=tmp_path, work_dir=tmp_path,
                              progress=lambda m: None)


def test_c4_runs_tiny(tmp_path):
    cfg = EXPERIMENTS["C4"].Config(train=_tiny(model_kwargs={"width": 16, "depth": 2}), seeds=(0, 1, 2, 3),
                                   num_points=5)
    r = _tiny_runs(tmp_path, "C4", cfg)
    assert [p["seeds"] for p in r.measurements["pairs"]] == [[0, 1], [2, 3]]
    pair = r.measurements["pairs"][0]
    assert pair["max_abs_output_diff"] <= 1e-5 and pair["control"]["max_abs_output_diff"] <= 1e-5
    assert pair["distance_after"] <= pair["distance_before"]
    assert r.control["setting"] == EXPERIMENTS["C4"].CRITERIA.control and r.criteria == EXPERIMENTS["C4"].CRITERIA.lines()
    assert set(pair["barriers_before"]) == {f"{s}_{m}_{d}" for s in ("train", "test") for m in ("loss", "error")
                                            for d in ("mean", "linear")}


def test_every_row_uses_at_least_five_seeds_in_quick():
    """Issue 14's stability plan (registered 2026-12-04): >= 5 seeds, or 5 disjoint pairs, in quick and full."""
    from losslab.experiments.criteria import SEED_PLAN_2026_12_04

    for row, mod in EXPERIMENTS.items():
        for cfg in (mod.Config.quick(), mod.Config.full()):
            need = 10 if row in ("C2", "C4", "C5") else 5  # disjoint pairs of runs
            assert len(cfg.seeds) >= need, (row, cfg.seeds)
            for name in ("control_seeds", "control_order_seeds", "mem_seeds", "label_seeds"):
                if hasattr(cfg, name):
                    assert len(getattr(cfg, name)) >= 5, (row, name)
        assert not mod.CRITERIA.seeds.startswith(("3 ", "4 ")), (row, mod.CRITERIA.seeds)
    changed = [r for r, m in EXPERIMENTS.items() if SEED_PLAN_2026_12_04 in m.CRITERIA.changes]
    assert sorted(set(EXPERIMENTS) - set(changed)) == ["C11", "D2"]  # they had >= 5 seeds before
