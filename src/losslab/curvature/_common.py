"""Shared helpers for the curvature algorithms: random generators and the linear-operator adapter.

The algorithms (Lanczos, Hutchinson, SLQ) accept any of

* a dense square matrix: ``torch.Tensor`` or ``numpy.ndarray``;
* a ``scipy.sparse.linalg.LinearOperator`` or a scipy sparse matrix (applied to numpy vectors);
* any object with ``.shape == (n, n)`` and ``.matvec(v)`` taking a 1-D ``torch.Tensor`` (losslab's
  curvature operators, or your own).

Internally they all see a :class:`_LinOp`: ``mv(v)`` maps a vector on ``device`` to a vector of the
same dtype (float64 unless :func:`as_linop` is given another; Lanczos works in the operator's own
dtype) on ``device``, and the number of products is counted.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
import torch
from torch import Tensor

from .._functional import ensure_forward_ad
from ..errors import LosslabError

__all__ = ["MatrixLike", "make_generator", "as_linop", "probe_vectors", "ensure_forward_ad"]

#: Anything the free-function algorithms accept as a symmetric matrix.
MatrixLike = Union[Tensor, np.ndarray, Any]


def make_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    """A CPU ``torch.Generator`` from a seed or a given generator (never the global RNG).

    With neither, a freshly, non-deterministically seeded generator is returned.
    """
    if seed is not None and generator is not None:
        raise LosslabError("pass either seed or generator, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise LosslabError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


class _LinOp:
    """A symmetric linear map on vectors of ``dtype``: ``mv``, dimension ``n``, ``device``, counter."""

    def __init__(self, n: int, mv: Callable[[Tensor], Tensor], device: torch.device, source: str,
                 dtype: torch.dtype = torch.float64) -> None:
        self.n = int(n)
        self._mv = mv
        self.device = device
        self.dtype = dtype
        self.source = source
        self.num_matvecs = 0

    def mv(self, v: Tensor) -> Tensor:
        self.num_matvecs += 1
        out = self._mv(v)
        if out.shape != (self.n,):
            raise LosslabError(f"{self.source}: matvec returned shape {tuple(out.shape)}, expected ({self.n},)")
        return out


def _square(shape: Any, what: str) -> int:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise LosslabError(f"{what} has no usable shape") from None
    if len(shape) != 2 or shape[0] != shape[1]:
        raise LosslabError(f"{what} must be square (n, n), got shape {shape}")
    if shape[0] < 1:
        raise LosslabError(f"{what} is empty")
    return shape[0]


def as_linop(A: MatrixLike, dtype: torch.dtype = torch.float64) -> _LinOp:
    """Wrap ``A`` (dense torch/numpy matrix, scipy operator or object with ``matvec``) as a :class:`_LinOp`.

    Its products take and return vectors of ``dtype`` (an existing :class:`_LinOp` is returned as is).
    """
    if isinstance(A, _LinOp):
        return A
    if isinstance(A, Tensor):
        n = _square(A.shape, "matrix")
        M = A.detach().to(dtype)
        return _LinOp(n, lambda v: M @ v, M.device, "dense torch matrix", dtype)
    if isinstance(A, np.ndarray):
        n = _square(A.shape, "matrix")
        M = torch.from_numpy(np.ascontiguousarray(A, dtype=np.float64)).to(dtype)
        return _LinOp(n, lambda v: M @ v, M.device, "dense numpy matrix", dtype)
    try:
        import scipy.sparse as sp
        from scipy.sparse.linalg import LinearOperator
    except ImportError:  # pragma: no cover - scipy is a dependency
        sp = None
        LinearOperator = ()
    if sp is not None and (isinstance(A, LinearOperator) or sp.issparse(A)):
        n = _square(A.shape, "operator")
        apply = A.matvec if isinstance(A, LinearOperator) else A.dot

        def mv_np(v: Tensor) -> Tensor:
            out = np.asarray(apply(v.detach().cpu().numpy()), dtype=np.float64).reshape(-1)
            return torch.from_numpy(out).to(dtype)

        return _LinOp(n, mv_np, torch.device("cpu"), type(A).__name__, dtype)
    if hasattr(A, "matvec") and hasattr(A, "shape"):
        n = _square(A.shape, type(A).__name__)
        device = torch.device(getattr(A, "device", "cpu"))

        def mv_obj(v: Tensor) -> Tensor:
            out = A.matvec(v)
            if isinstance(out, np.ndarray):
                out = torch.from_numpy(out)
            return torch.as_tensor(out).reshape(-1).to(device=device, dtype=dtype)

        return _LinOp(n, mv_obj, device, type(A).__name__, dtype)
    raise LosslabError(
        f"cannot use {type(A).__name__} as a matrix: pass a square torch/numpy array, a scipy "
        "LinearOperator, or an object with .shape and .matvec"
    )


def probe_vectors(
    n: int, count: int, dist: str, generator: torch.Generator, device: torch.device
) -> Tensor:
    """``count`` random probe vectors as rows of a ``(count, n)`` float64 tensor on ``device``.

    ``dist``: ``"rademacher"`` (entries ±1) or ``"gaussian"`` (standard normal). Both have
    ``E[z zᵀ] = I``. Drawn on the CPU so a seed gives the same probes on every device.
    """
    if dist == "rademacher":
        z = torch.randint(0, 2, (count, n), generator=generator, dtype=torch.int8).to(torch.float64) * 2 - 1
    elif dist == "gaussian":
        z = torch.randn((count, n), generator=generator, dtype=torch.float64)
    else:
        raise LosslabError(f"unknown probe distribution {dist!r}: use 'rademacher' or 'gaussian'")
    return z.to(device)


def npz_path(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`~pathlib.Path` ending in ``.npz`` (the arrays of a saved result)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    return path


def read_saved(path: str | os.PathLike, fmt: str, what: str) -> tuple[Path, dict[str, Any]]:
    """The ``.npz`` path of a saved result and its ``.json`` sidecar, checked to be of format ``fmt``."""
    from ..results import read_sealed_json

    path = npz_path(path)
    info = read_sealed_json(path.with_suffix(".json"))  # a truncated or changed sidecar is a DamagedFile
    if info.get("format") != fmt:
        raise LosslabError(f"{path.with_suffix('.json')} is not {what} (format {info.get('format')!r})")
    return path, info
