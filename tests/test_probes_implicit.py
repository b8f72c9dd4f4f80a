"""Effective rank and Schatten norms in closed form; deep 2x2 factorization; norm-targeted weight decay."""
import numpy as np
import pytest
import torch
from torch import nn

from losslab.errors import LosslabError
from losslab.probes import (
    FactorizationResult, NormDecay, deep_matrix_completion, effective_rank, layer_effective_ranks, layer_spectra,
    norm_penalty, schatten_norm, train_with_norm_decay,
)
from losslab.probes.implicit import factor_gradients


def test_effective_rank_closed_forms():
    assert effective_rank(np.eye(4)) == pytest.approx(4.0)
    assert effective_rank(np.outer([1.0, 2, 3], [4.0, 5])) == pytest.approx(1.0)
    # singular values (3, 1): p = (3/4, 1/4), erank = exp(-(.75 ln .75 + .25 ln .25))
    expected = np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
    assert effective_rank(np.diag([3.0, 1.0])) == pytest.approx(expected, rel=1e-12)
    assert effective_rank(np.array([3.0, 1.0, 0.0]), from_singular_values=True) == pytest.approx(expected)
    assert effective_rank(np.zeros((2, 2))) == 0.0
    # invariant to scale and to orthogonal transforms
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    A = np.diag([5.0, 2.0, 0.5])
    assert effective_rank(7 * q @ A) == pytest.approx(effective_rank(A), rel=1e-10)
    assert 1.0 < effective_rank(A) < 3.0


def test_schatten_norms_and_layer_spectra():
    A = np.diag([3.0, 4.0])
    assert schatten_norm(A, 1) == pytest.approx(7.0)
    assert schatten_norm(A, 2) == pytest.approx(5.0)
    assert schatten_norm(A, 0.5) == pytest.approx((np.sqrt(3) + 2) ** 2)
    with pytest.raises(LosslabError):
        schatten_norm(A, 0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 3, 5), nn.Flatten(), nn.Linear(12, 4))
    spec = layer_spectra(model)
    assert list(spec) == ["0.weight", "2.weight"]
    assert spec["0.weight"].shape == (3,) and spec["2.weight"].shape == (4,)
    np.testing.assert_allclose(spec["2.weight"], np.linalg.svd(model[2].weight.detach().numpy(), compute_uv=False), rtol=1e-6)
    er = layer_effective_ranks(model)
    assert 1 <= er["0.weight"] <= 3 and 1 <= er["2.weight"] <= 4


def test_factor_gradients_match_autograd():
    rng = np.random.default_rng(0)
    factors = [rng.normal(size=(2, 2)) for _ in range(3)]
    M = np.array([[0.0, 1.0], [1.0, 0.0]])
    mask = np.array([[0.0, 1.0], [1.0, 1.0]])
    Ws = [torch.tensor(f, requires_grad=True) for f in factors]
    W = Ws[2] @ Ws[1] @ Ws[0]
    loss = 0.5 * ((torch.tensor(mask) * (W - torch.tensor(M))) ** 2).sum()
    ref = torch.autograd.grad(loss, Ws)
    for g, r in zip(factor_gradients(factors, M, mask), ref):
        np.testing.assert_allclose(g, r.numpy(), rtol=1e-12, atol=1e-14)


def test_depth3_factorization_norms_grow_while_loss_falls(tmp_path):
    r = deep_matrix_completion(3, steps=5000, seed=0)
    assert r.meta["dtype"] == "float64" and r.steps[0] == 0 and r.steps[-1] == 5000
    # the product starts at alpha^3 I: |w11| = 1e-3, loss 1
    assert r.unobserved[0] == pytest.approx(1e-3) and r.loss[0] == pytest.approx(0.5 * (1 + 1 + 1e-6), rel=1e-12)
    late = r.steps >= 100
    assert np.all(np.diff(r.loss[late]) < 0)  # the loss keeps falling...
    assert np.all(np.diff(r.unobserved[late]) > 0)  # ...while the unobserved entry,
    assert np.all(np.diff(r.nuclear[late]) > 0)  # the nuclear norm,
    assert np.all(np.diff(r.frobenius[late]) > 0)  # the Frobenius norm,
    assert np.all(np.diff(r.schatten_half[late]) > 0)  # and a Schatten quasi-norm all grow
    assert r.loss[-1] < 1e-2 and r.unobserved[-1] > 5
    assert np.all(r.det > 0)  # the determinant never changes sign (solutions have det -1)
    assert r.effective_rank[-1] < r.effective_rank[late][0] < 2
    s = r.summary()
    assert s["loss_falls_norms_grow"] is True
    r.save(tmp_path / "f")
    back = FactorizationResult.load(tmp_path / "f")
    np.testing.assert_array_equal(back.nuclear, r.nuclear)


@pytest.mark.slow
def test_factorization_display(tmp_path):
    from losslab.probes import FactorizationDisplay

    rs = [deep_matrix_completion(d, steps=200) for d in (2, 3)]
    import matplotlib

    matplotlib.use("Agg")
    d = FactorizationDisplay.from_results(rs)
    assert len(d.axes_[0, 0].get_lines()) == 2
    assert d.savefig(tmp_path / "f.png").stat().st_size > 1000
    d.close()


def test_factorization_options():
    a = deep_matrix_completion(2, steps=300, init="random", init_scale=0.5, seed=3)
    b = deep_matrix_completion(2, steps=300, init="random", init_scale=0.5, seed=3)
    np.testing.assert_array_equal(a.loss, b.loss)
    c = deep_matrix_completion(4, steps=300, step="constant", lr=0.1, init_scale=0.5)
    assert c.loss[-1] < c.loss[0]
    other = deep_matrix_completion(2, steps=50, observed={(0, 0): 1.0, (0, 1): 0.0, (1, 0): 0.0})
    assert other.meta["unobserved"] == "11"
    with pytest.raises(LosslabError, match="exactly 3"):
        deep_matrix_completion(2, observed={(0, 0): 1.0})


def test_norm_penalty_and_norm_decay_callback():
    w = {"a": torch.tensor([3.0, 4.0], requires_grad=True)}
    pen = norm_penalty(w, 0.5, 2.0)
    assert float(pen.detach()) == pytest.approx(0.5 * 9)
    (g,) = torch.autograd.grad(pen, [w["a"]])
    torch.testing.assert_close(g, 2 * 0.5 * 3 * torch.tensor([3.0, 4.0]) / 5)

    class S:  # minimal TrainState
        def __init__(self, model):
            self.model, self.lr, self.extra = model, 0.1, {}

    lin = nn.Linear(2, 1, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 4.0]]))
        lin.bias.fill_(7.0)
    cb = NormDecay(0.5, target=2.0)
    st = S(lin)
    cb.on_step_end(st)
    # theta <- theta - lr * 2 lambda (|theta| - mu) theta / |theta|; bias (1-D) untouched by default
    expected = torch.tensor([[3.0, 4.0]]) * (1 - 0.1 * 2 * 0.5 * 3 / 5)
    torch.testing.assert_close(lin.weight.detach(), expected)
    assert float(lin.bias.detach()) == 7.0
    cb.on_epoch_end(st)
    assert st.extra["param_norm"] == pytest.approx(float(expected.norm()))
    # below the target the norm is pushed up
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.3, 0.4]]))
    cb.on_step_end(st)
    assert float(lin.weight.detach().norm()) == pytest.approx(0.5 * 1.3)


@pytest.mark.slow
def test_train_with_norm_decay_moves_norm_toward_target(tmp_path):
    from losslab.config import DataConfig, ModelConfig, OptimConfig, TrainConfig

    cfg = TrainConfig(data=DataConfig(dataset="digits"), model=ModelConfig(model_kwargs={"width": 32, "depth": 1}),
                      optim=OptimConfig(epochs=3, lr=0.05))
    plain = train_with_norm_decay(cfg, 0.0, 0.0, out=tmp_path, progress=False)
    high = train_with_norm_decay(cfg, 0.5, 40.0, out=tmp_path, progress=False)
    low = train_with_norm_decay(cfg, 0.5, 0.0, out=tmp_path, progress=False)
    assert len({str(plain.path), str(high.path), str(low.path)}) == 3
    n = [r.metrics[-1]["param_norm"] for r in (low, plain, high)]
    assert n[0] < n[1] < n[2]
