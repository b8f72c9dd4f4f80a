"""Process-wide settings: torch threads and the cache directory.

One torch thread per process is the default: on small models with 2 contended cores two threads
ran 5-16x slower than one. Parallelism comes from processes. Override with
``LOSSLAB_THREADS`` or :func:`set_threads`.
"""
from __future__ import annotations

import os
from pathlib import Path

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

    n = default_threads() if n is None else int(n)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def cache_dir() -> Path:
    """Where generated datasets are cached: ``LOSSLAB_CACHE`` or ``~/.cache/losslab``."""
    root = os.environ.get("LOSSLAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "losslab"
    )
    return Path(root)
