"""Basin width / volume and adaptive (ASAM) sharpness on problems with closed forms."""
from __future__ import annotations

import doctest
import importlib
import math

import numpy as np
import pytest
import torch
from torch import nn

from losslab import LosslabError, params as P
from losslab.curvature import (
    BasinResult,
    HessianOperator,
    adaptive_sharpness,
    basin_width,
    epsilon_sharpness,
    lambda_max,
)
from losslab.curvature.basin import log_ball_volume
from losslab.directions import random_direction

D = torch.float64


@pytest.fixture(scope="module", autouse=True)
def _private_global_rng():
    """The tiny models below seed torch's global RNG for their init; keep that from leaking out."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def exact_fit(d: int = 4, n: int = 30, seed: int = 0, X: torch.Tensor | None = None):
    """Least squares at an exact minimum (L = 0): L(θ*+δ) = δᵀ(XᵀX/n)δ = ½ δᵀHδ, H = 2XᵀX/n."""
    g = torch.Generator().manual_seed(seed)
    if X is None:
        X = torch.randn(n, d, generator=g, dtype=D)
    model = nn.Linear(X.shape[1], 1, bias=False).to(D)
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, X.shape[1], generator=g, dtype=D) + 0.5)
    y = (X @ model.weight.detach().T).clone()
    return model, X, y


# ---------------------------------------------------------------------------------------------
# basin width
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalization", ["filter", "none"])
def test_basin_radius_closed_form_anisotropic(normalization):
    model, X, y = exact_fit()
    H = 2 * X.T @ X / X.shape[0]
    delta = 0.05
    res = basin_width(model, (X, y), loss=nn.MSELoss(), num_directions=5, threshold=delta, seed=3,
                      normalization=normalization, rtol=1e-9, initial_radius=1e-3)
    assert res.base_loss < 1e-25 and res.threshold_loss == pytest.approx(delta, abs=1e-20)
    theta = P.get_point(model)
    for j, s in enumerate(res.direction_seeds):
        d = random_direction(theta, normalization=normalization, seed=s).vector["weight"].reshape(-1)
        curv = float(d @ H @ d)  # L(θ*+td) = ½ t² dᵀHd  ⇒  t = sqrt(2Δ / dᵀHd), both signs
        t = math.sqrt(2 * delta / curv)
        np.testing.assert_allclose(res.radii[j], [t, t], rtol=1e-8)
        np.testing.assert_allclose(res.euclidean_radii[j], [t * float(d.norm())] * 2, rtol=1e-8)
        assert res.direction_norms[j] == pytest.approx(float(d.norm()), rel=1e-12)
        if normalization == "filter":  # the (1, d) weight is one filter, rescaled to ||θ*||
            assert res.direction_norms[j] == pytest.approx(float(model.weight.detach().norm()), rel=1e-12)
    assert not res.censored.any() and res.dim == 4
    np.testing.assert_allclose(res.widths, res.radii.sum(axis=1))


def test_basin_isotropic_radius_and_volume():
    """H = λI: every Euclidean radius is sqrt(2Δ/λ) and the volume is that of the D-ball."""
    d, n, lam = 3, 12, 2.0
    Q = torch.linalg.qr(torch.randn(n, d, generator=torch.Generator().manual_seed(1), dtype=D))[0]
    X = Q * math.sqrt(n)  # XᵀX/n = I  ⇒  H = 2I for the mean squared error
    model, X, y = exact_fit(X=X)
    delta = 0.3
    res = basin_width(model, (X, y), loss=nn.MSELoss(), num_directions=4, threshold=delta, seed=0, rtol=1e-10)
    R = math.sqrt(2 * delta / lam)
    np.testing.assert_allclose(res.euclidean_radii, R, rtol=1e-9)
    assert res.log_volume == pytest.approx(log_ball_volume(d, R), rel=1e-8)
    assert res.log_volume == pytest.approx(math.log(4 / 3 * math.pi * R**3), rel=1e-8)
    assert res.effective_radius == pytest.approx(R, rel=1e-8)
    s = res.summary()
    assert s["radius_quantiles"]["q50"] == pytest.approx(R / float(model.weight.detach().norm()), rel=1e-8)
    assert s["censored"] == 0 and s["volume_is_lower_bound"] is False


def test_basin_threshold_kinds_censoring_and_errors():
    model, X, y = exact_fit()
    y = y + 0.1 * torch.randn(y.shape, generator=torch.Generator().manual_seed(5), dtype=D)  # L(θ) > 0
    with torch.no_grad():
        base = float(nn.MSELoss()(model(X), y))
    rel = basin_width(model, (X, y), loss=nn.MSELoss(), num_directions=2, threshold=1.5, threshold_kind="relative",
                      seed=0)
    ab = basin_width(model, (X, y), loss=nn.MSELoss(), num_directions=2, threshold=1.5 * base,
                     threshold_kind="absolute", seed=0)
    assert rel.threshold_loss == pytest.approx(1.5 * base) == ab.threshold_loss
    np.testing.assert_array_equal(rel.radii, ab.radii)
    # loss at the edge is the threshold (the search brackets the crossing to rtol)
    theta = P.get_point(model)
    dvec = random_direction(theta, seed=rel.direction_seeds[0]).vector["weight"]
    with torch.no_grad():
        edge = float(nn.MSELoss()(X @ (model.weight + rel.radii[0, 0] * dvec).T, y))
    assert edge == pytest.approx(rel.threshold_loss, rel=1e-3)
    # censoring: the loss cannot reach the threshold within max_radius
    c = basin_width(model, (X, y), loss=nn.MSELoss(), num_directions=2, threshold=100.0, seed=0, max_radius=0.2,
                    initial_radius=0.05)
    assert c.censored.all() and np.all(c.radii == 0.2) and c.summary()["volume_is_lower_bound"]
    with pytest.raises(LosslabError, match="not above"):
        basin_width(model, (X, y), loss=nn.MSELoss(), threshold=0.5 * base, threshold_kind="absolute", seed=0)
    with pytest.raises(LosslabError, match="relative threshold"):
        basin_width(model, (X, y), loss=nn.MSELoss(), threshold=0.5, threshold_kind="relative", seed=0)
    with pytest.raises(LosslabError, match="directions are zero"):
        basin_width(nn.Linear(3, 1).to(D).requires_grad_(True), (X[:, :3], y), loss=nn.MSELoss(), seed=0,
                    point={"weight": torch.zeros(1, 3, dtype=D)})


def mlp_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).to(D)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D) * 0.5)
    x = torch.randn(40, 5, generator=g, dtype=D)
    y = torch.randint(0, 3, (40,), generator=g)
    return model, x, y


def test_basin_batched_equals_loop_model_untouched_and_roundtrip(tmp_path):
    model, x, y = mlp_problem()
    snap = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    kw = dict(num_directions=3, threshold=0.2, seed=7)
    a = basin_width(model, (x, y), loss=nn.functional.cross_entropy, strategy="vmap", points_per_chunk=4, **kw)
    b = basin_width(model, (x, y), loss=lambda o, t: nn.functional.cross_entropy(o, t), strategy="loop", **kw)
    np.testing.assert_allclose(a.radii, b.radii, rtol=1e-12)
    assert a.meta["evaluator"]["strategy"] == "vmap" and b.meta["evaluator"]["strategy"] == "loop"
    assert all(torch.equal(v, snap[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)  # directions come from private generators
    path = a.save(tmp_path / "basin")
    c = BasinResult.load(path)
    np.testing.assert_array_equal(c.radii, a.radii)
    assert c.direction_seeds == a.direction_seeds and c.log_volume == a.log_volume
    with np.load(path) as z:  # readable with plain numpy
        assert z["radii"].shape == (3, 2)


def test_basin_sharper_solution_is_narrower():
    """Scaling the curvature by 4 halves every radius (t ∝ 1/sqrt(dᵀHd))."""
    model, X, y = exact_fit()
    a = basin_width(model, (X, y), loss=nn.MSELoss(), num_directions=3, threshold=0.05, seed=1, rtol=1e-9)
    b = basin_width(model, (2 * X, 2 * y), loss=nn.MSELoss(), num_directions=3, threshold=0.05, seed=1, rtol=1e-9)
    np.testing.assert_allclose(b.radii, a.radii / 2, rtol=1e-7)
    assert b.log_volume == pytest.approx(a.log_volume - 4 * math.log(2), rel=1e-8)


# ---------------------------------------------------------------------------------------------
# adaptive sharpness
# ---------------------------------------------------------------------------------------------


def test_adaptive_sharpness_quadratic_closed_form():
    """At the minimum of least squares: max_{||u|| ≤ ρ} ½ uᵀ(THT)u = ½ ρ² λmax(THT), T = diag|θ*|."""
    model, X, y = exact_fit()
    H = 2 * X.T @ X / X.shape[0]
    T = torch.diag(model.weight.detach().abs().reshape(-1))
    rho = 0.1
    exact = 0.5 * rho**2 * float(torch.linalg.eigvalsh(T @ H @ T)[-1])
    s = adaptive_sharpness(model, (X, y), loss=nn.MSELoss(), rho=rho, steps=200, seed=0)  # ∇L = 0: random start
    assert s.sharpness == pytest.approx(exact, rel=1e-8)
    u = P.flatten(s.delta) / T.diagonal()
    assert float(u.norm()) == pytest.approx(rho, rel=1e-12)  # the maximizer lies on the sphere
    # the plain (non-adaptive) analogue differs: T = I
    exact_plain = 0.5 * rho**2 * float(torch.linalg.eigvalsh(H)[-1])
    assert abs(exact_plain - exact) > 0.1 * exact


def test_adaptive_sharpness_linf_rank_one_closed_form():
    """Rank-one H = c wwᵀ: max over the box |u_i| ≤ ρ of ½ c (wᵀTu)² = ½ c ρ² ||Tw||₁²."""
    g = torch.Generator().manual_seed(2)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=D)
    z = torch.randn(20, 1, generator=g, dtype=D)
    X = z * w  # rows are multiples of w
    model, X, y = exact_fit(X=X)
    c = 2 * float(z.pow(2).sum()) / 20
    Tw = model.weight.detach().abs().reshape(-1) * w
    exact = 0.5 * c * 0.05**2 * float(Tw.abs().sum()) ** 2
    s = adaptive_sharpness(model, (X, y), loss=nn.MSELoss(), rho=0.05, p=float("inf"), steps=30, seed=0)
    assert s.sharpness == pytest.approx(exact, rel=1e-10)


def test_adaptive_sharpness_linear_loss_closed_form():
    """L(θ) = mean(Xθ) = x̄ᵀθ is linear: max over ||T⁻¹δ||_p ≤ ρ is ρ ||T x̄||_q (q dual to p)."""
    model, X, _ = exact_fit()
    y = torch.zeros(X.shape[0], 1, dtype=D)
    loss = lambda out, t: (out - t).mean()  # noqa: E731
    Tx = model.weight.detach().abs().reshape(-1) * X.mean(0)
    s2 = adaptive_sharpness(model, (X, y), loss=loss, rho=0.3, steps=3)
    assert s2.first_step == pytest.approx(0.3 * float(Tx.norm()), rel=1e-12)
    assert s2.sharpness == pytest.approx(0.3 * float(Tx.norm()), rel=1e-12)
    si = adaptive_sharpness(model, (X, y), loss=loss, rho=0.3, p=float("inf"), steps=3, step_size=1.0)
    assert si.sharpness == pytest.approx(0.3 * float(Tx.abs().sum()), rel=1e-12)


def test_adaptive_sharpness_is_scale_invariant_but_plain_sharpness_is_not():
    """ReLU rescaling (W1, b1) → α(W1, b1), W2 → W2/α leaves f unchanged; ASAM's measure too (Dinh et al.)."""
    model, x, y = mlp_problem(1)
    alpha = 4.0
    scaled = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).to(D)
    with torch.no_grad():
        scaled[0].weight.copy_(model[0].weight * alpha)
        scaled[0].bias.copy_(model[0].bias * alpha)
        scaled[2].weight.copy_(model[2].weight / alpha)
        scaled[2].bias.copy_(model[2].bias)
    torch.testing.assert_close(scaled(x), model(x), rtol=1e-12, atol=1e-12)
    loss = nn.CrossEntropyLoss()
    a = adaptive_sharpness(model, (x, y), loss=loss, rho=0.2, steps=10)
    b = adaptive_sharpness(scaled, (x, y), loss=loss, rho=0.2, steps=10)
    assert a.sharpness > 0 and b.sharpness == pytest.approx(a.sharpness, rel=1e-9)
    np.testing.assert_allclose(b.losses, a.losses, rtol=1e-9)
    # λmax and Keskar's ε-sharpness change under the same reparametrization
    la = lambda_max(HessianOperator(model, (x, y), loss=loss), seed=0)
    lb = lambda_max(HessianOperator(scaled, (x, y), loss=loss), seed=0)
    assert abs(lb - la) > 0.2 * la
    ea = epsilon_sharpness(model, (x, y), loss=loss, epsilon=1e-2).sharpness
    eb = epsilon_sharpness(scaled, (x, y), loss=loss, epsilon=1e-2).sharpness
    assert abs(eb - ea) > 0.05 * ea
    # η > 0 (ASAM's training offset) breaks exact invariance
    c = adaptive_sharpness(model, (x, y), loss=loss, rho=0.2, steps=10, eta=0.1)
    d = adaptive_sharpness(scaled, (x, y), loss=loss, rho=0.2, steps=10, eta=0.1)
    assert abs(c.sharpness - d.sharpness) > 1e-3 * c.sharpness


def test_adaptive_sharpness_asam_first_step_and_errors():
    model, x, y = mlp_problem(2)
    loss = nn.CrossEntropyLoss()
    rho = 0.1
    s = adaptive_sharpness(model, (x, y), loss=loss, rho=rho, steps=5)
    theta = P.get_point(model)
    leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    L = loss(torch.func.functional_call(model, leaves, (x,)), y)
    grads = torch.autograd.grad(L, list(leaves.values()))
    g = torch.cat([t.reshape(-1) for t in grads])
    T = P.flatten(theta).abs()
    step = rho * T * T * g / (T * g).norm()  # ASAM: ε = ρ T² ∇L / ||T ∇L||
    moved = P.unflatten(P.flatten(theta) + step, theta)
    with torch.no_grad():
        expect = float(loss(torch.func.functional_call(model, moved, (x,)), y)) - float(L)
    assert s.first_step == pytest.approx(expect, rel=1e-10)
    assert s.sharpness >= s.first_step and s.num_gradients == 6 and len(s.losses) == 5
    for kw, msg in [({"rho": 0}, "rho"), ({"p": 1}, "p must"), ({"init": "x"}, "init"), ({"eta": -1}, "eta")]:
        with pytest.raises(LosslabError, match=msg):
            adaptive_sharpness(model, (x, y), loss=loss, **kw)


@pytest.mark.parametrize("mod", ["basin", "adaptive"])
def test_docstring_examples_run(mod):
    module = importlib.import_module(f"losslab.curvature.{mod}")
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0
