"""Empirical NTK vs an explicit Jacobian, kernel distance/velocity, and the linearized model."""
import numpy as np
import pytest
import torch
from torch import nn

from losslab import params as P
from losslab.errors import LosslabError
from losslab.probes import (
    KernelVelocityResult, empirical_ntk, jacobian, kernel_distance, kernel_velocity, linearize, ntk_matvec,
    train_linearized,
)

from cases import seq_net


def tiny(seed=0):
    return seq_net(3, 6, 4, seed=seed)


def explicit_jacobian(model, x):
    """(N, K, D) from torch.func.jacrev of the whole batch output, flattened in parameter order."""
    pt = P.get_point(model)
    J = torch.func.jacrev(lambda p: torch.func.functional_call(model, p, (x,)))(pt)
    n, k = x.shape[0], 4
    full = torch.cat([v.reshape(n, k, -1) for v in J.values()], dim=2)  # (N, K, D) incl. cross terms
    return full


@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(1)
    return tiny(), torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(3, 3, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("method", ["jacobian", "ntvp"])
def test_ntk_modes_equal_explicit_jjt(setup, method):
    model, x1, x2 = setup
    J1, J2 = explicit_jacobian(model, x1), explicit_jacobian(model, x2)
    n, k, _ = J1.shape
    m = J2.shape[0]
    full_ref = (J1.reshape(n * k, -1) @ J2.reshape(m * k, -1).T)  # row n*K + k
    full = empirical_ntk(model, x1, x2=x2, mode="full", method=method, chunk_size=2)
    torch.testing.assert_close(full, full_ref, rtol=1e-12, atol=1e-12)
    blocks = full_ref.reshape(n, k, m, k)
    diag_ref = torch.diagonal(blocks, dim1=1, dim2=3)
    torch.testing.assert_close(empirical_ntk(model, x1, x2=x2, mode="diagonal", method=method, chunk_size=2),
                               diag_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(empirical_ntk(model, x1, x2=x2, mode="trace", method=method, chunk_size=2),
                               diag_ref.sum(-1), rtol=1e-12, atol=1e-12)
    # symmetric, PSD kernel on one set
    K = empirical_ntk(model, x1, mode="full", method=method)
    torch.testing.assert_close(K, K.T)
    assert torch.linalg.eigvalsh(K).min() > -1e-10


def test_jacobian_and_ntk_matvec(setup):
    model, x1, x2 = setup
    torch.testing.assert_close(jacobian(model, x1, chunk_size=2), explicit_jacobian(model, x1))
    v = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    K = empirical_ntk(model, x1, x2=x2, mode="full")
    ref = (K @ v.reshape(-1)).reshape(5, 4)
    torch.testing.assert_close(ntk_matvec(model, x1, v=v, x2=x2, chunk_size=2), ref, rtol=1e-12, atol=1e-12)
    # a subset of parameters: the kernel of the last layer only
    Kl = empirical_ntk(model, x1, mode="trace", params=["2.weight", "2.bias"])
    h = torch.tanh(model[0](x1))
    torch.testing.assert_close(Kl, 4 * (h @ h.T + 1), rtol=1e-12, atol=1e-12)


def test_kernel_distance():
    A = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    assert kernel_distance(A, 3 * A) == pytest.approx(0.0, abs=1e-15)
    assert kernel_distance(torch.eye(2), torch.tensor([[0.0, 1.0], [1.0, 0.0]])) == pytest.approx(1.0)
    # 1 - <A, I> / (|A| |I|) = 1 - 4 / (sqrt(10) sqrt(2))
    assert kernel_distance(A, torch.eye(2)) == pytest.approx(1 - 4 / np.sqrt(20))
    with pytest.raises(LosslabError):
        kernel_distance(A, torch.zeros(2, 2))


def test_kernel_velocity_on_trajectory(setup, tmp_path):
    model, x1, _ = setup
    p0 = P.get_point(model)
    d = P.randn_like(p0, generator=torch.Generator().manual_seed(0))
    traj = [(0, p0), (1, P.axpy(p0, 0.5, d)), (10, P.axpy(p0, 0.6, d))]
    r = kernel_velocity(model, x1, trajectory=traj, mode="trace")
    Ks = [empirical_ntk(model, x1, point=p) for _, p in traj]
    d01, d12 = kernel_distance(Ks[0], Ks[1]), kernel_distance(Ks[1], Ks[2])
    np.testing.assert_allclose(r.distance, [d01, d12], rtol=1e-12)
    np.testing.assert_allclose(r.velocity_step, [d01 / 1, d12 / 9], rtol=1e-12)
    np.testing.assert_allclose(r.velocity_logstep, [d01 / np.log(2), d12 / (np.log(11) - np.log(2))], rtol=1e-12)
    assert abs(r.distance_from_init[0]) < 1e-14 and abs(r.distance_to_final[-1]) < 1e-14
    assert r.summary["velocity_falls"] is True
    r.save(tmp_path / "kv")
    back = KernelVelocityResult.load(tmp_path / "kv")
    np.testing.assert_array_equal(back.kernels, r.kernels)
    with pytest.raises(LosslabError, match="increase"):
        kernel_velocity(model, x1, trajectory=[traj[1], traj[0]])


def test_linearized_model_is_first_order_taylor(setup):
    model, x1, _ = setup
    p0 = P.get_point(model)
    f_lin = linearize(model, p0)
    d = P.randn_like(p0, generator=torch.Generator().manual_seed(2))
    eps = 1e-3
    theta = P.axpy(p0, eps, d)
    J = explicit_jacobian(model, x1)  # (N, K, D)
    taylor = model(x1).detach() + eps * (J @ P.flatten(d))
    torch.testing.assert_close(f_lin(theta, x1), taylor, rtol=1e-12, atol=1e-12)
    # at theta0 it equals the network; it is exactly linear in theta - theta0
    torch.testing.assert_close(f_lin(p0, x1), model(x1).detach())
    f2 = f_lin(P.axpy(p0, 2 * eps, d), x1) - f_lin(p0, x1)
    torch.testing.assert_close(f2, 2 * (f_lin(theta, x1) - f_lin(p0, x1)), rtol=1e-12, atol=1e-14)
    # and differs from the network at second order
    gap = (torch.func.functional_call(model, theta, (x1,)) - f_lin(theta, x1)).abs().max()
    assert 1e-12 < gap < 1e-4
    # gradients of a loss of f_lin w.r.t. theta equal J^T dL/df
    y = torch.tensor([0, 1, 2, 3, 0])
    g = torch.func.grad(lambda p: nn.functional.cross_entropy(f_lin(p, x1), y))(theta)
    out = f_lin(theta, x1).detach().requires_grad_(True)
    (dl,) = torch.autograd.grad(nn.functional.cross_entropy(out, y), out)
    torch.testing.assert_close(P.flatten(g), torch.einsum("nkd,nk->d", J, dl), rtol=1e-10, atol=1e-12)


def test_train_linearized_vs_full_small():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lin = train_linearized(model, (x[:48], y[:48]), test_data=(x[48:], y[48:]), lr=0.5, epochs=15, batch_size=16,
                           seed=0)
    full = train_linearized(model, (x[:48], y[:48]), test_data=(x[48:], y[48:]), linear=False, lr=0.5, epochs=15,
                            batch_size=16, seed=0)
    assert lin.history[-1]["train_loss"] < lin.history[0]["train_loss"]
    assert full.train_loss < 1.0 and lin.train_loss < 1.0
    assert P.distance(lin.point, full.point) > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # one full-batch SGD step of the linear model equals one step of the network (same gradient at theta0)
    a = train_linearized(model, (x, y), lr=0.1, epochs=1, batch_size=0)
    b = train_linearized(model, (x, y), linear=False, lr=0.1, epochs=1, batch_size=0)
    torch.testing.assert_close(P.flatten(a.point), P.flatten(b.point), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bn", ["eval", "recompute"])
def test_run_kernel_velocity_takes_each_checkpoint_with_its_batchnorm_statistics(tmp_path, bn):
    """On a BatchNorm run each checkpoint's kernel uses that checkpoint's statistics (its running ones, or
    those recomputed on the training data at its parameters), not the final model's."""
    from losslab._functional import with_recomputed_batchnorm
    from losslab.config import CheckpointConfig, ModelConfig, OptimConfig, TrainConfig
    from losslab.probes import run_kernel_velocity
    from losslab.train import train

    cfg = TrainConfig(model=ModelConfig(model_kwargs={"width": 16, "depth": 1, "norm": "bn"}),
                      optim=OptimConfig(epochs=3), ckpt=CheckpointConfig("epoch:1"))
    run = train(cfg, out=tmp_path, progress=False)
    res = run_kernel_velocity(run, n_examples=12, split="test", seed=0, bn=bn)
    assert res.meta["bn"] == bn
    from losslab._functional import as_xy

    x, _ = as_xy(run.bundle(), "test")
    xs = x[np.asarray(res.meta["indices"])]
    kernels = []
    for step, _ in run.trajectory():
        m = run.build_model()
        m.load_state_dict(run.state_dict(step))
        if bn == "recompute":
            m = with_recomputed_batchnorm(m, as_xy(run.bundle(), "train")[0])
        kernels.append(empirical_ntk(m.eval(), xs))
    ref = [kernel_distance(a, b) for a, b in zip(kernels[:-1], kernels[1:])]
    np.testing.assert_allclose(res.distance, ref, rtol=1e-6, atol=1e-9)
    other = run_kernel_velocity(run, n_examples=12, split="test", seed=0, bn="eval" if bn == "recompute" else "recompute")
    assert not np.allclose(other.distance, res.distance, rtol=1e-4)  # the two policies differ on this model
