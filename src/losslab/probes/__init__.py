"""Probes built on per-example gradients and Jacobians: stiffness, gradient noise, the empirical NTK and
linearized training, function-space diversity of solutions, and implicit-regularization helpers.

* :func:`per_example_grads`: ``vmap(grad)`` over chunks of examples → ``(N, D)``.
* Stiffness (Fort et al. 2019): :func:`stiffness` → :class:`StiffnessResult` (class-pair and
  input-distance aggregates, within- vs between-class).
* Gradient noise (McCandlish et al. 2018): :func:`noise_scale`, :func:`covariance_spectrum`,
  :func:`gradient_noise`.
* NTK (Fort et al. 2020): :func:`empirical_ntk` (``full``/``trace``/``diagonal``; ``jacobian`` or
  ``ntvp``), :func:`ntk_matvec`, :func:`kernel_distance`, :func:`kernel_velocity` /
  :func:`run_kernel_velocity`, :func:`linearize`, :func:`train_linearized`, :func:`linearized_vs_full`.
* Function space (Fort, Hu & Lakshminarayanan 2019): :func:`predictions`, :func:`disagreement`,
  :func:`kl_divergence`, :func:`js_divergence`, :func:`ensemble_accuracy`, :func:`embed_predictions`,
  :func:`subspace_samples`, :func:`diversity` → :class:`DiversityResult`.
* Implicit regularization: :func:`effective_rank`, :func:`schatten_norm`, :func:`layer_spectra`,
  :func:`deep_matrix_completion` (Razin & Cohen 2020), :class:`NormDecay` /
  :func:`train_with_norm_decay` (Goldblum et al. 2020).

Every function evaluates the model through ``torch.func.functional_call`` on a private meta-device copy
in eval mode; the user's module is never modified. Stochastic functions take a keyword-only ``seed``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from losslab import probes
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    >>> x, y = torch.randn(12, 4), torch.arange(12) % 3
    >>> probes.per_example_grads(model, (x, y)).shape
    torch.Size([12, 67])
    >>> probes.empirical_ntk(model, x, mode="diagonal").shape
    torch.Size([12, 12, 3])
"""
from __future__ import annotations

from .display import DiversityDisplay, FactorizationDisplay, NTKDisplay, StiffnessDisplay
from .function_space import (
    DiversityResult,
    disagreement,
    diversity,
    embed_predictions,
    ensemble_accuracy,
    js_divergence,
    kl_divergence,
    pairwise,
    predictions,
    subspace_samples,
    weight_cosine,
)
from .implicit import (
    FactorizationResult,
    NormDecay,
    deep_matrix_completion,
    effective_rank,
    layer_effective_ranks,
    layer_spectra,
    norm_penalty,
    schatten_norm,
    singular_values,
    train_with_norm_decay,
)
from .noise import CovarianceSpectrum, GradientNoiseResult, covariance_spectrum, gradient_noise, noise_scale
from .ntk import (
    KernelVelocityResult,
    LinearizationResult,
    LinearTrainResult,
    empirical_ntk,
    jacobian,
    kernel_distance,
    kernel_velocity,
    linearize,
    linearized_vs_full,
    ntk_matvec,
    run_kernel_velocity,
    train_linearized,
)
from .pergrad import per_example_grads
from .stiffness import (
    StiffnessResult,
    class_stiffness,
    sample_per_class,
    stiffness,
    stiffness_by_distance,
    stiffness_matrices,
    within_between,
)

__all__ = [
    # per-example gradients
    "per_example_grads",
    # stiffness
    "stiffness", "StiffnessResult", "stiffness_matrices", "class_stiffness", "within_between",
    "stiffness_by_distance", "sample_per_class",
    # gradient noise
    "noise_scale", "covariance_spectrum", "CovarianceSpectrum", "gradient_noise", "GradientNoiseResult",
    # NTK
    "jacobian", "empirical_ntk", "ntk_matvec", "kernel_distance", "kernel_velocity", "run_kernel_velocity",
    "KernelVelocityResult", "linearize", "train_linearized", "LinearTrainResult", "linearized_vs_full",
    "LinearizationResult",
    # function space
    "predictions", "weight_cosine", "disagreement", "kl_divergence", "js_divergence", "pairwise",
    "ensemble_accuracy", "embed_predictions", "subspace_samples", "diversity", "DiversityResult",
    # implicit regularization
    "effective_rank", "singular_values", "schatten_norm", "layer_spectra", "layer_effective_ranks",
    "deep_matrix_completion", "FactorizationResult", "norm_penalty", "NormDecay", "train_with_norm_decay",
    # displays
    "StiffnessDisplay", "NTKDisplay", "DiversityDisplay", "FactorizationDisplay",
]
