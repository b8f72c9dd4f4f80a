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

Memory is bounded whatever the number of steps: the vectors are held in the operator's dtype (only
the small projected problem is float64), at most ``max_basis`` of them, with a thick restart (Wu &
Simon 2000) when the basis is full; a single eigenvalue without its vector (``lambda_max``) needs only
the three vectors of the recurrence.

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


#: Columns per block of the float64-accumulated inner products (a few MB of temporaries).
_BLOCK = 1 << 16


def _dots(V: Tensor, w: Tensor) -> Tensor:
    """``V @ w`` accumulated in float64 (returned in ``w``'s dtype), a block of columns at a time.

    A float32 inner product over millions of entries loses about ``ε·√n`` (1e-4 relative at 11.7 M
    weights), enough to move λmax by more than 1e-5 through the recurrence and the reorthogonalization;
    the float64 sum costs no memory beyond one ``rows × block`` temporary.
    """
    if w.dtype == torch.float64:
        return V @ w
    out = torch.zeros(V.shape[:-1], dtype=torch.float64, device=w.device)
    for s in range(0, w.shape[0], _BLOCK):
        out += V[..., s : s + _BLOCK].to(torch.float64) @ w[s : s + _BLOCK].to(torch.float64)
    return out.to(w.dtype)


def _dot(a: Tensor, b: Tensor) -> float:
    """``a · b`` accumulated in float64 (see :func:`_dots`)."""
    if a.dtype == torch.float64:
        return float(torch.dot(a, b))
    return float(sum(torch.dot(a[s : s + _BLOCK].to(torch.float64), b[s : s + _BLOCK].to(torch.float64))
                     for s in range(0, a.shape[0], _BLOCK)))


def _norm(a: Tensor) -> float:
    """``‖a‖`` accumulated in float64 (see :func:`_dots`)."""
    return math.sqrt(max(_dot(a, a), 0.0))


class _Basis:
    """Row-major store of at most ``cap`` Lanczos vectors in ``dtype`` (allocated once, never grown)."""

    def __init__(self, n: int, device: torch.device, cap: int, dtype: torch.dtype = torch.float64) -> None:
        self.V = torch.empty((max(1, cap), n), dtype=dtype, device=device)
        self.m = 0

    @property
    def capacity(self) -> int:
        """The most vectors this basis can hold."""
        return int(self.V.shape[0])

    def append(self, v: Tensor) -> None:
        if self.m == self.capacity:
            raise RuntimeError("Lanczos basis is full")  # an internal error: callers restart first
        self.V[self.m] = v
        self.m += 1

    @property
    def rows(self) -> Tensor:
        return self.V[: self.m]

    def orthogonalize(self, w: Tensor) -> Tensor:
        """Classical Gram-Schmidt against all rows, repeated once if it cancelled much of ``w``
        (Daniel-Gragg-Kaufman-Stewart criterion ``‖w'‖ < ‖w‖/√2``: "twice is enough")."""
        Vm = self.rows
        before = _norm(w)
        w = w - _dots(Vm, w) @ Vm
        if _norm(w) < 0.7071 * before:
            w = w - _dots(Vm, w) @ Vm
        return w

    def combine(self, C: np.ndarray) -> None:
        """Replace the rows by ``C @ rows`` (``C``: ``(l, m)``, ``l ≤ m``) in place, a block of columns at a
        time, so a restart needs no second basis (only an ``m × block`` temporary)."""
        l, m = C.shape
        Ct = torch.from_numpy(np.ascontiguousarray(C)).to(device=self.V.device, dtype=self.V.dtype)
        n = self.V.shape[1]
        block = max(1, (1 << 20) // max(1, m))
        for s in range(0, n, block):
            self.V[:l, s : s + block] = Ct @ self.V[:m, s : s + block]
        self.m = l


def _start_vector(lin: _LinOp, v0: Any, gen: torch.Generator) -> Tensor:
    if v0 is None:
        q = probe_vectors(lin.n, 1, "gaussian", gen, lin.device)[0].to(lin.dtype)
    else:
        if isinstance(v0, np.ndarray):
            v0 = torch.from_numpy(v0)
        if isinstance(v0, dict):
            raise LosslabError("v0 must be a flat vector; use op.flatten(point) for a parameter dict")
        q = torch.as_tensor(v0).detach().reshape(-1).to(device=lin.device, dtype=lin.dtype)
        if q.numel() != lin.n:
            raise LosslabError(f"v0 has {q.numel()} entries, operator has dimension {lin.n}")
    nrm = _norm(q)
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


def _kept(m: int, keep: int, which: str) -> np.ndarray:
    """Indices (into ascending Ritz values of an ``m``-vector basis) of the ``keep`` kept at a restart."""
    if which == "LA":
        return np.arange(m - keep, m)
    if which == "SA":
        return np.arange(keep)
    lo = keep // 2
    return np.r_[np.arange(lo), np.arange(m - (keep - lo), m)]


#: Lanczos vectors held at once by default (:func:`lanczos_eigs`' ``max_basis``).
DEFAULT_MAX_BASIS = 32


def _basis_dtype(A: Any, basis_dtype: torch.dtype | None) -> torch.dtype:
    """The dtype Lanczos works in: ``basis_dtype``, else the operator's (at least float32), else float64."""
    if basis_dtype is not None:
        if not (isinstance(basis_dtype, torch.dtype) and basis_dtype.is_floating_point):
            raise LosslabError(f"basis_dtype must be a floating torch dtype, got {basis_dtype!r}")
        return basis_dtype
    dt = A.dtype if isinstance(A, _LinOp) else getattr(A, "dtype", None)
    if not isinstance(dt, torch.dtype) or not dt.is_floating_point:
        return torch.float64
    return torch.promote_types(dt, torch.float32)


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
    full_reorth: bool | None = None,
    return_eigenvectors: bool = True,
    compute_residuals: bool = False,
    deflate: Tensor | np.ndarray | None = None,
    repeats: bool = False,
    max_basis: int | None = None,
    basis_dtype: torch.dtype | None = None,
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

    **Memory.** The Lanczos vectors are kept in the operator's dtype (float32 for a float32 network;
    only the small tridiagonal problem is solved in float64), and at most ``max_basis`` of them are held,
    whatever ``max_iter`` is. When the basis is full, Lanczos is *thick-restarted* (Wu & Simon, 2000):
    the basis is replaced in place by the ``l`` Ritz vectors nearest the wanted end(s) (about half of
    it) and the run continues from the last Lanczos vector, with :math:`T` now
    :math:`\\operatorname{diag}(θ_{kept})` bordered by the couplings :math:`β_m s_{m,i}`; the residual
    bound and the stopping rule are unchanged. Restarts keep the answer and cost a few more products
    than one unbroken run. When one eigenvalue per end is wanted without its vector (``k=1``,
    ``return_eigenvectors=False``, no ``compute_residuals``: what :func:`~losslab.curvature.lambda_max`
    asks) and ``max_iter`` exceeds ``max_basis``, the default ``full_reorth=None`` runs the plain
    three-term recurrence and holds only three vectors: in floating point the extreme Ritz value
    converges as fast as with reorthogonalization (Paige), and lost orthogonality only makes copies of
    converged values, which a single wanted value never reports.

    Single-vector Lanczos sees one direction per distinct eigenvalue in exact arithmetic; further
    copies of an exactly repeated eigenvalue show up only through rounding errors, unreliably (a
    triple top eigenvalue of a 60 x 60 test matrix came out twice). ``repeats=True``
    finds the other copies: it reruns Lanczos deflated against the eigenvectors found so far (a
    fresh start vector orthogonal to them, every product projected off them) and merges, until a
    rerun brings nothing into the wanted ``k``; each rerun costs about one more run.

    Args:
        A: symmetric matrix: dense torch/numpy, scipy ``LinearOperator``, or an object with ``.shape``
            and ``.matvec`` (e.g. :class:`~losslab.curvature.HessianOperator`).
        k: eigenpairs wanted (per end for ``"both"``); at most ``n`` (``2k ≤ n`` for ``"both"``, ``k ≤
            n - r`` with ``r`` deflated vectors); more is a :class:`LosslabError`.
        which: ``"LA"`` largest algebraic, ``"SA"`` smallest algebraic, ``"both"``.
        tol: relative residual tolerance (see above). Products computed in float32 limit it to about
            1e-6; use float64 operators for tighter values.
        max_iter: maximum Lanczos steps = products (default ``min(n, max(100, 20 k))``).
        seed, generator: randomness of the start vector (keyword-only; never the global RNG).
        v0: start vector (e.g. the previous top eigenvector, to warm-start along a trajectory).
        full_reorth: ``True``: reorthogonalize against every held vector (classical Gram-Schmidt,
            twice if needed); ``False``: only the three-term recurrence (cheaper, but loses
            orthogonality: ghosts, weaker residual bound; a basis is still held, and restarted, when
            eigenvectors or several values are wanted); ``None`` (default):
            ``True``, except for the single-value case described under Memory.
        return_eigenvectors: compute the Ritz vectors (an ``n × k`` product with the basis).
        compute_residuals: recompute :math:`\\|Ay-θy\\|` explicitly (``k`` extra products).
        deflate: ``(n, r)`` vectors (e.g. eigenvectors already known) whose span is projected out:
            Lanczos then runs on :math:`PAP` restricted to the orthogonal complement, :math:`P = I -
            QQ^T` (:math:`Q` an orthonormal basis of the columns), and returns the wanted eigenpairs
            there. Exact when the span is invariant (eigenvectors); ``r < n``.
        repeats: also find repeated copies of the wanted eigenvalues (``"LA"``/``"SA"``; see above).
        max_basis: the most Lanczos vectors held at once (default :data:`DEFAULT_MAX_BASIS`, raised to
            ``2 · wanted + 8`` for large ``k``); at least the number of wanted values + 2.
        basis_dtype: dtype of the held vectors and of the products (default: the operator's dtype, at
            least float32; float64 for numpy/scipy operators). ``torch.float64`` on a float32 operator
            is the old, 2x larger basis.

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
    lin = as_linop(A, _basis_dtype(A, basis_dtype))
    n = lin.n
    k = int(k)
    if k < 1:
        raise LosslabError(f"k must be >= 1, got {k}")
    if k > n:
        raise LosslabError(f"k={k} eigenpairs asked of a {n}-dimensional operator: k must be <= {n}")
    if which == "both" and 2 * k > n:
        raise LosslabError(f"k={k} eigenpairs per end asked of a {n}-dimensional operator: 2k must be <= {n}")
    need = 2 * k if which == "both" else k
    if max_iter is None:
        max_iter = min(n, max(100, 20 * k))
    max_iter = int(min(max_iter, n))
    if max_iter < 1:
        raise LosslabError(f"max_iter must be >= 1, got {max_iter}")
    cap = max(DEFAULT_MAX_BASIS, 2 * need + 8) if max_basis is None else int(max_basis)
    if cap < min(need + 2, n):
        raise LosslabError(f"max_basis={cap} cannot hold {need} wanted vectors: it must be >= {min(need + 2, n)}")
    if repeats:
        if which == "both":
            raise LosslabError("repeats=True supports which='LA' or 'SA'")
        return _with_repeats(lin, k, which=which, tol=tol, max_iter=max_iter, generator=make_generator(seed, generator),
                             v0=v0, full_reorth=full_reorth, return_eigenvectors=return_eigenvectors,
                             compute_residuals=compute_residuals, deflate=deflate, max_basis=cap)
    gen = make_generator(seed, generator)
    Q = _deflation_basis(deflate, lin)
    q = _start_vector(lin, v0, gen)
    dim = n  # dimension of the space Lanczos explores
    if Q is not None:
        dim = n - Q.shape[1]
        if k > dim or need > dim:
            raise LosslabError(f"k={k} eigenpairs asked after deflating {Q.shape[1]} of {n} dimensions: "
                               f"only {dim} remain")
        max_iter = min(max_iter, dim)
        q = _project_off(Q, q)
        nrm = _norm(q)
        if nrm <= 1e-12:
            raise LosslabError("the start vector lies in the deflated span")
        q = q / nrm

    single = k == 1 and not return_eigenvectors and not compute_residuals
    if full_reorth is None:
        full_reorth = not (single and max_iter > cap)
    store = full_reorth or not single  # hold a basis (for reorthogonalization or the Ritz vectors)
    run = _run(lin, q, Q, k=k, need=need, which=which, tol=tol, max_iter=max_iter, dim=dim,
               cap=min(cap, max_iter) if store else 0, full_reorth=bool(full_reorth))
    theta, S, idx, resid, moved, basis = run.theta, run.S, run.idx, run.resid, run.moved, run.basis
    values = theta[idx]
    vecs = None
    if return_eigenvectors or compute_residuals:
        assert basis is not None
        Sw = torch.from_numpy(np.ascontiguousarray(S[:, idx])).to(device=lin.device, dtype=lin.dtype)
        vecs = basis.rows.T @ Sw
        vecs = vecs / torch.linalg.vector_norm(vecs, dim=0, keepdim=True)
    num = run.steps
    if compute_residuals:
        assert vecs is not None
        resid = np.array([
            float(torch.linalg.vector_norm(lin.mv(vecs[:, i]) - float(values[i]) * vecs[:, i]))
            for i in range(vecs.shape[1])
        ])
        num += vecs.shape[1]
    settled = np.ones(len(idx), dtype=bool) if run.exhausted else (moved <= tol * run.scale)
    pair_ok = (resid <= tol * run.scale) & settled
    hist = np.full((len(run.history), len(idx)), np.nan)
    for i, h in enumerate(run.history):
        hist[i, : min(len(h), len(idx))] = h[: len(idx)]
    return EigResult(
        eigenvalues=torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64)),
        eigenvectors=vecs.to(torch.float64) if (return_eigenvectors and vecs is not None) else None,
        residuals=torch.from_numpy(np.ascontiguousarray(resid, dtype=np.float64)),
        pair_converged=torch.from_numpy(np.ascontiguousarray(pair_ok, dtype=bool)),
        converged=bool(pair_ok.all()) and len(idx) >= need,
        num_matvecs=int(num),
        iterations=run.steps,
        scale=run.scale,
        tol=float(tol),
        which=which,
        history=hist,
    )


@dataclass
class _Run:
    """The state :func:`_run` ends in: Ritz decomposition of the last ``T``, the basis, counters."""

    theta: np.ndarray
    S: np.ndarray
    idx: np.ndarray
    resid: np.ndarray
    moved: np.ndarray | float
    scale: float
    exhausted: bool
    steps: int
    history: list[np.ndarray]
    basis: _Basis | None
    restarts: int


def _run(lin: _LinOp, q: Tensor, Q: Tensor | None, *, k: int, need: int, which: str, tol: float, max_iter: int,
         dim: int, cap: int, full_reorth: bool) -> _Run:
    """The Lanczos iteration (see :func:`lanczos_eigs`). ``cap = 0``: hold no basis (three-term recurrence).

    ``T`` is kept dense (``cap × cap``) while a basis is held, so a thick restart can border it; the
    step is ``w = A q_j - α_j q_j - Σ_i T_{ij} q_i`` over the couplings of ``q_j`` (one predecessor, or
    every kept Ritz vector right after a restart), then reorthogonalized.
    """
    n = lin.n
    basis = _Basis(n, lin.device, cap, lin.dtype) if cap else None
    T = np.zeros((cap, cap)) if cap else None
    alphas: list[float] = []  # the tridiagonal when no basis is held
    betas: list[float] = []
    cpl = np.zeros(0)  # couplings of the current vector to the rows before it (dense mode)
    history: list[np.ndarray] = []
    prev: Tensor | None = None
    beta = 0.0
    steps = restarts = 0
    restarted = False
    tiny = (1e-14 * math.sqrt(n)) if lin.dtype == torch.float64 else 10 * torch.finfo(lin.dtype).eps
    while True:
        if basis is not None:
            basis.append(q)
        j = basis.m - 1 if basis is not None else len(alphas)
        w = lin.mv(q)
        steps += 1
        if Q is not None:
            w = _project_off(Q, w)
        alpha = _dot(w, q)
        w = torch.add(w, q, alpha=-alpha)  # a new tensor (never the operator's), updated in place below
        if basis is not None and cpl.size:
            first = int(np.flatnonzero(cpl)[0]) if np.any(cpl) else j
            if first < j:
                c = torch.from_numpy(cpl[first:j]).to(device=w.device, dtype=w.dtype)
                w.sub_(c @ basis.V[first:j])
        elif prev is not None:
            w.add_(prev, alpha=-beta)
            prev = None  # not needed any more: free it before the next product
        if full_reorth and basis is not None:
            w = basis.orthogonalize(w)
        beta = _norm(w)
        _check_step(alpha, beta, f"at Lanczos step {steps}")
        if T is not None:
            T[j, j] = alpha
            T[:j, j] = T[j, :j] = cpl[:j]
            m = j + 1
            if restarted:
                theta, S = np.linalg.eigh(T[:m, :m])
            elif m > 1:
                theta, S = eigh_tridiagonal(np.diag(T[:m, :m]).copy(), np.diag(T[:m, :m], 1).copy())
            else:
                theta, S = np.array([alpha]), np.ones((1, 1))
        else:
            alphas.append(alpha)
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
        # m == dim: the basis spans everything; tiny beta: the Krylov space is invariant. Either way the
        # Ritz values are eigenvalues (the residual bound computed above is ~0).
        exhausted = m >= dim or beta <= tiny * scale
        if (m >= need and bool(ok.all())) or exhausted or steps >= max_iter:
            return _Run(theta, S, idx, resid, moved, scale, bool(exhausted), steps, history, basis, restarts)
        q_next = w.div_(beta)
        del w
        if basis is None:
            prev, q = q, q_next
            betas.append(beta)
            continue
        assert T is not None
        if basis.m == basis.capacity:  # thick restart: keep the Ritz vectors nearest the wanted end(s)
            keep = _kept(m, min(m - 2, need + (m - need) // 2), which)
            basis.combine(S[:, keep].T)
            l = keep.size
            T[:] = 0.0
            T[np.arange(l), np.arange(l)] = theta[keep]
            cpl = np.zeros(l + 1)
            cpl[:l] = beta * S[-1, keep]
            restarted = True
            restarts += 1
        else:
            cpl = np.zeros(m + 1)
            cpl[m - 1] = beta
        prev, q = None, q_next


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
    before = _norm(w)
    w = w - Q @ _dots(Q.T, w)
    if _norm(w) < 0.7071 * before:
        w = w - Q @ _dots(Q.T, w)
    return w


def _with_repeats(A: MatrixLike, k: int, *, which: str, generator: torch.Generator, deflate: Any,
                  return_eigenvectors: bool, compute_residuals: bool, **kw: Any) -> EigResult:
    """:func:`lanczos_eigs` that also finds repeated copies (see its ``repeats``)."""
    lin = as_linop(A, _basis_dtype(A, None))
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
