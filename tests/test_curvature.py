"""Curvature operators (Hessian, GGN, gradient covariance, gradient) against dense float64 references."""
from __future__ import annotations

import copy
import doctest
import importlib

import numpy as np
import pytest
import torch
from torch import nn

from losslab import LosslabError
from losslab.curvature import (
    GGNOperator,
    GradientCovarianceOperator,
    HessianOperator,
    gradient,
)
from losslab.data._base import Split

D = torch.float64


@pytest.fixture(scope="module", autouse=True)
def _private_global_rng():
    """The tiny models below seed torch's global RNG for their init; keep that from leaking out."""
    with torch.random.fork_rng(devices=[]):
        yield
BACKENDS = ["reuse", "fresh", "jvp", "auto"]


# ---------------------------------------------------------------------------------------------
# tiny problems and dense references
# ---------------------------------------------------------------------------------------------


def make_problem(kind: str, seed: int = 0):
    """(model, loss_fn, x, y): 13 examples, float64."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n = 13
    if kind == "mlp_ce":
        model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
        x = torch.randn(n, 4, generator=g, dtype=D)
        y = torch.randint(0, 3, (n,), generator=g)
        loss = nn.CrossEntropyLoss()
    elif kind == "relu_mse":
        model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))
        x = torch.randn(n, 3, generator=g, dtype=D)
        y = torch.randn(n, 2, generator=g, dtype=D)
        loss = nn.MSELoss()
    elif kind == "conv_ce":
        model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(12, 3))
        x = torch.randn(n, 2, 6, generator=g, dtype=D)
        y = torch.randint(0, 3, (n,), generator=g)
        loss = nn.CrossEntropyLoss()
    else:  # pragma: no cover
        raise ValueError(kind)
    model = model.to(D)
    # move away from init so the Hessian is indefinite and not degenerate
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=D))
    return model, loss, x, y


def flat_params(model, names=None):
    return torch.cat([p.detach().reshape(-1) for k, p in model.named_parameters() if names is None or k in names])


def risk_fn(model, loss_fn, x, y, names=None, point=None):
    """θ_flat ↦ full-data mean loss (one batch: the reference for every batching)."""
    base = {k: v.detach() for k, v in model.named_parameters()}
    if point is not None:
        base.update(point)
    sel = [k for k in base if names is None or k in names]
    shapes = [base[k].shape for k in sel]
    sizes = [base[k].numel() for k in sel]

    def f(t):
        parts = dict(base)
        for k, s, piece in zip(sel, shapes, torch.split(t, sizes)):
            parts[k] = piece.view(s)
        return loss_fn(torch.func.functional_call(model, parts, (x,)), y)

    theta = torch.cat([base[k].reshape(-1) for k in sel])
    return f, theta


def dense_hessian(model, loss_fn, x, y, names=None, point=None):
    f, theta = risk_fn(model, loss_fn, x, y, names, point)
    return torch.func.jacrev(torch.func.jacrev(f))(theta)  # reverse-over-reverse: independent of the jvp backend


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, snap):
    now = model.state_dict()
    assert now.keys() == snap.keys()
    for k in snap:
        assert torch.equal(now[k], snap[k]), k
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Hessian
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp_ce", "relu_mse", "conv_ce"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_hvp_matches_dense_hessian(kind, backend):
    model, loss, x, y = make_problem(kind)
    snap = snapshot(model)
    Hd = dense_hessian(model, loss, x, y)
    H = HessianOperator(model, (x, y), loss=loss, batch_size=5, backend=backend)  # batches 5, 5, 3
    assert H.num_batches == 3 and H.shape == Hd.shape
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(Hd.shape[0], generator=g, dtype=D)
        torch.testing.assert_close(H @ v, Hd @ v, rtol=0, atol=1e-10)
    torch.testing.assert_close(H.to_dense(), Hd, rtol=0, atol=1e-10)
    assert H.num_matvecs == 3 + Hd.shape[0]
    assert H.backend in ("reuse", "fresh", "jvp")
    assert_unchanged(model, snap)


def test_least_squares_closed_form():
    g = torch.Generator().manual_seed(0)
    n, d = 23, 4
    X = torch.randn(n, d, generator=g, dtype=D)
    y = torch.randn(n, 1, generator=g, dtype=D)
    model = nn.Linear(d, 1, bias=False).to(D)
    H_exact = 2 * X.T @ X / n  # f(w) = ||Xw - y||² / n
    for backend in BACKENDS:
        H = HessianOperator(model, (X, y), loss=nn.MSELoss(), batch_size=7, backend=backend)
        torch.testing.assert_close(H.to_dense(), H_exact, rtol=0, atol=1e-12)
    # with a bias: the augmented design [X, 1]
    model_b = nn.Linear(d, 1).to(D)
    Xa = torch.cat([X, torch.ones(n, 1, dtype=D)], dim=1)
    H = HessianOperator(model_b, Split(X, y), loss=nn.MSELoss(), batch_size=10)
    Hd = H.to_dense()  # parameter order: weight (d), bias (1)
    torch.testing.assert_close(Hd, 2 * Xa.T @ Xa / n, rtol=0, atol=1e-12)
    # the gradient too: 2 Xᵀ(Xw - y)/n
    w = model.weight.detach().T
    gr = gradient(model, (X, y), loss=nn.MSELoss(), batch_size=6)
    torch.testing.assert_close(gr["weight"], (2 * X.T @ (X @ w - y) / n).T, rtol=0, atol=1e-12)


def test_dict_matrix_and_scipy_products():
    model, loss, x, y = make_problem("mlp_ce")
    H = HessianOperator(model, (x, y), loss=loss, batch_size=4)
    Hd = dense_hessian(model, loss, x, y)
    n = Hd.shape[0]
    v = torch.randn(n, dtype=D, generator=torch.Generator().manual_seed(0))
    vd = H.unflatten(v)
    assert list(vd) == [k for k, _ in model.named_parameters()]
    out = H @ vd
    assert isinstance(out, dict) and list(out) == list(vd)
    torch.testing.assert_close(H.flatten(out), Hd @ v, rtol=0, atol=1e-10)
    V = torch.randn(n, 3, dtype=D)
    torch.testing.assert_close(H @ V, Hd @ V, rtol=0, atol=1e-10)
    # float32 input comes back float32; computation stays float64
    out32 = H @ v.float()
    assert out32.dtype == torch.float32
    S = H.to_scipy()
    assert S.shape == (n, n) and S.dtype == np.float64
    np.testing.assert_allclose(S @ v.numpy(), (Hd @ v).numpy(), atol=1e-10)
    from scipy.sparse.linalg import eigsh

    top = eigsh(S, k=1, which="LA", return_eigenvectors=False)[0]
    assert abs(top - float(torch.linalg.eigvalsh(Hd)[-1])) < 1e-8


def test_params_subset_point_and_minibatch():
    model, loss, x, y = make_problem("mlp_ce")
    snap = snapshot(model)
    names = ["2.weight", "0.bias"]  # order follows the model, not the list
    H = HessianOperator(model, (x, y), loss=loss, params=names, batch_size=5)
    assert H.names == ["0.bias", "2.weight"]
    full = dense_hessian(model, loss, x, y)
    sizes = {k: p.numel() for k, p in model.named_parameters()}
    offs, o = {}, 0
    for k, s in sizes.items():
        offs[k] = range(o, o + s)
        o += s
    idx = torch.tensor(list(offs["0.bias"]) + list(offs["2.weight"]))
    torch.testing.assert_close(H.to_dense(), full[idx][:, idx], rtol=0, atol=1e-10)

    # evaluate at another point: the model stays as it was
    g = torch.Generator().manual_seed(3)
    point = {k: v.detach() + 0.1 * torch.randn(v.shape, generator=g, dtype=D) for k, v in model.named_parameters()}
    Hp = HessianOperator(model, (x, y), loss=loss, point=point, batch_size=6, backend="jvp")
    torch.testing.assert_close(Hp.to_dense(), dense_hessian(model, loss, x, y, point=point), rtol=0, atol=1e-10)
    torch.testing.assert_close(Hp.point["0.weight"], point["0.weight"])

    # minibatch mode: the Hessian of the first batch's mean loss only
    Hm = HessianOperator(model, (x, y), loss=loss, batch_size=5, mode="minibatch")
    torch.testing.assert_close(Hm.to_dense(), dense_hessian(model, loss, x[:5], y[:5]), rtol=0, atol=1e-10)
    assert Hm.num_examples == 5
    assert_unchanged(model, snap)


def test_data_forms_and_dtype():
    model, loss, x, y = make_problem("relu_mse")
    Hd = dense_hessian(model, loss, x, y)
    batches = [(x[:2], y[:2]), (x[2:10], y[2:10]), (x[10:], y[10:])]
    for data in (Split(x, y), (x, y), batches):
        H = HessianOperator(model, data, loss=loss, batch_size=None if data is batches else 4)
        torch.testing.assert_close(H.to_dense(), Hd, rtol=0, atol=1e-10)
    # a float32 model measured in float64 equals the float64 reference at the same (rounded) values,
    # and the float32 model is neither cast nor changed
    m32 = copy.deepcopy(model).float()
    snap = snapshot(m32)
    x32, y32 = x.float(), y.float()
    H64 = HessianOperator(m32, (x32, y32), loss=loss, dtype=D, batch_size=5)
    assert H64.dtype == D
    ref = dense_hessian(copy.deepcopy(m32).double(), loss, x32.double(), y32.double())
    torch.testing.assert_close(H64.to_dense(), ref, rtol=0, atol=1e-10)
    assert all(p.dtype == torch.float32 for p in m32.parameters())
    assert_unchanged(m32, snap)
    # float32 computation: close to the float64 one at float32 precision
    H32 = HessianOperator(m32, (x32, y32), loss=loss, batch_size=5)
    assert H32.dtype == torch.float32
    torch.testing.assert_close(H32.to_dense().double(), ref, rtol=0, atol=1e-5)


def test_auto_backend_and_first_order_quantities():
    model, loss, x, y = make_problem("mlp_ce")
    f, theta = risk_fn(model, loss, x, y)
    g_ref = torch.func.grad(f)(theta)
    H = HessianOperator(model, (x, y), loss=loss, batch_size=5)
    assert H.backend == "reuse" and H.graph_bytes > 0
    torch.testing.assert_close(H.flatten(H.gradient()), g_ref, rtol=0, atol=1e-12)
    assert abs(H.loss() - float(f(theta))) < 1e-12
    tiny = HessianOperator(model, (x, y), loss=loss, batch_size=5, memory_budget=0)
    assert tiny.backend == "fresh"
    torch.testing.assert_close(tiny.to_dense(), H.to_dense(), rtol=0, atol=1e-12)
    torch.testing.assert_close(tiny.gradient(as_dict=False), g_ref, rtol=0, atol=1e-12)
    assert abs(tiny.loss() - float(f(theta))) < 1e-12
    gr, lval = gradient(model, (x, y), loss=loss, batch_size=4, return_loss=True)
    torch.testing.assert_close(torch.cat([v.reshape(-1) for v in gr.values()]), g_ref, rtol=0, atol=1e-12)
    assert abs(lval - float(f(theta))) < 1e-12
    H.release()
    torch.testing.assert_close(H @ theta, tiny @ theta, rtol=0, atol=1e-12)
    # products work under no_grad (they enable grad internally)
    with torch.no_grad():
        fresh = HessianOperator(model, (x, y), loss=loss, batch_size=5)
        torch.testing.assert_close(fresh @ theta, tiny @ theta, rtol=0, atol=1e-12)
        torch.testing.assert_close(fresh.gradient(as_dict=False), g_ref, rtol=0, atol=1e-12)
        G = GGNOperator(model, (x, y), loss=loss, batch_size=5)
        assert G.backend == "reuse" and G.graph_bytes > 0
        G0 = GGNOperator(model, (x, y), loss=loss, batch_size=5, memory_budget=0)
        assert G0.backend == "fresh"
        torch.testing.assert_close(G @ theta, G0 @ theta, rtol=0, atol=1e-12)


def test_batchnorm_train_mode_leaves_running_stats_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).to(D).train()
    x, y = torch.randn(12, 3, dtype=D), torch.randint(0, 2, (12,))
    snap = snapshot(model)
    v = torch.ones(sum(p.numel() for p in model.parameters()), dtype=D)
    results = []
    for backend in ("reuse", "fresh"):
        H = HessianOperator(model, (x, y), loss=nn.CrossEntropyLoss(), batch_size=4, backend=backend)
        results.append(H @ v)
        H.gradient()
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=1e-12)
    with pytest.raises(LosslabError, match="BatchNorm"):
        HessianOperator(model, (x, y), loss=nn.CrossEntropyLoss(), batch_size=4, backend="jvp") @ v
    G = GGNOperator(model, (x, y), loss=nn.CrossEntropyLoss(), batch_size=4)
    G @ torch.ones(G.shape[0], dtype=D)
    assert_unchanged(model, snap)


def test_input_errors():
    model, loss, x, y = make_problem("mlp_ce")
    with pytest.raises(LosslabError, match="backend"):
        HessianOperator(model, (x, y), loss=loss, backend="magic")
    with pytest.raises(LosslabError, match="unknown parameter"):
        HessianOperator(model, (x, y), loss=loss, params=["nope"])
    with pytest.raises(LosslabError, match="mode"):
        HessianOperator(model, (x, y), loss=loss, mode="sometimes")
    with pytest.raises(LosslabError, match="scalar"):
        HessianOperator(model, (x, y), loss=nn.CrossEntropyLoss(reduction="none")) @ torch.ones(43, dtype=D)
    with pytest.raises(LosslabError, match="batch_size"):
        HessianOperator(model, [(x, y)], loss=loss, batch_size=3)
    with pytest.raises(LosslabError, match="examples"):
        HessianOperator(model, (x, y[:3]), loss=loss)
    H = HessianOperator(model, (x, y), loss=loss)
    with pytest.raises(LosslabError, match="shape"):
        H @ torch.ones(5, dtype=D)
    with pytest.raises(LosslabError, match="keys"):
        H @ {"0.weight": torch.ones(5, 4, dtype=D)}


# ---------------------------------------------------------------------------------------------
# GGN
# ---------------------------------------------------------------------------------------------


def explicit_ggn(model, loss_fn, x, y):
    """Jᵀ H_out J with J the full output Jacobian and H_out the Hessian of the (full-batch mean) loss."""
    base = {k: v.detach() for k, v in model.named_parameters()}
    shapes = [v.shape for v in base.values()]
    sizes = [v.numel() for v in base.values()]
    theta = torch.cat([v.reshape(-1) for v in base.values()])

    def outputs(t):
        parts = {k: p.view(s) for k, s, p in zip(base, shapes, torch.split(t, sizes))}
        return torch.func.functional_call(model, parts, (x,)).reshape(-1)

    J = torch.func.jacrev(outputs)(theta)  # (N*C, n)
    out = outputs(theta).detach()
    C = out.numel() // x.shape[0]
    H_out = torch.func.jacrev(torch.func.jacrev(lambda o: loss_fn(o.view(x.shape[0], C), y)))(out)  # (N*C, N*C)
    return J.T @ H_out @ J, J


@pytest.mark.parametrize("kind", ["mlp_ce", "relu_mse", "conv_ce"])
@pytest.mark.parametrize("backend", ["auto", "reuse", "fresh"])
def test_ggn_equals_explicit(kind, backend):
    model, loss, x, y = make_problem(kind)
    snap = snapshot(model)
    G_ref, J = explicit_ggn(model, loss, x, y)
    G = GGNOperator(model, (x, y), loss=loss, batch_size=5, backend=backend)
    Gd = G.to_dense()
    torch.testing.assert_close(Gd, G_ref, rtol=0, atol=1e-10)
    assert torch.linalg.eigvalsh(Gd).min() > -1e-10  # PSD for CE and MSE
    if kind == "relu_mse":  # nn.MSELoss: G = 2 JᵀJ / (N C)
        torch.testing.assert_close(Gd, 2 * J.T @ J / y.numel(), rtol=0, atol=1e-10)
    assert_unchanged(model, snap)


def test_ggn_equals_hessian_for_linear_least_squares():
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(11, 3, generator=g, dtype=D), torch.randn(11, 2, generator=g, dtype=D)
    model = nn.Linear(3, 2).to(D)
    G = GGNOperator(model, (X, y), loss=nn.MSELoss(), batch_size=4).to_dense()
    H = HessianOperator(model, (X, y), loss=nn.MSELoss(), batch_size=4).to_dense()
    torch.testing.assert_close(G, H, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# gradient covariance
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp_ce", "relu_mse", "conv_ce"])
def test_gradient_covariance_equals_explicit(kind):
    model, loss, x, y = make_problem(kind)
    snap = snapshot(model)
    f1, theta = risk_fn(model, loss, x[:1], y[:1])
    grads = []
    for i in range(x.shape[0]):
        fi, _ = risk_fn(model, loss, x[i : i + 1], y[i : i + 1])
        grads.append(torch.func.grad(fi)(theta))
    Gm = torch.stack(grads)  # (N, n)
    gbar = Gm.mean(0)
    C_ref = (Gm - gbar).T @ (Gm - gbar) / x.shape[0]
    for budget in (None, 0):  # cached matrix / recomputed per product
        kw = {} if budget is None else {"memory_budget": budget}
        C = GradientCovarianceOperator(model, (x, y), loss=loss, batch_size=5, chunk_size=3, **kw)
        torch.testing.assert_close(C.to_dense(), C_ref, rtol=0, atol=1e-10)
        torch.testing.assert_close(C.mean_gradient, gbar, rtol=0, atol=1e-12)
    torch.testing.assert_close(C.per_example_gradients(), Gm, rtol=0, atol=1e-12)
    f, _ = risk_fn(model, loss, x, y)
    torch.testing.assert_close(gbar, torch.func.grad(f)(theta), rtol=0, atol=1e-12)  # ḡ = ∇L
    assert_unchanged(model, snap)


# ---------------------------------------------------------------------------------------------
# docstring examples
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mod", ["__init__", "operators", "lanczos", "trace", "density", "sharpness"])
def test_docstring_examples_run(mod):
    name = "losslab.curvature" if mod == "__init__" else f"losslab.curvature.{mod}"
    module = importlib.import_module(name)
    res = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert res.failed == 0
