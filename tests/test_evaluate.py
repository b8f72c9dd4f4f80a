"""Tests for losslab.evaluate: exact references on tiny float64 models."""
from __future__ import annotations

import copy
import doctest
import sys
from typing import ClassVar

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


def reference_bn(model: nn.Module, point, x, y, batch_size: int, bn_x=None) -> tuple[float, float]:
    """Deep-copied model, BN stats reset, momentum=None, train-mode pass over chunks, the averaged variance
    scaled from unbiased to biased ((m-1)/m, m the mean number of values per channel in a chunk), then eval."""
    ref = copy.deepcopy(model)
    spatial = {}
    with torch.no_grad():
        for k, v in ref.named_parameters():
            v.copy_(point[k])
        bns = [m for m in ref.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.register_forward_pre_hook(lambda mod, inp: spatial.__setitem__(mod, inp[0][0, 0].numel()))
        ref.train()
        chunks = (x if bn_x is None else bn_x).split(batch_size)
        for xc in chunks:
            ref(xc)
        for m in bns:
            count = sum(len(c) for c in chunks) / len(chunks) * spatial[m]
            m.running_var.mul_((count - 1) / count)
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
    return reference_bn(model, point, x, y, bs, bn_x=xb)[0]


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
    assert t["loop_s"] > 0 and t["vmap_s"] > 0 and t["loop_points"] == 1
    assert 2 <= t["points"] <= 4 and t["clock"] == "cpu"  # one torch thread on a CPU
    assert t["vmap_s_per_point"] == pytest.approx(t["vmap_s"] / t["points"])
    assert (ev.strategy == "vmap") == (t["vmap_s_per_point"] < t["loop_s_per_point"])


class CountingLinear(nn.Linear):
    """Records a fingerprint of every weight it runs with (functional_call swaps the tensors in)."""

    seen: ClassVar[list] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if not torch._C._functorch.is_batchedtensor(w):
            CountingLinear.seen.append(("loop", float(w.detach().double().sum()), x.shape[0]))
        else:
            CountingLinear.seen.append(("vmap", None, x.shape[0]))
        return super().forward(x)


@pytest.mark.parametrize("winner", ["loop", "vmap"])
def test_auto_probe_never_repeats_points_and_keeps_exact_results(winner, monkeypatch):
    """The probe evaluates each given point at most once per strategy (no padding by repetition),
    and what it keeps equals an explicit evaluation with the chosen strategy bit for bit."""
    import losslab.evaluate as E

    torch.manual_seed(0)
    model = nn.Sequential(CountingLinear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = data()
    pts = [perturbed(model, 0.1 * (i + 1), i) for i in range(3)]  # fewer points than a group
    # force the outcome of the timing: the loser's clock reads 1 s more
    real = E.Evaluator._run_loop if winner == "vmap" else E.Evaluator._run_vmap
    clock = [0.0]

    def slow(self, *a, **k):
        clock[0] += 1.0
        return real(self, *a, **k)

    monkeypatch.setattr(E.Evaluator, "_run_loop" if winner == "vmap" else "_run_vmap", slow)
    monkeypatch.setattr(E.Evaluator, "_clock", lambda self: ("cpu", lambda: clock[0]))
    CountingLinear.seen = []
    ev = Evaluator(model, (x, y), points_per_chunk=8, batch_size=11)
    CountingLinear.seen = []
    got = ev.evaluate_many(pts)
    monkeypatch.undo()
    t = ev.info["timing"]
    assert ev.strategy == winner and t["points"] == 2  # 3 // 4 < 2: two points, never padded to 8
    # the probe's fixed-cost measurement: point 0 on 2 examples (best of 5)
    assert [(k, n) for k, _, n in CountingLinear.seen if n == 2] == [("loop", 2)] * 5
    loop_sums = [s for kind, s, n in CountingLinear.seen if kind == "loop" and n != 2]
    n_chunks = len(ev._eval_chunks(ev.loop_batch_size)[0])
    # each loop forward on the data ran on one of the given points (n_chunks each), none repeated
    assert len(set(loop_sums)) == len(loop_sums) // n_chunks
    if winner == "loop":
        assert t["kept_points"] == 1 and len(loop_sums) == 3 * n_chunks  # point 0 once, then 1 and 2
    else:
        assert t["kept_points"] == 0  # 2 of a group of 3: the group is evaluated whole
    ref = Evaluator(model, (x, y), points_per_chunk=8, batch_size=11, strategy=winner).evaluate_many(pts)
    for name in ("loss", "accuracy"):
        assert np.array_equal(got[name], ref[name]), name


@pytest.mark.parametrize("fixed,measured", [(0.0, False), (5.0, True)])
def test_auto_measures_vmap_only_when_the_loop_has_fixed_costs(monkeypatch, fixed, measured):
    """Loop cost = fixed + examples: with a fixed cost under 10% of a point, vmap is not run."""
    import losslab.evaluate as E

    model, (x, y) = mlp(), data()
    real_loop, real_vmap = E.Evaluator._run_loop, E.Evaluator._run_vmap
    clock = [0.0]
    vmap_calls = []

    def costed(self, points, xs, bxs, ys):
        clock[0] += fixed + sum(len(c) for c in xs)
        return real_loop(self, points, xs, bxs, ys)

    def counted(self, *a, **k):
        vmap_calls.append(1)
        return real_vmap(self, *a, **k)

    monkeypatch.setattr(E.Evaluator, "_run_loop", costed)
    monkeypatch.setattr(E.Evaluator, "_run_vmap", counted)
    monkeypatch.setattr(E.Evaluator, "_clock", lambda self: ("cpu", lambda: clock[0]))
    ev = Evaluator(model, (x, y))
    got = ev.evaluate_many([perturbed(model, 0.1, i) for i in range(4)])
    monkeypatch.undo()
    t = ev.info["timing"]
    assert t["overhead_s"] == fixed + 2 and t["loop_s"] == fixed + N  # (best of 5 for the overhead)
    assert t["vmap_measured"] is measured and bool(vmap_calls) is measured
    assert ev.strategy == ("vmap" if measured else "loop")  # vmap's clock does not move
    assert np.isfinite(got["loss"]).all()


def narrow_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).double()  # largest activation 128 B


@pytest.mark.parametrize("ppc,loop_cost,expect_kept,expect_calls", [
    (2, 1.0, 2, [2, 2, 2, 2, 2, 2, 2, 2]),  # probe m = 2 = the first group: kept whole, not redone
    (8, 1e-3, 3, [3, 1, 3, 2, 3, 3, 2]),  # probe m = 4 in calls of 3: the complete call is kept
])
def test_auto_probe_keeps_complete_vmap_calls(monkeypatch, ppc, loop_cost, expect_kept, expect_calls):
    import losslab.evaluate as E

    model = narrow_mlp()
    x, y = data(n=300)
    pts = [perturbed(model, 0.1 * (i + 1), i) for i in range(16)]
    real_loop, real_vmap = E.Evaluator._run_loop, E.Evaluator._run_vmap
    clock = [0.0]
    calls = []

    def slow(self, *a, **k):
        clock[0] += loop_cost
        return real_loop(self, *a, **k)

    def counted(self, stacked, *a, **k):
        calls.append(next(iter(stacked.values())).shape[0])
        return real_vmap(self, stacked, *a, **k)

    monkeypatch.setattr(E.Evaluator, "_run_loop", slow)
    monkeypatch.setattr(E.Evaluator, "_run_vmap", counted)
    monkeypatch.setattr(E.Evaluator, "_clock", lambda self: ("cpu", lambda: clock[0]))
    cache = 3 * 300 * 128 / 2**20  # three points of 300 examples per call
    ev = Evaluator(model, (x, y), points_per_chunk=ppc, cache_mb=cache)
    assert ev.loop_batch_size == ev.vmap_batch_size == 300 and ev.vmap_points_per_call == min(3, ppc)
    got = ev.evaluate_stacked(params.stack(pts))
    monkeypatch.undo()
    assert ev.info["timing"]["vmap_error"] is None
    assert ev.strategy == "vmap" and ev.info["timing"]["kept_points"] == expect_kept
    assert calls == expect_calls
    ref = Evaluator(model, (x, y), points_per_chunk=ppc, cache_mb=cache, strategy="vmap")
    want = ref.evaluate_stacked(params.stack(pts))
    for name in ("loss", "accuracy"):
        assert np.array_equal(got[name], want[name]), name
    loop = Evaluator(model, (x, y), strategy="loop").evaluate_many(pts)
    np.testing.assert_allclose(got["loss"], loop["loss"], rtol=0, atol=1e-12)


def test_evaluate_combinations_equals_stacked_points():
    model = mlp(bn=True)
    x, y = data()
    g = torch.Generator().manual_seed(3)
    base = params.get_point(model)
    d1 = params.randn_like(base, generator=g)
    d2 = {"0.weight": torch.randn(8, 5, dtype=torch.float64, generator=g)}  # a subset of the keys
    coeffs = np.array([[0.0, 0.0], [0.5, -1.0], [1.5, 2.0], [-0.25, 0.75], [3.0, 0.1]])
    stacked = {}
    for k in d1:
        c0 = torch.as_tensor(coeffs[:, 0], dtype=torch.float64).reshape(-1, *[1] * d1[k].dim())
        v = base[k].unsqueeze(0) + c0 * d1[k].unsqueeze(0)
        if k in d2:
            v = v + torch.as_tensor(coeffs[:, 1], dtype=torch.float64).reshape(-1, 1, 1) * d2[k].unsqueeze(0)
        stacked[k] = v
    for strategy in ("loop", "vmap"):
        ev = Evaluator(model, (x, y), strategy=strategy, points_per_chunk=2, batch_size=7)
        got = ev.evaluate_combinations(coeffs, [d1, d2], base)
        ref = ev.evaluate_stacked(stacked)
        for name in ("loss", "accuracy"):
            assert np.array_equal(got[name], ref[name]), (strategy, name)
        if strategy == "loop":  # the same per-point code as evaluate()
            assert got["loss"][0] == ev.evaluate({})["loss"]
        assert got["loss"][0] == pytest.approx(ev.evaluate({})["loss"], abs=1e-12)
    # no base: an interpolation (1 - a) A + a B hits both ends
    a, b = params.get_point(model), perturbed(model, 0.5, 1)
    ev = Evaluator(model, (x, y), strategy="loop")
    r = ev.evaluate_combinations([[1.0, 0.0], [0.0, 1.0]], [a, b])
    assert r["loss"][0] == pytest.approx(ev.evaluate(a)["loss"], abs=1e-12)
    assert r["loss"][1] == pytest.approx(ev.evaluate(b)["loss"], abs=1e-12)
    with pytest.raises(LosslabError):
        ev.evaluate_combinations(np.zeros((2, 3)), [a, b])
    with pytest.raises(LosslabError):
        ev.evaluate_combinations(np.zeros((2, 1)), [{"0.weight": torch.zeros(3, 3, dtype=torch.float64)}])


def test_cache_chunks_respect_the_budget_and_the_setting():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 256), nn.ReLU(), nn.Linear(256, 3))  # largest activation: 1 KiB/example
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3000, 5, generator=g), torch.randint(0, 3, (3000,), generator=g)
    ev = Evaluator(model, (x, y), cache_mb=0.5, points_per_chunk=4)
    assert ev.info["max_activation_bytes_per_example"] == 256 * 4
    assert ev.batch_size == 3000 and ev.loop_batch_size == ev.vmap_batch_size == 512 and ev.vmap_points_per_call == 1
    xs, ys = ev._eval_chunks(ev.loop_batch_size)
    assert len(xs) == 6 and {len(c) for c in xs} == {500} and sum(len(c) for c in ys) == 3000
    # the memory budget stays the upper bound; a tiny cache is floored at 64 examples
    small = Evaluator(model, (x, y), cache_mb=1e-3, memory_budget_mb=0.1)
    assert small.batch_size < 64 and small.loop_batch_size == small.batch_size
    floor = Evaluator(model, (x, y), cache_mb=1e-3)
    assert floor.loop_batch_size == 64
    off = Evaluator(model, (x, y), cache_mb=None, batch_size=1000)
    assert off.loop_batch_size == off.vmap_batch_size == 1000 and off.info["cache_mb"] is None
    default = Evaluator(model, (x, y))
    assert default.cache_mb == 4.0  # CPU default
    if sys.platform.startswith("linux"):  # glibc thresholds raised above a chunk's activations
        w = default.bytes_per_example * default.loop_batch_size
        assert default.allocator_warmup_bytes == min(max(w, 4 * 2**20), 30 * 2**20)
    assert off.allocator_warmup_bytes == 0 and off.info["allocator_warmup_bytes"] == 0
    ref = off.evaluate({})["loss"]
    for e in (ev, small, floor):
        assert e.evaluate({})["loss"] == pytest.approx(ref, rel=1e-5)
        assert e.evaluate_many([params.get_point(model)] * 2)["loss"] == pytest.approx([ref] * 2, rel=1e-5)
    with pytest.raises(LosslabError):
        Evaluator(model, (x, y), cache_mb=0)
    with pytest.raises(LosslabError):
        Evaluator(model, (x, y), cache_mb="big")


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


class TokenNet(nn.Module):
    """Integer token ids -> embedding -> mean -> logits (inputs that must stay integers)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(x).mean(1))


class DictNet(nn.Module):
    """Returns ``{"logits": ...}`` as many library models do."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.fc(x)}


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_integer_token_inputs(strategy):
    from losslab.data import from_tensors

    g = torch.Generator().manual_seed(5)
    x, y = torch.randint(0, 11, (N, 4), generator=g), torch.randint(0, 3, (N,), generator=g)
    b = from_tensors(x, y, x_dtype=None)
    assert b.train.x.dtype == torch.int64 and torch.equal(b.train.x, x)
    torch.manual_seed(0)
    model = TokenNet().double()
    p = perturbed(model, 0.1, 1)
    r = Evaluator(model, b.train, strategy=strategy, batch_size=7).evaluate_many([p, params.get_point(model)])
    with torch.no_grad():
        out = torch.func.functional_call(model, p, (x,))
    assert r["loss"][0] == pytest.approx(float(F.cross_entropy(out, y)), abs=1e-12)
    assert r["accuracy"][0] == pytest.approx(float((out.argmax(1) == y).double().mean()), abs=1e-12)


def test_dict_outputs_need_a_loss_callable_and_labels_must_fit_the_outputs():
    torch.manual_seed(0)
    model = DictNet().double()
    x, y = data()
    with pytest.raises(LosslabError, match=r"returns a dict with keys \['logits'\], not a tensor") as info:
        Evaluator(model, (x, y))
    assert "\n" not in str(info.value)
    loss = lambda o, t: F.cross_entropy(o["logits"], t)  # noqa: E731
    acc = lambda o, t: (o["logits"].argmax(1) == t).double().mean()  # noqa: E731
    ev = Evaluator(model, (x, y), loss=loss, metrics={"acc": acc}, batch_size=7)
    assert ev.strategy == "loop"  # a non-tensor output is evaluated one point at a time
    p = perturbed(model, 0.1, 2)
    r = ev.evaluate(p)
    with torch.no_grad():
        logits = torch.func.functional_call(model, p, (x,))["logits"]
    assert r["loss"] == pytest.approx(float(F.cross_entropy(logits, y)), abs=1e-12)
    assert r["acc"] == pytest.approx(float((logits.argmax(1) == y).double().mean()), abs=1e-12)
    with pytest.raises(LosslabError, match="vmap"):
        Evaluator(model, (x, y), loss=loss, strategy="vmap")
    # labels beyond the model's classes: one line instead of an IndexError deep in cross_entropy
    with pytest.raises(LosslabError, match="outputs 3 classes but the labels go up to 5"):
        Evaluator(mlp(), (x, torch.where(y == 2, 5, y)))
