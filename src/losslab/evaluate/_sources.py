"""Point sources of the evaluator: stacked points, or linear combinations built on demand.

A source holds K points and hands them out stacked (a group, for vmap) or one at a time (for the
loop). :class:`_Combinations` builds ``theta_k = base + sum_j c[k, j] d_j`` without materialising the
K points: the loop writes each point into one reused set of buffers, vmap builds one group at a time.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from .._functional import Point

def _combination_key(basis: Sequence[Mapping[str, Tensor]], base: Mapping[str, Tensor] | None) -> tuple[Any, ...] | None:
    """What identifies the tensors of ``evaluate_combinations``'s directions and base: per tensor its
    name, address, version, shape, stride, dtype and device (the caller holds them alive while the
    key is kept, so an address cannot be reused by another tensor); None when a tensor's changes
    cannot be tracked (an inference tensor has no version counter) or a value is not a tensor."""
    key: list[Any] = []
    for i, pt in enumerate([*basis, base if base is not None else {}]):
        if not isinstance(pt, Mapping):
            return None
        key.append(i)
        for name, t in pt.items():
            if not isinstance(t, Tensor) or t.is_inference():
                return None
            key.append((name, t.data_ptr(), t._version, tuple(t.shape), t.stride(), t.dtype, str(t.device)))
    key.append(base is None)
    return tuple(key)


def _layout_of(t: Tensor) -> torch.memory_format:
    """Channels-last for a 4-D tensor stored so (the evaluator's layout, see ``_layout``), else contiguous."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class _Source:
    """K points, available stacked (a group, for vmap) or one at a time (for the loop)."""

    n: int

    def stacked(self, lo: int, hi: int) -> Point:  # pragma: no cover - interface
        raise NotImplementedError

    def each(self, lo: int, hi: int) -> Iterator[Point]:  # pragma: no cover - interface
        raise NotImplementedError


class _Stacked(_Source):
    def __init__(self, st: Point, n: int) -> None:
        self.st, self.n = st, n

    def stacked(self, lo: int, hi: int) -> Point:
        return {k: v[lo:hi] for k, v in self.st.items()}

    def each(self, lo: int, hi: int) -> Iterator[Point]:
        for i in range(lo, hi):
            yield {k: v[i] for k, v in self.st.items()}


class _Combinations(_Source):
    """``theta_k = base + sum_j c[k, j] d_j`` for the rows of ``c`` (see Evaluator.evaluate_combinations).

    Each key is written in place, one tensor at a time, as ``base + c_1 d_1`` (``torch.add`` with
    ``alpha``; ``c_1 d_1`` without a base), then ``+= c_j d_j`` for the other directions that have the
    key, in direction order: no concatenation, no temporaries, no copies of the directions. The loop
    writes each point into one set of preallocated buffers (:meth:`each`); vmap writes the rows of a
    stacked group with the same operations (:meth:`stacked`), so a point's tensors are
    bit-identical whichever strategy builds them. :meth:`rebind` swaps the coefficients and keeps the
    buffers, so a surface evaluated block by block allocates them once.
    """

    def __init__(self, c: Tensor, basis: list[Point], base: Point | None) -> None:
        self.c, self.n = c, int(c.shape[0])
        self.base_pt, self.basis_pts = base, basis
        keys = list(dict.fromkeys([*(base or {}), *(k for d in basis for k in d)]))
        self.fixed: Point = {}
        self.terms: list[tuple[str, Tensor | None, list[tuple[int, Tensor]]]] = []
        for key in keys:
            dirs = [(j, d[key]) for j, d in enumerate(basis) if key in d]
            b = base.get(key) if base is not None else None
            if not dirs:  # a base value no direction moves
                assert b is not None
                self.fixed[key] = b
            else:
                self.terms.append((key, b, dirs))
        self._point: Point | None = None

    def rebind(self, c: Tensor) -> "_Combinations":
        """The same directions and buffers with the coefficient rows ``c``."""
        self.c, self.n = c, int(c.shape[0])
        return self

    def _write(self, out: Point, row: Sequence[float]) -> None:
        """Write the point of coefficients ``row`` into the tensors ``out`` (one per moved key)."""
        for key, b, dirs in self.terms:
            o = out[key]
            j0, d0 = dirs[0]
            if b is not None:
                torch.add(b, d0, alpha=row[j0], out=o)
            else:
                torch.mul(d0, row[j0], out=o)
            for j, d in dirs[1:]:
                o.add_(d, alpha=row[j])

    def stacked(self, lo: int, hi: int) -> Point:
        rows = self.c[lo:hi].tolist()
        k = len(rows)
        out: Point = {key: v.unsqueeze(0).expand(k, *v.shape) for key, v in self.fixed.items()}
        for key, _, dirs in self.terms:
            d0 = dirs[0][1]
            out[key] = torch.empty((k, *d0.shape), dtype=d0.dtype, device=d0.device)
        for r, row in enumerate(rows):
            self._write({key: out[key][r] for key, _, _ in self.terms}, row)
        return out

    def each(self, lo: int, hi: int) -> Iterator[Point]:
        for row in self.c[lo:hi].tolist():
            yield self._fill(row)

    def each_coeffs(self, *rows: Sequence[float]) -> Iterator[Point]:
        """The points of the given coefficient rows (same reused buffer as :meth:`each`)."""
        for row in rows:
            # rounded to the evaluation dtype, as the rows of ``c`` are
            yield self._fill(torch.as_tensor(row, dtype=self.c.dtype, device=self.c.device).tolist())

    def _fill(self, row: Sequence[float]) -> Point:
        if self._point is None:  # one buffer per moved key, reused for every point
            self._point = dict(self.fixed)
            for key, b, dirs in self.terms:
                self._point[key] = torch.empty_like(dirs[0][1], memory_format=_layout_of(b if b is not None else dirs[0][1]))
        self._write(self._point, row)
        return self._point
