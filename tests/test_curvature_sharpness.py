"""λmax, negative-curvature ratio and ε-sharpness on small exact problems."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from losslab import LosslabError
from losslab.curvature import HessianOperator, epsilon_sharpness, lambda_max, negative_curvature_ratio

D = torch.float64


@pytest.fixture(scope="module", autouse=True)
def _private_global_rng():
    """The tiny models below seed torch's global RNG for their init; keep that from leaking out."""
    with torch.random.fork_rng(devices=[]):
        yield


def least_squares(seed: int = 0, d: int = 3, n: int = 17):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=D)
    y = torch.randn(n, 1, generator=g, dtype=D)
    model = nn.Linear(d, 1, bias=False).to(D)
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=D))
    return model, X, y


def test_lambda_max_closed_form():
    model, X, y = least_squares()
    H = HessianOperator(model, (X, y), loss=nn.MSELoss(), batch_size=5)
    exact = float(torch.linalg.eigvalsh(2 * X.T @ X / X.shape[0])[-1])
    assert abs(lambda_max(H, seed=0) - exact) < 1e-10 * exact
    assert abs(lambda_max(np.diag([1.0, 7.0, 3.0]), seed=0) - 7.0) < 1e-12
    with pytest.raises(LosslabError, match="did not converge"):
        lambda_max(torch.diag(torch.linspace(0, 1, 50, dtype=D)), max_iter=2, seed=0, strict=True)


def test_negative_curvature_ratio():
    A = torch.diag(torch.tensor([4.0, 2.0, 0.5, 0.0, -0.3, -1.0], dtype=D))
    r = negative_curvature_ratio(A, seed=0)
    assert r.converged and abs(r.ratio - 0.25) < 1e-9
    assert abs(r.lambda_min + 1.0) < 1e-9 and abs(r.lambda_max - 4.0) < 1e-9
    psd = negative_curvature_ratio(torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=D)), seed=0)
    assert psd.ratio == 0.0


def brute_force_box_max(model, X, y, eps):
    """Max of the (convex) least-squares loss over the ε-box: attained at a vertex."""
    w = model.weight.detach().reshape(-1)
    b = eps * (w.abs() + 1)
    best = -np.inf
    for signs in itertools.product([-1.0, 1.0], repeat=w.numel()):
        ww = w + torch.tensor(signs, dtype=D) * b
        best = max(best, float(((X @ ww[:, None] - y) ** 2).mean()))
    return best


@pytest.mark.parametrize("method", ["pgd", "lbfgsb"])
def test_epsilon_sharpness_matches_vertex_enumeration(method):
    model, X, y = least_squares()
    snap = {k: v.clone() for k, v in model.state_dict().items()}
    eps = 0.05
    base = float(((X @ model.weight.detach().T - y) ** 2).mean())
    best = brute_force_box_max(model, X, y, eps)
    res = epsilon_sharpness(model, (X, y), loss=nn.MSELoss(), epsilon=eps, steps=20, method=method, batch_size=6)
    assert abs(res.base_loss - base) < 1e-12
    assert res.max_loss <= best + 1e-12 and res.max_loss >= best - 1e-6 * best
    assert abs(res.sharpness - 100 * (res.max_loss - base) / (1 + base)) < 1e-9
    d = res.delta["weight"]
    bound = eps * (model.weight.detach().abs() + 1)
    assert bool((d.abs() <= bound + 1e-15).all())
    assert res.num_gradients >= 2 and res.losses.size >= 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, snap[k])


def test_epsilon_sharpness_mlp_grows_with_epsilon():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(D)
    x, y = torch.randn(13, 4, generator=g, dtype=D), torch.randint(0, 3, (13,), generator=g)
    small = epsilon_sharpness(model, (x, y), loss=nn.CrossEntropyLoss(), epsilon=1e-3, batch_size=5)
    large = epsilon_sharpness(model, (x, y), loss=nn.CrossEntropyLoss(), epsilon=1e-2, batch_size=5)
    rand = epsilon_sharpness(model, (x, y), loss=nn.CrossEntropyLoss(), epsilon=1e-2, random_start=True, seed=0)
    assert 0 < small.sharpness < large.sharpness
    assert rand.sharpness > 0
    with pytest.raises(LosslabError, match="epsilon"):
        epsilon_sharpness(model, (x, y), loss=nn.CrossEntropyLoss(), epsilon=0.0)
