"""The evaluator's first-layer precomputation (``first_layer=``): exact against computing the layer.

For points theta_k = theta_0 + sum_j c_kj d_j the first affine layer's output is
T_0 + sum_j c_kj T_j; the loop with ``first_layer="precompute"`` must give the same numbers (float64,
to rounding) as ``first_layer="compute"``, and must refuse models where the layer's input could
depend on the point.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from losslab import params
from losslab.errors import LosslabError
from losslab.evaluate import Evaluator
from losslab.surface import line, plane

N = 37  # examples; chunk sizes below do not divide it


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def wide_mlp(seed: int = 0) -> nn.Module:
    g = gen(seed)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3)).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.4)
    return m


class ConvNet(nn.Module):
    def __init__(self, bn: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(4) if bn else nn.Identity()
        self.fc = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


def image_data(n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(5)
    return torch.randn(n, 2, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def flat_data(n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(6)
    return torch.randn(n, 4, 16, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def rand_like(point: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    return params.randn_like(point, generator=gen(seed))


COEFFS = np.array([[0.0, 0.0], [0.5, -1.0], [1.5, 2.0], [-0.25, 0.75], [3.0, 0.1], [-2.0, -2.0]])


def both(model: nn.Module, data, coeffs, basis, base, strategy: str = "loop", **kw):
    out = {}
    for mode in ("compute", "precompute"):
        ev = Evaluator(model, data, strategy=strategy, first_layer=mode, **kw)
        out[mode] = (ev.evaluate_combinations(coeffs, basis, base), ev)
    return out


def assert_same(r, tol: float = 1e-12) -> None:
    a, b = r["compute"][0], r["precompute"][0]
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=tol, err_msg=k)


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
@pytest.mark.parametrize("case", ["mlp", "conv", "conv_bn"])
def test_precomputed_first_layer_equals_computing_it(case, strategy):
    if case == "mlp":
        model, data = wide_mlp(), flat_data()
    else:
        torch.manual_seed(0)
        model, data = ConvNet(bn=case == "conv_bn").double(), image_data()
    base = params.get_point(model)
    d1, d2 = rand_like(base, 1), rand_like(base, 2)
    r = both(model, data, COEFFS, [d1, d2], base, strategy=strategy, batch_size=10, cache_mb=None,
             points_per_chunk=4)
    assert_same(r)
    ev = r["precompute"][1]
    assert ev.info["first_layer"]["used"] is True, ev.info["first_layer"]
    assert ev.info["first_layer"]["layer"] == ("1" if case == "mlp" else "conv")
    assert r["compute"][1].info["first_layer"]["used"] is False
    # the origin is the model itself, to rounding
    assert r["precompute"][0]["loss"][0] == pytest.approx(ev.evaluate({})["loss"], abs=1e-12)


def test_partial_directions_no_base_and_missing_bias():
    model, data = wide_mlp(), flat_data()
    base = params.get_point(model)
    # d1 moves only the first layer's weight, d2 only later layers: constant bias, constant term
    d1 = {"1.weight": rand_like(base, 3)["1.weight"]}
    d2 = {k: v for k, v in rand_like(base, 4).items() if not k.startswith("1.")}
    assert_same(both(model, data, COEFFS, [d1, d2], base))
    assert_same(both(model, data, COEFFS, [d1, d2], base, strategy="vmap"))
    # no base: (1 - a) A + a B, the first layer from both ends
    a, b = base, params.axpy(base, 0.7, rand_like(base, 5))
    c = np.array([[1 - t, t] for t in np.linspace(-0.5, 1.5, 7)])
    r = both(model, data, c, [a, b], None)
    assert_same(r)
    assert_same(both(model, data, c, [a, b], None, strategy="vmap"))
    assert r["precompute"][1].info["first_layer"]["used"] is True
    # a base without the first layer's bias while a direction has it: that bias has no base term
    base_nb = {k: v for k, v in base.items() if k != "1.bias"}
    d3 = {"1.bias": torch.ones(16, dtype=torch.float64)}
    assert_same(both(model, data, COEFFS, [d1, d3], base_nb))


def test_surfaces_agree_and_auto_uses_it_only_where_it_pays():
    model, data = wide_mlp(), flat_data()
    dx, dy = rand_like(params.get_point(model), 7), rand_like(params.get_point(model), 8)
    xs, ys = np.linspace(-1, 1, 5), np.linspace(-0.5, 1.0, 3)
    got = {m: plane(model, data, dx=dx, dy=dy, x=xs, y=ys, strategy="loop", first_layer=m, progress=False)
           for m in ("compute", "auto")}
    np.testing.assert_allclose(got["auto"].metrics["loss"], got["compute"].metrics["loss"], rtol=0, atol=1e-12)
    fl = got["auto"].meta["evaluator"]["first_layer"]
    assert fl["used"] is True and "fan-in 64" in fl["reason"]
    # a 1-D line: two terms
    ln = line(model, data, direction=dx, num=9, strategy="loop", first_layer="auto", progress=False)
    ref = line(model, data, direction=dx, num=9, strategy="loop", first_layer="compute", progress=False)
    np.testing.assert_allclose(ln.metrics["loss"], ref.metrics["loss"], rtol=0, atol=1e-12)
    # a 1-channel 3x3 conv has fan-in 9 < 16 x 3 terms: not worth precomputing under "auto"
    torch.manual_seed(0)
    small = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).double()
    x = torch.randn(N, 1, 6, 6, generator=gen(9), dtype=torch.float64)
    y = torch.randint(0, 3, (N,), generator=gen(9))
    p = params.get_point(small)
    ev = Evaluator(small, (x, y), strategy="loop")
    ev.evaluate_combinations(COEFFS, [rand_like(p, 1), rand_like(p, 2)], p)
    assert ev.info["first_layer"]["used"] is False
    assert "fan-in 9 < 16 x 3 terms" in ev.info["first_layer"]["reason"]


class RawScale(nn.Module):
    """A parameter used directly in forward, before the first Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5, dtype=torch.float64))
        self.fc = nn.Linear(64, 3).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1) * self.scale)


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 64).double()
        self.b = nn.Linear(64, 64).double()
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x.flatten(1))))[:, :3]


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 64).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.fc(x.flatten(1))))[:, :3]


class Sneaky(nn.Module):
    """A parametrised module called through ``.forward`` (no hooks fire) before the first layer."""

    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Linear(64, 64).double()
        self.fc = nn.Linear(64, 3).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.pre.forward(x.flatten(1))))


@pytest.mark.parametrize(
    "make, reason",
    [
        (RawScale, "not owned by a leaf module"),
        (Tied, "shared"),
        (Twice, "runs more than once"),
        (lambda: nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64), nn.Linear(64, 3)).double(), "BatchNorm1d, not Linear"),
        (Sneaky, "validation failed"),
    ],
)
def test_refuses_models_whose_first_layer_input_may_depend_on_the_point(make, reason):
    torch.manual_seed(0)
    model = make()
    data = flat_data()
    base = params.get_point(model)
    basis = [rand_like(base, 1), rand_like(base, 2)]
    r = both(model, data, COEFFS, basis, base)
    assert_same(r, tol=0.0)  # nothing precomputed: the very same computation
    note = r["precompute"][1].info["first_layer"]
    assert note["used"] is False and reason in note["reason"], note


def test_model_untouched_and_cache_follows_the_directions():
    model, data = wide_mlp(), flat_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = params.get_point(model)
    ev = Evaluator(model, data, strategy="loop", first_layer="precompute")
    r1 = ev.evaluate_combinations(COEFFS, [rand_like(base, 1), rand_like(base, 2)], base)
    r2 = ev.evaluate_combinations(COEFFS, [rand_like(base, 3), rand_like(base, 4)], base)  # new terms
    ref = Evaluator(model, data, strategy="loop", first_layer="compute")
    np.testing.assert_allclose(r2["loss"], ref.evaluate_combinations(COEFFS, [rand_like(base, 3), rand_like(base, 4)],
                                                                       base)["loss"], rtol=0, atol=1e-12)
    assert not np.allclose(r1["loss"], r2["loss"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(LosslabError, match="first_layer"):
        Evaluator(model, data, first_layer="yes")  # type: ignore[arg-type]


def test_memory_budget_bounds_the_terms():
    model, data = wide_mlp(), flat_data(n=400)
    base = params.get_point(model)
    # terms: 3 x 400 x 16 float64 = 150 KiB; half of a 0.1 MiB budget is less
    ev = Evaluator(model, data, strategy="loop", first_layer="precompute", memory_budget_mb=0.1)
    ev.evaluate_combinations(COEFFS, [rand_like(base, 1), rand_like(base, 2)], base)
    assert ev.info["first_layer"]["used"] is False and "memory budget" in ev.info["first_layer"]["reason"]


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_resumed_surface_with_precomputed_first_layer_is_bit_identical(tmp_path, strategy):
    model, data = wide_mlp(), flat_data()
    dx, dy = rand_like(params.get_point(model), 7), rand_like(params.get_point(model), 8)
    kw = dict(dx=dx, dy=dy, x=np.linspace(-1, 1, 6), y=np.linspace(-0.5, 1, 4), points_per_chunk=5,
              strategy=strategy, first_layer="precompute", progress=False)
    full = plane(model, data, **kw)
    assert full.meta["evaluator"]["first_layer"]["used"] is True
    ckpt = tmp_path / "ckpt"
    part = plane(model, data, **kw, checkpoint_path=ckpt, max_points=7)  # stops inside a block
    assert part.n_done == 7 and not part.complete
    rest = plane(model, data, **{k: v for k, v in kw.items() if k != "first_layer"}, resume_from=ckpt)
    assert rest.complete and rest.meta["evaluator"]["first_layer"]["requested"] == "precompute"
    assert np.array_equal(rest.metrics["loss"], full.metrics["loss"])
    assert np.array_equal(rest.metrics["accuracy"], full.metrics["accuracy"])
