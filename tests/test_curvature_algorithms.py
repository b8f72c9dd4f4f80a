"""Lanczos, Hutchinson/Hutch++ and SLQ against exact spectra (dense matrices and tiny-model Hessians)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import aslinearoperator
from torch import nn

from losslab import LosslabError
from losslab.curvature import (
    HessianOperator,
    SLQResult,
    density_curve,
    hutchinson_trace,
    hutchpp_trace,
    lanczos_eigs,
    slq_density,
    spectral_moments,
)

D = torch.float64


@pytest.fixture(scope="module", autouse=True)
def _private_global_rng():
    """The tiny models below seed torch's global RNG for their init; keep that from leaking out."""
    with torch.random.fork_rng(devices=[]):
        yield


def tiny_hessian_operator(seed: int = 0, batch_size: int = 5):
    """A cross-entropy MLP Hessian (n = 43) on 13 examples in uneven batches, and its dense matrix."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(D)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=D))
    x = torch.randn(13, 4, generator=g, dtype=D)
    y = torch.randint(0, 3, (13,), generator=g)
    H = HessianOperator(model, (x, y), loss=nn.CrossEntropyLoss(), batch_size=batch_size)
    return H, H.to_dense(), model


@pytest.fixture(scope="module")
def hess():
    H, Hd, model = tiny_hessian_operator()
    H.reset_counter()
    return H, Hd


def sym_matrix(n: int, seed: int, spectrum=None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))
    lam = torch.linspace(-1, 3, n, dtype=D) if spectrum is None else torch.as_tensor(spectrum, dtype=D)
    return (Q * lam) @ Q.T


# ---------------------------------------------------------------------------------------------
# Lanczos
# ---------------------------------------------------------------------------------------------


def true_residuals(Hd, res):
    V = res.eigenvectors
    return torch.linalg.vector_norm(Hd @ V - V * res.eigenvalues, dim=0)


def test_lanczos_top_and_bottom_match_eigvalsh(hess):
    H, Hd = hess
    ev = torch.linalg.eigvalsh(Hd)
    top = lanczos_eigs(H, k=3, seed=0)  # defaults
    assert top.converged and bool(top.pair_converged.all())
    torch.testing.assert_close(top.eigenvalues, ev[-3:].flip(0), rtol=0, atol=1e-8)
    r = true_residuals(Hd, top)
    assert float(r.max()) <= 2 * top.tol * top.scale
    torch.testing.assert_close(r, top.residuals, rtol=0, atol=1e-9)  # the β|s| bound is the residual
    torch.testing.assert_close(top.eigenvectors.T @ top.eigenvectors, torch.eye(3, dtype=D), rtol=0, atol=1e-10)
    assert top.num_matvecs == top.iterations < Hd.shape[0]

    bottom = lanczos_eigs(H, k=1, which="SA", seed=1)
    assert bottom.converged
    assert abs(float(bottom.eigenvalues[0]) - float(ev[0])) < 1e-8
    assert float(ev[0]) < 0  # the test is meaningful: an indefinite Hessian

    both = lanczos_eigs(Hd, k=2, which="both", seed=2, compute_residuals=True)
    assert both.converged and both.eigenvalues.shape == (4,)
    torch.testing.assert_close(both.eigenvalues, torch.cat([ev[:2], ev[-2:]]), rtol=0, atol=1e-8)
    assert both.num_matvecs == both.iterations + 4
    assert float(both.residuals.max()) <= 2 * both.tol * both.scale


def test_lanczos_honest_nonconvergence_and_budget(hess):
    H, Hd = hess
    res = lanczos_eigs(H, k=3, max_iter=4, seed=0)
    assert res.converged is False and not bool(res.pair_converged.all())
    assert res.num_matvecs == 4 and res.iterations == 4
    ev = torch.linalg.eigvalsh(Hd)
    # Ritz values interlace: never above λmax
    assert float(res.eigenvalues[0]) <= float(ev[-1]) + 1e-12
    # the reported residual is the true one even when not converged
    torch.testing.assert_close(true_residuals(Hd, res), res.residuals, rtol=0, atol=1e-9)
    assert float(res.residuals.max()) > res.tol * res.scale


def test_lanczos_warm_start_and_seeds(hess):
    H, Hd = hess
    a = lanczos_eigs(H, k=1, seed=5)
    b = lanczos_eigs(H, k=1, seed=5)
    torch.testing.assert_close(a.eigenvalues, b.eigenvalues, rtol=0, atol=0)
    c = lanczos_eigs(H, k=1, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a.eigenvalues, c.eigenvalues, rtol=0, atol=0)
    warm = lanczos_eigs(H, k=1, v0=a.eigenvectors[:, 0], seed=0)
    assert warm.converged and warm.num_matvecs <= 3 < a.num_matvecs
    with pytest.raises(LosslabError, match="seed or generator"):
        lanczos_eigs(H, seed=1, generator=torch.Generator())
    with pytest.raises(LosslabError, match="which"):
        lanczos_eigs(H, which="LM")
    with pytest.raises(LosslabError, match="v0"):
        lanczos_eigs(H, v0=torch.zeros(Hd.shape[0], dtype=D))


@pytest.mark.parametrize("form", ["torch", "numpy", "scipy", "to_scipy"])
def test_lanczos_accepts_dense_and_scipy(form, hess):
    H, Hd = hess
    A = {"torch": Hd, "numpy": Hd.numpy(), "scipy": aslinearoperator(Hd.numpy()), "to_scipy": H.to_scipy()}[form]
    res = lanczos_eigs(A, k=2, seed=0)
    ev = torch.linalg.eigvalsh(Hd)
    assert res.converged
    torch.testing.assert_close(res.eigenvalues, ev[-2:].flip(0), rtol=0, atol=1e-8)


def test_lanczos_edge_cases():
    # the Krylov space is exhausted at m = n: exact
    A = sym_matrix(6, 0)
    res = lanczos_eigs(A, k=6, seed=0)
    torch.testing.assert_close(res.eigenvalues, torch.linalg.eigvalsh(A).flip(0), rtol=0, atol=1e-10)
    assert res.converged and res.num_matvecs <= 6
    # an invariant subspace (start vector in a 2-D eigenspace) stops early, exactly
    B = torch.diag(torch.tensor([5.0, 2.0, 1.0, 1.0], dtype=D))
    v0 = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=D)
    res = lanczos_eigs(B, k=1, v0=v0)
    assert res.num_matvecs == 2 and res.converged and abs(float(res.eigenvalues[0]) - 5.0) < 1e-12
    # without reorthogonalization the top eigenvalue is still found
    C = sym_matrix(200, 1, spectrum=np.r_[np.linspace(0, 1, 197), [2.0, 3.0, 5.0]])
    nr = lanczos_eigs(C, k=1, full_reorth=False, seed=0)
    assert abs(float(nr.eigenvalues[0]) - 5.0) < 1e-8
    with pytest.raises(LosslabError, match="square"):
        lanczos_eigs(torch.zeros(3, 4))
    with pytest.raises(LosslabError, match="cannot use"):
        lanczos_eigs("matrix")
    # an operator that returns NaN (a NaN loss) is a one-line error, not a scipy traceback
    N = torch.eye(5, dtype=D)
    N[2, 2] = float("nan")
    with pytest.raises(LosslabError, match="non-finite values at Lanczos step 1"):
        lanczos_eigs(N, k=1, seed=0)
    with pytest.raises(LosslabError, match="non-finite values .probe 0"):
        slq_density(N, num_probes=2, seed=0)


def test_lanczos_beats_power_iteration_budget():
    # an outlier spectrum like a Hessian's: λ1 = 10, λ2 = 8, bulk in [0, 1]
    spectrum = np.r_[np.linspace(-0.2, 1.0, 297), [6.0, 8.0, 10.0]]
    A = sym_matrix(300, 3, spectrum=spectrum)
    res = lanczos_eigs(A, k=1, seed=0)
    assert res.converged and abs(float(res.eigenvalues[0]) - 10.0) < 1e-8
    err = np.abs(res.history[:, 0] - 10.0) / 10.0
    assert int(np.argmax(err <= 1e-3)) + 1 <= 15  # 1e-3 relative error within 15 products
    # power iteration needs (λ2/λ1)^(2m) ≈ 1e-3 → m ≈ 15; Lanczos is far ahead
    assert int(np.argmax(err <= 1e-3)) + 1 < 10


# ---------------------------------------------------------------------------------------------
# Hutchinson / Hutch++
# ---------------------------------------------------------------------------------------------


def test_hutchinson_error_falls_with_probes(hess):
    _, Hd = hess
    exact = float(torch.trace(Hd))
    err = {}
    for m in (10, 1000):
        err[m] = np.mean([abs(hutchinson_trace(Hd, num_probes=m, seed=s).trace - exact) for s in range(10)])
    assert err[1000] < err[10] / 4  # 1/sqrt(m): ~10x expected


def test_hutchinson_stderr_covers_truth(hess):
    _, Hd = hess
    exact = float(torch.trace(Hd))
    fro_sq = float((Hd**2).sum())
    covered = fro_covered = 0
    for s in range(50):
        r = hutchinson_trace(Hd, num_probes=30, seed=1000 + s)
        assert r.num_probes == r.num_matvecs == 30
        covered += abs(r.trace - exact) <= 2 * r.stderr
        fro_covered += abs(r.frobenius_sq - fro_sq) <= 2 * r.frobenius_sq_stderr
    assert covered >= 45 and fro_covered >= 40  # ≥ 90% (≈ 95% nominal); ‖Az‖² is skewed: ≥ 80%


def test_hutchinson_frobenius_and_early_stop(hess):
    H, Hd = hess
    fro_sq = float((Hd**2).sum())
    r = hutchinson_trace(H, num_probes=400, seed=0)  # through the operator itself
    assert abs(r.frobenius_sq - fro_sq) <= 4 * r.frobenius_sq_stderr
    assert abs(r.frobenius - fro_sq**0.5) / fro_sq**0.5 < 0.05
    assert abs(r.trace - float(torch.trace(Hd))) <= 4 * r.stderr
    g = hutchinson_trace(Hd.numpy(), num_probes=400, seed=0, dist="gaussian", return_frobenius=False)
    assert g.frobenius_sq is None and abs(g.trace - float(torch.trace(Hd))) <= 4 * g.stderr
    # rtol: stops once stderr ≤ rtol·|trace| (a diagonal matrix: Rademacher is exact at once)
    diag = torch.diag(torch.arange(1.0, 21.0, dtype=D))
    e = hutchinson_trace(diag, num_probes=500, seed=0, rtol=1e-3)
    assert e.num_probes == 10 and e.trace == 210.0 and e.stderr == 0.0
    loose = hutchinson_trace(Hd, num_probes=500, seed=0, rtol=0.2)
    assert loose.num_probes < 500 and loose.stderr <= 0.2 * abs(loose.trace)
    with pytest.raises(LosslabError, match="distribution"):
        hutchinson_trace(Hd, num_probes=3, seed=0, dist="uniform")


def test_hutchpp_beats_hutchinson_on_low_rank_plus_noise():
    n = 300
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(n, 10, generator=g, dtype=D))
    N = torch.randn(n, n, generator=g, dtype=D)
    A = (U * torch.linspace(20, 100, 10, dtype=D)) @ U.T + 0.01 * (N + N.T)
    exact = float(torch.trace(A))
    m = 60
    e_h = np.mean([abs(hutchinson_trace(A, num_probes=m, seed=s).trace - exact) for s in range(20)])
    e_pp = np.mean([abs(hutchpp_trace(A, num_matvecs=m, seed=s).trace - exact) for s in range(20)])
    assert e_pp < e_h / 10
    r = hutchpp_trace(A, num_matvecs=m, seed=0)
    assert r.num_matvecs == m and r.method == "hutch++"


# ---------------------------------------------------------------------------------------------
# SLQ
# ---------------------------------------------------------------------------------------------


def test_slq_moments_match_dense_spectrum(hess):
    H, Hd = hess
    n = Hd.shape[0]
    ev = torch.linalg.eigvalsh(Hd).numpy()
    exact = np.array([1.0, ev.mean(), (ev**2).mean()])
    res = slq_density(H, num_probes=20, lanczos_steps=15, seed=0)
    assert res.num_matvecs <= 20 * 15 and res.dim == n
    mom, se = spectral_moments(res, [0, 1, 2])
    assert abs(mom[0] - 1.0) < 1e-12
    assert np.all(np.abs(mom[1:] - exact[1:]) <= 4 * se[1:] + 1e-12)
    np.testing.assert_allclose(res.moments([0, 1, 2]), mom)
    # more probes: closer on average
    errs = {}
    for P in (3, 60):
        errs[P] = np.mean([abs(slq_density(Hd, num_probes=P, lanczos_steps=12, seed=s).moments([1])[0] - exact[1])
                           for s in range(8)])
    assert errs[60] < errs[3]


def test_slq_quadrature_is_exact_on_the_probes(hess):
    # Same seed ⇒ same Rademacher probes as Hutchinson; the quadrature is exact for degree ≤ 2m-1,
    # so n·∫t dμ = mean zᵀHz and n·∫t² dμ = mean ‖Hz‖², to rounding.
    _, Hd = hess
    n = Hd.shape[0]
    res = slq_density(Hd, num_probes=7, lanczos_steps=5, seed=3)
    tr = hutchinson_trace(Hd, num_probes=7, seed=3)
    m1, m2 = res.moments([1, 2])
    assert abs(n * m1 - tr.trace) < 1e-10 * abs(tr.trace) + 1e-10
    assert abs(n * m2 - tr.frobenius_sq) < 1e-10 * tr.frobenius_sq


def test_slq_density_curve_save_load(tmp_path, hess):
    _, Hd = hess
    res = slq_density(Hd.numpy(), num_probes=4, lanczos_steps=20, seed=0, meta={"note": "tiny"})
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-12)
    ev = torch.linalg.eigvalsh(Hd).numpy()
    grid = np.linspace(ev[0] - 1, ev[-1] + 1, 2001)
    dens = density_curve(res, grid, sigma=0.05)
    assert dens.shape == grid.shape and np.all(dens >= 0)
    assert abs(np.trapezoid(dens, grid) - 1.0) < 1e-12
    path = res.save(tmp_path / "slq.npz")
    assert path.exists() and path.with_suffix(".json").exists()
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["dim"] == Hd.shape[0] and info["meta"]["note"] == "tiny" and info["meta"]["seed"] == 0
    back = SLQResult.load(path)
    np.testing.assert_array_equal(back.nodes, res.nodes)
    np.testing.assert_array_equal(back.weights, res.weights)
    np.testing.assert_array_equal(back.density(grid, 0.05), dens)  # re-rendered without the model
    assert back.num_matvecs == res.num_matvecs
    # default sigma and a smoothed density close to the exact eigenvalue density
    assert np.isfinite(density_curve(res, grid)).all()
    exact = np.exp(-0.5 * ((grid[:, None] - ev[None]) / 0.3) ** 2).sum(1)
    exact /= np.trapezoid(exact, grid)
    approx = density_curve(slq_density(Hd, num_probes=40, lanczos_steps=20, seed=1), grid, 0.3)
    assert np.trapezoid(np.abs(approx - exact), grid) < 0.3  # L1 distance of two probability densities
    with pytest.raises(LosslabError, match="increasing"):
        density_curve(res, grid[::-1], 0.1)


def test_lanczos_deflation_and_repeated_eigenvalues():
    g = torch.Generator().manual_seed(0)
    n = 60
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    ev = torch.cat([torch.tensor([5.0, 5.0, 5.0, 4.0], dtype=torch.float64), torch.linspace(3, -1, n - 4, dtype=torch.float64)])
    A = Q @ torch.diag(ev) @ Q.T
    r = lanczos_eigs(A, k=3, seed=0, repeats=True)
    torch.testing.assert_close(r.eigenvalues, torch.full((3,), 5.0, dtype=torch.float64), atol=1e-9, rtol=0)
    V = r.eigenvectors
    assert r.converged and float((V.T @ V - torch.eye(3, dtype=torch.float64)).abs().max()) < 1e-10
    assert float((A @ V - V * r.eigenvalues).norm(dim=0).max()) < 1e-5
    # the top-3 eigenspace is found: projecting it out of A leaves 4 on top
    P = torch.eye(n, dtype=torch.float64) - V @ V.T
    assert float(torch.linalg.eigvalsh(P @ A @ P).max()) == pytest.approx(4.0, abs=1e-6)
    r4 = lanczos_eigs(A, k=4, seed=1, repeats=True)
    torch.testing.assert_close(r4.eigenvalues, torch.tensor([5.0, 5.0, 5.0, 4.0], dtype=torch.float64), atol=1e-8, rtol=0)
    # deflation alone: the known top eigenvector of diag(1..100) projected out gives 99, 98
    D = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
    e = torch.zeros(100, 1, dtype=torch.float64)
    e[99] = 1.0
    d = lanczos_eigs(D, k=2, seed=0, deflate=e)
    torch.testing.assert_close(d.eigenvalues, torch.tensor([99.0, 98.0], dtype=torch.float64), atol=1e-6, rtol=0)
    assert float(d.eigenvectors[99].abs().max()) < 1e-12
    with pytest.raises(LosslabError):
        lanczos_eigs(D, k=1, deflate=torch.zeros(7, 1))
    with pytest.raises(LosslabError):
        lanczos_eigs(D, k=1, which="both", repeats=True)
