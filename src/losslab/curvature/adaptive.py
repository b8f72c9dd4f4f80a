"""Adaptive (scale-invariant) sharpness: Kwon et al. (2021, ASAM), computed by projected gradient ascent.

Plain sharpness :math:`\\max_{\\|δ\\| ≤ ρ} L(θ+δ) - L(θ)` is not invariant to reparametrizations that
leave the network function unchanged: scaling one ReLU layer by :math:`α` and the next by :math:`1/α`
changes it arbitrarily (Dinh et al. 2017). ASAM measures the perturbation relative to the weights
through the *normalization operator* :math:`T_θ = \\operatorname{diag}(|θ_1| + η, …, |θ_n| + η)`
(element-wise; :math:`η = 0` in the definition, ASAM trains with :math:`η = 0.01`):

.. math::

    S_ρ(θ) = \\max_{\\|T_θ^{-1} δ\\|_p ≤ ρ} L(θ + δ) - L(θ).

With :math:`η = 0`, for any invertible diagonal :math:`A > 0` with :math:`L(Aθ') = L(θ')` for all
:math:`θ'` (the ReLU rescalings above, BatchNorm-preceding weight scalings), :math:`T_{Aθ} = A T_θ`, so the
feasible sets map onto each other and :math:`S_ρ(Aθ) = S_ρ(θ)` exactly.

Substituting :math:`δ = T_θ u` turns the problem into a maximization over the ball
:math:`\\|u\\|_p ≤ ρ` of :math:`g(u) = L(θ + T_θ u)`, with :math:`∇_u g = T_θ ∇L(θ + T_θ u)`. We solve it
approximately by projected gradient ascent on :math:`u` (keeping the best iterate, so the result is a
lower bound of the true maximum):

* ``p = 2``: normalized steps :math:`u ← Π_ρ(u + α ρ\\, ∇_u g / \\|∇_u g\\|_2)`, :math:`Π_ρ` the
  projection on the ball. The default start :math:`u_0 = ρ\\, T_θ∇L / \\|T_θ∇L\\|` is ASAM's one-step
  ascent :math:`δ = ρ T_θ^2 ∇L / \\|T_θ ∇L\\|`; on a quadratic :math:`L = L^* + \\tfrac12 δᵀHδ` at its
  minimum the iteration is a power method for :math:`T_θ H T_θ` and the value converges to
  :math:`\\tfrac12 ρ^2 λ_{max}(T_θ H T_θ)`.
* ``p = ∞``: sign steps :math:`u ← \\operatorname{clip}(u + α ρ \\operatorname{sign}∇_u g, -ρ, ρ)`
  (Andriushchenko et al. 2023 study this :math:`\\ell_∞` variant).

At an exact critical point the gradient vanishes and the ascent cannot leave ``u = 0``; the start is then
a random point on the sphere (``init="random"`` forces it; it needs ``seed`` or ``generator``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .._functional import model_then_data
from ..errors import LosslabError
from ..params import Point
from ._common import make_generator
from ._problem import DataLike, LossFn, Problem
from .sharpness import AscentSharpness

__all__ = ["AdaptiveSharpness", "adaptive_sharpness"]


@dataclass(frozen=True, eq=False)
class AdaptiveSharpness(AscentSharpness):
    """Result of :func:`adaptive_sharpness`: an :class:`~losslab.curvature.AscentSharpness` with
    ``sharpness`` :math:`= \\max_{\\|T_θ^{-1}δ\\|_p ≤ ρ} L(θ+δ) - L(θ)` (best value found; a lower bound) and
    ``delta`` :math:`= δ^* = T_θ u^*`.

    Attributes:
        rho, p, eta: the radius, norm and offset of :math:`T_θ`.
        first_step: the value after the first ascent step (ASAM's one-step estimate for ``p=2``).
    """

    rho: float
    p: float
    eta: float
    first_step: float


def _project(u: Tensor, rho: float, p: float) -> Tensor:
    if p == 2:
        nrm = float(torch.linalg.vector_norm(u))
        return u if nrm <= rho else u * (rho / nrm)
    return torch.clamp(u, -rho, rho)


def _ascent_dir(g: Tensor, p: float) -> Tensor | None:
    """Unit ascent direction of the linearization in the ``p``-norm geometry (None if ``g == 0``)."""
    if p == 2:
        nrm = float(torch.linalg.vector_norm(g))
        return None if not nrm > 0 or not math.isfinite(nrm) else g / nrm
    s = torch.sign(g)
    return None if not bool(s.abs().sum() > 0) else s


@model_then_data
def adaptive_sharpness(
    model: nn.Module,
    data: DataLike,
    *,
    loss: LossFn,
    rho: float = 0.5,
    p: float = 2,
    eta: float = 0.0,
    steps: int = 20,
    step_size: float | None = None,
    init: str = "gradient",
    params: Sequence[str] | None = None,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
    point: Mapping[str, Tensor] | None = None,
    bn: str | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> AdaptiveSharpness:
    """Adaptive sharpness :math:`\\max_{\\|T_θ^{-1}δ\\|_p ≤ ρ} L(θ+δ) - L(θ)`, :math:`T_θ = |θ| + η` (ASAM).

    See the module docstring for the definition, its scale invariance and the ascent. The loss is the
    full-data risk :math:`L` over ``data`` (batched exactly as for
    :class:`~losslab.curvature.HessianOperator`); the model is evaluated functionally and never modified
    (in its current train/eval mode: call ``model.eval()`` for dropout/BatchNorm models).

    Args:
        model, data, loss, params, batch_size, dtype, point, bn: as for
            :class:`~losslab.curvature.HessianOperator`.
        rho: radius ρ of the ball in normalized coordinates (ASAM used 0.5-2 for ``p=2``, η=0.01).
        p: ``2`` or ``float("inf")``.
        eta: offset η of the normalization operator (0 = the scale-invariant definition).
        steps: ascent steps (gradient evaluations = ``steps + 1``).
        step_size: step α as a fraction of ρ (default 1 for ``p=2``: full normalized steps, which on a
            quadratic converge like a shifted power method; ``2.5/steps`` for ``p=∞``, Madry et al.'s rule).
        init: ``"gradient"`` (ASAM's first step; random if the gradient vanishes) or ``"random"``
            (uniform on the sphere for ``p=2``, a random vertex of the box for ``p=∞``).
        seed, generator: randomness of a random start (keyword-only; never the global RNG).

    Returns:
        An :class:`AdaptiveSharpness`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from losslab.curvature import adaptive_sharpness
        >>> g = torch.Generator().manual_seed(0)
        >>> X = torch.randn(32, 3, generator=g, dtype=torch.float64)
        >>> model = nn.Linear(3, 1, bias=False).double()
        >>> y = X @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64) + 0.1
        >>> s = adaptive_sharpness(model, (X, y), loss=nn.MSELoss(), rho=0.1, steps=10)
        >>> s.sharpness >= s.first_step > 0
        True
    """
    if not rho > 0:
        raise LosslabError(f"rho must be > 0, got {rho}")
    p = float(p)
    if p not in (2.0, math.inf):
        raise LosslabError(f"p must be 2 or inf, got {p}")
    if eta < 0:
        raise LosslabError(f"eta must be >= 0, got {eta}")
    if steps < 1:
        raise LosslabError(f"steps must be >= 1, got {steps}")
    if init not in ("gradient", "random"):
        raise LosslabError(f"init must be 'gradient' or 'random', got {init!r}")
    alpha = (1.0 if p == 2 else 2.5 / steps) if step_size is None else float(step_size)
    if not alpha > 0:
        raise LosslabError(f"step_size must be > 0, got {step_size}")

    prob = Problem(model, loss, data, params=params, batch_size=batch_size, point=point, dtype=dtype, bn=bn)
    theta = prob.flat([prob.theta[k] for k in prob.names])
    T = theta.abs() + eta
    if not bool((T > 0).any()):
        raise LosslabError("all selected parameters are zero and eta = 0: the adaptive ball is a point")

    def at(u: Tensor) -> Point:
        return prob.to_dict(theta + T * u)

    base, g = prob.loss_and_grad(prob.to_dict(theta))
    evals = 1

    def random_start() -> Tensor:
        gen = make_generator(seed, generator)
        z = torch.randn(theta.shape, generator=gen, dtype=torch.float64).to(theta)
        z = z * (T > 0)
        if p == 2:
            return z * (rho / float(torch.linalg.vector_norm(z)))
        return torch.sign(z) * rho

    d = _ascent_dir(T * g, p) if init == "gradient" else None
    u = random_start() if d is None else _project(d * rho, rho, p)
    best_loss, best_u = base, torch.zeros_like(theta)
    losses: list[float] = []
    first = math.nan
    for i in range(steps):
        cur, g = prob.loss_and_grad(at(u))
        evals += 1
        losses.append(cur)
        if i == 0:
            first = cur - base
        if cur > best_loss:
            best_loss, best_u = cur, u.clone()
        if i == steps - 1:
            break
        d = _ascent_dir(T * g, p)
        if d is None:
            break
        u = _project(u + alpha * rho * d, rho, p)
    delta = T * best_u
    return AdaptiveSharpness(
        sharpness=float(best_loss - base), base_loss=float(base), max_loss=float(best_loss),
        delta={k: v.clone() for k, v in prob.to_dict(delta).items()}, rho=float(rho), p=p, eta=float(eta),
        first_step=float(first), num_gradients=evals, losses=np.asarray(losses, dtype=np.float64),
    )
