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
from losslab.experiments.a4_bad_minima import judge as judge_a4
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
    assert run_dir_for(recipes.with_seed(a1.train, 0)) == run_dir_for(recipes.with_seed(c4.train, c4.pairs[0][0]))
    assert run_dir_for(a2.runs[0]) == run_dir_for(a3.train)
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
    a = np.linspace(0, 1, 5)
    v = np.array([1.0, 2.0, 4.0, 3.0, 3.0])
    b = common.barriers(np.concatenate([[-0.5], a, [1.5]]), np.concatenate([[99.0], v, [99.0]]))
    assert b["barrier_mean"] == pytest.approx(4.0 - 2.0)
    assert b["barrier_linear"] == pytest.approx(4.0 - (0.5 * 1 + 0.5 * 3))
    assert common.barriers(a, 2 - a)["barrier_linear"] == pytest.approx(0.0, abs=1e-15)


def test_monotonicity_counts_rises_above_noise_only():
    v = np.array([3.0, 2.0, 2.0 + 1e-9, 2.5, 1.0, 1.2])
    m = common.monotonicity(v)
    assert m["nonmonotone_steps"] == 2 and m["steps"] == 5 and m["first_rise_index"] == 2
    assert m["bump_height"] == pytest.approx(0.5)
    assert common.monotonicity(np.linspace(2, 0, 51))["nonmonotone_steps"] == 0


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


def _a1(k_main=0, bump=0.0, loss_final=0.5, contrast_k=8):
    rec = {"seed": 0, "loss_init": 2.3, "loss_final": loss_final, "nonmonotone_steps": k_main, "steps": 50,
           "bump_height": bump}
    return {"main": [rec], "contrast": {**rec, "seed": 0, "nonmonotone_steps": contrast_k, "bump_height": 0.07},
            "trained_ratio": 0.5}


def test_a1_judge():
    assert judge_a1(_a1()).status == REPRODUCED
    v = judge_a1(_a1(k_main=3, bump=0.04))
    assert v.status == NOT_REPRODUCED and "3 of 50" in v.reason and "0.04" in v.reason
    assert judge_a1(_a1(loss_final=2.0)).status == INCONCLUSIVE
    assert judge_a1(_a1(contrast_k=0)).status == REPRODUCED  # a monotone contrast is context only


def _a2(err=0.0, n_params=80000):
    return {"runs": [{"name": "mlp", "n_params": n_params, "n_train": 2000, "train_error": err}], "threshold": 0.01}


def test_a2_judge():
    assert judge_a2(_a2()).status == REPRODUCED
    v = judge_a2(_a2(err=0.08))
    assert v.status == NOT_REPRODUCED and "0.0800" in v.reason and "0.0700 above" in v.reason
    assert judge_a2(_a2(n_params=100)).status == INCONCLUSIVE


def _a3(steps=(1000, 1100, 1300, 1400, 1500), train_err_hi=0.0, test_hi=0.9, train_err_lo=0.0):
    ps = (0.0, 0.2, 0.5, 0.8, 1.0)
    runs = [{"p": p, "train_error": 0.0, "test_error": 0.4 + 0.5 * p, "fit_steps": s} for p, s in zip(ps, steps)]
    runs[-1].update(train_error=train_err_hi, test_error=test_hi)
    runs[0].update(train_error=train_err_lo)
    return {"runs": runs, "chance": 0.9, "fit_threshold": 0.01, "chance_tolerance": 0.05}


def test_a3_judge():
    assert judge_a3(_a3()).status == REPRODUCED
    assert judge_a3(_a3(steps=(1000, 1100, 1300, 1400, None))).status == REPRODUCED  # never fit = slowest
    v = judge_a3(_a3(train_err_hi=0.3, steps=(1000, 1100, 1300, 1400, None)))
    assert v.status == NOT_REPRODUCED and "p=1 fitted" in v.reason
    v = judge_a3(_a3(test_hi=0.6))
    assert v.status == NOT_REPRODUCED and "0.300" in v.reason
    v = judge_a3(_a3(steps=(1500, 1400, 1300, 1200, 1000)))
    assert v.status == NOT_REPRODUCED and "Spearman rank correlation -1.00" in v.reason
    assert judge_a3(_a3(train_err_lo=0.2)).status == INCONCLUSIVE


def _a4(test_p=0.6, d_cp=5.0, fit_p=0.0):
    return {"clean": {"clean_train_error": 0.0, "test_error": 0.35},
            "poisoned": {"clean_train_error": fit_p, "test_error": test_p},
            "distance_clean_poisoned": d_cp, "distance_init_clean": 20.0, "fit_tolerance": 0.02, "gap_margin": 0.05}


def test_a4_judge():
    assert judge_a4(_a4()).status == REPRODUCED
    v = judge_a4(_a4(test_p=0.36))
    assert v.status == NOT_REPRODUCED and "gap +0.010" in v.reason
    v = judge_a4(_a4(d_cp=30.0))
    assert v.status == NOT_REPRODUCED and "ratio 1.50" in v.reason
    assert judge_a4(_a4(fit_p=0.2)).status == INCONCLUSIVE


def _b1(rough_skip=0.0, rough_noskip=0.1, dev=1e-7, origin=0.0, skip_err=0.04):
    def net(r, err):
        return {"train_error": err, "radial_nonmonotone_fraction": r, "local_minima": 1 + 10 * r,
                "planes": [{"filter_norm_max_rel_deviation": dev, "origin_rel_error": origin}]}

    return {"skip": net(rough_skip, skip_err), "noskip": net(rough_noskip, 0.7), "norm_rtol": 1e-5,
            "origin_rtol": 1e-5, "max_train_error": 0.1}


def test_b1_judge():
    assert judge_b1(_b1()).status == REPRODUCED
    v = judge_b1(_b1(rough_skip=0.2, rough_noskip=0.05))
    assert v.status == NOT_REPRODUCED and "-0.150" in v.reason
    assert judge_b1(_b1(dev=1e-3)).status == NOT_REPRODUCED
    assert judge_b1(_b1(origin=1e-2)).status == NOT_REPRODUCED
    assert judge_b1(_b1(skip_err=0.5)).status == INCONCLUSIVE


def _c4(before=0.4, after=0.05, diff=1e-7, errs=(0.1, 0.12)):
    return {"pairs": [{"seeds": [0, 1], "train_error": list(errs), "max_abs_output_diff": diff,
                       "barriers_before": {"test_error_mean": before}, "barriers_after": {"test_error_mean": after}}],
            "atol": 1e-5, "max_ratio": 0.5, "min_barrier": 0.02, "match_tolerance": 0.05}


def test_c4_judge():
    assert judge_c4(_c4()).status == REPRODUCED
    v = judge_c4(_c4(after=0.3))
    assert v.status == NOT_REPRODUCED and "75% of before" in v.reason
    assert judge_c4(_c4(diff=1e-3)).status == NOT_REPRODUCED
    assert judge_c4(_c4(errs=(0.1, 0.3))).status == INCONCLUSIVE
    assert judge_c4(_c4(before=0.01, after=0.0)).status == INCONCLUSIVE


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
    assert r.verdict_status in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
    assert r.profile == "custom" and r.figures and all((o.path.parent / f.path).is_file() for f in r.figures)
    assert r.key_numbers and r.comparison and r.data and r.timings["total"] > 0
    assert r.verdict == EXPERIMENTS[row].judge(r.measurements)  # judge is a function of the saved numbers
    return r


def test_a1_runs_tiny(tmp_path):
    A1 = EXPERIMENTS["A1"]
    cfg = A1.Config(train=_tiny(optimizer="sgd", lr=0.1), contrast=_tiny(optimizer="sgd", lr=2.0, momentum=0.0),
                    num_steps=10, extend=0.2)
    r = _tiny_runs(tmp_path, "A1", cfg)
    main = r.measurements["main"][0]
    assert main["steps"] == 10 and len(main["alpha"]) == 15 and main["alpha"][2] == 0.0


def test_a2_a3_run_tiny(tmp_path):
    r2 = _tiny_runs(tmp_path, "A2", EXPERIMENTS["A2"].Config(runs=(_tiny(),), threshold=0.5))
    assert r2.measurements["runs"][0]["n_params"] > r2.measurements["runs"][0]["n_train"]
    r3 = _tiny_runs(tmp_path, "A3", EXPERIMENTS["A3"].Config(train=_tiny(), noise=(0.0, 1.0), fit_threshold=0.5))
    assert [x["p"] for x in r3.measurements["runs"]] == [0.0, 1.0] and r3.measurements["chance"] == 0.9


def test_a4_runs_tiny(tmp_path):
    kw = dict(dataset="moons", dataset_kwargs={"n_train": 200, "n_test": 200}, model_kwargs={"width": 32, "depth": 2},
              epochs=20, batch_size=64)
    cfg = EXPERIMENTS["A4"].Config(clean=_tiny(**kw), poisoned=_tiny(poison=100, **kw), num_points=5, trust_radii=(0.5,))
    r = _tiny_runs(tmp_path, "A4", cfg)
    m = r.measurements
    assert m["same_init_distance"] == 0.0 and m["n_poison"] == 100 and m["n_clean"] == 200
    assert m["distance_poisoned_to_clean_trajectory"] <= m["distance_clean_poisoned"] + 1e-9


def test_b1_runs_tiny(tmp_path):
    rn = dict(model="resnet", optimizer="sgd", lr=0.05, epochs=2)
    cfg = EXPERIMENTS["B1"].Config(skip=_tiny(model_kwargs={"width": 4, "depth": 1, "skip": True}, **rn),
                                   noskip=_tiny(model_kwargs={"width": 4, "depth": 1, "skip": False}, **rn),
                                   grid=3, eval_examples=64)
    r = _tiny_runs(tmp_path, "B1", cfg)
    for net in ("skip", "noskip"):
        p = r.measurements[net]["planes"][0]
        assert p["filter_norm_max_rel_deviation"] < 1e-5 and p["max_abs_1d"] == 0.0
        assert p["origin_rel_error"] < 1e-5 and np.asarray(p["loss"]).shape == (3, 3)
    with pytest.raises(LosslabError, match="odd"):
        EXPERIMENTS["B1"].run(dataclasses.replace(cfg, grid=4), cache_dir=tmp_path, work_dir=tmp_path,
                              progress=lambda m: None)


def test_c4_runs_tiny(tmp_path):
    cfg = EXPERIMENTS["C4"].Config(train=_tiny(model_kwargs={"width": 16, "depth": 2}), num_points=5)
    r = _tiny_runs(tmp_path, "C4", cfg)
    pair = r.measurements["pairs"][0]
    assert pair["max_abs_output_diff"] <= 1e-5
    assert pair["distance_after"] <= pair["distance_before"]
    assert set(pair["barriers_before"]) == {f"{s}_{m}_{d}" for s in ("train", "test") for m in ("loss", "error")
                                            for d in ("mean", "linear")}
