"""Tests for losslab.evaluate: exact references on tiny float64 models."""
from __future__ import annotations

import copy
import doctest

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from losslab import params
from losslab.errors import LosslabError
from losslab.evaluate import Evaluator, has_batchnorm

N = 30  # examples; batch sizes below do not divide it


def mlp(bn: bool = False, dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(5, 8)]
    if bn:
        layers.append(nn.BatchNorm1d(8))
    layers += [nn.ReLU(), nn.Linear(8, 8)]
    if bn:
        layers.append(nn.BatchNorm1d(8))
    layers += [nn.Tanh(), nn.Linear(8, 3)]
    return nn.Sequential(*layers).to(dtype)


class TinyConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


def conv(dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(1)
    return TinyConv().to(dtype)


def data(dtype: torch.dtype = torch.float64, image: bool = False, n: int = N):
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 1, 4, 4, generator=g) if image else torch.randn(n, 5, generator=g)
    return x.to(dtype), torch.randint(0, 3, (n,), generator=g)


def perturbed(model: nn.Module, scale: float, seed: int) -> dict[str, torch.Tensor]:
    p = params.get_point(model)
    d = params.randn_like(p, generator=torch.Generator().manual_seed(seed))
    return params.axpy(p, scale, d)


def snapshot(model: nn.Module):
    return (
        {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        [(name, m.training) for name, m in model.named_modules()],
        [p.requires_grad for p in model.parameters()],
    )


def assert_untouched(model: nn.Module, snap) -> None:
    state, modes, grads = snap
    now = model.state_dict(keep_vars=True)
    assert now.keys() == state.keys()
    for k, v in state.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k].detach(), v), k
    assert [(name, m.training) for name, m in model.named_modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == grads


def reference_bn(model: nn.Module, point, x, y, batch_size: int) -> tuple[float, float]:
    """Deep-copied model, BN stats reset, momentum=None, train-mode pass over chunks, then eval."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for k, v in ref.named_parameters():
            v.copy_(point[k])
        for m in ref.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        ref.train()
        for xc in x.split(batch_size):
            ref(xc)
        ref.eval()
        out = ref(x)
    return F.cross_entropy(out, y).item(), (out.argmax(1) == y).double().mean().item()


def test_matches_hand_computed_full_batch_with_uneven_chunks():
    model, (x, y) = mlp(), data()
    point = perturbed(model, 0.1, 0)
    ev = Evaluator(model, (x, y), batch_size=7, strategy="loop")
    assert ev.bn == "eval" and not has_batchnorm(model)
    r = ev.evaluate(point)
    out = torch.func.functional_call(model, point, (x,))
    assert r["loss"] == pytest.approx(F.cross_entropy(out, y).item(), abs=1e-12)
    assert r["accuracy"] == pytest.approx((out.argmax(1) == y).double().mean().item(), abs=1e-12)
    # the memory budget alone forces uneven chunking too
    tiny = Evaluator(model, (x, y), memory_budget_mb=1e-3, strategy="loop")
    assert 1 <= tiny.batch_size < N
    assert tiny.evaluate(point)["loss"] == pytest.approx(r["loss"], abs=1e-12)


def test_mse_custom_loss_and_metrics():
    model, (x, _) = mlp(), data()
    target = torch.randn(N, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    metrics = {"mae": lambda o, t: (o - t).abs().mean(), "max_out": lambda o, t: float(o.max() * 0 + 1.0)}
    ev = Evaluator(model, (x, target), loss="mse", metrics=metrics, batch_size=4, strategy="loop")
    assert ev.metric_names == ["loss", "mae", "max_out"]
    r = ev.evaluate({})
    with torch.no_grad():
        out = model(x)
    assert r["loss"] == pytest.approx(F.mse_loss(out, target).item(), abs=1e-12)
    assert r["mae"] == pytest.approx((out - target).abs().mean().item(), abs=1e-12)
    assert r["max_out"] == pytest.approx(1.0)
    custom = Evaluator(model, (x, target), loss=lambda o, t: ((o - t) ** 2).mean(), batch_size=9, strategy="vmap")
    many = custom.evaluate_many([params.get_point(model)] * 2)
    np.testing.assert_allclose(many["loss"], r["loss"], atol=1e-12)


@pytest.mark.parametrize("kind", ["mlp", "mlp_bn", "conv"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_vmap_and_loop_agree(kind, dtype, tol):
    model = {"mlp": lambda: mlp(dtype=dtype), "mlp_bn": lambda: mlp(bn=True, dtype=dtype), "conv": lambda: conv(dtype)}[kind]()
    x, y = data(dtype, image=kind == "conv")
    pts = [perturbed(model, s, i) for i, s in enumerate([0.0, 0.05, 0.2, 0.5, 1.0])]
    res = {}
    for strategy in ("loop", "vmap"):
        ev = Evaluator(model, (x, y), batch_size=8, strategy=strategy, points_per_chunk=3)
        res[strategy] = ev.evaluate_many(pts)
    for name in ("loss", "accuracy"):
        np.testing.assert_allclose(res["vmap"][name], res["loop"][name], rtol=0, atol=tol)


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
@pytest.mark.parametrize("make", [lambda: mlp(bn=True), conv], ids=["mlp_bn", "conv"])
def test_bn_recompute_matches_reference(strategy, make):
    model = make()
    x, y = data(image=isinstance(model, TinyConv))
    # the user's model has stale running stats and is in train mode: neither may leak in
    with torch.no_grad():
        model.train()
        model(x[:5] * 3 + 1)
    snap = snapshot(model)
    pts = [perturbed(model, s, i) for i, s in enumerate([0.0, 0.3, 0.8])]
    ev = Evaluator(model, (x, y), batch_size=7, strategy=strategy)
    assert ev.bn == "recompute"
    got = ev.evaluate_many(pts)
    for i, p in enumerate(pts):
        loss, acc = reference_bn(model, p, x, y, 7)
        assert got["loss"][i] == pytest.approx(loss, abs=1e-10)
        assert got["accuracy"][i] == pytest.approx(acc, abs=1e-12)
    assert ev.evaluate(pts[1])["loss"] == pytest.approx(got["loss"][1], abs=1e-10)
    assert_untouched(model, snap)


def test_bn_eval_uses_stored_buffers_and_bn_data():
    model = mlp(bn=True)
    x, y = data()
    with torch.no_grad():
        model.train()
        model(x * 2 + 0.5)
    model.eval()
    snap = snapshot(model)
    ev = Evaluator(model, (x, y), bn="eval", strategy="loop")
    with torch.no_grad():
        expected = F.cross_entropy(model(x), y).item()
    assert ev.evaluate({})["loss"] == pytest.approx(expected, abs=1e-12)
    # statistics from another split (e.g. train stats for a test evaluation)
    xb, _ = data(n=17)
    ev2 = Evaluator(model, (x, y), bn_data=(xb, torch.zeros(17, dtype=torch.long)), batch_size=6)
    p = params.get_point(model)
    loss_ref = _ref_with_bn_data(model, p, xb, x, y, 6)
    assert ev2.evaluate(p)["loss"] == pytest.approx(loss_ref, abs=1e-10)
    assert_untouched(model, snap)


def _ref_with_bn_data(model, point, xb, x, y, bs):
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    ref.train()
    with torch.no_grad():
        for xc in xb.split(bs):
            ref(xc)
        ref.eval()
        return F.cross_entropy(ref(x), y).item()


@pytest.mark.parametrize("strategy", ["auto", "loop", "vmap"])
def test_model_untouched(strategy):
    model = mlp(bn=True)
    x, y = data()
    model.train()
    model[1].eval()  # mixed flags must survive too
    snap = snapshot(model)
    ev = Evaluator(model, (x, y), batch_size=11, strategy=strategy)
    ev.evaluate(perturbed(model, 0.5, 0))
    ev.evaluate_many([perturbed(model, 0.5, i) for i in range(4)])
    Evaluator(model, (x, y), bn="eval", strategy=strategy).evaluate_many([perturbed(model, 0.1, 0)] * 2)
    assert_untouched(model, snap)


def test_auto_records_choice_and_timings():
    model, (x, y) = mlp(), data()
    ev = Evaluator(model, (x, y))
    assert ev.info["strategy"] is None
    ev.evaluate_many([perturbed(model, 0.1, i) for i in range(4)])
    t = ev.info["timing"]
    assert ev.info["strategy"] in ("loop", "vmap") and ev.strategy == ev.info["strategy"]
    assert t["loop_s"] > 0 and t["vmap_s"] > 0 and t["points"] == ev.points_per_chunk


def test_non_finite_recorded_not_raised():
    for bn in (False, True):
        model, (x, y) = mlp(bn=bn), data()
        p = params.get_point(model)
        far = params.scale(p, 1e300 * 1e10)  # overflows to inf: outputs are NaN
        for strategy in ("loop", "vmap"):
            ev = Evaluator(model, (x, y), strategy=strategy)
            r = ev.evaluate_many([p, far, p])
            assert np.isfinite(r["loss"][0]) and np.isfinite(r["loss"][2])
            assert not np.isfinite(r["loss"][1])
        assert not np.isfinite(ev.evaluate(far)["loss"])


def test_subset_point_and_callable_source():
    model, (x, y) = mlp(), data()
    full = perturbed(model, 0.3, 0)
    sub = {"0.weight": full["0.weight"]}
    ev = Evaluator(model, (x, y), batch_size=8, strategy="vmap", points_per_chunk=2)
    expected = {**params.get_point(model), **sub}
    assert ev.evaluate(sub)["loss"] == pytest.approx(ev.evaluate(expected)["loss"], abs=1e-12)
    w = model[0].weight.detach()
    seen = []

    def make(idx):
        return {"0.weight": w.unsqueeze(0) * torch.as_tensor(1.0 + 0.1 * idx, dtype=w.dtype)[:, None, None]}

    r = ev.evaluate_many(make, n=5, callback=lambda idx, res: seen.append(idx.tolist()))
    assert seen == [[0, 1], [2, 3], [4]]
    for i in range(5):
        assert r["loss"][i] == pytest.approx(ev.evaluate({"0.weight": w * (1.0 + 0.1 * i)})["loss"], abs=1e-10)


def test_docstring_examples_run():
    import losslab.evaluate

    assert doctest.testmod(losslab.evaluate, raise_on_error=False).failed == 0


def test_errors():
    model, (x, y) = mlp(), data()
    with pytest.raises(LosslabError):
        Evaluator(model, (x, y), strategy="fast")
    with pytest.raises(LosslabError):
        Evaluator(model, (x, y[:3]))
    with pytest.raises(LosslabError):
        Evaluator(model, (x, y), loss="hinge")
    ev = Evaluator(model, (x, y))
    with pytest.raises(LosslabError):
        ev.evaluate({"nope": torch.zeros(1)})
    with pytest.raises(LosslabError):
        ev.evaluate_many(lambda idx: {}, n=None)
