"""Tests for losslab.surface: lines, planes, layout, resumption, save/load."""
from __future__ import annotations

import doctest
import json
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from losslab import params
from losslab.errors import LosslabError
from losslab.evaluate import Evaluator
from losslab.surface import SurfaceResult, line, plane


# ---- tiny float64 models and helpers (kept local: test modules do not import each other) ----


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


def conv() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 3)
    ).double()


def data(image: bool = False, n: int = 30):
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 1, 4, 4, generator=g) if image else torch.randn(n, 5, generator=g)
    return x.double(), torch.randint(0, 3, (n,), generator=g)


def snapshot(model: nn.Module):
    return (
        {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        [(name, m.training) for name, m in model.named_modules()],
    )


def assert_untouched(model: nn.Module, snap) -> None:
    state, modes = snap
    now = model.state_dict(keep_vars=True)
    assert now.keys() == state.keys()
    for k, v in state.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k].detach(), v), k
    assert [(name, m.training) for name, m in model.named_modules()] == modes


def directions(model: nn.Module, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    p = params.get_point(model)
    return params.randn_like(p, generator=g), params.randn_like(p, generator=g)


@dataclass
class FakeDirection:
    """Stands in for losslab.directions objects: anything with .vector and .meta."""

    vector: dict
    meta: dict = field(default_factory=dict)


def test_origin_equals_model_loss():
    model, (x, y) = mlp(), data()
    dx, dy = directions(model)
    with torch.no_grad():
        expected = F.cross_entropy(model(x), y).item()
    r1 = line(model, (x, y), direction=dx, num=5, progress=False, batch_size=7)
    assert r1.x[2] == 0.0 and r1.metrics["loss"][2] == pytest.approx(expected, abs=1e-6)
    r2 = plane(model, (x, y), dx=dx, dy=dy, nx=3, ny=5, progress=False)
    assert r2.metrics["loss"][2, 1] == pytest.approx(expected, abs=1e-6)
    assert r2.metrics["loss"].shape == (5, 3) and r2.done.all()


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_non_square_grid_layout(strategy):
    model, (x, y) = mlp(), data()
    dx, dy = directions(model)
    xs, ys = np.linspace(-1, 2, 5), np.linspace(0, 1, 3)
    r = plane(model, (x, y), dx=dx, dy=dy, x=xs, y=ys, strategy=strategy, points_per_chunk=4, progress=False)
    assert r.metrics["loss"].shape == (3, 5) and r.shape == (3, 5)
    ev = Evaluator(model, (x, y), strategy="loop")
    origin = params.get_point(model)
    for j, i in [(0, 0), (0, 4), (2, 0), (2, 4), (1, 2)]:
        direct = ev.evaluate(params.axpy(params.axpy(origin, float(xs[i]), dx), float(ys[j]), dy))
        assert r.metrics["loss"][j, i] == pytest.approx(direct["loss"], abs=1e-10)
        assert r.metrics["accuracy"][j, i] == pytest.approx(direct["accuracy"], abs=1e-12)


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, strategy):
    model = mlp(bn=True)
    x, y = data()
    dx, dy = directions(model)
    kw = dict(
        dx=dx, dy=dy, x=np.linspace(-1, 1, 7), y=np.linspace(-0.5, 1, 4), points_per_chunk=5, batch_size=7,
        strategy=strategy, progress=False,
    )
    full = plane(model, (x, y), **kw)
    ckpt = tmp_path / "ckpt"
    calls = []

    class Stop(Exception):
        pass

    def interrupt(partial: SurfaceResult) -> None:
        calls.append(partial.n_done)
        if len(calls) == 2:
            raise Stop

    with pytest.raises(Stop):
        plane(model, (x, y), **kw, checkpoint_path=ckpt, resume_from=ckpt, callback=interrupt)
    saved = SurfaceResult.load(ckpt)
    assert saved.n_done == 10 and not saved.complete
    assert np.isnan(saved.metrics["loss"][~saved.done]).all()
    # a second partial step via max_points, then the rest
    part = plane(model, (x, y), **kw, checkpoint_path=ckpt, resume_from=ckpt, max_points=5)
    assert part.n_done == 15
    done = plane(model, (x, y), **kw, checkpoint_path=ckpt, resume_from=ckpt)
    assert done.complete
    for k in full.metrics:
        assert np.array_equal(done.metrics[k], full.metrics[k]), k
    assert done.meta["timing"]["points_evaluated"] == 28
    # resuming a finished surface evaluates nothing; from an in-memory result too
    again = plane(model, (x, y), **kw, resume_from=done, callback=lambda r: pytest.fail("evaluated"))
    assert np.array_equal(again.metrics["loss"], full.metrics["loss"])


def test_resume_reuses_recorded_strategy_and_chunking(tmp_path):
    model, (x, y) = mlp(), data()
    dx, dy = directions(model)
    ckpt = tmp_path / "auto"
    first = plane(model, (x, y), dx=dx, dy=dy, nx=4, ny=4, points_per_chunk=3, progress=False, checkpoint_path=ckpt, max_points=6)
    chosen = first.meta["evaluator"]["strategy"]
    assert chosen in ("loop", "vmap") and first.meta["evaluator"]["timing"]["loop_s"] > 0
    rest = plane(model, (x, y), dx=dx, dy=dy, nx=4, ny=4, progress=False, resume_from=ckpt)
    assert rest.complete
    assert rest.meta["evaluator"]["strategy"] == chosen and rest.meta["evaluator"]["points_per_chunk"] == 3
    explicit = plane(model, (x, y), dx=dx, dy=dy, nx=4, ny=4, points_per_chunk=3, strategy=chosen, progress=False)
    assert np.array_equal(rest.metrics["loss"], explicit.metrics["loss"])


def test_resume_rejects_a_different_grid_or_direction(tmp_path):
    model, (x, y) = mlp(), data()
    dx, dy = directions(model)
    ckpt = tmp_path / "c.npz"
    plane(model, (x, y), dx=dx, dy=dy, nx=4, ny=3, progress=False, checkpoint_path=ckpt, max_points=3)
    with pytest.raises(LosslabError, match="x coordinates"):
        plane(model, (x, y), dx=dx, dy=dy, nx=5, ny=3, progress=False, resume_from=ckpt)
    with pytest.raises(LosslabError, match="fingerprint"):
        plane(model, (x, y), dx=dy, dy=dx, nx=4, ny=3, progress=False, resume_from=ckpt)
    with pytest.raises(LosslabError, match="kind"):
        line(model, (x, y), direction=dx, alphas=np.linspace(-1, 1, 4), progress=False, resume_from=ckpt)


def test_model_untouched_by_line_and_plane(tmp_path):
    model = mlp(bn=True)
    x, y = data()
    model.train()
    snap = snapshot(model)
    dx, dy = directions(model)
    plane(model, (x, y), dx=dx, dy=dy, nx=3, ny=2, progress=False, checkpoint_path=tmp_path / "p")
    line(model, (x, y), direction=dx, num=3, progress=False, strategy="vmap")
    other = mlp(bn=True, seed=3)
    line(model, (x, y), start=model, end=other, num=3, progress=False)
    assert_untouched(model, snap)
    model.eval()
    snap = snapshot(model)
    line(model, (x, y), direction=dx, num=3, progress=False, bn="eval")
    assert_untouched(model, snap)


@pytest.mark.parametrize("make", [mlp, conv], ids=["mlp", "conv"])
def test_line_between_models_hits_endpoints(make):
    a = make()
    torch.manual_seed(7)
    b = make()
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x, y = data(image=make is conv)
    r = line(a, (x, y), start=a, end=b, alphas=np.linspace(-0.5, 1.5, 9), progress=False, batch_size=8)
    ev = Evaluator(a, (x, y), batch_size=8)
    assert r.x[2] == 0.0 and r.x[6] == 1.0
    assert r.metrics["loss"][2] == pytest.approx(ev.evaluate(params.get_point(a))["loss"], abs=1e-10)
    assert r.metrics["loss"][6] == pytest.approx(ev.evaluate(params.get_point(b))["loss"], abs=1e-10)
    # points instead of modules, and the default a-range [0, 1]
    r2 = line(a, (x, y), start=params.get_point(a), end=params.get_point(b), num=3, progress=False, batch_size=8)
    assert r2.x.tolist() == [0.0, 0.5, 1.0]
    np.testing.assert_allclose(r2.metrics["loss"][[0, 2]], r.metrics["loss"][[2, 6]], atol=1e-12)


def test_line_along_direction_object_and_subset():
    model, (x, y) = mlp(), data()
    dx, _ = directions(model)
    sub = {"2.weight": dx["2.weight"]}  # only one layer moves
    d = FakeDirection(sub, {"seed": 42, "norm": "filter"})
    r = line(model, (x, y), direction=d, alphas=[-0.5, 0.0, 2.0], progress=False, meta={"note": "test"})
    ev = Evaluator(model, (x, y))
    w = model[2].weight.detach()
    for i, a in enumerate([-0.5, 0.0, 2.0]):
        assert r.metrics["loss"][i] == pytest.approx(ev.evaluate({"2.weight": w + a * sub["2.weight"]})["loss"], abs=1e-10)
    assert r.meta["directions"][0]["meta"]["seed"] == 42 and r.meta["seeds"] == [42]
    assert r.meta["user"] == {"note": "test"}


def test_nan_at_far_point_recorded():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    x, y = data()
    dx, _ = directions(model)
    r = line(model, (x, y), direction=dx, alphas=[0.0, 1.0, 1e300], progress=False)
    assert r.done.all()
    assert np.isfinite(r.metrics["loss"][:2]).all() and not np.isfinite(r.metrics["loss"][2])


def test_save_load_round_trip_plain_numpy_json(tmp_path):
    model, (x, y) = mlp(), data()
    dx, dy = directions(model)
    r = plane(model, (x, y), dx=FakeDirection(dx, {"seed": 1}), dy=dy, nx=4, ny=3, progress=False, max_points=7)
    path = r.save(tmp_path / "surf")
    assert path == tmp_path / "surf.npz" and (tmp_path / "surf.json").exists()
    back = SurfaceResult.load(tmp_path / "surf.npz")
    assert back.kind == "plane" and np.array_equal(back.x, r.x) and np.array_equal(back.y, r.y)
    assert np.array_equal(back.done, r.done) and back.n_done == 7
    for k in r.metrics:
        assert np.array_equal(back.metrics[k], r.metrics[k], equal_nan=True)
    assert back.meta == json.loads(json.dumps(r.meta))
    # without losslab: plain numpy + json, no pickles
    with np.load(tmp_path / "surf.npz", allow_pickle=False) as z:
        assert z["metric__loss"].shape == (3, 4) and z["done"].dtype == np.bool_
        assert np.array_equal(z["metric__loss"], r.metrics["loss"], equal_nan=True)
    desc = json.loads((tmp_path / "surf.json").read_text())
    assert desc["kind"] == "plane" and desc["metrics"] == ["loss", "accuracy"] and desc["shape"] == [3, 4]
    assert desc["meta"]["directions"][0]["meta"]["seed"] == 1
    assert desc["meta"]["versions"]["torch"] == torch.__version__
    assert desc["meta"]["timing"]["points_per_s"] > 0
    line_r = line(model, (x, y), direction=dx, num=4, progress=False)
    line_r.save(tmp_path / "line.json")
    assert SurfaceResult.load(tmp_path / "line").y is None


def test_docstring_examples_run():
    import losslab.surface

    assert doctest.testmod(losslab.surface, raise_on_error=False).failed == 0


def test_prebuilt_evaluator_and_argument_errors():
    model, (x, y) = mlp(), data()
    dx, dy = directions(model)
    ev = Evaluator(model, (x, y), strategy="loop")
    r = plane(model, dx=dx, dy=dy, nx=2, ny=2, evaluator=ev, progress=False)
    assert r.meta["evaluator"]["strategy"] == "loop"
    with pytest.raises(LosslabError):
        plane(model, dx=dx, dy=dy, evaluator=ev, batch_size=3, progress=False)
    with pytest.raises(LosslabError):
        line(model, (x, y), progress=False)
    with pytest.raises(LosslabError):
        line(model, (x, y), direction=dx, start=model, progress=False)
    with pytest.raises(LosslabError):
        line(model, (x, y), direction={"0.weight": torch.zeros(2, 2, dtype=torch.float64)}, progress=False)


def test_loop_builds_points_one_at_a_time_into_one_buffer(monkeypatch):
    """With strategy="loop" a plane never materialises a block of stacked points; each grid point
    is written into the same buffer, and the values equal points built explicitly."""
    import losslab.evaluate as E

    model, (x, y) = mlp(), data()
    dx, dy = directions(model)
    monkeypatch.setattr(E._Combinations, "stacked", lambda *a: pytest.fail("stacked points built"))
    seen = []
    real = E.Evaluator._forward_one

    def record(self, tensors, xb):
        seen.append(tensors["0.weight"].data_ptr())
        return real(self, tensors, xb)

    monkeypatch.setattr(E.Evaluator, "_forward_one", record)
    xs, ys = np.linspace(-1, 1, 4), np.linspace(0, 2, 3)
    r = plane(model, (x, y), dx=dx, dy=dy, x=xs, y=ys, strategy="loop", points_per_chunk=5, progress=False)
    monkeypatch.undo()
    # the activation probe at setup, then 12 points in blocks of 5, 5, 2: one buffer per block
    assert len(seen) == 1 + 12
    blocks = [seen[1:6], seen[6:11], seen[11:]]
    assert all(len(set(b)) == 1 for b in blocks) and len({b[0] for b in blocks}) <= 3
    ev = Evaluator(model, (x, y), strategy="loop")
    origin = params.get_point(model)
    for j in range(3):
        for i in range(4):
            # the documented arithmetic: torch.add(origin, dx, alpha=x), then += y dy (alpha)
            pt = {k: torch.add(origin[k], dx[k], alpha=float(xs[i])).add_(dy[k], alpha=float(ys[j])) for k in origin}
            assert r.metrics["loss"][j, i] == ev.evaluate(pt)["loss"]  # bit-identical
