"""Small shared helpers for the subspace results: JSON-safe metadata, seeds, progress, fingerprints."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..results import jsonable  # noqa: F401  (NaN/inf as None: the subspace results' JSON)
from ..results import result_paths


def derive_seed(*parts: Any) -> int:
    """A 62-bit seed from a tuple of labels (stable across processes and platforms)."""
    h = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 2


def paths(path: str | Path) -> tuple[Path, Path]:
    """``(npz, json)`` for ``path`` given with or without a ``.npz``/``.json`` suffix
    (:func:`losslab.results.result_paths`)."""
    return result_paths(path)


def tensor_digest(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        a = t.detach().cpu().contiguous()
        h.update(str(tuple(a.shape)).encode() + str(a.dtype).encode())
        h.update(a.numpy().tobytes() if a.dtype != torch.bfloat16 else a.float().numpy().tobytes())
    return h.hexdigest()[:16]


def progress_bar(total: int, initial: int, progress: bool | None, desc: str) -> Any:
    """A tqdm bar on a terminal (``progress=None``: only if stderr is a tty; True: always; False: never):
    :func:`losslab.results.progress_bar`."""
    from ..results import progress_bar as _bar

    return _bar(total, initial, progress=progress, desc=desc, unit="run", always_if_true=True)


def versions() -> dict[str, str]:
    from .. import __version__

    return {"losslab": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0]}
