"""Random-subspace training and the intrinsic dimension of an objective.

* :mod:`~losslab.subspace.projections`: random maps :math:`P: \\mathbb{R}^d \\to \\mathbb{R}^D` —
  dense Gaussian, very sparse, Fastfood (with a differentiable fast Walsh–Hadamard transform).
* :func:`train_subspace`: train any model in :math:`\\theta = \\theta_0 + P\\theta_d` (only
  :math:`\\theta_d` learns), or in a subspace through the origin; :func:`train_full` is the baseline;
  :func:`radial_profile`: loss along the ray from the origin through a point.
* :func:`intrinsic_dimension`: the d sweep of Li et al. (2018) with :math:`d_{int90}`, resumable;
  :class:`IntrinsicDimDisplay` plots it.
* :mod:`~losslab.subspace.goldilocks`: the Goldilocks zone (Fort & Scherlis 2019), curvature in
  random subspaces against the initialisation radius (:func:`~losslab.subspace.goldilocks.goldilocks`,
  :func:`restricted_hessian`, :func:`subspace_curvature`, :class:`GoldilocksResult`).

Example:
    >>> import torch
    >>> from losslab.subspace import make_projection
    >>> P = make_projection("fastfood", 1000, 16, seed=0)
    >>> P(torch.ones(16)).shape
    torch.Size([1000])
"""
from __future__ import annotations

from .display import IntrinsicDimDisplay
from .goldilocks import GoldilocksDisplay, GoldilocksResult, restricted_hessian, subspace_curvature
from .intrinsic import DEFAULT_DIMS, IntrinsicDimResult, intrinsic_dimension, threshold_crossing
from .projections import (
    PROJECTIONS, AugmentedProjection, DenseProjection, FastfoodProjection, Projection, SparseProjection, fwht,
    make_projection,
)
from .training import SubspaceResult, radial_profile, train_full, train_subspace

__all__ = [
    "GoldilocksDisplay",
    "GoldilocksResult",
    "restricted_hessian",
    "subspace_curvature",
    "Projection", "DenseProjection", "SparseProjection", "FastfoodProjection", "AugmentedProjection",
    "make_projection", "fwht", "PROJECTIONS",
    "SubspaceResult", "train_subspace", "train_full", "radial_profile",
    "IntrinsicDimResult", "intrinsic_dimension", "threshold_crossing", "DEFAULT_DIMS",
    "IntrinsicDimDisplay",
]
