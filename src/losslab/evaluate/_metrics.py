"""Built-in losses and metrics of the evaluator, and the checks of a model's output against them.

The per-example losses work on one point's outputs ``(B, ...)`` given a leading point dimension
``(K, B, ...)`` (as vmap produces), so one function serves the loop and vmap.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import LosslabError

def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer that tracks running statistics."""
    return any(_is_bn(m) for m in model.modules())


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm) and bool(m.track_running_stats)


def accuracy(output: Tensor, target: Tensor) -> Tensor:
    """Fraction of correct arg-max predictions (class dimension 1, as for cross-entropy), batch mean."""
    return (output.argmax(1) == target).to(torch.float64).mean()


# ---- built-in per-example losses (work on (B, ...) and on vmapped (K, B, ...) outputs) ----------


def _ce_per_example(out: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy per example; ``out`` is (K, B, C) (or (K, B, C, d...)), ``y`` (B, ...)."""
    k, b = out.shape[:2]
    yk = y.unsqueeze(0).expand(k, *y.shape).reshape(k * b, *y.shape[1:])
    per = F.cross_entropy(out.reshape(k * b, *out.shape[2:]), yk, reduction="none")
    return per.reshape(k, b, -1).mean(-1)


def _mse_per_example(out: Tensor, y: Tensor) -> Tensor:
    k, b = out.shape[:2]
    if y.shape != out.shape[1:]:
        if y.numel() == out[0].numel():
            y = y.reshape(out.shape[1:])
        else:
            raise LosslabError(f"mse: output shape {tuple(out.shape[1:])} vs target shape {tuple(y.shape)}")
    return ((out - y.unsqueeze(0)) ** 2).reshape(k, b, -1).mean(-1)


def _acc_per_example(out: Tensor, y: Tensor) -> Tensor:
    """Correct predictions per example; the class dimension of (K, B, C, ...) outputs is 2."""
    return (out.argmax(2) == y.unsqueeze(0)).reshape(out.shape[0], out.shape[1], -1).to(torch.float64).mean(-1)


_BUILTIN_LOSSES = {"cross_entropy": _ce_per_example, "mse": _mse_per_example}


def check_model_output(out: Any, y: Tensor, *, classification: bool) -> None:
    """One-line :class:`LosslabError` when a model's output cannot go into a built-in loss: not a tensor
    (a dict or tuple), fewer than 2 dimensions for cross-entropy, or fewer classes than the labels use."""
    if not isinstance(out, Tensor):
        kind = type(out).__name__ + (f" with keys {list(out)[:5]}" if isinstance(out, Mapping) else "")
        raise LosslabError(f"the model returns a {kind}, not a tensor: pass loss= a callable that takes this "
                           f"output, or wrap the model so that it returns the logits")
    if classification and not y.is_floating_point() and y.numel():
        if out.dim() < 2:
            raise LosslabError(f"cross_entropy needs outputs (N, classes, ...), the model returns {tuple(out.shape)}")
        top, low = int(y.max()), int(y.min())
        if top >= out.shape[1]:
            raise LosslabError(f"the model outputs {out.shape[1]} classes but the labels go up to {top}")
        if low < 0 and low != -100:  # -100: cross_entropy's ignore_index
            raise LosslabError(f"labels must be class indices >= 0, got {low}")
