"""Data parallelism: a dataset split into per-rank shards, combined exactly by size-weighted all-reduces.

With shards :math:`S_1, \\dots, S_R` of sizes :math:`N_r` (uneven allowed), :math:`N = \\sum_r N_r` and
:math:`w_r = N_r / N`, every full-data mean decomposes into per-shard means:

.. math::

    L(\\theta) = \\sum_r w_r L_r(\\theta), \\quad \\nabla L = \\sum_r w_r \\nabla L_r, \\quad
    H v = \\sum_r w_r H_r v, \\quad G v = \\sum_r w_r G_r v,

where :math:`L_r` is the mean loss over :math:`S_r` (what a local operator or evaluator computes).
So each rank computes its local quantity, multiplies by :math:`w_r` and one ``all_reduce(SUM)`` gives
the full-data value on every rank. The gradient covariance is not linear in the data, but
:math:`C = \\sum_r w_r (C_r + \\bar g_r \\bar g_rᵀ) - \\bar g \\bar gᵀ` with :math:`\\bar g = \\sum_r w_r \\bar g_r`.

Because every rank receives bitwise the same reduced vector, iterative algorithms
(:func:`~losslab.curvature.lanczos_eigs`, :func:`~losslab.curvature.hutchinson_trace`,
:func:`~losslab.curvature.slq_density`) run **unchanged** on every rank with the same seed: they take
the same steps, and each product is one collective. Every rank must therefore call them with the
same arguments (same seed, same number of products).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .._functional import as_xy
from ..errors import LosslabError
from ._runtime import all_reduce_sum, current_context

__all__ = ["DistributedOperator", "DistributedEvaluator", "shard", "shard_bounds"]


def shard_bounds(n: int, world_size: int, sizes: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """``[(start, stop)]`` of each rank's contiguous shard of ``n`` examples.

    Args:
        n: number of examples.
        world_size: number of ranks.
        sizes: explicit shard sizes (one per rank, summing to ``n``); default: as equal as
            possible (the first ``n % world_size`` ranks get one more, as ``numpy.array_split``).

    Example:
        >>> shard_bounds(10, 3)
        [(0, 4), (4, 7), (7, 10)]
        >>> shard_bounds(10, 2, sizes=[3, 7])
        [(0, 3), (3, 10)]
    """
    if world_size < 1:
        raise LosslabError(f"world_size must be >= 1, got {world_size}")
    if sizes is None:
        base, extra = divmod(int(n), int(world_size))
        sizes = [base + (1 if r < extra else 0) for r in range(world_size)]
    sizes = [int(s) for s in sizes]
    if len(sizes) != world_size:
        raise LosslabError(f"sizes has {len(sizes)} entries for {world_size} ranks")
    if any(s < 0 for s in sizes) or sum(sizes) != n:
        raise LosslabError(f"shard sizes {sizes} must be >= 0 and sum to {n}")
    bounds, start = [], 0
    for s in sizes:
        bounds.append((start, start + s))
        start += s
    return bounds


def shard(data: Any, *, sizes: Sequence[int] | None = None, rank: int | None = None,
          world_size: int | None = None) -> tuple[Tensor, Tensor]:
    """This rank's contiguous shard ``(x, y)`` of ``data`` (a ``Split`` or an ``(x, y)`` pair).

    Args:
        data: the full dataset (every rank passes the same).
        sizes: shard sizes, one per rank (uneven allowed); default: as equal as possible.
        rank, world_size: default: from the process group (0 and 1 without one).

    Example:
        >>> import torch
        >>> x, y = shard((torch.arange(5.0), torch.arange(5)), sizes=[2, 3], rank=1, world_size=2)
        >>> x.tolist()
        [2.0, 3.0, 4.0]
    """
    x, y = as_xy(data, None, what="shard's data", allow_empty=True)
    ctx = current_context()
    rank = ctx.rank if rank is None else int(rank)
    world_size = ctx.world_size if world_size is None else int(world_size)
    if not 0 <= rank < world_size:
        raise LosslabError(f"rank {rank} is outside 0..{world_size - 1}")
    a, b = shard_bounds(int(x.shape[0]), world_size, sizes)[rank]
    if b <= a:
        raise LosslabError(f"rank {rank}'s shard is empty; give every rank at least one example")
    return x[a:b], y[a:b]


def _gather_sizes(n_local: int, group: Any, device: torch.device) -> list[int]:
    ctx = current_context()
    if not ctx.distributed:
        return [int(n_local)]
    import torch.distributed as dist

    world = dist.get_world_size(group)
    me = dist.get_rank(group)
    onehot = torch.zeros(world, dtype=torch.float64, device=device)
    onehot[me] = float(n_local)
    return [int(v) for v in all_reduce_sum(onehot, group).round().tolist()]


class DistributedOperator:
    """A curvature operator over the full dataset, built from one operator per rank on its shard.

    .. math:: A v = \\sum_r \\frac{N_r}{N} A_r v \\qquad (\\text{one } \\texttt{all\\_reduce} \\text{ per product})

    ``local`` is any losslab operator (:class:`~losslab.curvature.HessianOperator`,
    :class:`~losslab.curvature.GGNOperator`, :class:`~losslab.curvature.GradientCovarianceOperator`,
    with the correction in the module docstring) or an object with ``.shape``, ``.matvec`` and
    ``.num_examples``, built on this rank's shard at the same point on every rank. The wrapper has the
    operator interface (``shape``, ``dtype``, ``device``, ``matvec``/``@`` on flat vectors, ``(n, k)``
    matrices or dicts, ``to_scipy``, ``to_dense``, ``loss``, ``gradient``), so the curvature algorithms
    accept it unchanged. Products are collective: every rank must apply the same number of them, i.e.
    run the same algorithm with the same seed and arguments.

    Args:
        local: the operator on this rank's shard.
        num_examples: this rank's shard size (default ``local.num_examples``).
        group: process group (default: the world).

    Attributes:
        shard_sizes: :math:`N_r` of every rank; ``num_examples`` = their sum; ``weight`` = this rank's
            :math:`w_r`; ``num_matvecs``: products applied.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from losslab.curvature import HessianOperator, lanczos_eigs
        >>> from losslab.distributed import DistributedOperator, shard
        >>> X = torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> model, y = nn.Linear(3, 1, bias=False).double(), torch.zeros(20, 1, dtype=torch.float64)
        >>> H = DistributedOperator(HessianOperator(model, shard((X, y)), loss=nn.MSELoss()))  # 1 process
        >>> torch.allclose(H.to_dense(), 2 * X.T @ X / 20)
        True
    """

    def __init__(self, local: Any, *, num_examples: int | None = None, group: Any = None) -> None:
        if not hasattr(local, "matvec") or not hasattr(local, "shape"):
            raise LosslabError(f"local must be an operator with .shape and .matvec, got {type(local).__name__}")
        n_local = num_examples if num_examples is not None else getattr(local, "num_examples", None)
        if n_local is None or int(n_local) < 1:
            raise LosslabError("give num_examples (this rank's shard size, >= 1) for an operator without .num_examples")
        self.local = local
        self.group = group
        self.shard_sizes = _gather_sizes(int(n_local), group, self._collective_device())
        self.num_examples = int(sum(self.shard_sizes))
        self.weight = int(n_local) / self.num_examples
        dims = _gather_sizes(int(local.shape[0]), group, self._collective_device())
        if len(set(dims)) != 1:
            raise LosslabError(f"ranks disagree on the operator's dimension: {dims}")
        self.num_matvecs = 0
        self._gbar: Tensor | None = None  # global mean gradient (gradient covariance correction)

    def _collective_device(self) -> torch.device:
        return torch.device(getattr(self.local, "device", "cpu"))

    # -- description --------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.local.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> torch.dtype:
        return getattr(self.local, "dtype", torch.float64)

    @property
    def device(self) -> torch.device:
        return self._collective_device()

    @property
    def names(self) -> list[str]:
        return list(getattr(self.local, "names", []))

    def flatten(self, d: Mapping[str, Tensor]) -> Tensor:
        return self.local.flatten(d)

    def unflatten(self, vec: Tensor) -> dict[str, Tensor]:
        return self.local.unflatten(vec)

    def __repr__(self) -> str:
        return f"DistributedOperator({self.local!r}, shard_sizes={self.shard_sizes})"

    # -- products -----------------------------------------------------------------------------------
    def _is_covariance(self) -> bool:
        from ..curvature import GradientCovarianceOperator

        return isinstance(self.local, GradientCovarianceOperator)

    def _global_mean_gradient(self) -> Tensor:
        if self._gbar is None:
            self._gbar = all_reduce_sum(self.local.mean_gradient * self.weight, self.group)
        return self._gbar

    def _product(self, v: Tensor) -> Tensor:
        """Local contribution ``w_r A_r v`` (plus the covariance correction) for a flat ``v``."""
        out = self.local.matvec(v)
        if self._is_covariance():
            g = self.local.mean_gradient.to(device=v.device, dtype=v.dtype)
            out = out + g * (g @ v)
        return out * self.weight

    def _finish(self, summed: Tensor, v: Tensor) -> Tensor:
        if self._is_covariance():
            g = self._global_mean_gradient().to(device=v.device, dtype=v.dtype)
            if summed.dim() == 2:
                return summed - torch.outer(g, g @ v)
            return summed - g * (g @ v)
        return summed

    def matvec(self, v: Tensor | Mapping[str, Tensor] | np.ndarray) -> Any:
        """``A v`` over the full dataset (a collective: every rank must call it with its own copy of ``v``).

        ``v``: a flat vector ``(n,)``, a matrix of columns ``(n, k)`` (one all-reduce for all ``k``), a
        numpy array or a dict keyed like the parameters; the result has the input's kind.
        """
        if isinstance(v, Mapping):
            flat = self.local.flatten(v)
            return self.local.unflatten(self._matvec_tensor(flat))
        if isinstance(v, np.ndarray):
            return self._matvec_tensor(torch.from_numpy(v)).cpu().numpy()
        if not isinstance(v, Tensor):
            raise LosslabError(f"cannot multiply by {type(v).__name__}: pass a tensor or a parameter dict")
        return self._matvec_tensor(v)

    def _matvec_tensor(self, v: Tensor) -> Tensor:
        n = self.shape[0]
        if v.dim() == 2 and v.shape[0] == n:
            part = torch.stack([self._product(c) for c in v.T], dim=1)
        elif v.dim() == 1 and v.numel() == n:
            part = self._product(v)
        else:
            raise LosslabError(f"vector has shape {tuple(v.shape)}, expected ({n},) or ({n}, k)")
        out = self._finish(all_reduce_sum(part, self.group), v)
        self.num_matvecs += 1 if v.dim() == 1 else int(v.shape[1])
        return out

    def __matmul__(self, v: Any) -> Any:
        return self.matvec(v)

    def to_scipy(self) -> Any:
        """A float64 ``scipy.sparse.linalg.LinearOperator`` (each product collective)."""
        from scipy.sparse.linalg import LinearOperator

        n = self.shape[0]

        def mv(x: np.ndarray) -> np.ndarray:
            v = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1))
            return self._matvec_tensor(v).cpu().numpy()

        return LinearOperator((n, n), matvec=mv, rmatvec=mv, dtype=np.float64)

    def to_dense(self) -> Tensor:
        """The full matrix (``n`` products in one collective; tiny models and tests only)."""
        n = self.shape[0]
        if n > 20_000:
            raise LosslabError(f"to_dense would need {n} products of size {n}; too large")
        return self._matvec_tensor(torch.eye(n, dtype=self.dtype, device=self.device))

    # -- first-order quantities -----------------------------------------------------------------------
    def loss(self) -> float:
        """Full-data risk :math:`\\sum_r w_r L_r` (collective)."""
        t = torch.tensor([self.local.loss() * self.weight], dtype=torch.float64, device=self.device)
        return float(all_reduce_sum(t, self.group)[0])

    def gradient(self, *, as_dict: bool = True) -> Any:
        """Full-data gradient :math:`\\sum_r w_r \\nabla L_r` (collective)."""
        g = self.local.gradient(as_dict=False) * self.weight
        g = all_reduce_sum(g, self.group)
        return self.local.unflatten(g) if as_dict else g


class DistributedEvaluator:
    """Metrics over the full dataset from one :class:`~losslab.evaluate.Evaluator` per rank on its shard.

    Every metric is a size-weighted mean, so :math:`m = \\sum_r \\frac{N_r}{N} m_r` is exact (one
    ``all_reduce`` per call). Calls are collective: every rank evaluates the same points.

    BatchNorm: with ``bn="recompute"`` each rank recomputes the statistics from *its* ``bn_data``;
    pass the full training data as ``bn_data`` on every rank (or use ``bn="eval"``) to get the
    single-process values.

    Args:
        local: the evaluator on this rank's shard.
        group: process group (default: the world).
    """

    def __init__(self, local: Any, *, group: Any = None) -> None:
        self.local = local
        self.group = group
        self.shard_sizes = _gather_sizes(int(local.n), group, torch.device(local.device))
        self.n = int(sum(self.shard_sizes))
        self.weight = int(local.n) / self.n
        self.metric_names = list(local.metric_names)

    def _reduce(self, res: Mapping[str, Any]) -> dict[str, np.ndarray]:
        names = self.metric_names
        stacked = torch.as_tensor(np.stack([np.atleast_1d(np.asarray(res[k], dtype=np.float64)) for k in names]),
                                  device=torch.device(self.local.device))
        total = all_reduce_sum(stacked * self.weight, self.group).cpu().numpy()
        return {k: total[i] for i, k in enumerate(names)}

    def evaluate(self, point: Mapping[str, Tensor]) -> dict[str, float]:
        """Metrics at one point over the full dataset (collective)."""
        return {k: float(v[0]) for k, v in self._reduce(self.local.evaluate(point)).items()}

    def evaluate_stacked(self, stacked: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
        """Metrics at K stacked points (collective)."""
        return self._reduce(self.local.evaluate_stacked(stacked))

    def evaluate_many(self, points: Any, n: int | None = None) -> dict[str, np.ndarray]:
        """Metrics at many points (collective; see :meth:`losslab.evaluate.Evaluator.evaluate_many`)."""
        return self._reduce(self.local.evaluate_many(points, n))
