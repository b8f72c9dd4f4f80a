"""Implicit-regularization helpers: effective rank and singular-value spectra of layers, deep matrix
factorization for 2x2 completion (Razin & Cohen 2020, arXiv 2005.06398), and weight decay toward a
non-zero norm (Goldblum et al. 2020, arXiv 1910.00359).

Effective rank (Roy & Vetterli 2007) of a matrix with singular values :math:`\\sigma_i`:

.. math::

    \\operatorname{erank}(W) = \\exp\\Big(-\\sum_i p_i \\ln p_i\\Big), \\qquad p_i = \\sigma_i / \\sum_j \\sigma_j,

between 1 (rank one) and :math:`\\min(m, n)` (all singular values equal). Schatten-:math:`p` (quasi-)norm:
:math:`\\lVert W \\rVert_{S_p} = (\\sum_i \\sigma_i^p)^{1/p}` (nuclear :math:`p = 1`, Frobenius :math:`p = 2`,
quasi-norm for :math:`p < 1`).

Deep matrix factorization: :math:`W = W_L \\cdots W_1` with :math:`2 \\times 2` factors trained by gradient
descent on :math:`\\mathcal{L} = \\tfrac12 \\sum_{(i,j) \\in \\Omega} (W_{ij} - M_{ij})^2`. Razin & Cohen's
setting: observed :math:`w_{12} = w_{21} = 1, w_{22} = 0`, unobserved :math:`w_{11}`; every solution has
:math:`\\det W = -1`, but from a balanced init with :math:`\\det W > 0` (here :math:`W_j = \\alpha I`) gradient
flow cannot change the sign of the determinant, so fitting forces :math:`\\det W \\to 0^+`, i.e.
:math:`|w_{11}| \\to \\infty` and every norm diverges while the loss goes to 0 (and the effective rank
falls toward 1): the implicit bias is toward low rank, not small norm.

Gradient of factor :math:`j`: :math:`\\nabla_{W_j} \\mathcal{L} = (W_L \\cdots W_{j+1})^\\top R \\,
(W_{j-1} \\cdots W_1)^\\top`, :math:`R = P_\\Omega(W - M)`. ``step="normalized"`` divides the learning rate by
:math:`1 + \\lVert W \\rVert_F^{2 - 2/L}` (the growth of the loss's curvature along the divergent direction),
a time reparametrization of gradient flow that keeps the descent stable as the norms grow; with
``step="constant"`` plain GD eventually oscillates once the curvature exceeds :math:`2/\\eta`.

Norm-targeted weight decay: penalty :math:`\\lambda (\\lVert \\theta \\rVert - \\mu)^2` with gradient
:math:`2\\lambda (\\lVert \\theta \\rVert - \\mu)\\, \\theta / \\lVert \\theta \\rVert`; :math:`\\mu = 0` is
(a norm-form of) ordinary weight decay.

Example:
    >>> import numpy as np
    >>> from losslab.probes import effective_rank
    >>> round(effective_rank(np.diag([1.0, 1.0, 1.0])), 6), round(effective_rank(np.diag([1.0, 0.0])), 6)
    (3.0, 1.0)
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..results import ArraysFormat
from ..errors import LosslabError
from ._common import to_numpy

__all__ = [
    "effective_rank", "singular_values", "schatten_norm", "layer_spectra", "layer_effective_ranks",
    "FactorizationResult", "deep_matrix_completion", "factor_gradients", "norm_penalty", "NormDecay",
    "train_with_norm_decay",
]

FORMAT = "losslab.factorization"
RAZIN_COHEN_OBSERVED: dict[tuple[int, int], float] = {(0, 1): 1.0, (1, 0): 1.0, (1, 1): 0.0}


def singular_values(W: Tensor | np.ndarray) -> np.ndarray:
    """Singular values (descending, float64) of a matrix; higher-order tensors are reshaped to ``(out, -1)``."""
    A = to_numpy(W).astype(np.float64)
    if A.ndim < 2:
        raise LosslabError(f"singular values need a matrix, got shape {A.shape}")
    return np.linalg.svd(A.reshape(A.shape[0], -1), compute_uv=False)


def effective_rank(W: Tensor | np.ndarray, *, from_singular_values: bool = False) -> float:
    """Roy & Vetterli's effective rank :math:`\\exp(H(\\sigma / \\sum\\sigma))` (``0 \\ln 0 = 0``).

    Pass singular values with ``from_singular_values=True``; a zero matrix has effective rank 0.
    """
    s = np.abs(to_numpy(W).astype(np.float64).ravel()) if from_singular_values else singular_values(W)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def schatten_norm(W: Tensor | np.ndarray, p: float, *, from_singular_values: bool = False) -> float:
    """:math:`(\\sum_i \\sigma_i^p)^{1/p}` for ``p > 0`` (quasi-norm when ``p < 1``)."""
    if not p > 0:
        raise LosslabError(f"Schatten p must be > 0, got {p}")
    s = np.abs(to_numpy(W).astype(np.float64).ravel()) if from_singular_values else singular_values(W)
    return float((s**p).sum() ** (1.0 / p))


def layer_spectra(model_or_point: nn.Module | Mapping[str, Tensor], *, min_dim: int = 2) -> dict[str, np.ndarray]:
    """Singular values of every weight with at least ``min_dim`` dimensions (convs as ``(out, in*k...)``)."""
    items = (model_or_point.named_parameters() if isinstance(model_or_point, nn.Module)
             else model_or_point.items())
    return {k: singular_values(v.detach()) for k, v in items if v.dim() >= min_dim}


def layer_effective_ranks(model_or_point: nn.Module | Mapping[str, Tensor]) -> dict[str, float]:
    """Effective rank of each weight matrix (see :func:`layer_spectra`)."""
    return {k: effective_rank(s, from_singular_values=True) for k, s in layer_spectra(model_or_point).items()}


# ---- deep matrix factorization ----------------------------------------------------------------------


def _mm(A: tuple[float, ...], B: tuple[float, ...]) -> tuple[float, float, float, float]:
    a, b, c, d = A
    e, f, g, h = B
    return (a * e + b * g, a * f + b * h, c * e + d * g, c * f + d * h)


def _t(A: tuple[float, ...]) -> tuple[float, float, float, float]:
    return (A[0], A[2], A[1], A[3])


_I = (1.0, 0.0, 0.0, 1.0)


def _forward(Ws: Sequence[tuple[float, ...]]) -> list[tuple[float, ...]]:
    P = [_I]
    for W in Ws:
        P.append(_mm(W, P[-1]))
    return P


def factor_gradients(factors: Sequence[np.ndarray], target: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """Exact gradients of :math:`\\tfrac12 \\lVert P_\\Omega(W_L \\cdots W_1 - M) \\rVert^2` w.r.t. each 2x2 factor.

    ``factors[0]`` is :math:`W_1` (applied first). Reference implementation (float64 numpy) used by the
    tests; :func:`deep_matrix_completion` runs the same formula on Python floats for speed.
    """
    Ws = [tuple(np.asarray(W, dtype=np.float64).ravel().tolist()) for W in factors]
    P = _forward(Ws)
    Rm = (np.asarray(mask, dtype=np.float64) * (np.array(P[-1]).reshape(2, 2) - target)).ravel().tolist()
    return [np.array(g).reshape(2, 2) for g in _grads(Ws, P, tuple(Rm))]


def _grads(Ws: Sequence[tuple[float, ...]], P: Sequence[tuple[float, ...]], R: tuple[float, ...]) -> list[tuple[float, ...]]:
    L = len(Ws)
    S = _I
    out: list[Any] = [None] * L
    for j in range(L - 1, -1, -1):
        out[j] = _mm(_mm(_t(S), R), _t(P[j]))
        S = _mm(S, Ws[j])
    return out


@dataclass(frozen=True)
class FactorizationResult(ArraysFormat):
    """Training record of a deep 2x2 matrix factorization.

    Attributes:
        steps: recorded GD steps ``(T,)`` (log-spaced, 0 and the last included).
        loss, unobserved (:math:`|w_{11}|` or the chosen entry), nuclear, frobenius, schatten_half
            (:math:`S_{1/2}` quasi-norm), schatten_quarter (:math:`S_{1/4}`), effective_rank, det,
            sigma_min, sigma_max: ``(T,)`` each.
        product: final product matrix ``(2, 2)``.
        meta: depth, init, step rule, learning rate, observed entries, seconds.
    """

    steps: np.ndarray
    loss: np.ndarray
    unobserved: np.ndarray
    nuclear: np.ndarray
    frobenius: np.ndarray
    schatten_half: np.ndarray
    schatten_quarter: np.ndarray
    effective_rank: np.ndarray
    det: np.ndarray
    sigma_min: np.ndarray
    sigma_max: np.ndarray
    product: np.ndarray

    _FORMAT = FORMAT

    def summary(self) -> dict[str, Any]:
        """First vs last record and whether the loss fell while the unobserved entry and all norms grew."""
        keys = ("loss", "unobserved", "nuclear", "frobenius", "schatten_half", "effective_rank")
        out: dict[str, Any] = {f"{k}_first": float(getattr(self, k)[0]) for k in keys}
        out.update({f"{k}_last": float(getattr(self, k)[-1]) for k in keys})
        grew = all(getattr(self, k)[-1] > getattr(self, k)[0] for k in ("unobserved", "nuclear", "frobenius"))
        out["loss_falls_norms_grow"] = bool(self.loss[-1] < self.loss[0] and grew)
        out["depth"] = self.meta.get("depth")
        out["steps"] = int(self.steps[-1])
        return out

    def plot(self, **kwargs: Any) -> Any:
        from .display import FactorizationDisplay

        return FactorizationDisplay.from_results([self], **kwargs)


def deep_matrix_completion(
    depth: int = 3,
    *,
    observed: Mapping[tuple[int, int], float] | None = None,
    init_scale: float = 0.1,
    init: Literal["identity", "random"] = "identity",
    lr: float = 0.2,
    steps: int = 20000,
    step: Literal["normalized", "constant"] = "normalized",
    n_records: int = 100,
    seed: int = 0,
) -> FactorizationResult:
    """Gradient descent on a depth-``depth`` factorization of a 2x2 matrix with one unobserved entry.

    Args:
        depth: number of 2x2 factors :math:`L \\ge 1`.
        observed: ``{(i, j): value}`` for 3 entries (default Razin & Cohen's ``w12 = w21 = 1, w22 = 0``).
        init_scale: :math:`\\alpha` of the balanced init :math:`W_j = \\alpha I` (``init="identity"``) or
            of :math:`\\alpha \\cdot` a random orthogonal matrix with positive determinant, the same for all
            factors (``init="random"``, balanced since :math:`W_{j+1}^\\top W_{j+1} = W_j W_j^\\top`).
        lr: learning rate :math:`\\eta`.
        steps: GD steps.
        step: ``"normalized"`` (default, see module docstring) or ``"constant"``.
        n_records: number of log-spaced steps recorded.
        seed: seed of the random init.

    Returns:
        A :class:`FactorizationResult` (float64 throughout; depth 4 x 20000 steps runs in about a second).
    """
    obs = dict(RAZIN_COHEN_OBSERVED if observed is None else observed)
    if depth < 1:
        raise LosslabError(f"depth must be >= 1, got {depth}")
    if len(obs) != 3 or any(i not in (0, 1) or j not in (0, 1) for i, j in obs):
        raise LosslabError("observed must give exactly 3 of the 4 entries (i, j) of a 2x2 matrix")
    if step not in ("normalized", "constant"):
        raise LosslabError(f"step must be 'normalized' or 'constant', got {step!r}")
    if not lr > 0 or steps < 1 or not init_scale > 0:
        raise LosslabError("lr, steps and init_scale must be positive")
    (ui, uj), = [(i, j) for i in (0, 1) for j in (0, 1) if (i, j) not in obs]
    u = 2 * ui + uj
    mask = tuple(0.0 if k == u else 1.0 for k in range(4))
    target = tuple(float(obs.get((k // 2, k % 2), 0.0)) for k in range(4))
    if init == "identity":
        W0 = (init_scale, 0.0, 0.0, init_scale)
    elif init == "random":
        a = float(np.random.default_rng(seed).uniform(0, 2 * np.pi))
        W0 = (init_scale * math.cos(a), -init_scale * math.sin(a), init_scale * math.sin(a), init_scale * math.cos(a))
    else:
        raise LosslabError(f"init must be 'identity' or 'random', got {init!r}")
    Ws = [W0 for _ in range(depth)]
    record = set(np.unique(np.round(np.logspace(0, np.log10(steps), max(2, n_records - 1)))).astype(int).tolist())
    record |= {0, steps}
    rows: list[tuple[Any, ...]] = []
    power = 2.0 - 2.0 / depth
    t0 = time.perf_counter()
    for s in range(steps + 1):
        P = _forward(Ws)
        W = P[-1]
        R = tuple(mask[k] * (W[k] - target[k]) for k in range(4))
        loss = 0.5 * sum(r * r for r in R)
        if not math.isfinite(loss):
            raise LosslabError(f"factorization diverged at step {s}; lower lr or use step='normalized'")
        if s in record:
            rows.append((s, loss, W))
        if s == steps:
            break
        eta = lr
        if step == "normalized":
            eta = lr / (1.0 + math.sqrt(sum(w * w for w in W)) ** power)
        G = _grads(Ws, P, R)
        Ws = [tuple(Wj[k] - eta * Gj[k] for k in range(4)) for Wj, Gj in zip(Ws, G)]
    seconds = time.perf_counter() - t0
    mats = np.array([np.array(w).reshape(2, 2) for _, _, w in rows])
    sv = np.linalg.svd(mats, compute_uv=False)
    return FactorizationResult(
        steps=np.array([r[0] for r in rows], dtype=np.int64), loss=np.array([r[1] for r in rows]),
        unobserved=np.abs(mats[:, ui, uj]), nuclear=sv.sum(1), frobenius=np.sqrt((sv**2).sum(1)),
        schatten_half=(np.sqrt(sv).sum(1)) ** 2, schatten_quarter=((sv**0.25).sum(1)) ** 4,
        effective_rank=np.array([effective_rank(s, from_singular_values=True) for s in sv]),
        det=np.linalg.det(mats), sigma_min=sv[:, -1], sigma_max=sv[:, 0], product=mats[-1],
        meta={"depth": depth, "init": init, "init_scale": init_scale, "lr": lr, "step": step, "steps": steps,
              "observed": {f"{i}{j}": v for (i, j), v in obs.items()}, "unobserved": f"{ui}{uj}",
              "seconds": round(seconds, 3), "dtype": "float64"},
    )


# ---- weight decay toward a norm ----------------------------------------------------------------------


def norm_penalty(params: Mapping[str, Tensor] | Sequence[Tensor], strength: float, target: float) -> Tensor:
    """:math:`\\lambda (\\lVert \\theta \\rVert_2 - \\mu)^2` over the given tensors (differentiable)."""
    ts = list(params.values()) if isinstance(params, Mapping) else list(params)
    if not ts:
        raise LosslabError("no parameters")
    nrm = torch.sqrt(sum((t**2).sum() for t in ts))
    return strength * (nrm - target) ** 2


class NormDecay:
    """Trainer callback: weight decay toward a non-zero norm :math:`\\mu` (Goldblum et al. 2020).

    ``losslab.train`` calls ``on_step_end`` after ``optimizer.step()``, so this applies the penalty as a
    *decoupled* step (as AdamW does for ordinary weight decay): after each optimizer step,

    .. math::

        \\theta \\leftarrow \\theta - \\eta_t \\, 2\\lambda (\\lVert\\theta\\rVert - \\mu) \\, \\theta / \\lVert\\theta\\rVert,

    with :math:`\\eta_t` the step's learning rate; for plain SGD this equals adding the penalty's
    gradient before the step up to :math:`O(\\eta^2)`. It also records ``param_norm`` into the epoch metrics.

    Its :meth:`cache_key` (strength, target, include_1d) is part of the run's identity, so a
    regularized run never shares a directory with the plain run of the same config.

    Args:
        strength: :math:`\\lambda \\ge 0`.
        target: :math:`\\mu \\ge 0` (0: ordinary weight decay in norm form).
        include_1d: also penalize 1-D tensors (biases, norm affine); default only weights.
    """

    def __init__(self, strength: float, target: float = 0.0, *, include_1d: bool = False) -> None:
        if strength < 0 or target < 0:
            raise LosslabError(f"strength and target must be >= 0, got {strength}, {target}")
        self.strength = float(strength)
        self.target = float(target)
        self.include_1d = include_1d
        self.last_norm = float("nan")

    def cache_key(self) -> dict[str, Any]:
        """The settings that change training (see :func:`losslab.runs.callback_keys`)."""
        return {"strength": self.strength, "target": self.target, "include_1d": self.include_1d}

    def _params(self, model: nn.Module) -> list[Tensor]:
        return [p for p in model.parameters() if p.requires_grad and (self.include_1d or p.dim() > 1)]

    @torch.no_grad()
    def on_step_end(self, state: Any) -> None:
        ps = self._params(state.model)
        nrm = float(torch.sqrt(sum((p.double() ** 2).sum() for p in ps)))
        if nrm > 0 and self.strength > 0:
            coef = state.lr * 2.0 * self.strength * (nrm - self.target) / nrm
            for p in ps:
                p.mul_(1.0 - coef)
        self.last_norm = nrm

    @torch.no_grad()
    def on_epoch_end(self, state: Any) -> None:
        ps = self._params(state.model)
        state.extra["param_norm"] = float(torch.sqrt(sum((p.double() ** 2).sum() for p in ps)))


def train_with_norm_decay(config: Any, strength: float, target: float, *, out: str | os.PathLike = "runs",
                          include_1d: bool = False, **kwargs: Any) -> Any:
    """:func:`losslab.train.train` with a :class:`NormDecay` callback, in ``out/normdecay-<λ>-<μ>[-all]``.

    The run directory's name includes the callback's settings (:func:`losslab.runs.run_dir_for`); the
    subdirectory only groups the runs of one setting. Returns the :class:`~losslab.runs.Run`.
    """
    from ..train import train

    sub = Path(out) / f"normdecay-{strength:g}-{target:g}{'-all' if include_1d else ''}"
    cbs = [NormDecay(strength, target, include_1d=include_1d), *kwargs.pop("callbacks", ())]
    return train(config, out=sub, callbacks=cbs, **kwargs)
