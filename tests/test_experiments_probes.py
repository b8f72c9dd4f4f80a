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
    assert module.COST["quick"] <= 40 and module.COST["full"] >= module.COST["quick"]


def test_shared_recipe_runs():
    from losslab.experiments import recipes

    # C2, C6, C7 probe exactly the runs A1/C4 train (same run directories in the cache)
    for mod in (C2, C6, C7):
        assert mod.Config.quick().train == recipes.mnist1d_mlp("quick")
    assert C3.Config.quick().contrast == recipes.mnist1d_mlp("quick")
    # C5 trains the same network longer, with a checkpoint every epoch
    c5 = C5.Config.quick().train
    base = recipes.mnist1d_mlp("quick")
    assert c5.model == base.model and c5.data == base.data and c5.optim.lr == base.optim.lr
    assert c5.optim.epochs == 30 and c5.ckpt.checkpoints == "epoch:1"


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
    r = C7.by_distance(S, labels, x, np.array([0.0, 2.5, 7.0]))
    # same-class pairs: (0,1) d=1 -> 0.5; (2,3) d=3 -> -0.4; different: (0,2) d=3, (0,3) d=6, (1,2) d=2, (1,3) d=5
    assert r["same"] == [0.5, -0.4] and r["same_count"] == [1, 1]
    assert r["different_count"] == [1, 3]
    assert r["different"][0] == pytest.approx(0.1) and r["different"][1] == pytest.approx((-0.2 + 0.3 + 0.7) / 3)


def test_half_distance():
    c = np.array([1.0, 2.0, 3.0, 4.0])
    assert C7.half_distance(c, np.array([0.8, 0.6, 0.2, 0.0])) == 2.5
    assert C7.half_distance(c, np.array([np.nan, 0.8, 0.4, 0.1])) == 3.0
    assert math.isnan(C7.half_distance(c, np.array([0.8, 0.7, 0.6, 0.5])))   # never halves
    assert math.isnan(C7.half_distance(c, np.array([-0.1, 0.7, 0.6, 0.5])))  # starts <= 0


# ---------------------------------------------------------------- judges on synthetic measurements


def _c5(across=0.27, within=0.18, ind=0.68, traj=0.66, train_errors=(0.004, 0.008), accs=(0.66, 0.65), matched=18):
    return {"runs": [{"seed": i, "train_error": e, "final_accuracy": a} for i, (e, a) in enumerate(zip(train_errors, accs))],
            "across_run_disagreement": across, "within_trajectory_disagreement": within, "matched_checkpoints": matched,
            "ensemble": {"independent": ind, "trajectory_mean": traj, "size": 2},
            "accuracy_tolerance": 0.01, "train_error_max": 0.1, "match_tolerance": 0.05}


def test_c5_judge():
    assert C5.judge(_c5()).status == REPRODUCED
    v = C5.judge(_c5(across=0.15))                       # trajectory points differ more than independent runs
    assert v.status == NOT_REPRODUCED and "across runs > within trajectory" in v.reason and "0.150" in v.reason
    v = C5.judge(_c5(ind=0.65))                          # the trajectory ensemble wins
    assert v.status == NOT_REPRODUCED and "independent ensemble wins" in v.reason
    assert C5.judge(_c5(train_errors=(0.3, 0.0))).status == INCONCLUSIVE      # a run did not train
    assert C5.judge(_c5(accs=(0.66, 0.55))).status == INCONCLUSIVE           # not matched in accuracy
    assert C5.judge(_c5(matched=0)).status == INCONCLUSIVE                    # no checkpoint at similar accuracy


def _c6(early=6e-4, late=4e-5, lin=(0.65, 0.47), full=(0.55, 0.45), e0=0.89, eT=0.39):
    return {"test_error": eT, "initial_test_error": e0, "velocity_early": early, "velocity_late": late,
            "linearization": {"steps": [0, 140][: len(lin)], "linear_test_error": list(lin), "full_test_error": list(full)},
            "max_velocity_ratio": 0.5, "trained_drop": 0.1}


def test_c6_judge():
    v = C6.judge(_c6())
    assert v.status == REPRODUCED and len([c for c in v.checks if not c.precondition]) == 3
    v = C6.judge(_c6(late=4e-4))                          # the kernel keeps moving (0.67x, not <= 0.5x)
    assert v.status == NOT_REPRODUCED and "kernel velocity falls" in v.reason
    v = C6.judge(_c6(lin=(0.47, 0.50), full=(0.40, 0.45)))   # linearizing later is worse
    assert v.status == NOT_REPRODUCED and "linearizing later helps" in v.reason
    v = C6.judge(_c6(lin=(0.60, 0.50), full=(0.55, 0.30)))   # later, but further from the full network
    assert v.status == NOT_REPRODUCED and "gap shrinks" in v.reason
    assert C6.judge(_c6(eT=0.85)).status == INCONCLUSIVE       # run did not train
    assert C6.judge(_c6(early=float("nan"))).status == INCONCLUSIVE


def _c7(final=(0.18, -0.01, 0.98, -0.14), init=(0.40, -0.04, 1.0, -1.0), half=(8.0, 4.5), e0=0.9, eT=0.19):
    rec = lambda s, v, h: {"step": s, "within_cos": v[0], "between_cos": v[1], "within_sign": v[2],
                           "between_sign": v[3], "same_class_half_distance": h}
    return {"checkpoints": [rec(0, init, half[0]), rec(480, final, half[1])], "train_error": eT,
            "initial_train_error": e0, "trained_drop": 0.1}


def test_c7_judge():
    v = C7.judge(_c7())
    assert v.status == REPRODUCED and any(c.name == "stiffness length shrinks" and c.passed for c in v.checks)
    v = C7.judge(_c7(final=(0.01, 0.05, 0.98, -0.14)))   # different-class gradients align more (cos)
    assert v.status == NOT_REPRODUCED and "within > between (cos)" in v.reason
    v = C7.judge(_c7(final=(0.18, -0.01, 0.2, 0.3)))     # sign stiffness contradicts
    assert v.status == NOT_REPRODUCED and "(sign)" in v.reason
    # the stiffness length is context only: growing does not change the verdict
    v = C7.judge(_c7(half=(4.0, 8.0)))
    assert v.status == REPRODUCED and any(c.name == "stiffness length shrinks" and c.passed is False for c in v.checks)
    assert C7.judge(_c7(eT=0.85)).status == INCONCLUSIVE
    assert C7.judge(_c7(e0=None)).status == INCONCLUSIVE


def _c2(lin=0.29, cur=0.004, errs=(0.19, 0.18), lin_loss=1.27, cur_loss=0.35):
    return {"seeds": [0, 1], "train_error": list(errs),
            "linear": {"barriers": {"test_error_mean": lin, "train_loss_mean": lin_loss}},
            "curve": {"barriers": {"test_error_mean": cur, "train_loss_mean": cur_loss}},
            "max_ratio": 1 / 3, "min_barrier": 0.02, "match_tolerance": 0.05}


def test_c2_judge():
    assert C2.judge(_c2()).status == REPRODUCED
    v = C2.judge(_c2(cur=0.15))                           # the curve keeps half the barrier
    assert v.status == NOT_REPRODUCED and "curve removes the barrier" in v.reason and "0.150" in v.reason
    assert C2.judge(_c2(cur=0.09)).status == REPRODUCED           # just under 1/3 passes
    assert C2.judge(_c2(cur=0.1)).status == NOT_REPRODUCED        # just over fails
    assert C2.judge(_c2(cur_loss=1.0)).status == REPRODUCED       # train loss is context only
    assert C2.judge(_c2(lin=0.01, cur=0.0)).status == INCONCLUSIVE  # no barrier to remove
    assert C2.judge(_c2(errs=(0.0, 0.2))).status == INCONCLUSIVE    # endpoints not matched


def _c3(barrier=(0.18, 0.04, 0.006), ks=(0, 64, 256), child=(0.08, 0.13), mlp=0.002):
    return {"k": list(ks), "barrier_mean": list(barrier),
            "cnn": [{"children_test_error": [list(child)] * len(ks)}],
            "mlp": None if mlp is None else {"barrier": [mlp]},
            "threshold": 0.02, "max_ratio": 0.25, "max_child_error": 0.5}


def test_c3_judge():
    v = C3.judge(_c3())
    assert v.status == REPRODUCED
    assert {c.name: c.passed for c in v.checks if not c.decisive} == {"stable by the last k": True,
                                                                       "small MLP stable at k = 0": True}
    v = C3.judge(_c3(barrier=(0.18, 0.2, 0.15)))          # the barrier stays
    assert v.status == NOT_REPRODUCED and "barrier falls with k" in v.reason
    # context checks never decide: an unstable MLP or a last barrier above 2% (but falling) still reproduces
    assert C3.judge(_c3(barrier=(0.4, 0.2, 0.05), mlp=0.1)).status == REPRODUCED
    assert C3.judge(_c3(barrier=(0.01, 0.0, 0.0))).status == INCONCLUSIVE      # already stable at k = 0
    assert C3.judge(_c3(child=(0.08, 0.85))).status == INCONCLUSIVE            # a child diverged
    assert C3.judge(_c3(ks=(4, 64, 256))).status == INCONCLUSIVE               # no k = 0
    assert C3.judge(_c3(mlp=None)).status == REPRODUCED


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
    assert r.verdict_status in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
    assert r.profile == "custom" and r.figures and all((o.path.parent / f.path).is_file() for f in r.figures)
    assert r.key_numbers and r.comparison and r.data and r.timings["total"] > 0
    assert r.verdict == ROWS[row].judge(r.measurements)  # the verdict is a function of the saved numbers
    return r


@pytest.mark.slow  # ~6 s alone, mostly importing scikit-learn (t-SNE)
def test_c5_runs_tiny(tmp_path):
    cfg = C5.Config(train=_tiny(checkpoints="epoch:1"), seeds=(0, 1), tail=3)
    r = _run(tmp_path, "C5", cfg)
    m = r.measurements
    assert len(m["runs"]) == 2 and m["ensemble"]["size"] == 2 and len(m["ensemble"]["trajectory_per_run"]) == 2
    assert 0.0 <= m["within_trajectory_disagreement"] <= 1 and 0.0 <= m["across_run_disagreement"] <= 1
    assert len(m["trajectory"]["step"]) == 2 * 4  # init + 3 epochs per run


def test_c6_runs_tiny(tmp_path):
    cfg = C6.Config(train=_tiny(checkpoints="log:6", epochs=2), n_examples=8, lin_epochs=1, linearize_at=(0.5,))
    r = _run(tmp_path, "C6", cfg)
    m = r.measurements
    assert m["linearization"]["steps"][0] == 0 and len(m["linearization"]["steps"]) == 2
    assert len(m["kernel_distance"]) == len(m["steps"]) - 1 and m["distance_from_init"][0] == pytest.approx(0, abs=1e-12)


def test_c7_runs_tiny(tmp_path):
    cfg = C7.Config(train=_tiny(checkpoints="log:4"), n_per_class=3, fractions=(0.0, 1.0), n_bins=4)
    r = _run(tmp_path, "C7", cfg)
    m = r.measurements
    assert m["checkpoints"][0]["step"] == 0 and len(m["distance_edges"]) == 5
    for c in m["checkpoints"]:
        assert np.asarray(c["class_cos"]).shape == (10, 10)
        assert all(-1 <= c[k] <= 1 for k in ("within_cos", "between_cos", "within_sign", "between_sign"))


def test_c2_runs_tiny(tmp_path):
    cfg = C2.Config(train=_tiny(model_kwargs={"width": 16, "depth": 2}), num_points=5, curve_epochs=1, plane_grid=3)
    r = _run(tmp_path, "C2", cfg)
    m = r.measurements
    assert len(m["linear"]["alpha"]) == len(m["curve"]["t"]) == 5
    # both paths start and end at the same two solutions
    for split in ("train", "test"):
        assert m["linear"][split]["error"][0] == pytest.approx(m["curve"][split]["error"][0])
        assert m["linear"][split]["error"][-1] == pytest.approx(m["curve"][split]["error"][-1])
    assert np.asarray(m["plane"]["test_error"]).shape == (3, 3)


def test_c3_runs_tiny(tmp_path):
    t = _tiny(subsample=256, epochs=2, batch_size=64, checkpoints="none")
    cfg = C3.Config(train=t, spawn_steps=(0, 4), contrast=t, num_points=5)
    r = _run(tmp_path, "C3", cfg)
    m = r.measurements
    assert m["k"] == [0, 4] and m["total_steps"] == 8 and len(m["cnn"][0]["path_test_error"][0]) == 5
    assert m["mlp"]["k"] == [0]
