"""Gradient noise: the simple noise scale (McCandlish et al. 2018, arXiv 1812.06162) and the spectrum of
the per-example gradient covariance via the Gram trick.

With per-example gradients :math:`g_1, \\dots, g_N` (rows of :math:`G`), mean :math:`\\bar g` and centred
rows :math:`\\tilde g_n = g_n - \\bar g`:

.. math::

    \\Sigma = \\frac{1}{N-1} \\sum_n \\tilde g_n \\tilde g_n^\\top, \\qquad
    \\operatorname{tr}\\Sigma = \\frac{1}{N-1} \\sum_n \\lVert \\tilde g_n \\rVert^2, \\qquad
    B_{\\text{simple}} = \\frac{\\operatorname{tr}\\Sigma}{\\lVert G \\rVert^2}.

``b_simple`` uses the plug-in :math:`\\lVert \\bar g \\rVert^2`; since
:math:`\\mathbb{E}\\lVert \\bar g \\rVert^2 = \\lVert G \\rVert^2 + \\operatorname{tr}\\Sigma / N` for a sample of N
examples, ``b_simple_unbiased`` divides by :math:`\\lVert \\bar g \\rVert^2 - \\operatorname{tr}\\Sigma / N`
(NaN when that is :math:`\\le 0`, i.e. the gradient is not resolved above the noise).

Gram trick: :math:`\\Sigma = \\tilde G^\\top \\tilde G / (N-1)` (:math:`D \\times D`) has the same non-zero
eigenvalues as :math:`\\tilde G \\tilde G^\\top / (N-1)` (:math:`N \\times N`), and eigenvectors
:math:`v = \\tilde G^\\top u / \\sqrt{(N-1)\\lambda}`. ``centered=False`` uses the second moment
:math:`G^\\top G / N` instead (the uncentred gradient covariance of Jastrzebski et al.).

Example:
    >>> import torch
    >>> from losslab.probes import covariance_spectrum
    >>> G = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]], dtype=torch.float64)
    >>> [round(v, 6) for v in covariance_spectrum(G, k=2).eigenvalues.tolist()]
    [2.666667, 0.666667]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .._functional import model_then_data
from ..results import Result
from ..errors import LosslabError
from ._common import LossFn, as_xy, to_numpy
from .pergrad import DEFAULT_CHUNK, per_example_grads

__all__ = ["CovarianceSpectrum", "GradientNoiseResult", "covariance_spectrum", "noise_scale", "gradient_noise"]


@dataclass(frozen=True)
class CovarianceSpectrum(Result):
    """Top eigenpairs of the gradient covariance.

    Attributes:
        eigenvalues: ``(k,)`` descending.
        eigenvectors: ``(D, k)`` unit columns in parameter space, or ``None`` when not asked for.
        trace: :math:`\\operatorname{tr}\\Sigma` (all eigenvalues summed).
        n: number of examples; ``centered``: covariance (True) or second moment (False).
    """

    eigenvalues: Tensor
    eigenvectors: Tensor | None
    trace: float
    n: int
    centered: bool


def covariance_spectrum(G: Tensor, k: int | None = None, *, centered: bool = True,
                        eigenvectors: bool = False) -> CovarianceSpectrum:
    """Top-``k`` eigenvalues of the covariance of the rows of ``G`` through the ``N x N`` Gram matrix.

    Args:
        G: ``(N, D)`` per-example gradients.
        k: how many eigenvalues (default all ``min(N, D)``).
        centered: covariance :math:`\\tilde G^\\top \\tilde G/(N-1)` (default) or second moment
            :math:`G^\\top G/N`.
        eigenvectors: also return the ``(D, k)`` eigenvectors.
    """
    if G.dim() != 2:
        raise LosslabError(f"G must be (N, D), got shape {tuple(G.shape)}")
    n = int(G.shape[0])
    if n < 2 and centered:
        raise LosslabError("a covariance needs at least 2 examples")
    A = (G - G.mean(0, keepdim=True)) if centered else G
    denom = (n - 1) if centered else n
    gram = (A @ A.T) / denom
    gram = 0.5 * (gram + gram.T)
    evals, evecs = torch.linalg.eigh(gram.double())
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order].clamp_min(0.0), evecs[:, order]
    kk = min(n, G.shape[1]) if k is None else int(k)
    if kk < 1:
        raise LosslabError(f"k must be >= 1, got {k}")
    kk = min(kk, n, int(G.shape[1]))
    vecs = None
    if eigenvectors:
        lam = evals[:kk]
        v = A.double().T @ evecs[:, :kk]  # (D, k); norm^2 = denom * lam
        vecs = (v / torch.sqrt((lam * denom).clamp_min(torch.finfo(torch.float64).tiny))).to(G.dtype)
    return CovarianceSpectrum(evals[:kk].to(G.dtype), vecs, float(torch.trace(gram.double())), n, centered)


def noise_scale(G: Tensor) -> dict[str, float]:
    """Gradient noise scale of per-example gradients ``G`` ``(N, D)`` (see the module docstring).

    Returns:
        ``{"trace_cov", "grad_norm_sq", "grad_norm_sq_unbiased", "b_simple", "b_simple_unbiased", "n"}``.
    """
    if G.dim() != 2 or G.shape[0] < 2:
        raise LosslabError("noise scale needs (N, D) per-example gradients with N >= 2")
    n = int(G.shape[0])
    Gd = G.double()
    mean = Gd.mean(0)
    tr = float(((Gd - mean) ** 2).sum() / (n - 1))
    g2 = float(mean @ mean)
    g2u = g2 - tr / n
    return {
        "n": n, "trace_cov": tr, "grad_norm_sq": g2, "grad_norm_sq_unbiased": g2u,
        "b_simple": tr / g2 if g2 > 0 else float("inf"),
        "b_simple_unbiased": tr / g2u if g2u > 0 else float("nan"),
    }


@dataclass(frozen=True)
class GradientNoiseResult(Result):
    """Noise scale and covariance spectrum at one point (see :func:`gradient_noise`)."""

    b_simple: float
    b_simple_unbiased: float
    trace_cov: float
    grad_norm_sq: float
    eigenvalues: np.ndarray
    n: int
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"b_simple": self.b_simple, "b_simple_unbiased": self.b_simple_unbiased, "trace_cov": self.trace_cov,
                "grad_norm_sq": self.grad_norm_sq, "top_eigenvalues": self.eigenvalues.tolist(), "n": self.n,
                "top_fraction_of_trace": float(self.eigenvalues.sum() / self.trace_cov) if self.trace_cov > 0 else None}


@model_then_data
def gradient_noise(
    model: nn.Module,
    data: Any,
    *,
    point: Mapping[str, Tensor] | None = None,
    n_examples: int | None = 512,
    k: int = 10,
    seed: int = 0,
    split: str = "train",
    loss: LossFn | None = None,
    chunk_size: int | None = DEFAULT_CHUNK,
    params: Sequence[str] | None = None,
) -> GradientNoiseResult:
    """Simple noise scale :math:`B_{\\text{simple}}` and the top-``k`` covariance eigenvalues at a point.

    Args:
        model: the network.
        data: ``Split``, ``Bundle`` (its ``split``) or ``(x, y)``.
        point: where to measure (``None``: the model's own parameters).
        n_examples: random subset size (``None``: all examples; memory is ``n_examples x D``).
        k: number of covariance eigenvalues.
        seed: seed of the subset.
        loss, chunk_size, params: as :func:`per_example_grads`.
    """
    x, y = as_xy(data, split)
    n = int(x.shape[0])
    if n_examples is not None and n_examples < n:
        if n_examples < 2:
            raise LosslabError(f"n_examples must be >= 2, got {n_examples}")
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:n_examples]
        x, y = x[idx.to(x.device)], y[idx.to(y.device)]
    G = per_example_grads(model, (x, y), point=point, loss=loss, chunk_size=chunk_size, params=params)
    ns = noise_scale(G)
    spec = covariance_spectrum(G, k)
    return GradientNoiseResult(ns["b_simple"], ns["b_simple_unbiased"], ns["trace_cov"], ns["grad_norm_sq"],
                               to_numpy(spec.eigenvalues).astype(np.float64), ns["n"],
                               {"seed": seed, "split": split, "n_params": int(G.shape[1])})
