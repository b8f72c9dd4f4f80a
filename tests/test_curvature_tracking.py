"""CurvatureTracker: recorded values, no effect on the training trajectory, break-even demo."""
from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from losslab import LosslabError
from losslab.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
from losslab.curvature import (
    CurvatureTracker,
    GradientCovarianceOperator,
    HessianOperator,
    lanczos_eigs,
    load_curvature_records,
    plot_sharpness_trajectory,
)
from losslab.models import register
from losslab.train import loss_fn_for, train


@register("tracker-test-dropout-mlp", overwrite=True)
def _dropout_mlp(*, input_shape, num_classes, width: int = 16):
    """An MLP with dropout: its training consumes the global RNG, which the tracker must not touch."""
    n_in = int(np.prod(input_shape))
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, width), nn.ReLU(), nn.Dropout(0.3), nn.Linear(width, num_classes))


@pytest.fixture(autouse=True)
def _private_global_rng():
    with torch.random.fork_rng(devices=[]):
        yield


def small_config(model: str = "mlp", **optim) -> TrainConfig:
    kw = {"width": 16} if model != "mlp" else {"width": 16, "depth": 1}
    return TrainConfig(model=ModelConfig(model, kw), optim=OptimConfig(epochs=2, **optim),
                       ckpt=CheckpointConfig("step:5"))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_tracking_leaves_the_trajectory_bit_identical(tmp_path, mode):
    cfg = small_config("tracker-test-dropout-mlp")
    torch.manual_seed(123)  # dropout draws from the global RNG: same start state for both runs
    plain = train(cfg, out=tmp_path / "plain", progress=False)
    tracker = CurvatureTracker(every=3, trace=True, grad_cov_top=True, trace_probes=4, data_subset=200, seed=1,
                               mode=mode)
    torch.manual_seed(123)
    tracked = train(cfg, out=tmp_path / "tracked", callbacks=[tracker], progress=False)
    a, b = plain.build_model().state_dict(), tracked.build_model().state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in tracker.records]
    assert steps == [0] + list(range(3, 23, 3))  # digits: 11 steps per epoch, 2 epochs
    # the same metrics except the tracker's additions
    ma, mb = plain.metrics, tracked.metrics
    assert [m["train_loss"] for m in ma] == [m["train_loss"] for m in mb]
    assert "lambda_max" in mb[-1] and "lambda_max" not in ma[-1]
    assert mb[-1]["lambda_max"] == tracker.records[-1]["lambda_max"] and mb[-1]["curvature_step"] == 21


def test_measure_restores_modes_grads_and_rng(tmp_path):
    torch.manual_seed(0)
    model = _dropout_mlp(input_shape=(6,), num_classes=3)
    x, y = torch.randn(50, 6), torch.randint(0, 3, (50,))
    nn.functional.cross_entropy(model(x), y).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    model.train()
    model[1].eval()  # a mixed state must come back exactly
    flags = [m.training for m in model.modules()]
    split = type("Split", (), {"x": x, "y": y})()
    state = type("State", (), {})()  # the parts of TrainState the tracker reads
    state.bundle = type("Bundle", (), {"train": split, "num_classes": 3})()
    state.config = TrainConfig(optim=OptimConfig(momentum=0.5, lr=0.1))
    state.run_dir, state.model, state.step, state.epoch = tmp_path, model, 0, 0
    tracker = CurvatureTracker(every=1, trace=True, grad_cov_top=True, data_subset=20, trace_probes=3,
                               at_start=False, mode="train")
    rng = torch.get_rng_state()
    tracker.on_train_start(state)
    assert tracker.records == []  # at_start=False
    rec = tracker.measure(model, step=1, lr=0.1)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(p.grad, grads[k]) for k, p in model.named_parameters())
    assert all(torch.equal(p.detach(), params[k]) for k, p in model.named_parameters())
    assert rec["two_over_lr"] == pytest.approx(20.0) and rec["stability_threshold"] == pytest.approx(30.0)
    assert rec["trace_stderr"] > 0 and rec["grad_cov_top"] > 0 and rec["lambda_max"] > 0
    assert len(tracker.subset_indices) == 20 and tracker.subset_indices == sorted(set(tracker.subset_indices))
    assert load_curvature_records(tmp_path) == [rec]


def test_recorded_values_match_the_saved_checkpoints(tmp_path):
    cfg = small_config()
    tracker = CurvatureTracker(every=5, grad_cov_top=True, data_subset=300, seed=2, tol=1e-6)
    run = train(cfg, out=tmp_path, callbacks=[tracker], progress=False)
    saved = json.loads((run.path / "curvature.json").read_text())
    assert saved["records"] == tracker.records == load_curvature_records(run.path)
    assert saved["subset_indices"] == tracker.subset_indices
    bundle = run.bundle()
    idx = torch.tensor(tracker.subset_indices)
    data = (bundle.train.x[idx], bundle.train.y[idx])
    loss = loss_fn_for(bundle.num_classes)
    ckpt_steps = {s for s, _ in run.checkpoints()}
    checked = 0
    for rec in tracker.records:
        if rec["step"] not in ckpt_steps:
            continue
        model = run.build_model(rec["step"])
        H = HessianOperator(model, data, loss=loss, dtype=torch.float64)
        ref = float(lanczos_eigs(H, k=1, tol=1e-9, seed=0).eigenvalues[0])
        assert rec["lambda_max"] == pytest.approx(ref, rel=1e-4), rec["step"]
        assert rec["lambda_max_converged"]
        C = GradientCovarianceOperator(model, data, loss=loss, dtype=torch.float64)
        cref = float(lanczos_eigs(C, k=1, tol=1e-9, seed=0).eigenvalues[0])
        assert rec["grad_cov_top"] == pytest.approx(cref, rel=1e-4), rec["step"]
        assert rec["two_over_lr"] == pytest.approx(2 / cfg.optim.lr)
        assert rec["stability_threshold"] == pytest.approx((2 + 2 * cfg.optim.momentum) / cfg.optim.lr)
        checked += 1
    assert checked >= 4
    # warm starts pay off: later measurements need fewer products than the cold first one
    mv = [r["lambda_max_matvecs"] for r in tracker.records]
    assert np.median(mv[1:]) < mv[0]


def test_plot_and_errors(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [{"step": s, "lambda_max": 1.0 + s, "two_over_lr": 20.0, "stability_threshold": 38.0,
             "grad_cov_top": 0.5 * s + 0.1} for s in range(0, 50, 10)]
    ax = plot_sharpness_trajectory(recs, grad_cov=True, label="lr 0.1")
    assert len(ax.lines) == 3 and ax.get_yscale() == "log"
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [r["lambda_max"] for r in recs])
    assert set(ax.lines[1].get_ydata()) == {20.0}
    plt.close(ax.figure)
    with pytest.raises(LosslabError, match="measures nothing"):
        CurvatureTracker(lambda_max=False)
    with pytest.raises(LosslabError, match="every"):
        CurvatureTracker(every=0)
    with pytest.raises(LosslabError, match="does not exist"):
        load_curvature_records(tmp_path)
    with pytest.raises(LosslabError, match="on_train_start"):
        CurvatureTracker().measure(nn.Linear(2, 2), step=0)


def test_docstring_example_runs():
    import losslab.curvature.tracking as mod

    assert doctest.testmod(mod, optionflags=doctest.ELLIPSIS).failed == 0


@pytest.mark.slow
def test_break_even_larger_lr_ends_early_phase_with_lower_lambda_max(tmp_path):
    """SURVEY C8 (Jastrzebski et al. 2020): MNIST-1D MLP, plain SGD, LR 0.1 vs 1.0, 3 epochs.

    λmax grows early in training (progressive sharpening) until the LR's stability limit 2/LR stops it:
    the larger LR breaks even sooner and lower, hovering near 2/LR (edge of stability, Cohen et al.).
    """
    finals = {}
    for lr in (0.1, 1.0):
        tracker = CurvatureTracker(every=20, data_subset=512, seed=0, tol=1e-3)
        cfg = TrainConfig(data=DataConfig("mnist1d"), model=ModelConfig(model_kwargs={"width": 64, "depth": 2}),
                          optim=OptimConfig(lr=lr, momentum=0.0, batch_size=64, epochs=3),
                          ckpt=CheckpointConfig("none"))
        train(cfg, out=tmp_path, callbacks=[tracker], progress=False)
        lam = np.array([r["lambda_max"] for r in tracker.records])
        late = lam[len(lam) * 2 // 3:]
        finals[lr] = float(late.mean())
        if lr == 1.0:
            assert late.max() < 1.5 * 2 / lr  # held near the stability limit 2/LR
    assert lam[0] < 1.0 and finals[1.0] < 0.75 * finals[0.1], finals
    assert finals[0.1] > 2 / 1.0  # the small LR sharpened past the large LR's limit
    assert math.isfinite(finals[0.1])
