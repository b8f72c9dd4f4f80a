"""The evaluator's memory layout (issue 18): channels-last for Conv2d nets on 4-D float32 inputs on a
CPU, the same numbers as the default layout to float32 rounding, never in float64, a fallback for
models that assume the default layout, and resumed surfaces that keep the layout they started with."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from losslab.errors import LosslabError
from losslab.evaluate import Evaluator
from losslab.surface import plane


class ConvNet(nn.Module):
    def __init__(self, bn: bool = True, flatten: str = "flatten") -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8) if bn else nn.Identity()
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c2(torch.relu(self.bn(self.c1(x)))))
        if self.flatten == "view":  # assumes the default (NCHW) layout: fails on channels-last
            return self.fc(h.view(h.size(0), -1))
        return self.fc(h.flatten(1))


def _model(seed: int = 0, dtype=torch.float32, **kw) -> nn.Module:
    torch.manual_seed(seed)
    m = ConvNet(**kw).to(dtype)
    if isinstance(m.bn, nn.BatchNorm2d):
        with torch.no_grad():
            m.bn.running_mean.uniform_(-0.5, 0.5)
            m.bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _data(n: int = 40, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 8, 8, generator=g, dtype=dtype), torch.randint(0, 5, (n,), generator=g)


def _dirs(m: nn.Module, seed: int):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g, dtype=v.dtype) * 0.1 for k, v in m.named_parameters()}


@pytest.mark.parametrize("bn", ["eval", "recompute"])
def test_auto_uses_channels_last_and_agrees_with_the_default_layout(bn):
    m, data = _model(), _data()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    auto = Evaluator(m, data, bn=bn, strategy="loop", cache_mb=None)
    plain = Evaluator(m, data, bn=bn, strategy="loop", cache_mb=None, memory_format="contiguous")
    assert auto.memory_format == "channels_last" and auto.info["memory_format"]["used"] == "channels_last"
    assert plain.memory_format == "contiguous" and plain.info["memory_format"]["reason"] == "requested"
    assert auto.x.is_contiguous(memory_format=torch.channels_last)
    assert auto.base_point()["c1.weight"].is_contiguous(memory_format=torch.channels_last)
    dx, dy = _dirs(m, 1), _dirs(m, 2)
    coeffs = np.array([[a, b] for a in (-1.0, 0.0, 0.5) for b in (-0.5, 1.0)])
    ra = auto.evaluate_combinations(coeffs, [dx, dy], base=auto.base_point())
    rp = plain.evaluate_combinations(coeffs, [dx, dy], base=plain.base_point())
    for k in ra:
        np.testing.assert_allclose(ra[k], rp[k], rtol=1e-5, atol=1e-6)
    # the point buffers follow the base's layout
    buf = auto._combinations[2]._point
    assert buf["c1.weight"].is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(auto.evaluate({})["loss"], plain.evaluate({})["loss"], rtol=1e-5)
    # the user's model is untouched, its tensors in their own layout
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]) and v.is_contiguous()


def test_float64_and_non_conv_models_keep_the_default_layout():
    m, data = _model(dtype=torch.float64), _data(dtype=torch.float64)
    ev = Evaluator(m, data, strategy="loop")
    assert ev.memory_format == "contiguous" and "float32" in ev.info["memory_format"]["reason"]
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    ev = Evaluator(mlp, _data(), strategy="loop")
    assert ev.memory_format == "contiguous" and ev.info["memory_format"]["reason"] == "no Conv2d layer"
    flat = (torch.randn(10, 6), torch.randint(0, 2, (10,)))
    ev = Evaluator(nn.Linear(6, 2), flat, strategy="loop")
    assert ev.memory_format == "contiguous" and ev.info["memory_format"]["reason"] == "inputs are not 4-D"
    with pytest.raises(LosslabError, match="needs 4-D inputs"):
        Evaluator(nn.Linear(6, 2), flat, memory_format="channels_last")
    with pytest.raises(LosslabError, match="memory_format must be one of"):
        Evaluator(nn.Linear(6, 2), flat, memory_format="nhwc")


def test_a_model_that_assumes_the_default_layout_falls_back():
    m, data = _model(flatten="view"), _data()
    ev = Evaluator(m, data, strategy="loop")
    assert ev.memory_format == "contiguous"
    assert "fails on channels-last inputs" in ev.info["memory_format"]["reason"]
    with pytest.raises(LosslabError, match="memory_format='channels_last': the model fails"):
        Evaluator(m, data, memory_format="channels_last")


def test_vmap_and_stacked_points_work_on_channels_last_inputs():
    m, data = _model(bn=False), _data()
    auto = Evaluator(m, data, strategy="vmap", cache_mb=None)
    plain = Evaluator(m, data, strategy="vmap", cache_mb=None, memory_format="contiguous")
    assert auto.memory_format == "channels_last"
    pts = [{k: v + 0.05 * i for k, v in m.named_parameters()} for i in range(3)]
    ra, rp = auto.evaluate_many(pts), plain.evaluate_many(pts)
    np.testing.assert_allclose(ra["loss"], rp["loss"], rtol=1e-5)


def test_a_resumed_surface_keeps_its_layout(tmp_path):
    """A surface started before the layout choice existed (no record) resumes in the default layout,
    bit-identical to an uninterrupted default-layout surface; one started in channels-last resumes in it."""
    m, data = _model(), _data()
    dx, dy = _dirs(m, 1), _dirs(m, 2)
    kw = dict(dx=dx, dy=dy, nx=4, ny=3, progress=False, strategy="loop")
    full = plane(m, data, memory_format="contiguous", **kw)
    part = plane(m, data, memory_format="contiguous", max_points=5, **kw)
    part.meta["evaluator"].pop("memory_format")  # as recorded before 2026-12-05
    rest = plane(m, data, resume_from=part, **kw)
    assert rest.meta["evaluator"]["memory_format"]["used"] == "contiguous"
    np.testing.assert_array_equal(rest.metrics["loss"], full.metrics["loss"])
    full_cl = plane(m, data, **kw)
    assert full_cl.meta["evaluator"]["memory_format"]["used"] == "channels_last"
    part_cl = plane(m, data, max_points=5, **kw)
    rest_cl = plane(m, data, resume_from=part_cl, **kw)
    assert rest_cl.meta["evaluator"]["memory_format"]["used"] == "channels_last"
    np.testing.assert_array_equal(rest_cl.metrics["loss"], full_cl.metrics["loss"])
    np.testing.assert_allclose(full_cl.metrics["loss"], full.metrics["loss"], rtol=1e-5)
