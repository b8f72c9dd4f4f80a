"""Curvature of the loss landscape: Hessian/GGN/gradient-covariance operators and spectral algorithms.

Operators (:class:`HessianOperator`, :class:`GGNOperator`, :class:`GradientCovarianceOperator`) are linear
maps over a model's parameters for the *full-data* risk, exact with uneven batches, never modifying the
model. Algorithms are free functions that accept these operators, dense torch/numpy matrices, scipy
``LinearOperator`` objects, or anything with ``.shape`` and ``.matvec``:

* :func:`lanczos_eigs`: extreme eigenpairs (Lanczos, full reorthogonalization, residual-based stop);
* :func:`hutchinson_trace`, :func:`hutchpp_trace`: trace and Frobenius norm;
* :func:`slq_density` → :class:`SLQResult` (saveable), :func:`density_curve`, :func:`spectral_moments`;
* :func:`lambda_max`, :func:`negative_curvature_ratio`, :func:`epsilon_sharpness`;
* :func:`adaptive_sharpness` (ASAM's scale-invariant sharpness), :func:`basin_width` → :class:`BasinResult`
  (radii along random directions, volume estimate);
* :class:`CurvatureTracker`: a :func:`losslab.train.train` callback recording λmax (vs 2/LR), trace and the
  gradient-covariance top eigenvalue during training; :func:`plot_sharpness_trajectory`.

Every stochastic function takes a keyword-only ``seed`` or ``generator`` and never touches global RNGs.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from losslab.curvature import HessianOperator, lanczos_eigs, hutchinson_trace
    >>> g = torch.Generator().manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    >>> x = torch.randn(13, 4, generator=g, dtype=torch.float64)
    >>> y = torch.randint(0, 3, (13,), generator=g)
    >>> H = HessianOperator(model, (x, y), loss=nn.CrossEntropyLoss(), batch_size=5)
    >>> top = lanczos_eigs(H, k=3, seed=0)
    >>> top.converged, top.eigenvalues.shape
    (True, torch.Size([3]))
    >>> tr = hutchinson_trace(H, num_probes=20, seed=0)
    >>> tr.num_matvecs
    20
"""
from __future__ import annotations

from .density import SLQResult, density_curve, slq_density, spectral_moments
from .lanczos import EigResult, lanczos_eigs
from .operators import (
    DEFAULT_MEMORY_BUDGET,
    CurvatureOperator,
    GGNOperator,
    GradientCovarianceOperator,
    HessianOperator,
    gradient,
)
from .sharpness import (
    AscentSharpness,
    EpsilonSharpness,
    NegativeCurvature,
    epsilon_sharpness,
    lambda_max,
    negative_curvature_ratio,
)
from .trace import TraceResult, hutchinson_trace, hutchpp_trace
from .adaptive import AdaptiveSharpness, adaptive_sharpness
from .basin import BasinResult, basin_width
from .tracking import CurvatureTracker, load_curvature_records, plot_sharpness_trajectory

__all__ = [
    "CurvatureOperator",
    "HessianOperator",
    "GGNOperator",
    "GradientCovarianceOperator",
    "gradient",
    "DEFAULT_MEMORY_BUDGET",
    "EigResult",
    "lanczos_eigs",
    "TraceResult",
    "hutchinson_trace",
    "hutchpp_trace",
    "SLQResult",
    "slq_density",
    "density_curve",
    "spectral_moments",
    "lambda_max",
    "NegativeCurvature",
    "negative_curvature_ratio",
    "AscentSharpness",
    "EpsilonSharpness",
    "epsilon_sharpness",
    "AdaptiveSharpness",
    "adaptive_sharpness",
    "BasinResult",
    "basin_width",
    "CurvatureTracker",
    "load_curvature_records",
    "plot_sharpness_trajectory",
]
