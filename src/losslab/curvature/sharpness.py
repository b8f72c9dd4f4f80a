"""Sharpness measures: λmax, the negative-curvature ratio, and Keskar et al.'s ε-sharpness."""
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
from ..results import Result
from ._common import MatrixLike, make_generator
from ._problem import DataLike, LossFn, Problem
from .lanczos import lanczos_eigs

__all__ = [
    "lambda_max", "NegativeCurvature", "negative_curvature_ratio", "AscentSharpness", "EpsilonSharpness",
    "epsilon_sharpness",
]


def lambda_max(
    A: MatrixLike,
    *,
    tol: float = 1e-4,
    max_iter: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    v0: Tensor | None = None,
    strict: bool = False,
) -> float:
    """The largest eigenvalue of symmetric ``A`` (e.g. a :class:`~losslab.curvature.HessianOperator`).

    A thin wrapper of :func:`~losslab.curvature.lanczos_eigs` (``k=1, which="LA"``). With the default
    relative-residual ``tol=1e-4`` the eigenvalue itself is typically accurate to ~1e-8 relative (the error
    is about residual²/gap); use :func:`lanczos_eigs` for the vector, residual and convergence flag.

    Args:
        A: symmetric matrix or operator.
        tol, max_iter, v0: as for :func:`lanczos_eigs`.
        seed, generator: keyword-only randomness of the start vector.
        strict: raise :class:`~losslab.LosslabError` if Lanczos did not converge.

    Example:
        >>> import torch
        >>> from losslab.curvature import lambda_max
        >>> round(lambda_max(torch.diag(torch.tensor([3.0, 1.0, -2.0])), seed=0), 6)
        3.0
    """
    res = lanczos_eigs(A, k=1, which="LA", tol=tol, max_iter=max_iter, seed=seed, generator=generator, v0=v0,
                       return_eigenvectors=False)
    if strict and not res.converged:
        raise LosslabError(f"lambda_max: Lanczos did not converge in {res.iterations} steps ({res!r})")
    return float(res.eigenvalues[0])


@dataclass(frozen=True)
class NegativeCurvature(Result):
    """Both ends of the spectrum and the ratio :math:`\\max(0, -λ_{min}) / λ_{max}`.

    Attributes:
        lambda_min, lambda_max: the extreme eigenvalues.
        ratio: :math:`|λ_{min}|/λ_{max}` if :math:`λ_{min} < 0` else 0 (``nan`` if :math:`λ_{max} ≤ 0`).
        converged: both extreme Ritz pairs converged.
        num_matvecs: products used.
    """

    lambda_min: float
    lambda_max: float
    ratio: float
    converged: bool
    num_matvecs: int


def negative_curvature_ratio(
    A: MatrixLike,
    *,
    tol: float = 1e-3,
    max_iter: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> NegativeCurvature:
    """The negative-curvature ratio :math:`|λ_{min}|/λ_{max}` of a Hessian (Dauphin et al. 2014; SURVEY A5).

    One Lanczos run (``which="both"``) yields both ends. The bottom of a Hessian spectrum is usually a
    dense bulk near zero, which converges more slowly than the outliers at the top, hence the looser
    default ``tol`` (relative to :math:`\\max|θ|`, so :math:`λ_{min}` is accurate to about
    ``tol · λmax``).

    Example:
        >>> import torch
        >>> from losslab.curvature import negative_curvature_ratio
        >>> r = negative_curvature_ratio(torch.diag(torch.tensor([4.0, 1.0, -1.0], dtype=torch.float64)), seed=0)
        >>> round(r.ratio, 6), r.converged
        (0.25, True)
    """
    res = lanczos_eigs(A, k=1, which="both", tol=tol, max_iter=max_iter, seed=seed, generator=generator,
                       return_eigenvectors=False)
    lmin, lmax = float(res.eigenvalues[0]), float(res.eigenvalues[-1])
    ratio = math.nan if lmax <= 0 else max(0.0, -lmin) / lmax
    return NegativeCurvature(lambda_min=lmin, lambda_max=lmax, ratio=ratio, converged=res.converged,
                             num_matvecs=res.num_matvecs)


@dataclass(frozen=True, eq=False)
class AscentSharpness(Result):
    """What a worst-case perturbation search finds: the fields shared by :class:`EpsilonSharpness` and
    :class:`~losslab.curvature.AdaptiveSharpness` (each adds its neighbourhood's parameters).

    Attributes:
        sharpness: the sharpness value (its definition is the subclass's).
        base_loss: :math:`L(θ)`.
        max_loss: the largest loss found in the neighbourhood, :math:`L(θ + δ^*)`.
        delta: the maximizing perturbation :math:`δ^*`, keyed like the selected parameters.
        num_gradients: full-data gradient evaluations used.
        losses: the loss after each ascent step (float64 array).
    """

    sharpness: float
    base_loss: float
    max_loss: float
    delta: Point
    num_gradients: int
    losses: np.ndarray


@dataclass(frozen=True, eq=False)
class EpsilonSharpness(AscentSharpness):
    """Result of :func:`epsilon_sharpness`: an :class:`AscentSharpness` whose ``sharpness`` is
    :math:`100\\,(\\max_{δ∈C_ε} L(θ+δ) - L(θ)) / (1 + L(θ))`, the maximum taken over the box.

    Attributes:
        epsilon: the box size.
    """

    epsilon: float


@model_then_data
def epsilon_sharpness(
    model: nn.Module,
    data: DataLike,
    *,
    loss: LossFn,
    epsilon: float = 1e-3,
    steps: int = 20,
    step_size: float | None = None,
    method: str = "pgd",
    params: Sequence[str] | None = None,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
    point: Mapping[str, Tensor] | None = None,
    bn: str | None = None,
    random_start: bool = False,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> EpsilonSharpness:
    """Keskar et al. (2017)'s ε-sharpness: the relative loss increase in an ε-box around θ.

    With the box (full space, :math:`A = I`)
    :math:`C_ε = \\{δ : |δ_i| ≤ ε(|θ_i| + 1)\\ ∀i\\}`,

    .. math:: φ_ε(θ) = \\frac{\\max_{δ ∈ C_ε} L(θ+δ) - L(θ)}{1 + L(θ)} × 100,

    with :math:`L` the full-data risk. The inner maximization is non-concave; as in the paper it is
    solved approximately, so the value is a lower bound of the true maximum.

    * ``method="pgd"`` (default): projected sign-gradient ascent,
      :math:`δ ← \\operatorname{clip}(δ + α\\,b ⊙ \\operatorname{sign}∇L(θ+δ), -b, b)` with
      :math:`b_i = ε(|θ_i|+1)` and :math:`α` = ``step_size`` (default ``2.5/steps``, Madry et al.'s
      rule, so the ascent can cross the box), keeping the best iterate.
    * ``method="lbfgsb"``: scipy's L-BFGS-B on :math:`-L(θ+δ)` with the box as bounds and ``steps``
      iterations (Keskar et al. used 10), in float64.

    Args:
        model, data, loss, params, batch_size, dtype, point, bn: as for
            :class:`~losslab.curvature.HessianOperator`.
        epsilon: box size ε (Keskar et al.: 1e-3 and 5e-4).
        steps: ascent steps (gradient evaluations ≈ ``steps + 1``).
        step_size: PGD step as a fraction of the box half-width.
        method: ``"pgd"`` or ``"lbfgsb"``.
        random_start: start PGD from a uniform point in the box (needs ``seed`` or ``generator``).
        seed, generator: keyword-only randomness for ``random_start``.

    Returns:
        An :class:`EpsilonSharpness`.
    """
    if not epsilon > 0:
        raise LosslabError(f"epsilon must be > 0, got {epsilon}")
    if steps < 1:
        raise LosslabError(f"steps must be >= 1, got {steps}")
    if method not in ("pgd", "lbfgsb"):
        raise LosslabError(f"method must be 'pgd' or 'lbfgsb', got {method!r}")
    prob = Problem(model, loss, data, params=params, batch_size=batch_size, point=point, dtype=dtype, bn=bn)
    theta = prob.flat([prob.theta[k] for k in prob.names])
    bound = epsilon * (theta.abs() + 1)

    def at(delta: Tensor) -> dict[str, Tensor]:
        return prob.to_dict(theta + delta)

    base, g = prob.loss_and_grad(prob.to_dict(theta))
    evals = 1
    best_loss, best = base, torch.zeros_like(theta)
    losses: list[float] = []
    if method == "pgd":
        alpha = 2.5 / steps if step_size is None else float(step_size)
        if random_start:
            gen = make_generator(seed, generator)
            u = torch.rand(theta.shape, generator=gen, dtype=torch.float64).to(theta)
            delta = (2 * u - 1) * bound
            cur, g = prob.loss_and_grad(at(delta))
            evals += 1
            if cur > best_loss:
                best_loss, best = cur, delta.clone()
        else:
            delta = torch.zeros_like(theta)
        for _ in range(steps):
            delta = torch.clamp(delta + alpha * bound * torch.sign(g), -bound, bound)
            cur, g = prob.loss_and_grad(at(delta))
            evals += 1
            losses.append(cur)
            if cur > best_loss:
                best_loss, best = cur, delta.clone()
    else:
        from scipy.optimize import minimize

        b = bound.double().cpu().numpy()
        track = {"loss": best_loss, "delta": best}

        def fun(d: np.ndarray) -> tuple[float, np.ndarray]:
            delta = torch.from_numpy(np.clip(d, -b, b)).to(theta)
            cur, gr = prob.loss_and_grad(at(delta))
            losses.append(cur)
            if cur > track["loss"]:  # every L-BFGS-B evaluation lies in the box: keep the best
                track["loss"], track["delta"] = cur, delta.clone()
            return -cur, -gr.double().cpu().numpy()

        x0 = np.zeros_like(b)
        if random_start:
            gen = make_generator(seed, generator)
            x0 = ((2 * torch.rand(b.shape, generator=gen, dtype=torch.float64) - 1).numpy()) * b
        minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=list(zip(-b, b)), options={"maxiter": steps})
        evals += len(losses)
        best_loss, best = track["loss"], track["delta"]
    value = 100.0 * (best_loss - base) / (1.0 + base)
    return EpsilonSharpness(
        sharpness=float(value), base_loss=float(base), max_loss=float(best_loss),
        delta={k: v.clone() for k, v in prob.to_dict(best).items()}, epsilon=float(epsilon),
        num_gradients=evals, losses=np.asarray(losses, dtype=np.float64),
    )
