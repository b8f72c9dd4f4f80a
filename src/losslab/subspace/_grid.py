"""Small shared helpers for the subspace results: JSON-safe metadata, seeds, progress, fingerprints."""
from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor


def jsonable(obj: Any) -> Any:
    """A JSON-safe copy: numpy/torch scalars and arrays to lists, non-finite floats to None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, str) or obj is None:
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, Tensor):
        return jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def derive_seed(*parts: Any) -> int:
    """A 62-bit seed from a tuple of labels (stable across processes and platforms)."""
    h = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 2


def paths(path: str | Path) -> tuple[Path, Path]:
    """``(npz, json)`` for ``path`` given with or without a ``.npz``/``.json`` suffix."""
    p = Path(path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".npz"), p.with_name(p.name + ".json")


def tensor_digest(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        a = t.detach().cpu().contiguous()
        h.update(str(tuple(a.shape)).encode() + str(a.dtype).encode())
        h.update(a.numpy().tobytes() if a.dtype != torch.bfloat16 else a.float().numpy().tobytes())
    return h.hexdigest()[:16]


def progress_bar(total: int, initial: int, progress: bool | None, desc: str) -> Any:
    """A tqdm bar on a terminal (``progress=None``: only if stderr is a tty; False: never)."""
    if progress is False:
        return None
    if progress is None:
        try:
            if not sys.stderr.isatty():
                return None
        except (AttributeError, ValueError):
            return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="run", leave=False)


def versions() -> dict[str, str]:
    from .. import __version__

    return {"losslab": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0]}
