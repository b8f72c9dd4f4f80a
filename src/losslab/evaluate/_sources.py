"""Point sources of the evaluator: stacked points, or linear combinations built on demand.

A source holds K points and hands them out stacked (a group, for vmap) or one at a time (for the
loop). :class:`_Combinations` builds ``theta_k = base + sum_j c[k, j] d_j`` without materialising the
K points: the loop writes each point into one reused buffer, vmap builds one group at a time.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import Tensor

from .._functional import Point

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


class _Group:
    """Keys sharing the same terms (base or not, which directions), laid out in flat vectors."""

    def __init__(self, keys: list[str], base: Tensor | None, dirs: list[Tensor], js: list[int],
                 layout: list[tuple[str, int, int, torch.Size]]) -> None:
        self.keys, self.base, self.dirs, self.js, self.layout = keys, base, dirs, js, layout
        self.buf: Tensor | None = None
        self.tmp: Tensor | None = None


class _Combinations(_Source):
    """``theta_k = base + sum_j c[k, j] d_j`` for the rows of ``c`` (see Evaluator.evaluate_combinations)."""

    def __init__(self, c: Tensor, basis: list[Point], base: Point | None) -> None:
        self.c, self.n = c, int(c.shape[0])
        self.base_pt, self.basis_pts = base, basis
        keys = list(dict.fromkeys([*(base or {}), *(k for d in basis for k in d)]))
        sigs: dict[tuple[bool, tuple[int, ...]], list[str]] = {}
        for key in keys:
            sig = (base is not None and key in base, tuple(j for j, d in enumerate(basis) if key in d))
            sigs.setdefault(sig, []).append(key)
        self.fixed: Point = {}
        self.groups: list[_Group] = []
        for (in_base, js), ks in sigs.items():
            if not js:  # a base value no direction moves
                assert base is not None
                for key in ks:
                    self.fixed[key] = base[key]
                continue
            layout, off = [], 0
            for key in ks:
                shape = basis[js[0]][key].shape
                layout.append((key, off, int(shape.numel()), shape))
                off += int(shape.numel())

            def flat(pt: Point, ks: list[str] = ks) -> Tensor:
                if len(ks) == 1:
                    return pt[ks[0]].reshape(-1)
                return torch.cat([pt[key].reshape(-1) for key in ks])

            self.groups.append(_Group(ks, flat(base) if in_base and base is not None else None,
                                      [flat(basis[j]) for j in js], list(js), layout))
        self._point: Point | None = None

    def stacked(self, lo: int, hi: int) -> Point:
        c = self.c[lo:hi]
        k = int(c.shape[0])
        out: Point = {key: v.unsqueeze(0).expand(k, *v.shape) for key, v in self.fixed.items()}
        for g in self.groups:
            v: Tensor | None = None if g.base is None else g.base.unsqueeze(0).expand(k, -1)
            for d, j in zip(g.dirs, g.js):
                t = c[:, j].reshape(k, 1) * d.unsqueeze(0)
                v = t if v is None else v + t
            assert v is not None
            for key, o, numel, shape in g.layout:
                out[key] = v[:, o : o + numel].view(k, *shape)
        return out

    def each(self, lo: int, hi: int) -> Iterator[Point]:
        for i in range(lo, hi):
            yield self._fill(self.c[i])

    def each_coeffs(self, *rows: Sequence[float]) -> Iterator[Point]:
        """The points of the given coefficient rows (same reused buffer as :meth:`each`)."""
        for row in rows:
            yield self._fill(torch.as_tensor(row, dtype=self.c.dtype, device=self.c.device))

    def _fill(self, c: Tensor) -> Point:
        if self._point is None:  # one buffer per group, reused for every point
            self._point = dict(self.fixed)
            for g in self.groups:
                ref = g.dirs[0]
                g.buf = torch.empty(ref.shape, dtype=ref.dtype, device=ref.device)
                if len(g.dirs) > 1:
                    g.tmp = torch.empty_like(g.buf)
                for key, o, numel, shape in g.layout:
                    self._point[key] = g.buf[o : o + numel].view(shape)
        for g in self.groups:
            assert g.buf is not None
            torch.mul(g.dirs[0], c[g.js[0]], out=g.buf)
            if g.base is not None:
                g.buf.add_(g.base)
            for d, j in zip(g.dirs[1:], g.js[1:]):
                assert g.tmp is not None
                torch.mul(d, c[j], out=g.tmp)
                g.buf.add_(g.tmp)
        return self._point
