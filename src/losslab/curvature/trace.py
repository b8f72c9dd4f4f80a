"""Stochastic trace (and Frobenius norm) estimation: Hutchinson and Hutch++.

For random probes with :math:`E[zzᵀ] = I` (Rademacher or Gaussian),

.. math:: E[zᵀAz] = \\operatorname{Tr}(A), \\qquad E\\|Az\\|^2 = E[zᵀAᵀAz] = \\operatorname{Tr}(AᵀA) = \\|A\\|_F^2,

so the same products give both :math:`\\operatorname{Tr} H` and :math:`\\|H\\|_F` (the Goldilocks ratio
:math:`\\operatorname{Tr}H/\\|H\\|_F` costs no extra Hessian-vector products). Standard errors are the sample
standard deviation over probes divided by :math:`\\sqrt{m}`.

Hutch++ (Meyer, Musco, Musco & Woodruff 2021) spends a third of its products on a sketch
:math:`Q` of the top range of :math:`A`, computes :math:`\\operatorname{Tr}(QᵀAQ)` exactly and runs
Hutchinson only on the deflated remainder :math:`(I-QQᵀ)A(I-QQᵀ)`: error :math:`O(1/m)` instead of
:math:`O(1/\\sqrt m)` when the spectrum is dominated by a few large eigenvalues (as a Hessian's is).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..results import Result
from ..errors import LosslabError
from ._common import MatrixLike, as_linop, make_generator, probe_vectors

__all__ = ["TraceResult", "hutchinson_trace", "hutchpp_trace"]


@dataclass(frozen=True)
class TraceResult(Result):
    """A stochastic trace estimate.

    Attributes:
        trace: the estimate of :math:`\\operatorname{Tr}(A)`.
        stderr: its standard error (for Hutch++: that of the stochastic, deflated part).
        num_probes: random probe vectors used.
        num_matvecs: products with ``A`` used.
        frobenius_sq: estimate of :math:`\\|A\\|_F^2` from the same probes (``None`` if not computed).
        frobenius_sq_stderr: its standard error.
        method: ``"hutchinson"`` or ``"hutch++"``.
    """

    trace: float
    stderr: float
    num_probes: int
    num_matvecs: int
    frobenius_sq: float | None = None
    frobenius_sq_stderr: float | None = None
    method: str = "hutchinson"

    @property
    def frobenius(self) -> float | None:
        """:math:`\\|A\\|_F` (square root of the non-negative part of the estimate)."""
        return None if self.frobenius_sq is None else math.sqrt(max(self.frobenius_sq, 0.0))


def _mean_stderr(x: list[float]) -> tuple[float, float]:
    a = np.asarray(x, dtype=np.float64)
    if a.size < 2:
        return float(a.mean()), math.inf
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size))


def hutchinson_trace(
    A: MatrixLike,
    *,
    num_probes: int = 100,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dist: str = "rademacher",
    rtol: float | None = None,
    min_probes: int = 10,
    return_frobenius: bool = True,
) -> TraceResult:
    """Hutchinson's estimate :math:`\\operatorname{Tr}A ≈ \\frac1m\\sum_{j=1}^m z_jᵀAz_j` (and :math:`\\|A\\|_F^2`).

    Rademacher probes (the default) have the smallest variance among i.i.d. probes:
    :math:`\\operatorname{Var}[zᵀAz] = 2\\sum_{i≠j} A_{ij}^2` (Gaussian: :math:`2\\|A\\|_F^2`).

    Args:
        A: symmetric matrix or operator (dense torch/numpy, scipy operator, object with ``matvec``).
        num_probes: probes to use; with ``rtol`` the maximum.
        seed, generator: keyword-only randomness (never the global RNG).
        dist: ``"rademacher"`` or ``"gaussian"``.
        rtol: stop early once ``stderr ≤ rtol · |trace|`` (checked after ``min_probes``).
        min_probes: fewest probes before the ``rtol`` check.
        return_frobenius: also estimate :math:`\\|A\\|_F^2 = E\\|Az\\|^2` (no extra products).

    Returns:
        A :class:`TraceResult`.

    Example:
        >>> import torch
        >>> from losslab.curvature import hutchinson_trace
        >>> A = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
        >>> hutchinson_trace(A, num_probes=5, seed=0).trace    # diagonal: Rademacher is exact
        55.0
    """
    if num_probes < 1:
        raise LosslabError(f"num_probes must be >= 1, got {num_probes}")
    if rtol is not None and not rtol > 0:
        raise LosslabError(f"rtol must be > 0, got {rtol}")
    lin = as_linop(A)
    gen = make_generator(seed, generator)
    start = lin.num_matvecs
    quad: list[float] = []
    sq: list[float] = []
    for j in range(num_probes):
        z = probe_vectors(lin.n, 1, dist, gen, lin.device)[0]
        Az = lin.mv(z)
        quad.append(float(torch.dot(z, Az)))
        sq.append(float(torch.dot(Az, Az)))
        if rtol is not None and j + 1 >= max(2, min_probes):
            t, s = _mean_stderr(quad)
            if s <= rtol * abs(t):
                break
    trace, stderr = _mean_stderr(quad)
    fro, fro_se = _mean_stderr(sq) if return_frobenius else (None, None)
    return TraceResult(
        trace=trace, stderr=stderr, num_probes=len(quad), num_matvecs=lin.num_matvecs - start,
        frobenius_sq=fro, frobenius_sq_stderr=fro_se, method="hutchinson",
    )


def hutchpp_trace(
    A: MatrixLike,
    *,
    num_matvecs: int = 99,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dist: str = "rademacher",
) -> TraceResult:
    """Hutch++ (Meyer et al. 2021): low-rank deflation plus Hutchinson on the remainder.

    With ``m = num_matvecs`` split in thirds (``s = m//3`` sketch probes ``S``, ``s`` products
    for ``AQ``, the rest ``g`` for Hutchinson probes ``G``):

    .. math:: Q = \\operatorname{orth}(AS),\\qquad
              \\widehat{\\operatorname{Tr}} = \\operatorname{Tr}(QᵀAQ) + \\frac1g\\operatorname{Tr}\\big(Gᵀ(I-QQᵀ)A(I-QQᵀ)G\\big).

    Args:
        A: symmetric matrix or operator.
        num_matvecs: total products (at least 3).
        seed, generator: keyword-only randomness.
        dist: probe distribution, ``"rademacher"`` or ``"gaussian"``.

    Returns:
        A :class:`TraceResult` (``stderr`` is that of the Hutchinson part; no Frobenius estimate).

    Example:
        >>> import torch
        >>> from losslab.curvature import hutchpp_trace
        >>> U = torch.linalg.qr(torch.randn(50, 5, dtype=torch.float64,
        ...                                 generator=torch.Generator().manual_seed(0)))[0]
        >>> A = U @ torch.diag(torch.tensor([50.0, 40, 30, 20, 10], dtype=torch.float64)) @ U.T
        >>> round(hutchpp_trace(A, num_matvecs=18, seed=0).trace, 6)   # rank 5 ≤ sketch: exact
        150.0
    """
    if num_matvecs < 3:
        raise LosslabError(f"hutchpp_trace needs num_matvecs >= 3, got {num_matvecs}")
    lin = as_linop(A)
    n = lin.n
    gen = make_generator(seed, generator)
    start = lin.num_matvecs
    s = min(num_matvecs // 3, n)
    g = num_matvecs - 2 * s
    S = probe_vectors(n, s, dist, gen, lin.device)
    AS = torch.stack([lin.mv(S[i]) for i in range(s)], dim=1)
    Q, _ = torch.linalg.qr(AS)  # (n, s)
    AQ = torch.stack([lin.mv(Q[:, i]) for i in range(Q.shape[1])], dim=1)
    exact = float(torch.sum(Q * AQ))
    vals: list[float] = []
    for _ in range(g):
        z = probe_vectors(n, 1, dist, gen, lin.device)[0]
        z = z - Q @ (Q.T @ z)
        Az = lin.mv(z)
        Az = Az - Q @ (Q.T @ Az)
        vals.append(float(torch.dot(z, Az)))
    if vals:
        rest, se = _mean_stderr(vals)
    else:
        rest, se = 0.0, math.inf
    return TraceResult(
        trace=exact + rest, stderr=se, num_probes=s + g, num_matvecs=lin.num_matvecs - start, method="hutch++",
    )
