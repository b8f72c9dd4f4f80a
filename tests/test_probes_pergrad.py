"""Per-example gradients, stiffness and gradient noise against loops and closed forms (float64)."""
import numpy as np
import pytest
import torch
from torch import nn

from losslab import params as P
from losslab.errors import LosslabError
from losslab.probes import (
    class_stiffness, covariance_spectrum, gradient_noise, noise_scale, per_example_grads, stiffness,
    stiffness_by_distance, stiffness_matrices, within_between, StiffnessResult,
)

from cases import seq_net, tiny_data


def tiny(seed=0, bn=False):
    return seq_net(3, 5, 4, seed=seed, bn=bn)


def data(n=11, seed=1):
    return tiny_data(n, 3, 4, seed)


def loop_grads(model, x, y, loss=nn.functional.cross_entropy):
    rows = []
    for i in range(len(x)):
        model.zero_grad()
        loss(model(x[i : i + 1]), y[i : i + 1]).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    model.zero_grad()
    return torch.stack(rows)


@pytest.mark.parametrize("chunk", [1, 4, None])
def test_per_example_grads_equal_loop(chunk):
    model, (x, y) = tiny(), data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    G = per_example_grads(model, (x, y), chunk_size=chunk)
    ref = loop_grads(model, x, y)
    assert G.shape == ref.shape and G.dtype == torch.float64
    torch.testing.assert_close(G, ref, rtol=1e-12, atol=1e-13)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_per_example_grads_at_point_subset_dict_and_mse():
    model, (x, _) = tiny(), data()
    t = torch.randn(len(x), 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    pt = P.axpy(P.get_point(model), 0.3, P.randn_like(P.get_point(model), generator=torch.Generator().manual_seed(0)))
    mse = nn.functional.mse_loss
    other = tiny()
    with torch.no_grad():
        for name, p in other.named_parameters():
            p.copy_(pt[name])
    ref = loop_grads(other, x, t, mse)
    G = per_example_grads(model, (x, t), point=pt, loss=mse, chunk_size=3)
    torch.testing.assert_close(G, ref, rtol=1e-12, atol=1e-13)
    # a subset of parameters gives the matching columns; the dict form has per-parameter shapes
    Gd = per_example_grads(model, (x, t), point=pt, loss=mse, params=["2.weight"], as_dict=True)
    assert list(Gd) == ["2.weight"] and Gd["2.weight"].shape == (len(x), 4, 5)
    start = 3 * 5 + 5
    torch.testing.assert_close(Gd["2.weight"].reshape(len(x), -1), ref[:, start : start + 20])
    # the mean of the rows is the full-batch gradient
    full = torch.autograd.grad(mse(other(x), t), list(other.parameters()))
    torch.testing.assert_close(G.mean(0), torch.cat([g.reshape(-1) for g in full]))


def test_per_example_grads_batchnorm_uses_running_stats_and_keeps_model():
    model, (x, y) = tiny(bn=True), data()
    model.train()
    bn = model[1]
    bn.running_mean.fill_(0.3)
    before = bn.running_mean.clone()
    G = per_example_grads(model, (x, y))
    assert model.training and torch.equal(bn.running_mean, before)
    model.eval()
    torch.testing.assert_close(G, loop_grads(model, x, y), rtol=1e-12, atol=1e-13)


def test_per_example_grads_errors():
    model, (x, y) = tiny(), data()
    with pytest.raises(LosslabError, match="keys the model lacks"):
        per_example_grads(model, (x, y), point={"nope": torch.zeros(1)})
    with pytest.raises(LosslabError, match="chunk_size"):
        per_example_grads(model, (x, y), chunk_size=0)
    with pytest.raises(LosslabError, match="not in the model"):
        per_example_grads(model, (x, y), params=["zzz"])


# ---- stiffness -------------------------------------------------------------------------------------


def test_stiffness_matrices_and_aggregates_hand_made():
    # class 0 gradients point along e1 (+ small), class 1 along e2; one anti-aligned class-0 example
    G = torch.tensor([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    labels = np.array([0, 0, 0, 1, 1])
    cos, sign = stiffness_matrices(G)
    exp = np.array([[1, 1, -1, 0, 0], [1, 1, -1, 0, 0], [-1, -1, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 1, 1]], float)
    np.testing.assert_allclose(cos.numpy(), exp, atol=1e-15)
    np.testing.assert_array_equal(sign.numpy(), exp)
    C = class_stiffness(cos, labels)
    # class 0 pairs i != j: (0,1)=1, (0,2)=-1, (1,2)=-1 each twice -> mean -1/3; class 1: 1; between: 0
    np.testing.assert_allclose(C, [[-1 / 3, 0.0], [0.0, 1.0]], atol=1e-15)
    w, b = within_between(cos, labels)
    # within: 6 ordered class-0 pairs (sum -2) + 2 class-1 pairs (sum 2) -> 0/8
    assert w == pytest.approx(0.0, abs=1e-15) and b == pytest.approx(0.0, abs=1e-15)
    G2 = G.clone()
    G2[2] = torch.tensor([1.0, 0.0])
    assert within_between(stiffness_matrices(G2)[0], labels) == pytest.approx((1.0, 0.0))
    # zero gradient rows give 0, not NaN
    cz, _ = stiffness_matrices(torch.zeros(2, 3, dtype=torch.float64))
    assert torch.equal(cz, torch.zeros(2, 2, dtype=torch.float64))


def test_stiffness_by_distance_bins():
    x = np.array([[0.0], [1.0], [3.0]])
    S = np.array([[1, 0.5, -1], [0.5, 1, 0.2], [-1, 0.2, 1]])
    edges, mean, count = stiffness_by_distance(S, x, edges=np.array([0.0, 1.5, 2.5, 3.0]))
    # pairs: d(0,1)=1 -> 0.5, d(1,2)=2 -> 0.2, d(0,2)=3 -> -1 (last edge inclusive)
    np.testing.assert_array_equal(count, [1, 1, 1])
    np.testing.assert_allclose(mean, [0.5, 0.2, -1.0])


def test_stiffness_end_to_end_linear_model(tmp_path):
    # a linear softmax model on well separated classes: same-class gradients align more
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    y = torch.arange(90) % 3
    x = centers[y] + 0.3 * torch.randn(90, 2, generator=g, dtype=torch.float64)
    model = nn.Linear(2, 3).double()
    r = stiffness(model, (x, y), n_per_class=10, seed=1, n_bins=5)
    assert r.cos.shape == (30, 30) and r.class_cos.shape == (3, 3)
    assert np.all(np.diff(r.labels) >= 0) and set(r.classes.tolist()) == {0, 1, 2}
    assert r.summary["within_cos"] > r.summary["between_cos"]
    assert r.distance_count.sum() == 30 * 29 // 2
    # same sample with the same seed, another with another seed
    assert np.array_equal(stiffness(model, (x, y), n_per_class=10, seed=1).indices, r.indices)
    assert not np.array_equal(stiffness(model, (x, y), n_per_class=10, seed=2).indices, r.indices)
    r.save(tmp_path / "s")
    back = StiffnessResult.load(tmp_path / "s")
    np.testing.assert_array_equal(back.cos, r.cos)
    assert back.summary["within_cos"] == pytest.approx(r.summary["within_cos"])
    import matplotlib

    matplotlib.use("Agg")
    d = back.plot()
    assert d.savefig(tmp_path / "s.png").stat().st_size > 1000
    d.close()
    with pytest.raises(LosslabError, match="integer class labels"):
        stiffness(model, (x, x[:, 0]), n_per_class=3)


# ---- gradient noise ---------------------------------------------------------------------------------


def test_noise_scale_and_spectrum_closed_form():
    g = torch.Generator().manual_seed(0)
    G = torch.randn(9, 6, generator=g, dtype=torch.float64) + torch.tensor([1.0, 0, 0, 0, 0, 2.0], dtype=torch.float64)
    ns = noise_scale(G)
    cov = torch.cov(G.T)  # unbiased, D x D
    mean = G.mean(0)
    assert ns["trace_cov"] == pytest.approx(float(torch.trace(cov)), rel=1e-12)
    assert ns["b_simple"] == pytest.approx(float(torch.trace(cov) / (mean @ mean)), rel=1e-12)
    assert ns["b_simple_unbiased"] == pytest.approx(float(torch.trace(cov) / (mean @ mean - torch.trace(cov) / 9)))
    spec = covariance_spectrum(G, 4, eigenvectors=True)
    ref = torch.linalg.eigvalsh(cov).flip(0)
    torch.testing.assert_close(spec.eigenvalues, ref[:4], rtol=1e-10, atol=1e-12)
    # eigenvectors of the D x D covariance recovered from the Gram matrix
    torch.testing.assert_close(cov @ spec.eigenvectors, spec.eigenvectors * spec.eigenvalues, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(spec.eigenvectors.T @ spec.eigenvectors, torch.eye(4, dtype=torch.float64))
    second = covariance_spectrum(G, 3, centered=False)
    torch.testing.assert_close(second.eigenvalues, torch.linalg.eigvalsh(G.T @ G / 9).flip(0)[:3])


def test_gradient_noise_on_model():
    model, (x, y) = tiny(), data(40)
    r = gradient_noise(model, (x, y), n_examples=30, k=3, seed=0)
    idx = torch.randperm(40, generator=torch.Generator().manual_seed(0))[:30]
    G = per_example_grads(model, (x[idx], y[idx]))
    assert r.b_simple == pytest.approx(noise_scale(G)["b_simple"], rel=1e-10)
    assert r.eigenvalues.shape == (3,) and np.all(np.diff(r.eigenvalues) <= 0)
    assert r.summary()["top_fraction_of_trace"] <= 1.0 + 1e-12
