"""Trained curves (Garipov et al. 2018): coefficients, the functional curve, training and evaluation."""
from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

from losslab import params
from losslab.connect import CurveResult, bezier_coefficients, curve_coefficients, linear_path, polychain_coefficients
from losslab.connect import curves as curves_module
from losslab.connect import train_curve
from losslab.connect.curves import curve_points, garipov_lr
from losslab.errors import LosslabError

from cases import zoo_mlp


def _data(n=96, d=6, c=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    w = torch.randn(d, c, generator=g, dtype=dtype)
    return x, (x @ w).argmax(1)


def _mlp(seed, norm=None, dtype=torch.float64, width=8):
    return zoo_mlp(seed, input_dim=6, num_classes=3, width=width, depth=2, norm=norm, dtype=dtype)


# --------------------------------------------------------------------------------- coefficients
@pytest.mark.parametrize("kind", ["bezier", "polychain"])
@pytest.mark.parametrize("nb", [0, 1, 2, 3])
def test_coefficients_sum_to_one_nonnegative_and_hit_endpoints(kind, nb):
    t = torch.rand(50, generator=torch.Generator().manual_seed(nb), dtype=torch.float64)
    c = curve_coefficients(kind, t, nb)
    assert c.shape == (50, nb + 2)
    torch.testing.assert_close(c.sum(-1), torch.ones(50, dtype=torch.float64), rtol=0, atol=1e-15)
    assert bool((c >= 0).all())
    ends = curve_coefficients(kind, torch.tensor([0.0, 1.0], dtype=torch.float64), nb)
    expect = torch.zeros(2, nb + 2, dtype=torch.float64)
    expect[0, 0] = expect[1, -1] = 1.0
    assert torch.equal(ends, expect)


@pytest.mark.parametrize("nb", [1, 2, 3])
def test_polychain_passes_through_every_control_point(nb):
    m = nb + 2
    tk = torch.arange(m, dtype=torch.float64) / (m - 1)
    assert torch.equal(polychain_coefficients(tk, nb), torch.eye(m, dtype=torch.float64))
    # linear between control points
    c = polychain_coefficients(torch.tensor([0.25 / (m - 1)], dtype=torch.float64), nb)[0]
    assert c[0].item() == pytest.approx(0.75) and c[1].item() == pytest.approx(0.25)


def test_bezier_formulas_quadratic_and_cubic():
    t = torch.tensor([0.3], dtype=torch.float64)
    q = bezier_coefficients(t, 1)[0]
    torch.testing.assert_close(q, torch.tensor([0.7**2, 2 * 0.3 * 0.7, 0.3**2], dtype=torch.float64))
    c = bezier_coefficients(t, 2)[0]
    torch.testing.assert_close(c, torch.tensor([0.7**3, 3 * 0.3 * 0.7**2, 3 * 0.3**2 * 0.7, 0.3**3], dtype=torch.float64))
    # evenly spaced collinear control points: the Bezier curve is the straight line, t = alpha
    a, b = {"w": torch.tensor([0.0, 0.0])}, {"w": torch.tensor([3.0, -6.0])}
    ctrl = [a, {"w": torch.tensor([1.0, -2.0])}, {"w": torch.tensor([2.0, -4.0])}, b]
    tt = torch.linspace(0, 1, 7, dtype=torch.float64)
    pts = curve_points(ctrl, bezier_coefficients(tt, 2))
    torch.testing.assert_close(pts["w"], tt[:, None].float() * b["w"], atol=1e-6, rtol=0)


def test_curve_points_hit_control_points_and_combine():
    g = torch.Generator().manual_seed(0)
    ctrl = [{"a": torch.randn(2, 3, generator=g), "b": torch.randn(4, generator=g)} for _ in range(3)]
    c = bezier_coefficients(torch.tensor([0.0, 0.5, 1.0]), 1)
    pts = curve_points(ctrl, c)
    assert torch.equal(pts["a"][0], ctrl[0]["a"]) and torch.equal(pts["b"][2], ctrl[2]["b"])
    torch.testing.assert_close(pts["a"][1], 0.25 * ctrl[0]["a"] + 0.5 * ctrl[1]["a"] + 0.25 * ctrl[2]["a"])
    one = curve_points(ctrl, polychain_coefficients(torch.tensor(0.5), 1))
    assert torch.equal(one["a"], ctrl[1]["a"])
    with pytest.raises(LosslabError, match="coefficients"):
        curve_points(ctrl, torch.ones(4))
    with pytest.raises(LosslabError, match="unknown curve kind"):
        curve_coefficients("spline", torch.tensor(0.5), 1)
    with pytest.raises(LosslabError, match="num_bends"):
        bezier_coefficients(torch.tensor(0.5), -1)


def test_garipov_schedule_matches_reference():
    lr = 0.1
    e = 100
    assert garipov_lr(lr, 1, e) == lr and garipov_lr(lr, 50, e) == lr
    assert garipov_lr(lr, 70, e) == pytest.approx(lr * (1 - 0.2 / 0.4 * 0.99))
    assert garipov_lr(lr, 90, e) == pytest.approx(lr * 0.01)
    assert garipov_lr(lr, 91, e) == pytest.approx(lr * 0.01) and garipov_lr(lr, 100, e) == pytest.approx(lr * 0.01)
    vals = [garipov_lr(lr, k, e) for k in range(1, e + 1)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))


# ------------------------------------------------------------------------------------ training
def test_untrained_curve_is_the_linear_path_and_endpoints_are_fixed():
    x, y = _data()
    ma, mb = _mlp(0), _mlp(1)
    for kind in ("bezier", "polychain"):
        c = train_curve(ma, (x, y), point_a=ma, point_b=mb, kind=kind, num_bends=2, epochs=0, num=7)
        lin = linear_path(ma, (x, y), point_a=ma, point_b=mb, num=7)
        np.testing.assert_allclose(c.path.metrics["train"]["loss"], lin.metrics["train"]["loss"], rtol=1e-10)
        assert c.path.metrics["train"]["loss"][0] == lin.metrics["train"]["loss"][0]
        assert c.path.metrics["train"]["loss"][-1] == lin.metrics["train"]["loss"][-1]
        assert len(c.control_points) == 4
        # bends start on the segment at 1/3 and 2/3
        pa, pb = params.get_point(ma), params.get_point(mb)
        for k in pa:
            torch.testing.assert_close(c.control_points[1][k], 2 / 3 * pa[k] + 1 / 3 * pb[k])
        assert c.plane is None  # collinear control points have no plane


def test_train_curve_lowers_the_path_keeps_endpoints_and_model(tmp_path):
    x, y = _data(n=160)
    xt, yt = _data(n=64, seed=5)

    # two solutions: train two nets from different inits on the same data
    pts = []
    for seed in (0, 1):
        m = _mlp(seed, width=16)
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
        for _ in range(150):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
        pts.append(params.get_point(m))
    model = _mlp(0, width=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lin = linear_path(model, (x, y), point_a=pts[0], point_b=pts[1], test_data=(xt, yt), num=21)
    c = train_curve(model, (x, y), point_a=pts[0], point_b=pts[1], test_data=(xt, yt), epochs=15, lr=0.1, batch_size=32, seed=0, num=21)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    for k in pts[0]:
        assert torch.equal(c.control_points[0][k], pts[0][k]) and torch.equal(c.control_points[-1][k], pts[1][k])
    # the same endpoints, a lower maximum along the trained curve
    assert c.path.metrics["train"]["loss"][0] == lin.metrics["train"]["loss"][0]
    assert c.path.barrier("loss", split="train") < 0.5 * lin.barrier("loss", split="train")
    assert len(c.history) == 15 and c.history[0]["lr"] == 0.1 and c.history[-1]["lr"] == pytest.approx(0.001)
    # plane through A, bend, B: A at the origin, B on the x axis, the curve passes through (0,0) and B
    assert c.plane is not None
    np.testing.assert_allclose(c.plane.coords[0], [0, 0], atol=1e-9)
    assert c.plane.coords[1][1] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(c.plane_coords[0], [0, 0], atol=1e-6)
    np.testing.assert_allclose(c.plane_coords[-1], c.plane.coords[1], rtol=1e-6, atol=1e-6)
    assert c.plane_coords[10][1] > 0  # the middle of the curve bends toward the bend
    # c.point(t) is the curve's parameters
    mid = c.point(0.5)
    torch.testing.assert_close(mid["fc0.weight"], 0.25 * pts[0]["fc0.weight"] + 0.5 * c.control_points[1]["fc0.weight"]
                               + 0.25 * pts[1]["fc0.weight"])
    # deterministic for a seed; save/load round trip
    c2 = train_curve(model, (x, y), point_a=pts[0], point_b=pts[1], epochs=2, lr=0.1, batch_size=32, seed=3, num=5)
    c3 = train_curve(model, (x, y), point_a=pts[0], point_b=pts[1], epochs=2, lr=0.1, batch_size=32, seed=3, num=5)
    assert all(torch.equal(c2.control_points[1][k], c3.control_points[1][k]) for k in pts[0])
    c.save(tmp_path / "curve")
    back = CurveResult.load(tmp_path / "curve")
    assert back.kind == "bezier" and back.num_bends == 1
    assert all(torch.equal(back.control_points[1][k], c.control_points[1][k]) for k in pts[0])
    np.testing.assert_array_equal(back.path.metrics["test"]["error"], c.path.metrics["test"]["error"])


def test_train_curve_with_batchnorm_recomputes_and_never_mutates():
    x, y = _data(n=64)
    ma, mb = _mlp(0, norm="bn"), _mlp(1, norm="bn")
    before = {k: v.clone() for k, v in ma.state_dict().items()}
    c = train_curve(ma, (x, y), point_a=ma, point_b=mb, kind="polychain", epochs=2, lr=0.05, batch_size=16, num=5)
    assert c.path.meta["bn"] == "recompute"
    for k, v in ma.state_dict().items():
        assert torch.equal(v, before[k])
    lin = linear_path(ma, (x, y), point_a=ma, point_b=mb, num=5)
    assert c.path.metrics["train"]["loss"][0] == pytest.approx(lin.metrics["train"]["loss"][0], rel=1e-12)


def test_train_curve_errors():
    x, y = _data(n=16)
    m = _mlp(0)
    with pytest.raises(LosslabError, match="num_bends >= 1"):
        train_curve(m, (x, y), point_a=m, point_b=_mlp(1), num_bends=0, epochs=1)
    with pytest.raises(LosslabError, match="unknown curve kind"):
        train_curve(m, (x, y), point_a=m, point_b=_mlp(1), kind="spline", epochs=1)
    with pytest.raises(LosslabError, match="lr > 0"):
        train_curve(m, (x, y), point_a=m, point_b=_mlp(1), lr=0.0, epochs=1)
    bad = x.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(LosslabError, match="diverged"):
        train_curve(m, (bad, y), point_a=m, point_b=_mlp(1), epochs=1, batch_size=16)
    assert math.isfinite(garipov_lr(1.0, 1, 1))


def test_doctests():
    assert doctest.testmod(curves_module, raise_on_error=False).failed == 0
