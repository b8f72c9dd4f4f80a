"""Lanczos memory: the basis in the operator's dtype, at most ``max_basis`` vectors (thick restart),
the three-vector recurrence for a lone eigenvalue, accuracy in float32 and products against the old
algorithm (float64 basis, full reorthogonalization, never restarted)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from losslab import LosslabError
from losslab.curvature import HessianOperator, lambda_max, lanczos_eigs
from losslab.curvature import lanczos as lz


@pytest.fixture(scope="module", autouse=True)
def _private_global_rng():
    with torch.random.fork_rng(devices=[]):
        yield


def cnn1d(seed: int):
    """A float32 1-D CNN (520 weights) with cross-entropy on 48 examples."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv1d(1, 6, 5), nn.Tanh(), nn.Flatten(), nn.Linear(6 * 20, 4))
    x = torch.randn(48, 1, 24, generator=g)
    y = torch.randint(0, 4, (48,), generator=g)
    return model, x, y


def mlp(seed: int):
    """A float32 MLP (1415 weights) with cross-entropy on 64 examples."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 30), nn.Tanh(), nn.Linear(30, 30), nn.Tanh(), nn.Linear(30, 5))
    x = torch.randn(64, 10, generator=g)
    y = torch.randint(0, 5, (64,), generator=g)
    return model, x, y


def dense_hessian64(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The exact Hessian of the mean cross-entropy, by ``torch.func`` (jacrev twice) on a float64 copy."""
    m64 = copy.deepcopy(model).to(torch.float64)
    names = [n for n, _ in m64.named_parameters()]
    shapes = [p.shape for _, p in m64.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for _, p in m64.named_parameters()])

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params, i = {}, 0
        for name, shape in zip(names, shapes):
            size = int(np.prod(shape))
            params[name] = theta[i : i + size].reshape(shape)
            i += size
        return nn.functional.cross_entropy(functional_call(m64, params, (x.to(torch.float64),)), y)

    return jacrev(jacrev(loss))(flat)  # reverse-over-reverse: no forward-mode AD needed


class _Recorder:
    """Records every Lanczos basis allocated (capacity, dtype, most rows held) by patching ``_Basis``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[lz._Basis] = []
        self.peak: list[int] = []
        rec = self

        class Recording(lz._Basis):
            def __init__(self, *a, **kw) -> None:
                super().__init__(*a, **kw)
                rec.made.append(self)
                rec.peak.append(0)
                self._slot = len(rec.peak) - 1

            def append(self, v: torch.Tensor) -> None:
                super().append(v)
                rec.peak[self._slot] = max(rec.peak[self._slot], self.m)

        monkeypatch.setattr(lz, "_Basis", Recording)


def sym_matrix(n: int, seed: int, spectrum: np.ndarray) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (Q * torch.as_tensor(spectrum, dtype=torch.float64)) @ Q.T


@pytest.mark.parametrize("max_iter", [60, 150, 300])
def test_basis_never_holds_more_than_max_basis(monkeypatch, max_iter):
    # a slowly converging spectrum: the run needs far more steps than the cap, so it restarts
    spectrum = np.r_[np.linspace(0.0, 1.0, 296), [1.02, 1.04, 1.06, 1.08]]
    A = sym_matrix(300, 0, spectrum)
    rec = _Recorder(monkeypatch)
    res = lanczos_eigs(A, k=2, tol=1e-8, max_iter=max_iter, max_basis=12, seed=0)
    assert len(rec.made) == 1
    assert rec.made[0].capacity <= 12 and rec.peak[0] <= 12
    assert res.iterations > 12  # it did restart (the cap was binding)
    if res.converged:
        torch.testing.assert_close(res.eigenvalues, torch.tensor([1.08, 1.06], dtype=torch.float64),
                                   rtol=0, atol=1e-8)
        r = torch.linalg.vector_norm(A @ res.eigenvectors - res.eigenvectors * res.eigenvalues, dim=0)
        assert float(r.max()) <= 2 * res.tol * res.scale
    else:  # a budget too small is reported, never passed off as converged
        assert res.iterations == max_iter


def test_restarted_run_converges_exactly_and_default_cap_is_bounded(monkeypatch):
    spectrum = np.r_[np.linspace(-0.5, 1.0, 395), [1.5, 2.0, 2.2, 2.5, 3.0]]
    A = sym_matrix(400, 1, spectrum)
    rec = _Recorder(monkeypatch)
    res = lanczos_eigs(A, k=3, tol=1e-9, max_iter=400, max_basis=14, seed=0)
    assert res.converged and res.iterations > 14
    torch.testing.assert_close(res.eigenvalues, torch.tensor([3.0, 2.5, 2.2], dtype=torch.float64), rtol=0, atol=1e-9)
    V = res.eigenvectors
    torch.testing.assert_close(V.T @ V, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-8)
    # the default cap: a few dozen vectors, whatever max_iter
    lanczos_eigs(A, k=1, tol=1e-12, max_iter=400, seed=0)
    assert rec.made[-1].capacity == lz.DEFAULT_MAX_BASIS and rec.peak[-1] <= lz.DEFAULT_MAX_BASIS


def test_lone_eigenvalue_holds_no_basis(monkeypatch):
    model, x, y = cnn1d(0)
    H = HessianOperator(model, (x, y), loss=nn.CrossEntropyLoss())
    rec = _Recorder(monkeypatch)
    lam = lambda_max(H, seed=0)
    res = lanczos_eigs(H, k=1, which="both", return_eigenvectors=False, seed=0)
    assert rec.made == []  # the three-term recurrence only
    ev = torch.linalg.eigvalsh(dense_hessian64(model, x, y))
    assert abs(lam - float(ev[-1])) <= 1e-5 * abs(float(ev[-1]))
    assert res.converged
    assert abs(float(res.eigenvalues[1]) - float(ev[-1])) <= 1e-5 * abs(float(ev[-1]))
    # asking for the vector holds a float32 basis (the operator's dtype), never float64
    lanczos_eigs(H, k=1, seed=0)
    assert len(rec.made) == 1 and rec.made[0].V.dtype == torch.float32


@pytest.mark.parametrize("seed", [0, 1])
def test_float32_cnn1d_matches_dense_float64_eigvalsh(seed):
    model, x, y = cnn1d(seed)
    H = HessianOperator(model, (x, y), loss=nn.CrossEntropyLoss())
    assert H.dtype == torch.float32
    ev = torch.linalg.eigvalsh(dense_hessian64(model, x, y))
    top = lanczos_eigs(H, k=3, tol=1e-6, seed=seed)
    rel = (top.eigenvalues - ev[-3:].flip(0)).abs() / ev[-1].abs()
    assert top.converged and float(rel.max()) <= 1e-5
    assert top.eigenvectors.dtype == torch.float64 and top.eigenvectors.shape == (H.shape[0], 3)
    low = lanczos_eigs(H, k=1, which="SA", tol=1e-6, seed=seed)
    assert abs(float(low.eigenvalues[0]) - float(ev[0])) <= 1e-5 * float(ev.abs().max())


@pytest.mark.parametrize("make", [cnn1d, mlp])
@pytest.mark.parametrize("k,vectors,tol", [(1, False, 1e-4), (1, True, 1e-4), (3, True, 1e-6), (2, False, 1e-6)])
def test_products_match_the_old_algorithm(make, k, vectors, tol):
    model, x, y = make(0)
    H = HessianOperator(model, (x, y), loss=nn.CrossEntropyLoss())
    n = H.shape[0]
    # the old algorithm: float64 basis, full reorthogonalization, every vector held
    old = lanczos_eigs(H, k=k, tol=tol, seed=3, return_eigenvectors=vectors, basis_dtype=torch.float64,
                       full_reorth=True, max_basis=n)
    new = lanczos_eigs(H, k=k, tol=tol, seed=3, return_eigenvectors=vectors)
    assert old.converged and new.converged
    assert abs(new.num_matvecs - old.num_matvecs) <= 2
    torch.testing.assert_close(new.eigenvalues, old.eigenvalues, rtol=1e-5, atol=0)
    # a binding cap (thick restarts) costs a few products at most here
    capped = lanczos_eigs(H, k=k, tol=tol, seed=3, return_eigenvectors=True, max_basis=2 * k + 10)
    assert capped.converged and capped.num_matvecs <= old.num_matvecs + 4
    torch.testing.assert_close(capped.eigenvalues, old.eigenvalues, rtol=1e-5, atol=0)


def test_more_eigenpairs_than_dimensions_is_one_line_error():
    model = nn.Linear(2, 1)  # 3 parameters
    x, y = torch.randn(5, 2, generator=torch.Generator().manual_seed(0)), torch.zeros(5, 1)
    H = HessianOperator(model, (x, y), loss=nn.MSELoss())
    with pytest.raises(LosslabError, match=r"k=10 eigenpairs asked of a 3-dimensional operator") as e:
        lanczos_eigs(H, k=10, seed=0)
    assert "\n" not in str(e.value)
    with pytest.raises(LosslabError, match=r"2k must be <= 3"):
        lanczos_eigs(H, k=2, which="both", seed=0)
    with pytest.raises(LosslabError, match=r"only 2 remain"):
        lanczos_eigs(H, k=3, deflate=torch.tensor([1.0, 0.0, 0.0]), seed=0)
    with pytest.raises(LosslabError, match=r"max_basis=2 cannot hold"):
        lanczos_eigs(torch.eye(50, dtype=torch.float64), k=1, max_basis=2, seed=0)
    with pytest.raises(LosslabError, match=r"basis_dtype"):
        lanczos_eigs(H, basis_dtype=torch.int32, seed=0)


class _Diag32:
    """A float32 diagonal operator with millions of entries (cheap products, long inner products)."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.d = torch.rand(n, generator=g) * 100
        self.d[:4] = torch.tensor([200.0, 190.0, 185.0, 150.0])
        self.shape, self.dtype, self.device = (n, n), torch.float32, torch.device("cpu")

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.d.to(v.dtype) * v


@pytest.mark.parametrize("kw", [{}, {"full_reorth": True}, {"full_reorth": True, "max_basis": 8}])
def test_float32_inner_products_over_millions_of_entries_stay_accurate(kw):
    # float32 sums over 2 M entries lose ~1e-5 relative; accumulated in float64, λmax stays within 1e-6
    res = lanczos_eigs(_Diag32(2_000_000), k=1, tol=1e-4, seed=0, return_eigenvectors=False, **kw)
    assert res.converged and abs(float(res.eigenvalues[0]) - 200.0) <= 1e-6 * 200.0
