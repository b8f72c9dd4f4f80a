"""Random linear maps from a small space ``R^d`` into parameter space ``R^D`` (Li et al. 2018).

A :class:`Projection` ``P`` maps coordinates :math:`\\theta_d \\in \\mathbb{R}^d` to a flat parameter
offset :math:`P\\theta_d \\in \\mathbb{R}^D`; subspace training optimises :math:`\\theta_d` only, in
:math:`\\theta = \\theta_0 + P\\theta_d`. Three random families, each fully determined by ``(D, d, seed)``
(draws use a private CPU generator in float64, then are cast, so the matrix is the same on any device
and, up to rounding, any dtype):

* :class:`DenseProjection` — i.i.d. :math:`\\mathcal{N}(0, 1)` entries, each column then divided by its
  norm, so :math:`\\lVert P e_j \\rVert = 1` exactly. Memory and time :math:`O(Dd)`.
* :class:`SparseProjection` — Li, Hastie & Church's (2006) *very sparse* random projection, as used
  by Li et al.: each entry is non-zero with probability ``density`` (default :math:`1/\\sqrt{D}`) with
  a random sign; each column's ``k_j >= 1`` non-zeros are then set to :math:`\\pm 1/\\sqrt{k_j}`, so
  :math:`\\lVert P e_j \\rVert = 1` exactly. Memory and time :math:`O(d\\sqrt{D})`.
* :class:`FastfoodProjection` — Le, Sarlós & Smola's (2013) Fastfood transform, as in Li et al.:
  with :math:`n = 2^{\\lceil \\log_2 d \\rceil}` (or ``block_size``) and :math:`m = \\lceil D/n
  \\rceil` independent blocks :math:`V_k = H G_k \\Pi_k H B_k` (:math:`H` the unnormalised
  :math:`n \\times n` Walsh–Hadamard matrix, :math:`B_k` random :math:`\\pm 1` diagonal,
  :math:`\\Pi_k` a random permutation, :math:`G_k` Gaussian diagonal),

  .. math::

      P\\theta_d = \\Big[\\frac{V_1 \\bar\\theta}{\\lVert g_1 \\rVert\\sqrt{D}}; \\dots;
      \\frac{V_m \\bar\\theta}{\\lVert g_m \\rVert\\sqrt{D}}\\Big]_{1:D},
      \\qquad \\bar\\theta = (\\theta_d, 0, \\dots, 0) \\in \\mathbb{R}^n .

  Every column of one block has norm :math:`\\sqrt{n}\\lVert g_k\\rVert`, so
  :math:`\\lVert P e_j\\rVert^2 = \\tfrac{n}{D}\\,[(m - 1) + \\rho_j]` where :math:`\\rho_j \\in [0, 1]`
  is the fraction of column :math:`j` of the last block kept by the truncation to ``D`` rows:
  **exactly 1 when n divides D**, and 1 in expectation otherwise (:math:`E\\rho_j = r/n`, with
  :math:`r = D - (m-1)n` rows kept). Time :math:`O(D \\log n)`, memory :math:`O(D)`; nothing of size
  :math:`D \\times d` is ever formed. With ``block_size`` = the next power of two :math:`\\ge D`
  there is a single block, which is the construction of Li et al.'s released code.

All projections accept leading batch dimensions (``(..., d) -> (..., D)``) and are differentiable in
:math:`\\theta_d` (they are built from plain torch ops, so ``torch.func`` transforms apply).

Example:
    >>> import torch
    >>> P = FastfoodProjection(100, 5, seed=0)
    >>> P(torch.zeros(5)).shape
    torch.Size([100])
    >>> M = P.to_dense()
    >>> z = torch.randn(5, generator=torch.Generator().manual_seed(1))
    >>> torch.allclose(P(z), M @ z, atol=1e-5)
    True
    >>> D = DenseProjection(50, 3, seed=0).to_dense()
    >>> torch.allclose(D.norm(dim=0), torch.ones(3))
    True
"""
from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..errors import LosslabError

__all__ = [
    "Projection", "DenseProjection", "SparseProjection", "FastfoodProjection", "AugmentedProjection",
    "make_projection", "fwht", "PROJECTIONS",
]

PROJECTIONS = ("dense", "sparse", "fastfood")

# Dense matrices are drawn this many float64 numbers at a time (a fixed function of D, so the stream,
# hence the matrix, depends on (D, d, seed) only).
_DRAW_CHUNK = 1 << 22


@runtime_checkable
class Projection(Protocol):
    """A linear map :math:`\\mathbb{R}^d \\to \\mathbb{R}^D` (``D`` = number of trainable parameters).

    Attributes:
        D: output dimension.
        d: input (subspace) dimension.
        meta: JSON-serialisable description (kind, seed, options).
    """

    D: int
    d: int

    def __call__(self, theta_d: Tensor) -> Tensor:
        """``(..., d) -> (..., D)``: the flat parameter offset :math:`P\\theta_d`."""
        ...

    def to_dense(self) -> Tensor:
        """The ``(D, d)`` matrix (for tests and small cases)."""
        ...

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Projection":
        """A copy on ``device`` / in ``dtype`` (self when nothing changes)."""
        ...

    @property
    def meta(self) -> dict[str, Any]:
        ...


def _check_dims(D: int, d: int) -> tuple[int, int]:
    for name, v in (("D", D), ("d", d)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise LosslabError(f"projection {name} must be a positive int, got {v!r}")
    if d > D:
        raise LosslabError(f"subspace dimension d={d} exceeds the number of parameters D={D}")
    return D, d


def _generator(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise LosslabError(f"projection seed must be an int, got {seed!r}")
    return torch.Generator().manual_seed(int(seed))


def _check_input(theta_d: Tensor, d: int) -> None:
    if not isinstance(theta_d, Tensor) or theta_d.dim() < 1 or theta_d.shape[-1] != d:
        shape = tuple(theta_d.shape) if isinstance(theta_d, Tensor) else type(theta_d).__name__
        raise LosslabError(f"projection expects (..., {d}) coordinates, got {shape}")


class DenseProjection:
    """Gaussian matrix with unit-norm columns (or any given ``(D, d)`` matrix via :meth:`from_matrix`).

    Args:
        D: number of parameters.
        d: subspace dimension.
        seed: seed of the draw (required; no global RNG is used).
        dtype, device: where the matrix lives (default float32, CPU).

    Example:
        >>> P = DenseProjection(10, 2, seed=3)
        >>> P.to_dense().shape
        torch.Size([10, 2])
    """

    def __init__(self, D: int, d: int, *, seed: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> None:
        self.D, self.d = _check_dims(D, d)
        g = _generator(seed)
        self.seed = int(seed)
        rows = torch.empty(d, D, dtype=dtype, device=device)  # P^T, row j = column j of P
        per = max(1, _DRAW_CHUNK // D)
        for j0 in range(0, d, per):
            block = torch.randn(min(per, d - j0), D, generator=g, dtype=torch.float64)
            block /= block.norm(dim=1, keepdim=True)
            rows[j0 : j0 + block.shape[0]] = block.to(dtype=dtype, device=rows.device)
        self._pt = rows
        self._meta: dict[str, Any] = {"kind": "dense", "D": D, "d": d, "seed": self.seed}

    @classmethod
    def from_matrix(cls, matrix: Tensor, *, meta: dict[str, Any] | None = None) -> "DenseProjection":
        """Wrap an explicit ``(D, d)`` matrix (no normalisation), e.g. ``torch.eye(D)``."""
        if not isinstance(matrix, Tensor) or matrix.dim() != 2:
            raise LosslabError("from_matrix needs a 2-D (D, d) tensor")
        obj = cls.__new__(cls)
        obj.D, obj.d = _check_dims(int(matrix.shape[0]), int(matrix.shape[1]))
        obj.seed = None  # type: ignore[assignment]
        obj._pt = matrix.detach().t().contiguous()
        obj._meta = {"kind": "matrix", "D": obj.D, "d": obj.d, **(meta or {})}
        return obj

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self._meta)

    def __call__(self, theta_d: Tensor) -> Tensor:
        _check_input(theta_d, self.d)
        return theta_d @ self._pt

    def to_dense(self) -> Tensor:
        return self._pt.t().clone()

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "DenseProjection":
        pt = self._pt.to(device=device if device is not None else self._pt.device, dtype=dtype or self._pt.dtype)
        if pt is self._pt:
            return self
        obj = DenseProjection.__new__(DenseProjection)
        obj.__dict__.update(self.__dict__)
        obj._pt = pt
        return obj

    def __repr__(self) -> str:
        return f"DenseProjection(D={self.D}, d={self.d}, seed={self.seed})"


class SparseProjection:
    """Li, Hastie & Church's very sparse random projection with unit-norm columns.

    Column :math:`j` has :math:`k_j \\sim \\max(1, \\mathrm{Binomial}(D, s))` non-zeros at distinct
    uniformly random rows, each :math:`\\pm 1/\\sqrt{k_j}` with a random sign (:math:`s` = ``density``).

    Args:
        D: number of parameters.
        d: subspace dimension.
        seed: seed of the draw.
        density: probability :math:`s` that an entry is non-zero (default :math:`1/\\sqrt{D}`).
        dtype, device: where the values live.

    Example:
        >>> P = SparseProjection(400, 3, seed=0)
        >>> P.nnz > 0 and bool(torch.allclose(P.to_dense().norm(dim=0), torch.ones(3)))
        True
    """

    def __init__(self, D: int, d: int, *, seed: int, density: float | None = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        self.D, self.d = _check_dims(D, d)
        s = 1.0 / math.sqrt(D) if density is None else float(density)
        if not 0.0 < s <= 1.0:
            raise LosslabError(f"sparse projection density must be in (0, 1], got {density}")
        g = _generator(seed)
        self.seed, self.density = int(seed), s
        k = torch.binomial(torch.full((d,), float(D), dtype=torch.float64),
                           torch.full((d,), s, dtype=torch.float64), generator=g).to(torch.int64).clamp_(min=1)
        cols = torch.repeat_interleave(torch.arange(d), k)
        rows = torch.randint(0, D, (int(k.sum()),), generator=g)
        # Redraw rows that repeat within a column until all are distinct. The procedure is invariant under
        # relabelling of the rows, so each column's row set is uniform over the k_j-subsets.
        while True:
            key = cols * D + rows
            order = torch.argsort(key, stable=True)
            sk = key[order]
            dup = torch.zeros_like(sk, dtype=torch.bool)
            dup[1:] = sk[1:] == sk[:-1]
            if not bool(dup.any()):
                break
            redo = order[dup]
            rows[redo] = torch.randint(0, D, (redo.numel(),), generator=g)
        signs = torch.randint(0, 2, (rows.numel(),), generator=g).to(torch.float64) * 2 - 1
        vals = signs / torch.sqrt(k.to(torch.float64))[cols]
        self.rows = rows.to(device)
        self.cols = cols.to(device)
        self.vals = vals.to(dtype=dtype, device=device)
        self._meta: dict[str, Any] = {"kind": "sparse", "D": D, "d": d, "seed": self.seed, "density": s,
                                      "nnz": int(rows.numel())}

    @property
    def nnz(self) -> int:
        return int(self.rows.numel())

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self._meta)

    def __call__(self, theta_d: Tensor) -> Tensor:
        _check_input(theta_d, self.d)
        src = theta_d.index_select(-1, self.cols) * self.vals
        out = theta_d.new_zeros(*theta_d.shape[:-1], self.D)
        return out.index_add(-1, self.rows, src)

    def to_dense(self) -> Tensor:
        m = torch.zeros(self.D, self.d, dtype=self.vals.dtype, device=self.vals.device)
        m[self.rows, self.cols] = self.vals
        return m

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "SparseProjection":
        dev = device if device is not None else self.vals.device
        vals = self.vals.to(device=dev, dtype=dtype or self.vals.dtype)
        if vals is self.vals and self.rows.device == torch.device(dev):
            return self
        obj = SparseProjection.__new__(SparseProjection)
        obj.__dict__.update(self.__dict__)
        obj.vals, obj.rows, obj.cols = vals, self.rows.to(dev), self.cols.to(dev)
        return obj

    def __repr__(self) -> str:
        return f"SparseProjection(D={self.D}, d={self.d}, seed={self.seed}, nnz={self.nnz})"


def fwht(x: Tensor) -> Tensor:
    """Unnormalised fast Walsh–Hadamard transform over the last dimension (a power of two).

    Returns :math:`H_n x` with the Sylvester-ordered Hadamard matrix :math:`H_{2n} = [[H_n, H_n],
    [H_n, -H_n]]`, :math:`H_1 = [1]`, in :math:`O(n \\log n)`; :math:`H_n H_n = n I`. Built from
    reshapes, additions and subtractions only, so it is differentiable (its adjoint is itself) and
    works under ``torch.func`` transforms.

    Example:
        >>> fwht(torch.tensor([1.0, 0.0, 0.0, 0.0])).tolist()
        [1.0, 1.0, 1.0, 1.0]
        >>> fwht(torch.tensor([0.0, 1.0, 0.0, 0.0])).tolist()
        [1.0, -1.0, 1.0, -1.0]
    """
    n = x.shape[-1]
    if n < 1 or n & (n - 1):
        raise LosslabError(f"fwht needs a power-of-two length, got {n}")
    batch = x.shape[:-1]
    h = 1
    y = x
    while h < n:
        y = y.reshape(*batch, n // (2 * h), 2, h)
        a, b = y.select(-2, 0), y.select(-2, 1)
        y = torch.stack((a + b, a - b), dim=-2)
        h *= 2
    return y.reshape(*batch, n)


class FastfoodProjection:
    """Fastfood transform :math:`\\mathbb{R}^d \\to \\mathbb{R}^D` (see the module docstring for the math).

    Args:
        D: number of parameters.
        d: subspace dimension.
        seed: seed of the draw.
        block_size: ``n``, a power of two ``>= d`` (default: the smallest). Blocks are stacked until
            they cover ``D`` rows; pass ``block_size >= D`` for one block (Li et al.'s code).
        dtype, device: where the diagonals live.

    Attributes:
        n: block size; m: number of blocks; B, G: ``(m, n)`` diagonals; perm: ``(m, n)`` permutations;
        scale: ``(m,)`` per-block factors :math:`1/(\\lVert g_k\\rVert\\sqrt{D})`.

    Example:
        >>> P = FastfoodProjection(1000, 10, seed=0)
        >>> (P.n, P.m)
        (16, 63)
    """

    def __init__(self, D: int, d: int, *, seed: int, block_size: int | None = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        self.D, self.d = _check_dims(D, d)
        n = 1 << max(0, math.ceil(math.log2(d))) if block_size is None else int(block_size)
        if n < d or n & (n - 1):
            raise LosslabError(f"fastfood block_size must be a power of two >= d={d}, got {block_size}")
        self.n, self.m = n, -(-D // n)
        g = _generator(seed)
        self.seed = int(seed)
        B = torch.randint(0, 2, (self.m, n), generator=g).to(torch.float64) * 2 - 1
        perm = torch.stack([torch.randperm(n, generator=g) for _ in range(self.m)])
        G = torch.randn(self.m, n, generator=g, dtype=torch.float64)
        scale = 1.0 / (G.norm(dim=1) * math.sqrt(D))
        self.B = B.to(dtype=dtype, device=device)
        self.G = G.to(dtype=dtype, device=device)
        self.scale = scale.to(dtype=dtype, device=device)
        # Flat gather index: block k reads positions perm[k] of its own row.
        self.perm = perm.to(device)
        self._flat_perm = (perm + torch.arange(self.m)[:, None] * n).reshape(-1).to(device)
        self._meta: dict[str, Any] = {"kind": "fastfood", "D": D, "d": d, "seed": self.seed,
                                      "block_size": n, "blocks": self.m}

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self._meta)

    def __call__(self, theta_d: Tensor) -> Tensor:
        _check_input(theta_d, self.d)
        batch = theta_d.shape[:-1]
        x = theta_d
        if self.n > self.d:
            x = torch.nn.functional.pad(x, (0, self.n - self.d))
        x = x.unsqueeze(-2) * self.B  # (..., m, n)
        x = fwht(x)
        x = x.reshape(*batch, self.m * self.n).index_select(-1, self._flat_perm).reshape(*batch, self.m, self.n)
        x = fwht(x * self.G) * self.scale[:, None]
        return x.reshape(*batch, self.m * self.n)[..., : self.D]

    def to_dense(self) -> Tensor:
        eye = torch.eye(self.d, dtype=self.G.dtype, device=self.G.device)
        return self(eye).t().contiguous()

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "FastfoodProjection":
        dev = device if device is not None else self.G.device
        dt = dtype or self.G.dtype
        if torch.device(dev) == self.G.device and dt == self.G.dtype:
            return self
        obj = FastfoodProjection.__new__(FastfoodProjection)
        obj.__dict__.update(self.__dict__)
        obj.B, obj.G, obj.scale = (t.to(device=dev, dtype=dt) for t in (self.B, self.G, self.scale))
        obj.perm, obj._flat_perm = self.perm.to(dev), self._flat_perm.to(dev)
        return obj

    def __repr__(self) -> str:
        return f"FastfoodProjection(D={self.D}, d={self.d}, seed={self.seed}, n={self.n}, m={self.m})"


class AugmentedProjection:
    """``[u | P']``: a fixed unit column ``u`` followed by a ``(D, d-1)`` projection ``P'``.

    Used for subspaces that contain the origin (Fort & Jastrzebski 2019): with
    :math:`u = \\theta_0/\\lVert\\theta_0\\rVert` the linear span of the columns contains both the origin
    and :math:`\\theta_0`, and :math:`\\theta = P\\theta_d` starts at :math:`\\theta_0` from
    :math:`\\theta_d = (\\lVert\\theta_0\\rVert, 0, \\dots, 0)`.

    Args:
        direction: ``(D,)`` vector, normalised to unit norm here.
        rest: the projection supplying the other ``d - 1`` columns (or ``None`` when ``d == 1``).
    """

    def __init__(self, direction: Tensor, rest: "Projection | None") -> None:
        nrm = direction.norm()
        if not bool(nrm > 0):
            raise LosslabError("the origin-containing subspace needs a non-zero init point (its direction)")
        self.u = direction.detach() / nrm
        self.rest = rest
        self.D = int(direction.numel())
        self.d = 1 + (rest.d if rest is not None else 0)
        if rest is not None and rest.D != self.D:
            raise LosslabError(f"direction has {self.D} entries but the projection maps to {rest.D}")

    @property
    def meta(self) -> dict[str, Any]:
        return {"kind": "augmented", "D": self.D, "d": self.d, "first_column": "init direction",
                "rest": self.rest.meta if self.rest is not None else None}

    def __call__(self, theta_d: Tensor) -> Tensor:
        _check_input(theta_d, self.d)
        out = theta_d[..., :1] * self.u
        if self.rest is not None:
            out = out + self.rest(theta_d[..., 1:])
        return out

    def to_dense(self) -> Tensor:
        cols = [self.u[:, None]]
        if self.rest is not None:
            cols.append(self.rest.to_dense().to(self.u.dtype))
        return torch.cat(cols, dim=1)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "AugmentedProjection":
        obj = AugmentedProjection.__new__(AugmentedProjection)
        obj.__dict__.update(self.__dict__)
        obj.u = self.u.to(device=device if device is not None else self.u.device, dtype=dtype or self.u.dtype)
        obj.rest = self.rest.to(device, dtype) if self.rest is not None else None
        return obj


def make_projection(kind: str, D: int, d: int, *, seed: int, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None, **options: Any) -> Projection:
    """Build a projection by name: ``"dense"``, ``"sparse"`` (option ``density``) or ``"fastfood"``
    (option ``block_size``).

    Example:
        >>> make_projection("sparse", 100, 4, seed=0).meta["kind"]
        'sparse'
    """
    if kind == "dense":
        if options:
            raise LosslabError(f"dense projection takes no options, got {sorted(options)}")
        return DenseProjection(D, d, seed=seed, dtype=dtype, device=device)
    if kind == "sparse":
        unknown = set(options) - {"density"}
        if unknown:
            raise LosslabError(f"unknown sparse projection option(s) {sorted(unknown)}; allowed: density")
        return SparseProjection(D, d, seed=seed, dtype=dtype, device=device, **options)
    if kind == "fastfood":
        unknown = set(options) - {"block_size"}
        if unknown:
            raise LosslabError(f"unknown fastfood projection option(s) {sorted(unknown)}; allowed: block_size")
        return FastfoodProjection(D, d, seed=seed, dtype=dtype, device=device, **options)
    raise LosslabError(f"unknown projection {kind!r}; choose one of {', '.join(PROJECTIONS)}")
