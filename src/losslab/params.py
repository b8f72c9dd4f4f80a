"""Points in parameter space.

A *point* is a ``dict[str, Tensor]`` keyed like ``model.named_parameters()`` (optionally with
buffers, keyed like ``model.named_buffers()``). Everything losslab measures is a function of points;
models are evaluated at a point with :func:`call` (``torch.func.functional_call``), so the user's
module is never modified.

Example:
    >>> import torch
    >>> from losslab import params
    >>> model = torch.nn.Linear(3, 2)
    >>> p = params.get_point(model)
    >>> q = params.axpy(p, 0.5, params.randn_like(p, generator=torch.Generator().manual_seed(0)))
    >>> round(params.distance(p, p), 6)
    0.0
    >>> params.call(model, q, torch.zeros(1, 3)).shape
    torch.Size([1, 2])
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from ._functional import Point
from .errors import LosslabError


__all__ = [
    "Point", "get_point", "get_buffers", "flatten", "unflatten", "add", "sub", "scale", "axpy",
    "lincomb", "dot", "norm", "distance", "cosine", "zeros_like", "randn_like", "stack", "unstack",
    "call", "check_compatible", "to", "clone", "numel",
]


def get_point(model: nn.Module, *, buffers: bool = False, trainable_only: bool = False) -> Point:
    """A detached copy of ``model``'s parameters (and buffers when ``buffers=True``)."""
    out: Point = {
        k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad or not trainable_only
    }
    if buffers:
        out.update(get_buffers(model))
    return out


def get_buffers(model: nn.Module) -> Point:
    """A detached copy of ``model``'s floating and integer buffers (e.g. BatchNorm running stats)."""
    return {k: v.detach().clone() for k, v in model.named_buffers()}


def numel(point: Mapping[str, Tensor]) -> int:
    return sum(v.numel() for v in point.values())


def flatten(point: Mapping[str, Tensor]) -> Tensor:
    """Concatenate a point's tensors (in key order) into one 1-D tensor."""
    if not point:
        raise LosslabError("cannot flatten an empty point")
    return torch.cat([v.reshape(-1) for v in point.values()])


def unflatten(vec: Tensor, like: Mapping[str, Tensor]) -> Point:
    """Inverse of :func:`flatten`: split ``vec`` into tensors shaped like ``like`` (same key order)."""
    total = numel(like)
    if vec.dim() != 1 or vec.numel() != total:
        raise LosslabError(f"flat vector has shape {tuple(vec.shape)}, expected ({total},)")
    out: Point = {}
    i = 0
    for k, v in like.items():
        n = v.numel()
        out[k] = vec[i : i + n].view_as(v)
        i += n
    return out


def check_compatible(a: Mapping[str, Tensor], b: Mapping[str, Tensor], what: str = "points") -> None:
    """Raise :class:`LosslabError` listing missing/unexpected keys or shape mismatches."""
    if a.keys() != b.keys():
        missing = sorted(set(a) - set(b))
        unexpected = sorted(set(b) - set(a))
        raise LosslabError(f"{what} have different keys: missing {missing}, unexpected {unexpected}")
    for k in a:
        if a[k].shape != b[k].shape:
            raise LosslabError(f"{what} differ in shape at {k!r}: {tuple(a[k].shape)} vs {tuple(b[k].shape)}")


def check_finite(point: Mapping[str, Tensor], what: str = "the point") -> None:
    """Raise a one-line :class:`LosslabError` naming the first tensor of ``point`` holding NaN/inf.

    Example:
        >>> check_finite({"w": torch.tensor([1.0, float("nan")])}, "direction 0")
        Traceback (most recent call last):
        ...
        losslab.errors.LosslabError: direction 0 holds NaN/inf in 'w'
    """
    for k, v in point.items():
        if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise LosslabError(f"{what} holds NaN/inf in {k!r}")


def _binary(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> None:
    if a.keys() != b.keys():
        check_compatible(a, b)


def add(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Point:
    _binary(a, b)
    return {k: a[k] + b[k] for k in a}


def sub(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Point:
    """``a - b``."""
    _binary(a, b)
    return {k: a[k] - b[k] for k in a}


def scale(a: Mapping[str, Tensor], s: float | Tensor) -> Point:
    return {k: v * s for k, v in a.items()}


def axpy(x: Mapping[str, Tensor], alpha: float | Tensor, d: Mapping[str, Tensor]) -> Point:
    """``x + alpha * d``, keys of ``d`` absent from ``x`` are an error; keys of ``x`` absent from ``d`` are kept."""
    extra = set(d) - set(x)
    if extra:
        raise LosslabError(f"direction has keys the point lacks: {sorted(extra)}")
    return {k: (v + alpha * d[k] if k in d else v) for k, v in x.items()}


def lincomb(base: Mapping[str, Tensor], coeffs: Sequence[float], dirs: Sequence[Mapping[str, Tensor]]) -> Point:
    """``base + sum_i coeffs[i] * dirs[i]``."""
    if len(coeffs) != len(dirs):
        raise LosslabError(f"{len(coeffs)} coefficients for {len(dirs)} directions")
    out = dict(base)
    for c, d in zip(coeffs, dirs):
        out = axpy(out, c, d)
    return out


def dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    _binary(a, b)
    return float(sum((a[k].double() * b[k].double()).sum() for k in a))


def norm(a: Mapping[str, Tensor]) -> float:
    return float(sum((v.double() ** 2).sum() for v in a.values()) ** 0.5)


def distance(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    return norm(sub(a, b))


def cosine(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    na, nb = norm(a), norm(b)
    if na == 0 or nb == 0:
        raise LosslabError("cosine of a zero vector is undefined")
    return dot(a, b) / (na * nb)


def zeros_like(a: Mapping[str, Tensor]) -> Point:
    return {k: torch.zeros_like(v) for k, v in a.items()}


def randn_like(a: Mapping[str, Tensor], *, generator: torch.Generator | None = None) -> Point:
    """Standard Gaussian tensors shaped like ``a``; pass a ``generator`` for reproducibility.

    Samples are drawn on the CPU in float64 key by key and cast, so a given generator state gives the
    same direction on any device and dtype.
    """
    return {
        k: torch.randn(v.shape, generator=generator, dtype=torch.float64).to(dtype=v.dtype, device=v.device)
        for k, v in a.items()
    }


def clone(a: Mapping[str, Tensor]) -> Point:
    return {k: v.detach().clone() for k, v in a.items()}


def to(a: Mapping[str, Tensor], *args, **kwargs) -> Point:
    """``Tensor.to`` applied to each tensor."""
    return {k: v.to(*args, **kwargs) for k, v in a.items()}


def stack(points: Sequence[Mapping[str, Tensor]]) -> Point:
    """Stack K points into one point whose tensors have a leading dimension K (for ``torch.vmap``)."""
    if not points:
        raise LosslabError("cannot stack zero points")
    keys = list(points[0].keys())
    return {k: torch.stack([p[k] for p in points]) for k in keys}


def unstack(point: Mapping[str, Tensor]) -> list[Point]:
    n = {v.shape[0] for v in point.values()}
    if len(n) != 1:
        raise LosslabError(f"stacked point has inconsistent leading sizes {sorted(n)}")
    return [{k: v[i] for k, v in point.items()} for i in range(n.pop())]


def call(
    model: nn.Module,
    point: Mapping[str, Tensor],
    *args,
    buffers: Mapping[str, Tensor] | None = None,
    **kwargs,
):
    """Evaluate ``model`` at ``point`` (and ``buffers``) without touching its own tensors.

    Keys absent from ``point`` fall back to the module's own parameters/buffers.
    """
    merged: dict[str, Tensor] = dict(point)
    if buffers:
        merged.update(buffers)
    return torch.func.functional_call(model, merged, args, kwargs, strict=False)
