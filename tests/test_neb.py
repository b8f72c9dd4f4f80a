"""AutoNEB: tangents, nudged forces, redistribution, 2-D energies with known saddles, MST over minima."""
from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

from losslab import models, params
from losslab.connect import FunctionEnergy, ModelEnergy, NEBCycle, auto_neb, connect_minima, linear_path, neb_path
from losslab.connect import neb as neb_module
from losslab.connect.neb import dense_path, improved_tangent, minimum_spanning_tree, neb_gradient, redistribute, tangents
from losslab.errors import LosslabError


def curved_valley(p):
    """Minima (±1, 0) with E = 0; one saddle at (0, 1) with E = 1; the straight line peaks at 3."""
    return (p[0] ** 2 - 1) ** 2 + 2 * (p[1] - (1 - p[0] ** 2)) ** 2


def tilted_valley(p):
    """The curved valley plus 0.2 x³: asymmetric minima (E ≈ -0.24 and 0.16), same saddle (0, 1) with E = 1.

    The minimum-energy path is the valley floor y = 1 - x², along which E = (x² - 1)² + 0.2 x³ peaks
    at x = 0.
    """
    return curved_valley(p) + 0.2 * p[0] ** 3


_MB = ([-200, -100, -170, 15], [-1, -1, -6.5, 0.7], [0, 0, 11, 0.6], [-10, -10, -6.5, 0.7], [1, 0, -0.5, -1], [0, 0.5, 1.5, 1])


def muller_brown(p):
    A, a, b, c, X, Y = _MB
    x, y = p[0], p[1]
    return sum(A[i] * torch.exp(a[i] * (x - X[i]) ** 2 + b[i] * (x - X[i]) * (y - Y[i]) + c[i] * (y - Y[i]) ** 2)
               for i in range(4))


# --------------------------------------------------------------------------------------- pieces
def test_vectorised_tangents_match_the_scalar_definition():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        path = torch.randn(6, 4, generator=g, dtype=torch.float64)
        e = torch.randn(6, generator=g, dtype=torch.float64)
        if _ % 5 == 0:
            e[2] = e[1] = e[3]  # flat: equal energies
        tau = tangents(path, e)
        for i in range(1, 5):
            ref = improved_tangent(path[i - 1], path[i], path[i + 1], float(e[i - 1]), float(e[i]), float(e[i + 1]))
            torch.testing.assert_close(tau[i - 1], ref)
        torch.testing.assert_close(tau.norm(dim=1), torch.ones(4, dtype=torch.float64))


def test_improved_tangent_cases():
    prev, cur, nxt = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 2.0])
    # rising: toward the higher next pivot
    assert torch.equal(improved_tangent(prev, cur, nxt, 0.0, 1.0, 2.0), torch.tensor([0.0, 1.0]))
    # falling: from the higher previous pivot
    assert torch.equal(improved_tangent(prev, cur, nxt, 2.0, 1.0, 0.0), torch.tensor([1.0, 0.0]))
    # maximum with a higher next neighbour: weighted toward tau+ by dmax = 1, tau- by dmin = 0.5
    t = improved_tangent(prev, cur, nxt, 0.5, 1.0, 0.0)  # e_next < e_prev: tau+ dmin + tau- dmax
    ref = torch.tensor([0.0, 2.0]) * 0.5 + torch.tensor([1.0, 0.0]) * 1.0
    torch.testing.assert_close(t, ref / ref.norm())
    # degenerate: a pivot on its higher neighbour falls back to the chord; all coincident -> 0
    t = tangents(torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]]), torch.tensor([0.0, 1.0, 2.0]))
    assert torch.equal(t[0], torch.tensor([1.0, 0.0]))
    assert torch.equal(tangents(torch.zeros(3, 2), torch.tensor([0.0, 1.0, 0.0]))[0], torch.zeros(2))
    assert torch.equal(improved_tangent(prev, cur, cur, 0.0, 1.0, 2.0), torch.tensor([1.0, 0.0]))


def test_neb_gradient_removes_the_tangential_part_and_adds_springs():
    g = torch.Generator().manual_seed(1)
    path = torch.randn(5, 3, generator=g, dtype=torch.float64)
    e = torch.tensor([0.0, 1.0, 2.0, 1.5, 0.0], dtype=torch.float64)
    grads = torch.randn(3, 3, generator=g, dtype=torch.float64)
    tau = tangents(path, e)
    gn = neb_gradient(path, e, grads)
    torch.testing.assert_close((gn * tau).sum(1), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(gn + (grads * tau).sum(1, keepdim=True) * tau, grads)
    gk = neb_gradient(path, e, grads, spring=2.0)
    d = (path[1:] - path[:-1]).norm(dim=1)
    torch.testing.assert_close(gk - gn, -2.0 * (d[1:] - d[:-1]).unsqueeze(1) * tau)


def test_redistribute_equal_and_weighted_spacing():
    path = torch.tensor([[0.0, 0.0], [0.1, 0.0], [1.0, 0.0], [1.0, 0.2], [1.0, 1.0]], dtype=torch.float64)
    out = redistribute(path)
    assert torch.equal(out[0], path[0]) and torch.equal(out[-1], path[-1])
    seg = (out[1:] - out[:-1]).norm(dim=1)
    # a corner is cut at most at pivot positions on the polyline: lengths along the polyline are equal
    torch.testing.assert_close(out[1], torch.tensor([0.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out[2], torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out[3], torch.tensor([1.0, 0.5], dtype=torch.float64))
    assert seg.min() > 0.49
    w = torch.tensor([1.0, 1.0, 1.0, 5.0], dtype=torch.float64)
    out = redistribute(path, w)
    torch.testing.assert_close(out[1], torch.tensor([0.25, 0.0], dtype=torch.float64))
    with pytest.raises(LosslabError, match="weights"):
        redistribute(path, torch.ones(2))


def test_dense_path_positions():
    path = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    pts, pos, piv = dense_path(path, 1)
    assert pts[:, 0].tolist() == [0.0, 0.5, 1.0, 2.0, 3.0]
    np.testing.assert_allclose(pos, [0, 1 / 6, 1 / 3, 2 / 3, 1])
    assert piv.tolist() == [0, 2, 4]


def test_function_energy_vmap_and_loop_fallback():
    x = torch.tensor([[0.5, 0.2], [1.0, -1.0]], dtype=torch.float64)
    v1, g1 = FunctionEnergy(curved_valley).value_and_grad(x, 0)

    def not_vmappable(p):
        return curved_valley(p) + 0 * float(p[0].item())

    e = FunctionEnergy(not_vmappable)
    v2, g2 = e.value_and_grad(x, 0)
    assert e._vmap is False
    torch.testing.assert_close(v1, v2)
    torch.testing.assert_close(g1, g2)
    torch.testing.assert_close(FunctionEnergy(curved_valley).values(x), v1)


# ----------------------------------------------------------------------------- 2-D saddles
CYCLES = [NEBCycle(40, 0.05, 3, "equal"), NEBCycle(40, 0.05, 2), NEBCycle(40, 0.01, 2)]


@pytest.mark.parametrize("energy", [curved_valley, tilted_valley])
def test_autoneb_finds_the_analytic_saddle_of_a_double_well(energy):
    xa = torch.tensor([-1.0, 0.0], dtype=torch.float64)
    xb = torch.tensor([1.0, 0.0], dtype=torch.float64)
    # (the tilt moves the minima off (±1, 0); start from the minima of the tilted energy)
    if energy is tilted_valley:
        xa, xb = _minimise(energy, xa), _minimise(energy, xb)
    res = auto_neb(FunctionEnergy(energy), xa, xb, cycles=CYCLES)
    saddle = energy(torch.tensor([0.0, 1.0], dtype=torch.float64)).item()
    assert saddle == pytest.approx(1.0)
    # the maximum over the sampled path approximates the true saddle (the linear path's is 3x higher)
    assert res.saddle_value == pytest.approx(saddle, abs=0.01)
    assert res.linear_saddle > 2.5
    torch.testing.assert_close(res.saddle_point, torch.tensor([0.0, 1.0], dtype=torch.float64), atol=0.05, rtol=0)
    assert torch.equal(res.pivots[0], xa) and torch.equal(res.pivots[-1], xb)
    assert res.pivots.shape[0] >= 5 and len(res.history) == 3
    assert res.positions[0] == 0 and res.positions[-1] == 1 and np.all(np.diff(res.positions) > 0)
    assert res.barrier == pytest.approx(res.saddle_value - 0.5 * (energy(xa) + energy(xb)).item())


def _minimise(energy, x0):
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        v = energy(x)
        v.backward()
        return v

    opt.step(closure)
    return x.detach()


def test_autoneb_with_springs_and_errors():
    xa, xb = torch.tensor([-1.0, 0.0], dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64)
    res = auto_neb(FunctionEnergy(curved_valley), xa, xb, spring=1.0,
                   cycles=[NEBCycle(100, 0.02, 5, "equal"), NEBCycle(50, 0.01, 2)])
    assert res.saddle_value == pytest.approx(1.0, abs=0.03)
    e = FunctionEnergy(curved_valley)
    with pytest.raises(LosslabError, match="identical"):
        auto_neb(e, xa, xa, cycles=CYCLES)
    with pytest.raises(LosslabError, match="bad NEB cycle"):
        auto_neb(e, xa, xb, cycles=[NEBCycle(10, -1.0)])
    with pytest.raises(LosslabError, match="diverged"):
        auto_neb(e, xa, xb, cycles=[NEBCycle(50, 50.0, 3, "equal")])


@pytest.mark.slow
def test_autoneb_muller_brown_saddle():
    """Müller–Brown: the path from minimum A to B passes minimum C; its highest saddle is at E = -40.665."""
    a = torch.tensor([-0.558224, 1.441726], dtype=torch.float64)
    b = torch.tensor([0.623499, 0.028038], dtype=torch.float64)
    cycles = [NEBCycle(150, 1e-4, 3, "equal"), NEBCycle(100, 1e-4, 4), NEBCycle(100, 5e-5, 4)]
    res = auto_neb(FunctionEnergy(muller_brown), a, b, cycles=cycles)
    assert res.saddle_value == pytest.approx(-40.665, abs=0.5)
    assert res.linear_saddle > 0  # the straight line climbs far above it
    torch.testing.assert_close(res.saddle_point, torch.tensor([-0.822, 0.624], dtype=torch.float64), atol=0.03, rtol=0)
    # the path passes through the intermediate minimum C (-0.050, 0.467), E = -80.77
    dense = dense_path(res.pivots, 9)[0]
    assert float((dense - torch.tensor([-0.050, 0.467], dtype=torch.float64)).norm(dim=1).min()) < 0.05


# --------------------------------------------------------------------------- several minima
def test_minimum_spanning_tree_and_minimax():
    w = np.array([[np.nan, 3.0, 1.0, 9.0],
                  [3.0, np.nan, 2.0, 9.0],
                  [1.0, 2.0, np.nan, 4.0],
                  [9.0, 9.0, 4.0, np.nan]])
    tree = minimum_spanning_tree(w)
    assert [(i, j) for i, j, _ in tree] == [(0, 2), (1, 2), (2, 3)]
    mm = neb_module._minimax(4, tree)
    assert mm[0, 1] == 2.0 and mm[0, 3] == 4.0 and mm[1, 0] == 2.0 and np.isnan(mm[2, 2])
    assert minimum_spanning_tree(np.full((3, 3), np.nan)) == []


@pytest.mark.slow
def test_connect_minima_muller_brown_tree():
    """Three Müller–Brown minima: the tree is A–C (saddle -40.7) and C–B (-72.2), never A–B directly."""
    mins = [torch.tensor(p, dtype=torch.float64) for p in ([-0.558224, 1.441726], [0.623499, 0.028038],
                                                            [-0.050011, 0.466694])]
    cycles = [NEBCycle(150, 1e-4, 3, "equal"), NEBCycle(100, 1e-4, 3), NEBCycle(100, 5e-5, 3)]
    g = connect_minima(mins, FunctionEnergy(muller_brown), cycles=cycles)
    edges = {(i, j) for i, j, _ in g.mst}
    assert edges == {(0, 2), (1, 2)}
    assert g.saddles[0, 2] == pytest.approx(-40.665, abs=0.5)
    assert g.saddles[1, 2] == pytest.approx(-72.249, abs=0.5)
    assert g.minimax[0, 1] == pytest.approx(g.saddles[0, 2])
    assert g.refined[0, 2] and g.refined[1, 2]
    np.testing.assert_allclose(g.minima_values, [-146.700, -108.167, -80.768], atol=1e-2)


def test_connect_minima_small_and_model_points():
    mins = [torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])]
    g = connect_minima(mins, FunctionEnergy(curved_valley), cycles=[NEBCycle(30, 0.02, 3, "equal")])
    assert len(g.mst) == 2 and g.rounds >= 2
    assert all(g.refined[i, j] for i, j, _ in g.mst)
    assert np.all(g.saddles[g.refined] <= g.linear_saddles[g.refined])
    with pytest.raises(LosslabError, match="at least two"):
        connect_minima(mins[:1], FunctionEnergy(curved_valley))
    with pytest.raises(LosslabError, match="ModelEnergy"):
        connect_minima([{"w": torch.zeros(2)}, {"w": torch.ones(2)}], FunctionEnergy(curved_valley))


# ------------------------------------------------------------------------------- models
def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()


def test_model_energy_flatten_values_and_gradients():
    x, y = _data()
    m = models.build("mlp", input_shape=(5,), num_classes=3, seed=0, width=6, depth=1).double()
    e = ModelEnergy(m, (x, y), batch_size=0)
    v = e.to_flat(m)
    assert v.shape == (e.dim,) and torch.equal(e.to_point(v)["fc0.weight"], m.fc0.weight.detach())
    vals, grads = e.value_and_grad(torch.stack([v, 0.5 * v]), 0)
    loss = torch.nn.functional.cross_entropy(m(x), y)
    assert vals[0].item() == pytest.approx(loss.item(), rel=1e-12)
    gref = torch.autograd.grad(loss, list(m.parameters()))
    torch.testing.assert_close(grads[0], torch.cat([g.reshape(-1) for g in gref]))
    torch.testing.assert_close(e.values(torch.stack([v]))[0], vals[0])
    # mini-batches: the same batch for every pivot of a step, another at the next step
    eb = ModelEnergy(m, (x, y), batch_size=8, seed=1)
    a0, _ = eb.value_and_grad(torch.stack([v, v]), 0)
    a1, _ = eb.value_and_grad(torch.stack([v]), 1)
    assert a0[0] == a0[1] and a0[0] != a1[0]


def test_neb_path_on_models_returns_a_path_result():
    x, y = _data(n=96)
    xt, yt = _data(n=48, seed=4)
    pts = []
    for seed in (0, 1):
        m = models.build("mlp", input_shape=(5,), num_classes=3, seed=seed, width=12, depth=1).double()
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
        for _ in range(100):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
        pts.append(params.get_point(m))
    model = models.build("mlp", input_shape=(5,), num_classes=3, seed=0, width=12, depth=1).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = neb_path(model, (x, y), point_a=pts[0], point_b=pts[1], test_data=(xt, yt), batch_size=0,
                   cycles=[NEBCycle(40, 0.1, 3, "equal"), NEBCycle(40, 0.05, 2)])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    lin = linear_path(model, (x, y), point_a=pts[0], point_b=pts[1], test_data=(xt, yt), num=5)
    p = res.path
    assert p.meta["kind"] == "neb" and p.alphas.size == res.positions.size
    assert p.metrics["train"]["loss"][0] == pytest.approx(lin.metrics["train"]["loss"][0], rel=1e-12)
    assert p.metrics["test"]["error"][-1] == pytest.approx(lin.metrics["test"]["error"][-1], abs=1e-12)
    np.testing.assert_allclose(p.metrics["train"]["loss"], res.dense_values, rtol=1e-10)
    assert res.saddle_value <= res.linear_saddle + 1e-9
    assert math.isfinite(p.barrier("error", split="test"))


def test_doctests():
    assert doctest.testmod(neb_module, raise_on_error=False).failed == 0


def test_climbing_image_converges_to_the_saddle_itself():
    """With a climbing image the highest pivot sits on the saddle point (zero gradient) instead of
    being wherever equal spacing puts it; a plain band only brackets it."""
    a = torch.tensor([-0.558224, 1.441726], dtype=torch.float64)
    b = torch.tensor([0.623499, 0.028038], dtype=torch.float64)
    base = [NEBCycle(150, 1e-4, 3, "equal"), NEBCycle(100, 1e-4, 4), NEBCycle(100, 5e-5, 4)]
    climb = base + [NEBCycle(400, 5e-5, 0, climb=True)]
    plain = base + [NEBCycle(400, 5e-5, 0)]
    saddle = torch.tensor([-0.82200, 0.62431], dtype=torch.float64)  # Müller–Brown's saddle between A and C

    def top_pivot(res):
        k = int(np.argmax(res.pivot_values))
        x = res.pivots[k].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(muller_brown(x), x)
        return res.pivots[k], float(res.pivot_values[k]), float(g.norm())

    rc = auto_neb(FunctionEnergy(muller_brown), a, b, cycles=climb)
    rp = auto_neb(FunctionEnergy(muller_brown), a, b, cycles=plain)
    xc, ec, gc = top_pivot(rc)
    xp, ep, gp = top_pivot(rp)
    assert gc < 0.5 and gc < gp / 10, (gc, gp)  # |grad E| at the climber: ~0 (a critical point)
    assert float((xc - saddle).norm()) < 2e-3 < float((xp - saddle).norm())
    assert ec == pytest.approx(-40.665, abs=0.01)
    assert rc.history[-1]["climbing_pivot"] is not None and rp.history[-1]["climbing_pivot"] is None
    assert rc.pivots.shape == rp.pivots.shape  # same band, only the top pivot's force differs
