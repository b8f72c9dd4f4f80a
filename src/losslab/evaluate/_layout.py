"""Memory layout of the evaluation passes: channels-last for 2-D convolution nets on a CPU.

oneDNN, which runs torch's float32 convolutions on a CPU, is fastest when the activations are
channels-last (NHWC) and the convolution weights are too: with the default (NCHW) layout every
convolution converts its input and weights and converts its output back. A user's per-point loop
pays that at every forward. Measured on this project's 2-core CPU, one thread, one full-data
forward, same process (``bench/RESULTS.md`` keeps the figures): channels-last inputs and weights ran
a torchvision-layout ResNet-18 at 32 px 1.7x faster, a CIFAR-stem ResNet-18 1.27x, the zoo's
ResNet on digits 1.34x and the zoo's small CNN 1.04x.

``memory_format="auto"`` (the evaluator's default) uses channels-last when all of these hold:
the inputs are 4-D, the model has an ``nn.Conv2d``, the evaluation runs on a CPU in float32, and
a forward of a few examples in channels-last runs and gives the same outputs as the default
layout (to float32 rounding), which rules out models that ``view`` an activation whose layout they
assume. Elsewhere it keeps the default layout: GPUs are unmeasured here, and float64 convolutions
do not use oneDNN. Values differ from the default layout's by float32 rounding only.

What changes: the resident inputs are stored channels-last once (chunks are views), and the 4-D
floating tensors of the evaluator's base point and of every prepared point (directions, bases,
user points) are converted when they are prepared, so that the point buffers built from them are
channels-last too. Stacked points (``evaluate_stacked``, vmap) are left as they are.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..errors import LosslabError

LAYOUTS = ("auto", "contiguous", "channels_last")
"""The values of the evaluator's ``memory_format``."""

_CHECK_EXAMPLES = 8  # examples in the forward that checks a model accepts channels-last inputs


def channels_last(t: Tensor) -> Tensor:
    """``t`` in channels-last layout when it is a 4-D floating tensor; else ``t`` itself."""
    if t.dim() == 4 and t.is_floating_point():
        return t.contiguous(memory_format=torch.channels_last)
    return t


def _same(a: Any, b: Any) -> bool:
    """Whether two model outputs agree to float32 rounding (tensors, or tuples/lists/dicts of them)."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if not a.is_floating_point():
            return bool(torch.equal(a, b))
        scale = float(a.abs().max()) if a.numel() else 0.0
        return bool(torch.allclose(a, b, rtol=1e-3, atol=1e-4 * max(1.0, scale), equal_nan=True))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b):
        return all(_same(u, v) for u, v in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return all(_same(a[k], b[k]) for k in a)
    return False


def choose_layout(requested: str, *, shell: nn.Module, x: Tensor, device: torch.device, dtype: torch.dtype,
                  base: dict[str, Tensor], forward: Callable[[dict[str, Tensor], Tensor], Any]) -> tuple[str, str]:
    """``(layout, reason)``: the layout the evaluation passes use (see the module docstring).

    Args:
        requested: ``"auto"``, ``"contiguous"`` or ``"channels_last"``.
        shell: the evaluator's model shell (searched for ``nn.Conv2d``).
        x: the resident inputs.
        device, dtype: where and in what the evaluation runs.
        base: the full point (parameters and buffers) the check forward uses.
        forward: ``forward(tensors, x) -> output``.
    """
    if requested not in LAYOUTS:
        raise LosslabError(f"memory_format must be one of {LAYOUTS}, got {requested!r}")
    if requested == "contiguous":
        return "contiguous", "requested"
    if x.dim() != 4:
        if requested == "channels_last":
            raise LosslabError(f"memory_format='channels_last' needs 4-D inputs (N, C, H, W), got shape "
                               f"{tuple(x.shape)}")
        return "contiguous", "inputs are not 4-D"
    if requested == "auto":
        if not any(isinstance(m, nn.Conv2d) for m in shell.modules()):
            return "contiguous", "no Conv2d layer"
        if device.type != "cpu":
            return "contiguous", f"auto chooses channels-last on a CPU only (unmeasured on {device.type})"
        if dtype != torch.float32:
            return "contiguous", f"auto chooses channels-last in float32 only (oneDNN), not {dtype}"
    xb = x[:_CHECK_EXAMPLES]
    try:
        with torch.inference_mode():
            want = forward(base, xb)
            got = forward({k: channels_last(v) for k, v in base.items()}, channels_last(xb))
        ok, why = _same(want, got), "its outputs differ from the default layout's"
    except Exception as e:  # noqa: BLE001 - e.g. a view() that assumes the default layout
        ok, why = False, f"the model fails on channels-last inputs ({type(e).__name__})"
    if not ok:
        if requested == "channels_last":
            raise LosslabError(f"memory_format='channels_last': {why}; use 'contiguous'")
        return "contiguous", why
    return "channels_last", "requested" if requested == "channels_last" else "Conv2d on 4-D float32 inputs, CPU"
