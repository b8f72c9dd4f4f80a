"""Process-wide settings: torch threads and the cache directory.

One torch thread per process is the default: on small models with 2 contended cores two threads
ran 5-16x slower than one. Parallelism comes from processes. Override with
``LOSSLAB_THREADS`` or :func:`set_threads`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEFAULT_THREADS = 1


def default_threads() -> int:
    value = os.environ.get("LOSSLAB_THREADS", "")
    try:
        return max(1, int(value)) if value else DEFAULT_THREADS
    except ValueError:
        return DEFAULT_THREADS


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads (``None``: ``LOSSLAB_THREADS`` or 1). Returns the value set."""
    import torch

    from .errors import LosslabError

    n = default_threads() if n is None else int(n)
    if n < 1:
        raise LosslabError(f"threads must be >= 1, got {n}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def resolve_device(spec: Any = None) -> Any:
    """A :class:`torch.device` from ``spec`` (``None``: CPU), checked to exist in this torch build.

    Raises:
        LosslabError: an unknown device name, or a CUDA/MPS device this machine or build lacks.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    import torch

    from .errors import LosslabError

    if spec is None:
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        raise LosslabError(f"unknown device {spec!r}: use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LosslabError(f"device {spec!r}: no CUDA GPU is available to this torch build "
                               f"({torch.__version__}); use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LosslabError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LosslabError(f"device {spec!r}: MPS is not available on this machine; use cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise LosslabError(f"device {spec!r}: losslab runs on cpu, cuda or mps")
    return dev


def cache_dir() -> Path:
    """Where generated datasets are cached: ``LOSSLAB_CACHE`` or ``~/.cache/losslab``."""
    root = os.environ.get("LOSSLAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "losslab"
    )
    return Path(root)
