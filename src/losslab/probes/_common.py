"""Shared plumbing of the probes: a private functional shell of the model, data and loss normalization,
and small result I/O helpers (``.npz`` arrays + ``.json`` description)."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..results import jsonable as _jsonable
from ..results import load_arrays, result_paths, save_arrays  # noqa: F401  (the probes' result I/O)
from ..errors import LosslabError

Point = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss(output, target) -> scalar``: the mean loss over the examples of the batch."""


_FORWARD_AD_READY = False


def ensure_forward_ad() -> None:
    """Import torch's forward-mode-AD decompositions once with their import-time deprecation warning
    silenced (torch 2.13 calls the deprecated ``torch.jit.script`` there; under ``-W error`` the first
    ``torch.func.jvp`` would fail)."""
    global _FORWARD_AD_READY
    if _FORWARD_AD_READY:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*TorchScript.*", category=DeprecationWarning)
        try:
            import torch._decomp.decompositions_for_jvp  # noqa: F401
        except ImportError:  # pragma: no cover - other torch versions
            pass
    _FORWARD_AD_READY = True


class Functional:
    """A model turned into a pure function of (parameters, inputs), never touching the user's module.

    The module is copied once into a *shell* whose tensors live on the ``meta`` device (no memory is
    duplicated) and which is always in eval mode (dropout off, BatchNorm uses its stored running
    statistics). Tensors not given in a point come from a snapshot of the model's parameters and
    buffers taken at construction.

    Attributes:
        shell: the meta copy (evaluated only through ``functional_call``).
        base: detached parameters of the model (names as ``named_parameters``).
        buffers: detached buffers of the model.
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise LosslabError(f"expected a torch.nn.Module, got {type(model).__name__}")
        memo: dict[int, Any] = {}
        for p in model.parameters():
            memo[id(p)] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device="meta"),
                                       requires_grad=p.requires_grad)
        for b in model.buffers():
            memo[id(b)] = torch.empty(b.shape, dtype=b.dtype, device="meta")
        try:
            self.shell = copy.deepcopy(model, memo)
        except Exception as e:  # noqa: BLE001
            raise LosslabError(f"cannot copy the model's structure ({type(e).__name__}: {e})") from e
        self.shell.eval()
        self.base: Point = {k: v.detach() for k, v in model.named_parameters()}
        self.buffers: Point = {k: v.detach() for k, v in model.named_buffers()}
        if not self.base:
            raise LosslabError("the model has no parameters")

    def point(self, point: Mapping[str, Tensor] | None) -> Point:
        """``point`` checked against the model's parameter names (``None``: the model's own parameters)."""
        if point is None:
            return dict(self.base)
        unknown = sorted(set(point) - set(self.base))
        if unknown:
            raise LosslabError(f"point has keys the model lacks: {unknown[:5]}{'...' if len(unknown) > 5 else ''}")
        out = dict(self.base)
        for k, v in point.items():
            if tuple(v.shape) != tuple(self.base[k].shape):
                raise LosslabError(f"point differs in shape at {k!r}: {tuple(v.shape)} vs {tuple(self.base[k].shape)}")
            out[k] = v.detach()
        return out

    def split(self, point: Mapping[str, Tensor], names: Sequence[str] | None) -> tuple[Point, Point]:
        """(differentiated, fixed) parts of a full point; ``names=None`` means every floating parameter."""
        if names is None:
            names = [k for k, v in point.items() if v.is_floating_point()]
        missing = sorted(set(names) - set(point))
        if missing:
            raise LosslabError(f"params names not in the model: {missing}")
        if not names:
            raise LosslabError("no parameters to differentiate")
        wrt = {k: point[k] for k in names}
        fixed = {k: v for k, v in point.items() if k not in wrt}
        return wrt, fixed

    def __call__(self, point: Mapping[str, Tensor], x: Tensor) -> Tensor:
        merged = dict(self.buffers)
        merged.update(point)
        return torch.func.functional_call(self.shell, merged, (x,), strict=False)


def default_loss(y: Tensor) -> LossFn:
    """Cross-entropy for integer labels, mean squared error for floating targets (as the trainer)."""
    if y.is_floating_point():
        return lambda out, t: F.mse_loss(out.reshape(t.shape), t)
    return F.cross_entropy


def as_xy(data: Any, split: str = "train") -> tuple[Tensor, Tensor]:
    """(x, y) from a ``Split`` (``.x``/``.y``), a ``Bundle`` (its ``split``) or an ``(x, y)`` pair."""
    if hasattr(data, "train") and hasattr(data, "test"):
        if split not in ("train", "test"):
            raise LosslabError(f"split must be 'train' or 'test', got {split!r}")
        data = getattr(data, split)
    if hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        raise LosslabError("data must be a Split, a Bundle or an (x, y) pair of tensors")
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise LosslabError("data must hold tensors")
    if x.shape[0] != y.shape[0]:
        raise LosslabError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
    if x.shape[0] == 0:
        raise LosslabError("data is empty")
    return x, y


def check_chunk(chunk_size: int | None, n: int) -> int:
    if chunk_size is None:
        return n
    if int(chunk_size) < 1:
        raise LosslabError(f"chunk_size must be >= 1, got {chunk_size}")
    return int(chunk_size)


def flatten_batched(d: Mapping[str, Tensor], n: int) -> Tensor:
    """Concatenate tensors with a leading batch dimension ``n`` into an ``(n, D)`` matrix (key order)."""
    return torch.cat([v.reshape(n, -1) for v in d.values()], dim=1)


def to_numpy(t: Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t)


# ---- result I/O ------------------------------------------------------------------------------------


def jsonable(obj: Any) -> Any:
    """Numpy/torch scalars and arrays as JSON values, NaN/inf as None (:func:`losslab.results.jsonable`)."""
    return _jsonable(obj)


def none_to_nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def new_figure(ncols: int, nrows: int = 1, size: tuple[float, float] = (4.2, 3.6)) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    return fig, axes


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """Atomic ``fig.savefig``; format from the suffix."""
    from .._io import atomic_write

    fmt = Path(path).suffix.lstrip(".") or "png"
    kwargs.setdefault("dpi", 120)
    kwargs.setdefault("bbox_inches", "tight")
    return atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, **kwargs))


def iter_chunks(n: int, size: int) -> Iterable[tuple[int, int]]:
    for i in range(0, n, size):
        yield i, min(n, i + size)
