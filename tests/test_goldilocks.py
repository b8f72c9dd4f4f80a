"""Restricted Hessians P^T H P and the Goldilocks-zone sweep."""
import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from losslab import data, models
from losslab._functional import ensure_forward_ad
from losslab.errors import LosslabError
from losslab.subspace.goldilocks import (
    GoldilocksDisplay, GoldilocksResult, goldilocks, restricted_hessian, subspace_curvature,
)
from losslab.subspace import DenseProjection, FastfoodProjection, SparseProjection

from cases import tiny_data

F64 = torch.float64


def tiny():
    x, y = tiny_data(12, 3, 3, seed=0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    return net, x, y


def dense_hessian(net, x, y, theta=None):
    names = [k for k, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    sizes = [p.numel() for p in net.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()]) if theta is None else theta

    def loss(flat):
        parts = torch.split(flat, sizes)
        point = {k: t.reshape(s) for k, t, s in zip(names, parts, shapes)}
        return F.cross_entropy(torch.func.functional_call(net, point, (x,)), y)

    ensure_forward_ad()  # torch.func.hessian is forward-over-reverse; see _functional.ensure_forward_ad
    return torch.func.hessian(loss)(flat0)


@pytest.mark.parametrize("kind", ["dense", "sparse", "fastfood", "matrix"])
def test_restricted_hessian_equals_pt_h_p(kind):
    net, x, y = tiny()
    before = copy.deepcopy(net.state_dict())
    D = sum(p.numel() for p in net.parameters())
    P = {"dense": lambda: DenseProjection(D, 5, seed=1, dtype=F64),
         "sparse": lambda: SparseProjection(D, 5, seed=1, dtype=F64, density=0.3),
         "fastfood": lambda: FastfoodProjection(D, 5, seed=1, dtype=F64),
         "matrix": lambda: torch.randn(D, 5, dtype=F64, generator=torch.Generator().manual_seed(2))}[kind]()
    M = P if isinstance(P, torch.Tensor) else P.to_dense()
    H = dense_hessian(net, x, y)
    expected = M.t() @ H @ M
    for chunk in (None, 2, 32):
        got = restricted_hessian(net, (x, y), projection=P, chunk=chunk)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # at another point
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()]) * 1.7
    torch.testing.assert_close(restricted_hessian(net, (x, y), projection=P, point=theta),
                               M.t() @ dense_hessian(net, x, y, theta) @ M, rtol=1e-10, atol=1e-12)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_restricted_hessian_closed_form_least_squares():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20, 6, generator=g, dtype=F64)
    y = torch.randn(20, generator=g, dtype=F64)
    net = nn.Linear(6, 1, bias=False).double()
    P = DenseProjection(6, 3, seed=0, dtype=F64)
    got = restricted_hessian(net, (x, y), projection=P, loss="mse")
    M = P.to_dense()
    torch.testing.assert_close(got, M.t() @ (2 * x.t() @ x / 20) @ M)  # H = 2 X^T X / n


def test_restricted_hessian_validation():
    net, x, y = tiny()
    with pytest.raises(LosslabError, match="projection maps to"):
        restricted_hessian(net, (x, y), projection=DenseProjection(10, 2, seed=0))
    with pytest.raises(LosslabError, match=r"\(D="):
        restricted_hessian(net, (x, y), projection=torch.zeros(5, 2))


def test_subspace_curvature_numbers():
    c = subspace_curvature(torch.diag(torch.tensor([1.0, 1.0, -1.0, 3.0], dtype=F64)))
    assert c["trace"] == 4 and c["frobenius"] == pytest.approx(12 ** 0.5)
    assert c["trace_over_frobenius"] == pytest.approx(4 / 12 ** 0.5)
    assert c["positive_fraction"] == 0.75 and (c["lambda_min"], c["lambda_max"]) == (-1, 3)
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=F64, generator=torch.Generator().manual_seed(0)))
    rot = subspace_curvature(q @ torch.diag(torch.tensor([2.0, -1, 0.5, 0.5], dtype=F64)) @ q.t())
    assert rot["positive_fraction"] == 0.75 and rot["trace"] == pytest.approx(2.0)


def test_goldilocks_sweep_save_resume(tmp_path):
    b = data.load("blobs", n_train=100, n_test=50, classes=3, dims=4)
    factory = lambda s: models.build("mlp", input_shape=b.input_shape, num_classes=3, seed=s, width=8)  # noqa: E731
    kw = dict(d=4, seeds=[0, 1], relative=True, train_epochs=2, progress=False, success_accuracy=0.0)
    r = goldilocks(factory, b, radii=[0.5, 1.0, 3.0], path=tmp_path / "g", **kw)
    assert r.complete and r.eigenvalues.shape == (3, 2, 4)
    for j, s in enumerate([0, 1]):
        theta = torch.cat([p.detach().reshape(-1) for p in factory(s).parameters()])
        assert r.init_norms[j] == pytest.approx(float(theta.norm()), rel=1e-6)
        np.testing.assert_allclose(r.metrics["radius"][:, j], np.array([0.5, 1.0, 3.0]) * r.init_norms[j])
    np.testing.assert_allclose(r.eigenvalues.sum(-1), r.metrics["trace"], rtol=1e-5, atol=1e-8)
    assert (np.diff(r.eigenvalues, axis=-1) >= 0).all()
    assert (np.abs(r.metrics["trace_over_frobenius"]) <= 2.0 + 1e-9).all()  # |Tr|/||H||_F <= sqrt(d)
    np.testing.assert_array_equal(r.success_rate, [1.0, 1.0, 1.0])  # success_accuracy 0: every run succeeds
    # r = 1 is the standard init: the Hessian there is the one of the factory's model
    net = factory(0)
    P = DenseProjection(sum(p.numel() for p in net.parameters()), 4, seed=0)
    from losslab.subspace._grid import derive_seed
    P = DenseProjection(P.D, 4, seed=derive_seed(0, "goldilocks", 4))
    h = restricted_hessian(net, b.train, projection=P)
    np.testing.assert_allclose(r.eigenvalues[1, 0], torch.linalg.eigvalsh(h.double()).numpy(), rtol=1e-4, atol=1e-6)
    loaded = GoldilocksResult.load(tmp_path / "g")
    np.testing.assert_array_equal(loaded.metrics["trace"], r.metrics["trace"])
    json.dumps(loaded.summary())
    again = goldilocks(factory, b, radii=[0.5, 1.0, 3.0], path=tmp_path / "g", **kw)  # all done: nothing recomputed
    np.testing.assert_array_equal(again.metrics["seconds"], r.metrics["seconds"])
    with pytest.raises(LosslabError, match="cannot resume"):
        goldilocks(factory, b, radii=[0.5, 2.0], path=tmp_path / "g", **kw)
    with pytest.raises(LosslabError, match="radii"):
        goldilocks(factory, b, radii=[0.0, 1.0], d=2)
    import matplotlib

    matplotlib.use("Agg")
    disp = GoldilocksDisplay.from_result(r).plot()
    assert disp.ax_.get_xscale() == "log"
    assert disp.savefig(tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_goldilocks_zone_on_digits():
    """Fort & Scherlis: Tr(H)/||H|| in random subspaces is clearly positive in a band of radii around
    the standard init and falls off towards small and large radii."""
    b = data.subsample(data.load("digits"), 400, seed=0)
    factory = lambda s: models.build("mlp", input_shape=b.input_shape, num_classes=10, seed=s, width=32, depth=1)  # noqa: E731
    radii = [0.05, 2.0, 200.0]
    r = goldilocks(factory, b, radii=radii, d=12, seeds=[0, 1], relative=True, train_epochs=0, progress=False)
    t = r.mean("trace_over_frobenius")
    assert t[1] > 1.0, t
    assert t[1] > 2 * t[0] and t[1] > 2 * t[2], t


def test_restricted_hessian_falls_back_to_double_backward():
    """torch's F.mse_loss fails under jvp-of-grad; a user loss using it still gets the exact P^T H P."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(15, 5, generator=g, dtype=F64)
    y = torch.randn(15, generator=g, dtype=F64)
    net = nn.Linear(5, 1, bias=False).double()
    P = DenseProjection(5, 2, seed=0, dtype=F64)
    got = restricted_hessian(net, (x, y), projection=P, loss=lambda out, t: F.mse_loss(out.reshape(t.shape), t))
    M = P.to_dense()
    torch.testing.assert_close(got, M.t() @ (2 * x.t() @ x / 15) @ M)
