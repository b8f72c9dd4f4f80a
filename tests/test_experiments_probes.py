"""Survey rows C2, C3, C5, C6, C7 of `losslab reproduce`: verdict logic on synthetic measurements (a
contradicting measurement must give `not reproduced`, a failed precondition `inconclusive`), the rows'
helper measurements on exact cases, and every run() on a tiny config."""
import dataclasses
import math

import numpy as np
import pytest

from losslab.experiments import (
    EXPERIMENTS,
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    common,
    result_key,
    run_experiment,
)
from losslab.experiments import c2_mode_connectivity as C2
from losslab.experiments import c3_instability as C3
from losslab.experiments import c5_function_space as C5
from losslab.experiments import c6_ntk as C6
from losslab.experiments import c7_stiffness as C7

ROWS = {"C2": C2, "C3": C3, "C5": C5, "C6": C6, "C7": C7}


# ---------------------------------------------------------------- registry and configs


@pytest.mark.parametrize("row", sorted(ROWS))
def test_rows_registered_with_frozen_distinct_profiles(row):
    module = ROWS[row]
    assert EXPERIMENTS[row] is module and module.ID == row
    q, f = module.Config.quick(), module.Config.full()
    assert dataclasses.is_dataclass(q) and type(q).__dataclass_params__.frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(q, dataclasses.fields(q)[0].name, None)
    assert result_key(row, q) == result_key(row, module.Config.quick()) != result_key(row, f)
    # scheduling hints (seconds on one core); C3 and C6 have larger CPU budgets (issue 14: 90 s and 45 s)
    assert module.COST["quick"] <= {"C3": 90, "C6": 45}.get(row, 40) and module.COST["full"] >= module.COST["quick"]


def test_shared_recipe_runs():
    from losslab.experiments import recipes

    # C2, C6, C7 probe exactly the runs A1/C4 train (same run directories in the cache)
    for mod in (C2, C6, C7):
        assert mod.Config.quick().train == recipes.mnist1d_mlp("quick")
    # C3's control is that network trained for the CNN's 640 steps
    c3, base = C3.Config.quick().control, recipes.mnist1d_mlp("quick")
    assert c3.model == base.model and c3.data == base.data and c3.optim.lr == base.optim.lr and c3.optim.epochs == 20
    # C5 trains the same network the same way, keeping a checkpoint every epoch
    c5 = C5.Config.quick().train
    base = recipes.mnist1d_mlp("quick")
    assert c5.model == base.model and c5.data == base.data and c5.optim == base.optim
    assert c5.ckpt.checkpoints == "epoch:1"


# ---------------------------------------------------------------- helpers on exact cases


def test_window_velocity_is_path_length_per_step():
    steps, d = [0, 1, 3, 7, 15], [0.25, 0.5, 1.0, 0.5]
    assert C6.window_velocity(steps, d, 0, 3) == 0.25            # (0.25 + 0.5) / 3
    assert C6.window_velocity(steps, d, 3, 15) == 1.5 / 12        # transitions 3->7, 7->15
    assert C6.window_velocity(steps, d, 0, 15) == 2.25 / 15
    assert math.isnan(C6.window_velocity(steps, d, 4, 6))         # no transition inside


def test_by_distance_splits_same_and_different_class_pairs():
    S = np.array([[1.0, 0.5, -0.2, 0.3], [0.5, 1.0, 0.1, 0.7], [-0.2, 0.1, 1.0, -0.4], [0.3, 0.7, -0.4, 1.0]])
    labels = np.array([0, 0, 1, 1])
    x = np.array([[0.0], [1.0], [3.0], [6.0]])
    r = C7.by_distance(S, labels, C7.pair_distances(x), np.array([0.0, 2.5, 7.0]))
    # same-class pairs: (0,1) d=1 -> 0.5; (2,3) d=3 -> -0.4; different: (0,2) d=3, (0,3) d=6, (1,2) d=2, (1,3) d=5
    assert r["same"] == [0.5, -0.4] and r["same_count"] == [1, 1]
    assert r["different_count"] == [1, 3]
    assert r["different"][0] == pytest.approx(0.1) and r["different"][1] == pytest.approx((-0.2 + 0.3 + 0.7) / 3)


def test_stiffness_length_is_the_zero_of_the_fitted_line():
    x = np.array([[0.0], [1.0], [3.0], [4.0]])
    D = C7.pair_distances(x)
    S = 0.9 - 0.15 * D                                # falls to 0 at distance 6
    assert C7.stiffness_length(S, np.zeros(4), D)["length"] == pytest.approx(6.0)
    # only same-class pairs enter: a different-class pair at distance 1 that breaks the line is ignored
    S2 = S.copy()
    S2[2, 3] = S2[3, 2] = -1.0
    assert C7.stiffness_length(S2, np.array([0, 0, 0, 1]), D)["length"] == pytest.approx(6.0)
    assert math.isinf(C7.stiffness_length(0.1 + 0.05 * D, np.zeros(4), D)["length"])   # does not fall
    assert math.isnan(C7.stiffness_length(-0.1 - 0.05 * D, np.zeros(4), D)["length"])  # negative at distance 0


# ---------------------------------------------------------------- judges on synthetic measurements


def _c5(across=(0.27, 0.25, 0.26), within=0.08, ind=0.68, traj=(0.672, 0.67, 0.671), train_error=0.0,
        accs=(0.66, 0.65), matched=18):
    # three disjoint pairs; more cases (straddling interval, null control) in tests/test_verdicts_c2c4c5.py
    return {"pairs": [{"seeds": [2 * i, 2 * i + 1], "train_error": [train_error, 0.0], "final_accuracy": list(accs),
                       "matched_checkpoints": [matched, 5], "across_disagreement": a, "within_disagreement": [within] * 2,
                       "ensemble_independent": ind, "ensemble_trajectory": [t, t]} for i, (a, t) in enumerate(zip(across, traj))]}


def test_c5_judge():
    assert C5.judge(_c5()).status == REPRODUCED
    v = C5.judge(_c5(within=0.3))                        # trajectory points differ more than independent runs
    assert v.status == "partly reproduced" and "across runs > within trajectory" in v.reason
    v = C5.judge(_c5(ind=0.66))                          # the trajectory ensemble wins
    assert v.status == "partly reproduced" and "independent ensemble wins" in v.reason
    assert C5.judge(_c5(within=0.3, ind=0.66)).status == NOT_REPRODUCED
    assert C5.judge(_c5(train_error=0.3)).status == INCONCLUSIVE            # a run did not train
    assert C5.judge(_c5(accs=(0.66, 0.55))).status == INCONCLUSIVE           # not matched in accuracy
    assert C5.judge(_c5(matched=0)).status == INCONCLUSIVE                    # no checkpoint at similar accuracy


def _c2(lin=0.3, cur=(0.03, 0.04, 0.035), err=0.0, lin_loss=1.27, cur_loss=0.35):
    # three disjoint pairs; more cases (straddling interval, control) in tests/test_verdicts_c2c4c5.py
    return {"pairs": [{"seeds": [2 * i, 2 * i + 1], "train_error": [err, 0.0],
                       "linear": {"barriers": {"test_error_mean": lin, "train_loss_mean": lin_loss}},
                       "curve": {"barriers": {"test_error_mean": c, "train_loss_mean": cur_loss}}}
                      for i, c in enumerate(cur)]}


def test_c2_judge():
    assert C2.judge(_c2()).status == REPRODUCED
    v = C2.judge(_c2(cur=(0.15, 0.16, 0.14)))            # the curve keeps half the barrier
    assert v.status == NOT_REPRODUCED and "curve removes the barrier" in v.reason
    assert C2.judge(_c2(cur=(0.03, 0.04, 0.15))).status == INCONCLUSIVE  # the interval straddles 1/3
    assert C2.judge(_c2(cur_loss=1.0)).status == REPRODUCED       # train loss is context only
    assert C2.judge(_c2(lin=0.01, cur=(0.0, 0.0, 0.0))).status == INCONCLUSIVE  # no barrier to remove
    assert C2.judge(_c2(err=0.2)).status == INCONCLUSIVE    # an endpoint not at a minimum


# ---------------------------------------------------------------- every run() on tiny configs


def _tiny(**kw):
    base = dict(dataset="digits", model="mlp", model_kwargs={"width": 24, "depth": 1}, optimizer="sgd", lr=0.1,
                epochs=3, batch_size=128)
    base.update(kw)
    return common.train_config(**base)


def _run(tmp_path, row, config):
    o = run_experiment(row, out=tmp_path, config=config)
    r = o.result
    assert r.status == "ok", (r.error, r.notes)
    assert r.verdict_status in (REPRODUCED, "partly reproduced", NOT_REPRODUCED, INCONCLUSIVE)
    assert r.profile == "custom" and r.figures and all((o.path.parent / f.path).is_file() for f in r.figures)
    assert r.key_numbers and r.comparison and r.data and r.timings["total"] > 0
    assert r.verdict == r.rejudge(ROWS[row].judge)  # the verdict is a function of the saved numbers
    return r


@pytest.mark.slow  # ~6 s alone, mostly importing scikit-learn (t-SNE)
def test_c5_runs_tiny(tmp_path):
    cfg = C5.Config(train=_tiny(checkpoints="epoch:1"), seeds=(0, 1, 2, 3))
    r = _run(tmp_path, "C5", cfg)
    m = r.measurements
    assert [p["seeds"] for p in m["pairs"]] == [[0, 1], [2, 3]] and [p["seeds"] for p in m["control_pairs"]] == [[0, 0], [2, 2]]
    assert all(0.0 <= p["across_disagreement"] <= 1 for p in m["pairs"])
    assert all(p["across_disagreement"] == 0.0 for p in m["control_pairs"])  # the null: the partner is the run itself
    assert len(m["runs"]) == 4 and len(m["runs"][0]["steps"]) == 4  # init + 3 epochs per run
    assert r.control["setting"] == C5.CRITERIA.control


def test_c6_runs_tiny(tmp_path):
    # a checkpoint every epoch: both velocity windows hold a transition (a NaN would not compare equal on rejudging)
    cfg = C6.Config(train=_tiny(checkpoints="epoch:1", epochs=4), seeds=(0, 1), n_examples=8, switch_epochs=1,
                    budget_epochs=2, control=_tiny(checkpoints="epoch:1", epochs=4, subsample=256, label_noise=1.0))
    r = _run(tmp_path, "C6", cfg)
    m = r.measurements
    assert [x["seed"] for x in m["runs"]] == [0, 1] and len(m["control"]["runs"]) == 2
    for x in m["runs"]:
        assert len(x["kernel_distance"]) == len(x["steps"]) - 1 and x["distance_from_init"][0] == pytest.approx(0, abs=1e-12)
        lin = x["linearization"]
        assert x["gain"] == pytest.approx(lin["init_test_error"] - lin["switch_test_error"])
    assert r.control["setting"] == C6.CRITERIA.control


def test_c7_runs_tiny(tmp_path):
    cfg = C7.Config(train=_tiny(checkpoints="log:4"), seeds=(0, 1), n_per_class=3, fractions=(0.0, 1.0), n_bins=4)
    r = _run(tmp_path, "C7", cfg)
    m = r.measurements
    assert [x["seed"] for x in m["runs"]] == [0, 1] and len(m["control"]["runs"]) == 2
    for x in m["runs"]:
        assert x["checkpoints"][0]["step"] == 0 and len(x["distance_edges"]) == 5
        for c in x["checkpoints"]:
            assert np.asarray(c["class_cos"]).shape == (10, 10)
            assert all(-1 <= c[k] <= 1 for k in ("within_cos", "between_cos", "within_sign", "between_sign"))
    assert r.control["setting"] == C7.CRITERIA.control


def test_c2_runs_tiny(tmp_path):
    cfg = C2.Config(train=_tiny(model_kwargs={"width": 16, "depth": 2}), seeds=(0, 1, 2, 3), num_points=5,
                    curve_epochs=1, plane_grid=3)
    r = _run(tmp_path, "C2", cfg)
    assert [p["seeds"] for p in r.measurements["pairs"]] == [[0, 1], [2, 3]]
    m = r.measurements["pairs"][0]
    assert len(m["linear"]["alpha"]) == len(m["curve"]["t"]) == len(m["control_curve"]["t"]) == 5
    # all paths start and end at the same two solutions; the untrained control curve is the line
    for split in ("train", "test"):
        assert m["linear"][split]["error"][0] == pytest.approx(m["curve"][split]["error"][0])
        assert m["linear"][split]["error"][-1] == pytest.approx(m["curve"][split]["error"][-1])
        assert m["control_curve"][split]["loss"] == pytest.approx(m["linear"][split]["loss"], rel=1e-4, abs=1e-6)
    assert r.control["setting"] == C2.CRITERIA.control
    assert np.asarray(r.measurements["plane"]["test_error"]).shape == (3, 3)


def test_c3_runs_tiny(tmp_path):
    t = _tiny(subsample=256, epochs=2, batch_size=64, checkpoints="none")
    cfg = C3.Config(train=t, seeds=(0, 1), spawn_steps=(0,), early_fraction=0.5, control=t, num_points=5)
    r = _run(tmp_path, "C3", cfg)
    m = r.measurements
    assert m["k"] == [0, 4] and m["k_early"] == 4 and m["total_steps"] == 8
    assert [x["seed"] for x in m["runs"]] == [0, 1] and len(m["runs"][0]["path_test_error"][0]) == 5
    assert m["control"]["k"] == [0, 4] and r.control["setting"] == C3.CRITERIA.control