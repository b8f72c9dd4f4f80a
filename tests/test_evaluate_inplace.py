"""The evaluator's in-place combination path (points written into preallocated buffers, reused across
calls) and its measured chunk sizes, against plain PyTorch on a tiny float64 CNN with BatchNorm."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from losslab import params
from losslab.evaluate import Evaluator
from losslab.surface import plane

DT = torch.float64


def cnn() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    ).to(DT)
    with torch.no_grad():  # non-trivial running statistics
        m.train()
        m(torch.randn(64, 1, 16, 16, dtype=DT))
    return m.eval()


def data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 16, 16, dtype=DT, generator=g), torch.randint(0, 3, (n,), generator=g)


def directions(model: nn.Module) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(2)
    base = params.get_point(model)
    return [params.randn_like(base, generator=g), params.randn_like(base, generator=g)]


def reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, coeffs: np.ndarray,
              dirs: list[dict[str, torch.Tensor]], bn: str, bn_chunk: int) -> np.ndarray:
    """The old path, in plain PyTorch: each point built out of place as (base + c1 d1) + c2 d2 (products
    rounded first), loaded into a model copy; BatchNorm statistics recomputed as a cumulative average
    over chunks of ``bn_chunk`` (momentum 1/q), then one full-batch eval forward."""
    net = copy.deepcopy(model)
    base = {k: v.detach().clone() for k, v in net.named_parameters()}
    out = []
    with torch.no_grad():
        for c1, c2 in coeffs:
            for k, p in net.named_parameters():
                p.copy_((base[k] + float(c1) * dirs[0][k]) + float(c2) * dirs[1][k])
            if bn == "recompute":
                bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
                for m in bns:
                    m.reset_running_stats()
                    m.train()
                for q, xc in enumerate(x.split(bn_chunk), 1):
                    for m in bns:
                        m.momentum = 1.0 / q
                    net(xc)
                net.eval()
            out.append(F.cross_entropy(net(x), y).item())
    return np.array(out)


COEFFS = np.array([[0.0, 0.0], [0.5, -1.0], [1.5, 0.25], [-0.75, 0.5], [0.1, 2.0], [-1.0, -1.0], [0.3, 0.3]])


@pytest.mark.parametrize("bn", ["eval", "recompute"])
@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_in_place_combinations_equal_the_old_path(bn, strategy):
    model = cnn()
    x, y = data(40)
    dirs = directions(model)
    base = params.get_point(model)
    ev = Evaluator(model, (x, y), bn=bn, strategy=strategy, batch_size=16, points_per_chunk=3)
    got = ev.evaluate_combinations(COEFFS, dirs, base)["loss"]
    # the old path: every point built out of place, (base + c1 d1) + c2 d2, and evaluated as given
    old = [{k: (base[k] + float(c1) * dirs[0][k]) + float(c2) * dirs[1][k] for k in base} for c1, c2 in COEFFS]
    np.testing.assert_allclose(got, ev.evaluate_many(old)["loss"], rtol=0, atol=1e-12)
    if bn == "eval":  # and plain PyTorch (BatchNorm recompute's definition is the evaluator's: see its tests)
        np.testing.assert_allclose(got, reference(model, x, y, COEFFS, dirs, bn, bn_chunk=16), rtol=0, atol=1e-12)
    # a second call with the same directions reuses the buffers (no new source) and agrees bit for bit
    src = ev._combinations[2]
    again = ev.evaluate_combinations(COEFFS[::-1], dirs, base)["loss"]
    assert ev._combinations[2] is src
    assert np.array_equal(again, got[::-1])
    # directions changed in place are seen (their version moved): a new source, new values
    with torch.no_grad():
        dirs[0]["0.weight"].mul_(2.0)
    moved = ev.evaluate_combinations(COEFFS, dirs, base)["loss"]
    assert ev._combinations[2] is not src
    old = [{k: (base[k] + float(c1) * dirs[0][k]) + float(c2) * dirs[1][k] for k in base} for c1, c2 in COEFFS]
    np.testing.assert_allclose(moved, ev.evaluate_many(old)["loss"], rtol=0, atol=1e-12)
    assert np.abs(moved - got).max() > 1e-6


def test_surface_blocks_allocate_the_point_buffers_once(monkeypatch):
    """A plane is evaluated block by block; the loop's point buffers are allocated once, not per block."""
    import losslab.evaluate._sources as S

    model = cnn()
    x, y = data(24)
    dirs = directions(model)
    made = []
    real = S._Combinations.__init__

    def count(self, *a, **k):
        made.append(1)
        real(self, *a, **k)

    monkeypatch.setattr(S._Combinations, "__init__", count)
    seen = set()
    real_fwd = Evaluator._forward_one

    def record(self, tensors, xb):
        seen.add(tensors["0.weight"].data_ptr())
        return real_fwd(self, tensors, xb)

    monkeypatch.setattr(Evaluator, "_forward_one", record)
    xs = np.linspace(-1, 1, 4)
    r = plane(model, (x, y), dx=dirs[0], dy=dirs[1], x=xs, y=xs, strategy="loop", points_per_chunk=3,
              bn="eval", progress=False)
    assert r.complete and len(made) == 1  # 6 blocks, one source
    assert len(seen) == 2  # the model's own weight (activation probe) and the one point buffer


def test_chunk_size_is_measured_and_recorded_as_a_cache_target():
    model = cnn()
    x, y = data(600)
    dirs = directions(model)
    base = params.get_point(model)
    ev = Evaluator(model, (x, y), bn="eval", strategy="loop")
    a = ev.max_activation_bytes
    assert a == 8 * 16 * 16 * 8  # the first conv's output, float64
    c0 = int(4 * 2**20 // a)
    note = ev.info["chunking"]
    assert note["mode"] == "measured" and note["candidates"] == [c0, 2 * c0, 600] and note["chosen"] is None
    coeffs = COEFFS[:5]
    got = ev.evaluate_combinations(coeffs, dirs, base)["loss"]
    # the first points measured the candidates in increasing size (each exact for its chunking)
    # until one was slower than the best so far
    np.testing.assert_allclose(got, reference(model, x, y, coeffs, dirs, "eval", 600), rtol=0, atol=1e-12)
    note = ev.info["chunking"]
    chosen, times = note["chosen"], note["s_per_point"]
    tried = [int(k) for k in times]
    assert tried == note["candidates"][: len(tried)] and len(tried) >= 2
    assert times[str(chosen)] == min(times.values())
    slower = [t > min(list(times.values())[:j]) for j, t in enumerate(times.values()) if j]
    assert not any(slower[:-1]) and (len(tried) == 3 or slower[-1])
    assert ev.loop_batch_size == ev.info["loop_batch_size"] == chosen
    # the recorded cache target gives the same chunks by rule, without measuring (what a resume passes)
    again = Evaluator(model, (x, y), bn="eval", strategy="loop", cache_mb=ev.info["cache_mb"])
    assert again.loop_batch_size == chosen and again.info["chunking"]["mode"] == "rule"
    assert np.array_equal(again.evaluate_combinations(coeffs[4:], dirs, base)["loss"], got[4:])
    # an explicit cache target, or none, is a rule: nothing measured
    assert Evaluator(model, (x, y), cache_mb=4.0).info["chunking"]["mode"] == "rule"
    assert Evaluator(model, (x, y), cache_mb=None).info["chunking"]["candidates"] == [600]
