"""Extreme eigenpairs of a symmetric operator by the Lanczos method with full reorthogonalization.

After ``m`` steps Lanczos has an orthonormal basis :math:`V_m` of the Krylov space
:math:`\\mathcal K_m(A, v_0)` and the tridiagonal :math:`T_m = V_mᵀ A V_m` with
:math:`A V_m = V_m T_m + β_m v_{m+1} e_mᵀ`. For an eigenpair :math:`T_m s = θ s` the Ritz pair
:math:`(θ, y = V_m s)` has residual

.. math:: \\|A y - θ y\\| = β_m |s_m|,

so convergence is known from the small tridiagonal problem alone, with no extra product. We
decompose :math:`T_m` after every step (microseconds next to one Hessian-vector product) and stop as
soon as every wanted Ritz pair has :math:`β_m |s_m| ≤ \\text{tol} \\cdot \\max_j |θ_j|` (a relative
residual, the scale being the spectral-norm estimate) and its Ritz value moved by no more than that
since the previous step (a guard against stopping on a Ritz value that approximates *an* eigenvalue
but has not yet reached the extreme one). Full reorthogonalization (classical Gram-Schmidt,
twice) keeps :math:`V_m` orthonormal to working precision, so the residual bound stays honest and no
spurious copies ("ghosts") of converged eigenvalues appear.

Compared with power iteration (PyHessian), whose error falls like :math:`(λ_2/λ_1)^{2m}`, Lanczos
converges like a Chebyshev polynomial in :math:`\\sqrt{\\text{gap}}`, and it gets several eigenvalues,
both ends of the spectrum, from one run.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor

from ..results import Result
from ..errors import LosslabError
from ._common import MatrixLike, _LinOp, as_linop, make_generator, probe_vectors

__all__ = ["EigResult", "lanczos_eigs"]

_WHICH = ("LA", "SA", "both")


@dataclass(frozen=True, eq=False)
class EigResult(Result):
    """Eigenpairs from :func:`lanczos_eigs`.

    Attributes:
        eigenvalues: float64 CPU tensor ``(k,)``: descending for ``"LA"``, ascending for ``"SA"`` and
            ``"both"`` (for ``"both"``: the ``k`` smallest then the ``k`` largest, ascending).
        eigenvectors: float64 ``(n, k)`` on the operator's device, unit columns (Ritz vectors) in the
            same order; ``None`` when not requested.
        residuals: float64 ``(k,)``: :math:`\\|A y - θ y\\|`, from the Lanczos bound :math:`β_m|s_m|`
            (or recomputed explicitly with ``compute_residuals=True``).
        pair_converged: bool ``(k,)``: residual (and last change of the Ritz value) ≤ ``tol · scale``,
            or the Krylov space was exhausted/invariant (Ritz values exact).
        converged: every pair converged.
        num_matvecs: products with ``A`` used (Lanczos steps, plus ``k`` if residuals were recomputed).
        iterations: Lanczos steps taken.
        scale: the spectral-norm estimate :math:`\\max_j |θ_j|` the tolerance is relative to.
        tol: the tolerance used.
        history: the wanted Ritz values after each step (``(iterations, k)`` float64 numpy array).
    """

    eigenvalues: Tensor
    eigenvectors: Tensor | None
    residuals: Tensor
    pair_converged: Tensor
    converged: bool
    num_matvecs: int
    iterations: int
    scale: float
    tol: float
    which: str
    history: np.ndarray = field(repr=False)

    def __repr__(self) -> str:
        vals = ", ".join(f"{v:.6g}" for v in self.eigenvalues.tolist())
        return (
            f"EigResult(eigenvalues=[{vals}], converged={self.converged}, "
            f"num_matvecs={self.num_matvecs}, max_residual={float(self.residuals.max()):.2e})"
        )


def _check_step(alpha: float, beta: float, where: str) -> None:
    """One-line error for a non-finite Lanczos coefficient (the operator returned NaN/inf)."""
    if not (math.isfinite(alpha) and math.isfinite(beta)):
        raise LosslabError(f"the operator returned non-finite values {where}; is the loss NaN/inf at this point?")


class _Basis:
    """Growing row-major store of Lanczos vectors (capacity doubles; never the full ``max_iter``)."""

    def __init__(self, n: int, device: torch.device, cap: int) -> None:
        self.V = torch.empty((max(1, cap), n), dtype=torch.float64, device=device)
        self.m = 0

    def append(self, v: Tensor) -> None:
        if self.m == self.V.shape[0]:
            grown = torch.empty((2 * self.V.shape[0], self.V.shape[1]), dtype=self.V.dtype, device=self.V.device)
            grown[: self.m] = self.V
            self.V = grown
        self.V[self.m] = v
        self.m += 1

    @property
    def rows(self) -> Tensor:
        return self.V[: self.m]

    def orthogonalize(self, w: Tensor) -> Tensor:
        """Classical Gram-Schmidt against all rows, repeated once if it cancelled much of ``w``
        (Daniel-Gragg-Kaufman-Stewart criterion ``‖w'‖ < ‖w‖/√2``: "twice is enough")."""
        Vm = self.rows
        before = torch.linalg.vector_norm(w)
        w = w - (Vm @ w) @ Vm
        if torch.linalg.vector_norm(w) < 0.7071 * before:
            w = w - (Vm @ w) @ Vm
        return w


def _start_vector(lin: _LinOp, v0: Any, gen: torch.Generator) -> Tensor:
    if v0 is None:
        q = probe_vectors(lin.n, 1, "gaussian", gen, lin.device)[0]
    else:
        if isinstance(v0, np.ndarray):
            v0 = torch.from_numpy(v0)
        if isinstance(v0, dict):
            raise LosslabError("v0 must be a flat vector; use op.flatten(point) for a parameter dict")
        q = torch.as_tensor(v0).detach().reshape(-1).to(device=lin.device, dtype=torch.float64)
        if q.numel() != lin.n:
            raise LosslabError(f"v0 has {q.numel()} entries, operator has dimension {lin.n}")
    nrm = float(torch.linalg.vector_norm(q))
    if not math.isfinite(nrm) or nrm == 0.0:
        raise LosslabError("start vector v0 is zero or not finite")
    return q / nrm


def _wanted(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    """Indices (into ascending ``theta``) of the wanted Ritz values, in output order."""
    m = theta.shape[0]
    if which == "LA":
        return np.arange(m - 1, max(-1, m - 1 - k), -1)
    if which == "SA":
        return np.arange(min(k, m))
    low = set(range(min(k, m))) | set(range(max(0, m - k), m))
    return np.array(sorted(low), dtype=np.int64)


def lanczos_eigs(
    A: MatrixLike,
    k: int = 1,
    *,
    which: str = "LA",
    tol: float = 1e-6,
    max_iter: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    v0: Tensor | np.ndarray | None = None,
    full_reorth: bool = True,
    return_eigenvectors: bool = True,
    compute_residuals: bool = False,
    deflate: Tensor | np.ndarray | None = None,
    repeats: bool = False,
) -> EigResult:
    """The ``k`` largest (``"LA"``), smallest (``"SA"``) or both-end (``"both"``) eigenpairs of symmetric ``A``.

    Lanczos with full reorthogonalization; the tridiagonal :math:`T_m` is decomposed after every step and
    the run stops when all wanted Ritz pairs satisfy :math:`β_m |s_{m,i}| ≤ \\text{tol}\\cdot\\max_j|θ_j|`
    (the residual :math:`\\|Ay-θy\\|` relative to the spectral-norm estimate) and moved by at most as much
    in the last step, when the Krylov space
    becomes invariant (:math:`β_m ≈ 0`: the Ritz values are exact eigenvalues) or after ``max_iter``
    steps. ``converged`` is then reported honestly per pair. The eigenvalue error of a converged pair
    is at most the residual, and about residual²/gap for a simple eigenvalue, so ``tol=1e-6`` gives
    eigenvalues to roughly 1e-10 relative when the spectrum is not clustered (float64 products). On a
    50k-parameter MLP (float32) λmax is within 1e-3 after 5-7 products and the default stops after
    14-15 with ~1e-7 error; power iteration needs 12-19 products for 1e-3. Eigenvalues at the bottom
    of a Hessian (a dense bulk near 0) converge more slowly; there the error is about ``tol · max|θ|``.

    Single-vector Lanczos sees one direction per distinct eigenvalue in exact arithmetic; further
    copies of an exactly repeated eigenvalue show up only through rounding errors, unreliably (a
    triple top eigenvalue of a 60 x 60 test matrix came out twice). ``repeats=True``
    finds the other copies: it reruns Lanczos deflated against the eigenvectors found so far (a
    fresh start vector orthogonal to them, every product projected off them) and merges, until a
    rerun brings nothing into the wanted ``k``; each rerun costs about one more run.

    Args:
        A: symmetric matrix: dense torch/numpy, scipy ``LinearOperator``, or an object with ``.shape``
            and ``.matvec`` (e.g. :class:`~losslab.curvature.HessianOperator`).
        k: eigenpairs wanted (per end for ``"both"``); at most ``n`` (more is a :class:`LosslabError`).
        which: ``"LA"`` largest algebraic, ``"SA"`` smallest algebraic, ``"both"``.
        tol: relative residual tolerance (see above). Products computed in float32 limit it to about
            1e-6; use float64 operators for tighter values.
        max_iter: maximum Lanczos steps = products (default ``min(n, max(100, 20 k))``).
        seed, generator: randomness of the start vector (keyword-only; never the global RNG).
        v0: start vector (e.g. the previous top eigenvector, to warm-start along a trajectory).
        full_reorth: reorthogonalize against all previous vectors (recommended); ``False`` does only the
            three-term recurrence (cheaper, but loses orthogonality: ghosts, weaker residual bound).
        return_eigenvectors: compute the Ritz vectors (an ``n × k`` product with the basis).
        compute_residuals: recompute :math:`\\|Ay-θy\\|` explicitly (``k`` extra products).
        deflate: ``(n, r)`` vectors (e.g. eigenvectors already known) whose span is projected out:
            Lanczos then runs on :math:`PAP` restricted to the orthogonal complement, :math:`P = I -
            QQ^T` (:math:`Q` an orthonormal basis of the columns), and returns the wanted eigenpairs
            there. Exact when the span is invariant (eigenvectors); ``r < n``.
        repeats: also find repeated copies of the wanted eigenvalues (``"LA"``/``"SA"``; see above).

    Returns:
        An :class:`EigResult`.

    Example:
        >>> import torch
        >>> from losslab.curvature import lanczos_eigs
        >>> A = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
        >>> res = lanczos_eigs(A, k=2, seed=0)
        >>> [round(v, 8) for v in res.eigenvalues.tolist()], res.converged
        ([100.0, 99.0], True)
        >>> lo = lanczos_eigs(A, k=1, which="SA", seed=0)
        >>> round(float(lo.eigenvalues[0]), 8)
        1.0
    """
    if which not in _WHICH:
        raise LosslabError(f"which must be one of {_WHICH}, got {which!r}")
    if not (tol > 0):
        raise LosslabError(f"tol must be > 0, got {tol}")
    lin = as_linop(A)
    n = lin.n
    k = int(k)
    if k < 1:
        raise LosslabError(f"k must be >= 1, got {k}")
    if k > n:
        raise LosslabError(f"k={k} eigenpairs asked of a {n}-dimensional operator: k must be <= {n}")
    need = min(n, 2 * k) if which == "both" else k
    if max_iter is None:
        max_iter = min(n, max(100, 20 * k))
    max_iter = int(min(max_iter, n))
    if max_iter < 1:
        raise LosslabError(f"max_iter must be >= 1, got {max_iter}")
    if repeats:
        if which == "both":
            raise LosslabError("repeats=True supports which='LA' or 'SA'")
        return _with_repeats(A, k, which=which, tol=tol, max_iter=max_iter, generator=make_generator(seed, generator),
                             v0=v0, full_reorth=full_reorth, return_eigenvectors=return_eigenvectors,
                             compute_residuals=compute_residuals, deflate=deflate)
    gen = make_generator(seed, generator)
    Q = _deflation_basis(deflate, lin)
    q = _start_vector(lin, v0, gen)
    dim = n  # dimension of the space Lanczos explores
    if Q is not None:
        dim = n - Q.shape[1]
        k, need, max_iter = min(k, dim), min(need, dim), min(max_iter, dim)
        q = _project_off(Q, q)
        nrm = float(torch.linalg.vector_norm(q))
        if nrm <= 1e-12:
            raise LosslabError("the start vector lies in the deflated span")
        q = q / nrm

    basis = _Basis(n, lin.device, min(max_iter, 64))
    alphas: list[float] = []
    betas: list[float] = []  # betas[j] couples v_j and v_{j+1}
    history: list[np.ndarray] = []
    start_count = lin.num_matvecs
    beta = 0.0
    theta = S = None
    idx = np.zeros(0, dtype=np.int64)
    resid = np.zeros(0)
    scale = 0.0
    prev: Tensor | None = None
    while True:
        basis.append(q)
        w = lin.mv(q)
        if Q is not None:
            w = _project_off(Q, w)
        alpha = float(torch.dot(w, q))
        w = w - alpha * q
        if prev is not None:
            w = w - beta * prev
        if full_reorth:
            w = basis.orthogonalize(w)
        alphas.append(alpha)
        beta = float(torch.linalg.vector_norm(w))
        _check_step(alpha, beta, f"at Lanczos step {len(alphas)}")
        m = len(alphas)
        theta, S = eigh_tridiagonal(np.array(alphas), np.array(betas)) if m > 1 else (
            np.array(alphas), np.ones((1, 1)))
        scale = float(np.max(np.abs(theta)))
        idx = _wanted(theta, k, which)
        resid = beta * np.abs(S[-1, idx])
        # Converged: small residual bound, and the Ritz value has stopped moving (guards against a
        # Ritz value that is an eigenvalue approximation, but not yet of an extreme eigenvalue).
        moved = np.abs(theta[idx] - history[-1]) if history and history[-1].size == idx.size else np.inf
        history.append(theta[idx].copy())
        ok = (resid <= tol * scale) & (moved <= tol * scale)
        # m == n: the basis spans everything; tiny beta: the Krylov space is invariant. Either way the
        # Ritz values are eigenvalues and the residual bound (computed above) is ~0.
        exhausted = m >= dim or beta <= 1e-14 * scale * math.sqrt(n)
        if (m >= need and bool(ok.all())) or exhausted or m >= max_iter:
            break
        prev = q
        q = w / beta
        betas.append(beta)

    m = len(alphas)
    values = theta[idx]
    vecs = None
    num = lin.num_matvecs - start_count
    if return_eigenvectors or compute_residuals:
        Sw = torch.from_numpy(np.ascontiguousarray(S[:, idx])).to(lin.device)
        vecs = basis.rows.T @ Sw
        vecs = vecs / torch.linalg.vector_norm(vecs, dim=0, keepdim=True)
    if compute_residuals:
        assert vecs is not None
        resid = np.array([
            float(torch.linalg.vector_norm(lin.mv(vecs[:, i]) - float(values[i]) * vecs[:, i]))
            for i in range(vecs.shape[1])
        ])
        num = lin.num_matvecs - start_count
    settled = np.ones(len(idx), dtype=bool) if exhausted else (moved <= tol * scale)
    pair_ok = (resid <= tol * scale) & settled
    hist = np.full((len(history), len(idx)), np.nan)
    for i, h in enumerate(history):
        hist[i, : min(len(h), len(idx))] = h[: len(idx)]
    return EigResult(
        eigenvalues=torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64)),
        eigenvectors=vecs if return_eigenvectors else None,
        residuals=torch.from_numpy(np.ascontiguousarray(resid, dtype=np.float64)),
        pair_converged=torch.from_numpy(np.ascontiguousarray(pair_ok, dtype=bool)),
        converged=bool(pair_ok.all()) and len(idx) >= min(need, dim),
        num_matvecs=int(num),
        iterations=m,
        scale=scale,
        tol=float(tol),
        which=which,
        history=hist,
    )


def _deflation_basis(deflate: Any, lin: _LinOp) -> Tensor | None:
    """An orthonormal ``(n, r)`` basis of the columns of ``deflate`` (``None``: no deflation)."""
    if deflate is None:
        return None
    D = torch.from_numpy(deflate) if isinstance(deflate, np.ndarray) else torch.as_tensor(deflate)
    D = D.detach().to(device=lin.device, dtype=torch.float64)
    if D.dim() == 1:
        D = D.unsqueeze(1)
    if D.dim() != 2 or D.shape[0] != lin.n:
        raise LosslabError(f"deflate must be (n={lin.n}, r) vectors, got shape {tuple(D.shape)}")
    if D.shape[1] == 0:
        return None
    if D.shape[1] >= lin.n:
        raise LosslabError(f"deflate has {D.shape[1]} vectors; it must leave some of the {lin.n} dimensions")
    Q, R = torch.linalg.qr(D)
    if bool((R.diagonal().abs() <= 1e-10 * R.diagonal().abs().max()).any()):
        raise LosslabError("deflate vectors are linearly dependent")
    return Q


def _project_off(Q: Tensor, w: Tensor) -> Tensor:
    """``w`` with its components along the orthonormal columns of ``Q`` removed (twice if needed)."""
    before = torch.linalg.vector_norm(w)
    w = w - Q @ (Q.T @ w)
    if torch.linalg.vector_norm(w) < 0.7071 * before:
        w = w - Q @ (Q.T @ w)
    return w


def _with_repeats(A: MatrixLike, k: int, *, which: str, generator: torch.Generator, deflate: Any,
                  return_eigenvectors: bool, compute_residuals: bool, **kw: Any) -> EigResult:
    """:func:`lanczos_eigs` that also finds repeated copies (see its ``repeats``)."""
    lin = as_linop(A)
    sign = 1.0 if which == "LA" else -1.0
    first = lanczos_eigs(lin, k, which=which, generator=generator, deflate=deflate, return_eigenvectors=True,
                         compute_residuals=compute_residuals, **kw)
    vals, vecs, res, ok = (first.eigenvalues.clone(), first.eigenvectors, first.residuals.clone(),
                           first.pair_converged.clone())
    assert vecs is not None
    known = vecs if deflate is None else torch.cat([torch.as_tensor(deflate, dtype=torch.float64, device=vecs.device)
                                                    .reshape(lin.n, -1), vecs], dim=1)
    total = first.num_matvecs
    iters = first.iterations
    kw = {key: v for key, v in kw.items() if key != "v0"}
    while known.shape[1] < lin.n:
        more = lanczos_eigs(lin, k, which=which, generator=generator, deflate=known, return_eigenvectors=True,
                            compute_residuals=compute_residuals, **kw)
        total += more.num_matvecs
        iters += more.iterations
        worst = float((sign * vals).min())
        new = [i for i in range(len(more.eigenvalues)) if float(sign * more.eigenvalues[i]) > worst + 1e-12 * abs(worst)]
        if not new:
            break
        assert more.eigenvectors is not None
        vals = torch.cat([vals, more.eigenvalues[new]])
        vecs = torch.cat([vecs, more.eigenvectors[:, new]], dim=1)
        res = torch.cat([res, more.residuals[new]])
        ok = torch.cat([ok, more.pair_converged[new]])
        known = torch.cat([known, more.eigenvectors[:, new]], dim=1)
        order = torch.argsort(sign * vals, descending=True)[:k]
        vals, vecs, res, ok = vals[order], vecs[:, order], res[order], ok[order]
    return dataclasses.replace(
        first, eigenvalues=vals, eigenvectors=vecs if return_eigenvectors else None, residuals=res,
        pair_converged=ok, converged=bool(ok.all()), num_matvecs=total, iterations=iters,
    )
