"""Rows D1, D2, C10, C11, C12 of `losslab reproduce`: verdict logic on synthetic measurements (a contradicting
measurement must give `not reproduced`, a failed precondition `inconclusive`), the helpers behind the checks,
and every run() on a tiny config."""
import copy
import dataclasses
import math

import numpy as np
import pytest

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
from losslab.experiments import c10_wedges as C10
from losslab.experiments import c11_implicit_reg as C11
from losslab.experiments import c12_myths as C12
from losslab.experiments import d1_intrinsic_dim as D1
from losslab.experiments import d2_goldilocks as D2
from losslab.subspace import threshold_crossing

ROWS = ["D1", "D2", "C10", "C11", "C12"]


# ---------------------------------------------------------------- registry and profiles


@pytest.mark.parametrize("row", ROWS)
def test_rows_registered_with_frozen_distinct_profiles(row):
    assert row not in BROKEN, BROKEN.get(row)
    module = EXPERIMENTS[row]
    q, f = module.Config.quick(), module.Config.full()
    assert dataclasses.is_dataclass(q) and type(q).__dataclass_params__.frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(q, dataclasses.fields(q)[0].name, None)
    assert result_key(row, q) == result_key(row, module.Config.quick()) != result_key(row, f)
    assert module.COST["quick"] <= 40


# ---------------------------------------------------------------- helpers


def test_d_bounds_cover_every_crossing_status():
    dims = [10, 100, 1000]
    assert D1.d_bounds(threshold_crossing(dims, [0.2, 0.5, 0.9], 0.7), dims) == pytest.approx((316.2278, 316.2278))
    assert D1.d_bounds(threshold_crossing(dims, [0.8, 0.9, 0.9], 0.7), dims) == (0.0, 10.0)
    assert D1.d_bounds(threshold_crossing(dims, [0.1, 0.2, 0.3], 0.7), dims) == (1000.0, math.inf)
    assert all(math.isnan(v) for v in D1.d_bounds(threshold_crossing(dims, [np.nan] * 3, 0.7), dims))
    assert D1.fmt_d({"status": "not_reached"}, dims) == "> 1000" and D1.fmt_d({"status": "at_first"}, dims) == "<= 10"


def test_shell_is_the_contiguous_low_run_around_the_minimum():
    s = C10.shell([0, 1, 2, 3, 4, 5], [2.3, 0.5, 0.2, 0.3, 0.9, 0.35], 2.0)
    assert (s["r_in"], s["r_out"], s["r_min"], s["level"], s["bounded"]) == (2.0, 3.0, 2.0, 0.4, True)
    assert not C10.shell([0, 1, 2], [2.3, 0.5, 0.2], 2.0)["bounded"]  # still falling at the last radius
    assert not C10.shell([0, 1, 2], [0.1, 0.5, 0.9], 2.0)["bounded"]  # lowest at the origin


def test_min_nuclear_completion_is_exact():
    r = C11.min_nuclear_completion()
    assert r["entry"] == "00" and r["nuclear"] == pytest.approx(2.0, abs=1e-9) and abs(r["value"]) < 1e-6
    # [[1, 1], [1, x]]: rank one at x = 1 has nuclear norm 2 = the minimum (sigma = |lambda| of a symmetric matrix)
    r2 = C11.min_nuclear_completion({"00": 1.0, "01": 1.0, "10": 1.0})
    assert r2["nuclear"] == pytest.approx(2.0, abs=1e-7) and r2["value"] == pytest.approx(1.0, abs=1e-4)


def test_width_analysis_tolerance_is_binomial_noise():
    m = {"widths": [{"width": 8, "train_error": 0.05, "test_error": 0.1},
                    {"width": 32, "train_error": 0.0, "test_error": 0.04},
                    {"width": 128, "train_error": 0.0, "test_error": 0.05}], "n_test": 400, "n_seeds": 1, "z": 2.0,
         "interp_threshold": 0.01}
    a = C11.width_analysis(m)
    tol = 2 * math.sqrt(0.04 * 0.96 / 400 + 0.05 * 0.95 / 400)
    assert a["threshold_width"] == 32 and a["steps"][0]["tolerance"] == pytest.approx(tol)
    assert a["worst_excess"] == pytest.approx(0.01 - tol)


def test_goldilocks_band_is_contiguous_around_the_peak():
    m = _d2_measurements()
    a = D2.analyse(m)
    assert a["inside"] == [False, True, True, True, False] and a["band"] == [1.0, 10.0] and a["band_ok"]
    assert a["noise_rho"] == pytest.approx(math.sqrt(2 / 50))
    m["cells"]["trace_over_frobenius"][3] = [0.1]  # a dip splits the band: 30 is above the level again
    m["cells"]["trace_over_frobenius"][4] = [2.9]
    assert D2.analyse(m)["inside"] == [False, True, True, False, False]


# ---------------------------------------------------------------- judges on synthetic measurements


def _crossing(d, lo=None, hi=None, status="interpolated"):
    return {"d": d, "d_lo": lo, "d_hi": hi, "status": status}


def _d1_measurements():
    dims = [25, 50, 100, 200, 400]
    mdims = [25, 100, 400, 1600]
    return {"D": 4810, "projection": "dense",
            "sweeps": {"dense": {"dims": dims, "baseline": 0.96, "crossing": _crossing(124.0, 100, 200)}},
            "memorization": {"clean": {"dims": mdims, "baseline": 1.0, "crossing": _crossing(80.0, 25, 100)},
                             "random": {"dims": mdims, "baseline": 0.99, "crossing": _crossing(1000.0, 400, 1600)}},
            "min_baseline_accuracy": 0.8, "min_memorized": 0.9, "max_fraction": 0.1, "min_ratio": 4.0}


def test_d1_judge():
    m = _d1_measurements()
    v = D1.judge(m)
    assert v.status == REPRODUCED and "12.5x" in v.reason
    # random labels reach 90% at a d only 1.9x the clean one: contradicts "much larger d"
    bad = copy.deepcopy(m)
    bad["memorization"]["random"]["crossing"] = _crossing(150.0, 100, 400)
    v = D1.judge(bad)
    assert v.status == NOT_REPRODUCED and "random labels need much larger d" in v.reason and "1.9x" in v.reason
    # the clean subspace needs a fifth of D: not a small subspace
    big = copy.deepcopy(m)
    big["sweeps"]["dense"]["crossing"] = _crossing(1000.0, 400, 1600)
    assert D1.judge(big).status == NOT_REPRODUCED
    # random labels never reach the target: a lower bound decides when the grid goes far enough ...
    nr = copy.deepcopy(m)
    nr["memorization"]["random"]["crossing"] = _crossing(None, 1600, None, "not_reached")
    assert D1.judge(nr).status == REPRODUCED
    # ... and leaves it undecided when it does not
    nr["memorization"]["random"]["dims"] = [25, 50, 100, 200]
    nr["memorization"]["random"]["crossing"] = _crossing(None, 200, None, "not_reached")
    assert D1.judge(nr).status == INCONCLUSIVE
    # full-space training cannot memorize the random labels: the comparison is not sound
    pre = copy.deepcopy(m)
    pre["memorization"]["random"]["baseline"] = 0.3
    v = D1.judge(pre)
    assert v.status == INCONCLUSIVE and "memorizes random labels" in v.reason
    # the order-of-magnitude check is context only
    ctx = copy.deepcopy(m)
    ctx["sweeps"]["dense"]["crossing"] = _crossing(400.0, 200, 500)
    v = D1.judge(ctx)
    assert v.status == REPRODUCED and any(not c.decisive and c.passed is False for c in v.checks)


def _d2_measurements():
    return {"radii": [0.1, 1.0, 3.0, 10.0, 30.0], "d": 50, "band_fraction": 0.5, "clear_sigmas": 5.0,
            "success_accuracy": 0.5,
            "cells": {"trace_over_frobenius": [[0.1], [2.0], [3.0], [1.5], [0.2]],
                      "positive_fraction": [[0.5], [0.56], [0.6], [0.55], [0.5]],
                      "success": [[0.0], [1.0], [1.0], [0.0], [0.0]],
                      "test_accuracy": [[0.3], [0.6], [0.6], [0.45], [0.2]]}}


def test_d2_judge():
    m = _d2_measurements()
    v = D2.judge(m)
    assert v.status == REPRODUCED and "0.67 inside vs 0.00 outside" in v.reason
    # curvature keeps rising with r: no band
    mono = copy.deepcopy(m)
    mono["cells"]["trace_over_frobenius"] = [[0.1], [0.5], [1.0], [2.0], [3.0]]
    v = D2.judge(mono)
    assert v.status == NOT_REPRODUCED and "falls off on both sides" in v.reason
    # training works better outside the zone
    out = copy.deepcopy(m)
    out["cells"]["success"] = [[1.0], [0.0], [1.0], [0.0], [1.0]]
    v = D2.judge(out)
    assert v.status == NOT_REPRODUCED and "succeeds more often inside" in v.reason
    # Tr/|H| at the peak within random-matrix noise (5 x 0.2 = 1.0)
    flat = copy.deepcopy(m)
    flat["cells"]["trace_over_frobenius"] = [[0.05], [0.4], [0.6], [0.3], [0.04]]
    assert D2.judge(flat).status == NOT_REPRODUCED
    # every run fails: the training budget cannot discriminate
    none = copy.deepcopy(m)
    none["cells"]["success"] = [[0.0]] * 5
    assert D2.judge(none).status == INCONCLUSIVE


def _c10_measurements():
    radii = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    sol = {"seed": 0, "norm": 1.0, "init_norm": 0.4, "radii": radii, "train_error": 0.01, "test_error": 0.04,
           "solution_test_loss": [2.3, 0.5, 0.15, 0.2, 0.4, 0.7, 1.0],
           "solution_train_loss": [2.3, 0.4, 0.08, 0.07, 0.1, 0.2, 0.3],
           "init_test_loss": [2.3, 2.3, 2.4, 2.6, 3.0, 3.5, 4.1],
           "solution_test_error": [0.9, 0.05, 0.04, 0.04, 0.04, 0.04, 0.04]}
    sub = {"start_radii": [0.25, 1.0, 4.0, 16.0], "seeds": [0], "d": 50,
           "accuracy": {"origin": [[0.6], [0.6], [0.6], [0.6]], "affine": [[0.65], [0.6], [0.5], [0.4]]},
           "final_radius": {"origin": [[5.0], [5.5], [6.0], [7.0]], "affine": [[5.0], [5.5], [6.0], [20.0]]}}
    return {"solutions": [sol], "subspace": sub, "shell_factor": 2.0, "max_train_error": 0.1, "cluster_ratio": 2.5,
            "min_gain": 0.05, "num_classes": 10}


def test_c10_judge():
    m = _c10_measurements()
    v = C10.judge(m)
    assert v.status == REPRODUCED and "[1.00, 1.50]" in v.reason and "gain +0.200" in v.reason
    # the loss keeps falling along the ray: no shell
    fall = copy.deepcopy(m)
    fall["solutions"][0]["solution_test_loss"] = [2.3, 1.0, 0.5, 0.3, 0.2, 0.15, 0.12]
    v = C10.judge(fall)
    assert v.status == NOT_REPRODUCED and "loss shell" in v.reason
    # with the origin, runs end wherever they started: not drawn to one shell
    spread = copy.deepcopy(m)
    spread["subspace"]["final_radius"]["origin"] = [[0.5], [1.5], [5.0], [17.0]]
    assert C10.judge(spread).status == NOT_REPRODUCED
    # containing the origin does not help from far out
    same = copy.deepcopy(m)
    same["subspace"]["accuracy"]["origin"][-1] = [0.42]
    v = C10.judge(same)
    assert v.status == NOT_REPRODUCED and "origin helps from far out" in v.reason
    # the solution did not train
    pre = copy.deepcopy(m)
    pre["solutions"][0]["train_error"] = 0.5
    assert C10.judge(pre).status == INCONCLUSIVE


def _factorization_measurements():
    f = C11._factorization(3, C11.Config(steps=20000))
    return {"widths": [{"width": 8, "train_error": 0.02, "test_error": 0.05},
                       {"width": 32, "train_error": 0.008, "test_error": 0.027},
                       {"width": 128, "train_error": 0.006, "test_error": 0.024},
                       {"width": 512, "train_error": 0.003, "test_error": 0.022}],
            "n_test": 450, "n_seeds": 1, "interp_threshold": 0.01, "z": 2.0, "factorization": f,
            "context_factorizations": [], "min_nuclear": C11.min_nuclear_completion(f["observed"]), "loss_drop": 0.01,
            "min_growth": 2.0}


def test_c11_judge():
    m = _factorization_measurements()
    f = m["factorization"]
    assert f["loss"][-1] < 0.01 and f["unobserved"][-1] > 5 and abs(f["det"][-1]) < 0.01
    v = C11.judge(m)
    assert v.status == REPRODUCED, v.reason
    # a wider interpolating net is clearly worse (0.08 vs 0.024, far beyond the noise)
    worse = copy.deepcopy(m)
    worse["widths"][3]["test_error"] = 0.08
    v = C11.judge(worse)
    assert v.status == NOT_REPRODUCED and "non-increasing" in v.reason and "width 512" in v.reason
    # within noise: 0.03 vs the best narrower 0.024 is not a rise
    noisy = copy.deepcopy(m)
    noisy["widths"][3]["test_error"] = 0.03
    assert C11.judge(noisy).status == REPRODUCED
    # a factorization whose norms shrink while it fits would be norm minimization
    shrink = copy.deepcopy(m)
    for k in C11.NORMS:
        s = np.asarray(shrink["factorization"][k])
        shrink["factorization"][k] = (s[0] + s[-1] - s).tolist()
    v = C11.judge(shrink)
    assert v.status == NOT_REPRODUCED and "grows while fitting" in v.reason
    # no width fits its training set
    pre = copy.deepcopy(m)
    for r in pre["widths"]:
        r["train_error"] = 0.1
    assert C11.judge(pre).status == INCONCLUSIVE


def _c12_measurements(**over):
    vals = {"sgd": (0.032, 0.008, 14.0, 0.65), "wd_zero": (0.040, 0.015, 11.5, 0.58),
            "wd_norm": (0.030, 0.006, 14.2, 0.66), "gd": (0.034, 0.002, 32.6, 0.46), "gd_reg": (0.029, 0.002, 16.1, 0.49)}
    vals.update(over)
    cells = {v: [{"seed": 0, "test_error": t, "train_error": tr, "weight_norm": w, "rank": r}]
             for v, (t, tr, w, r) in vals.items()}
    summary = {v: {"test_error": t, "train_error": tr, "weight_norm": w, "rank": r} for v, (t, tr, w, r) in vals.items()}
    return {"cells": cells, "summary": summary, "n_test": 450, "n_seeds": 2, "z": 2.0, "max_train_error": 0.03,
            "min_norm_ratio": 1.1, "min_rank_gap": 0.03}


def test_c12_judge_per_subclaim():
    m = _c12_measurements()
    assert C12.judge(m).status == REPRODUCED
    assert {k: v.status for k, v in C12.subclaims(m).items()} == {"a": REPRODUCED, "b": REPRODUCED, "c": REPRODUCED}
    # (a) decay toward a non-zero norm generalizes clearly worse than toward zero
    a = _c12_measurements(wd_norm=(0.10, 0.006, 14.2, 0.66))
    v = C12.judge(a)
    assert v.status == NOT_REPRODUCED and "(a)" in v.reason
    assert C12.subclaims(a)["a"].status == NOT_REPRODUCED and C12.subclaims(a)["b"].status == REPRODUCED
    # (b) full-batch GD + regularizer clearly worse than SGD
    b = _c12_measurements(gd_reg=(0.09, 0.002, 16.1, 0.49))
    assert C12.judge(b).status == NOT_REPRODUCED and C12.subclaims(b)["b"].status == NOT_REPRODUCED
    # (c) the highest-rank variant generalizes clearly worse than the lowest-rank one
    c = _c12_measurements(wd_norm=(0.032, 0.006, 14.2, 0.90), gd=(0.01, 0.002, 32.6, 0.30))
    assert C12.judge(c).status == NOT_REPRODUCED and C12.subclaims(c)["c"].status == NOT_REPRODUCED
    # (a) is vacuous when both decays end at the same norm
    same = _c12_measurements(wd_norm=(0.030, 0.006, 11.6, 0.66))
    assert C12.judge(same).status == INCONCLUSIVE
    # ranks all equal: (c) cannot be decided
    flat = _c12_measurements(**{k: (t, tr, w, 0.5) for k, (t, tr, w, _) in
                                {"sgd": (0.032, 0.008, 14.0, 0), "wd_zero": (0.040, 0.015, 11.5, 0),
                                 "wd_norm": (0.030, 0.006, 14.2, 0), "gd": (0.034, 0.002, 32.6, 0),
                                 "gd_reg": (0.029, 0.002, 16.1, 0)}.items()})
    assert C12.subclaims(flat)["c"].status == INCONCLUSIVE
    # a run that did not train
    assert C12.judge(_c12_measurements(gd=(0.034, 0.2, 32.6, 0.46))).status == INCONCLUSIVE


# ---------------------------------------------------------------- every run() on a tiny config


def _run_tiny(tmp_path, row, config):
    o = run_experiment(row, out=tmp_path, config=config)
    r = o.result
    assert r.status == "ok", (r.error, r.notes)
    assert r.verdict_status in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
    assert r.profile == "custom" and r.figures and all((o.path.parent / f.path).stat().st_size > 0 for f in r.figures)
    assert r.key_numbers and r.comparison and r.data and r.timings["total"] > 0
    assert r.verdict == EXPERIMENTS[row].judge(r.measurements)  # the verdict is a function of the saved numbers
    return r


def _tiny_train(**kw):
    base = dict(dataset="digits", subsample=200, model="mlp", model_kwargs={"width": 8, "depth": 1}, optimizer="adam",
                lr=1e-2, epochs=2, batch_size=64, checkpoints="none")
    base.update(kw)
    return common.train_config(**base)


def test_d1_runs_tiny(tmp_path):
    cfg = D1.Config(subsample=200, width=8, dims=(5, 20), epochs=2, mem_examples=30, mem_dims=(5, 400), mem_epochs=10)
    r = _run_tiny(tmp_path, "D1", cfg)
    m = r.measurements
    assert m["D"] == 64 * 8 + 8 + 8 * 10 + 10 and m["mem_examples"] == 30
    assert m["memorization"]["random"]["lr"] == [0.05, pytest.approx(0.025)]  # 0.05 * min(1, sqrt(100 / d))
    assert len(m["sweeps"]["dense"]["mean"]) == 2


def test_d2_runs_tiny(tmp_path):
    cfg = D2.Config(subsample=200, width=8, radii=(0.1, 1.0, 10.0), d=5, seeds=(0,), hessian_examples=50, epochs=1)
    r = _run_tiny(tmp_path, "D2", cfg)
    m = r.measurements
    assert np.asarray(m["cells"]["trace_over_frobenius"]).shape == (3, 1)
    assert all(abs(v) <= math.sqrt(5) + 1e-9 for v in np.ravel(m["cells"]["trace_over_frobenius"]))
    assert m["cells"]["accuracy"][0][0] >= 0 and m["D"] == 610


def test_c10_runs_tiny(tmp_path):
    cfg = C10.Config(train=_tiny_train(), num_radii=7, d=5, start_radii=(1.0, 4.0), sub_seeds=(0,), epochs=1)
    r = _run_tiny(tmp_path, "C10", cfg)
    s = r.measurements["solutions"][0]
    assert len(s["radii"]) == 7 and s["radii"][0] == 0.0
    assert s["solution_test_loss"][0] == pytest.approx(math.log(10), abs=1e-6)  # all-zero net: uniform softmax
    assert s["radii"][-1] == pytest.approx(3 * s["norm"])


def test_c11_runs_tiny(tmp_path):
    cfg = C11.Config(train=_tiny_train(optimizer="sgd", lr=0.05), widths=(2, 8), steps=500)
    r = _run_tiny(tmp_path, "C11", cfg)
    assert [w["width"] for w in r.measurements["widths"]] == [2, 8]
    assert r.measurements["min_nuclear"]["nuclear"] == pytest.approx(2.0, abs=1e-6)


def test_c12_runs_tiny(tmp_path):
    cfg = C12.Config(train=_tiny_train(optimizer="sgd", lr=0.05, model_kwargs={"width": 8, "depth": 2}), seeds=(0,),
                     gd_epochs=3)
    r = _run_tiny(tmp_path, "C12", cfg)
    m = r.measurements
    assert set(m["summary"]) == set(C12.VARIANTS) and set(m["subclaims"]) == {"a", "b", "c"}
    mu = m["cells"]["wd_norm"][0]["target"]
    assert mu == pytest.approx(2.0 * m["cells"]["wd_norm"][0]["init_weight_norm"], rel=1e-3)
    assert all(0 < c["rank"] <= 1 for v in m["cells"].values() for c in v)


def test_diverged_cells_are_nan_and_never_warn():
    # pytest turns warnings into errors: an all-NaN row (every seed diverged) must not emit "Mean of empty slice"
    assert np.isnan(D1.nanmean_rows([[np.nan, np.nan], [1.0, np.nan]])[0])
    assert D1.nanmean_rows([[np.nan, np.nan], [1.0, np.nan]])[1] == 1.0
    assert math.isnan(D1.fmax([np.nan])) and D1.fmin([np.nan, 2.0, 1.0]) == 1.0
    m = _d2_measurements()
    m["cells"]["test_accuracy"][4] = [np.nan]
    m["cells"]["success"][4] = [np.nan]
    assert D2.judge(m).status == REPRODUCED
    c = _c10_measurements()
    c["subspace"]["accuracy"]["affine"][-1] = [np.nan]
    v = C10.judge(c)
    assert v.status == INCONCLUSIVE and "origin helps from far out" in v.reason  # undecided, not a contradiction
