"""Shared plumbing of the probes: the functional core (shell, data and loss normalization, from
:mod:`losslab._functional`) and small helpers (chunks, figures)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import Tensor

# the functional core, re-exported for the probes' imports
from .._functional import Functional, LossFn, Point, as_xy, default_loss, ensure_forward_ad  # noqa: F401
from ..errors import LosslabError


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


# ---- figures ----------------------------------------------------------------------------------------


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
