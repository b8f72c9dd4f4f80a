"""One BatchNorm policy (issue 15): every command measures the same function of the parameters.

``recompute`` normalizes with the batch statistics of the measured training data at the point (train-mode
BatchNorm on that data as one batch), ``eval`` with the checkpoint's running statistics; dropout is off in
both. Checked against a hand-written float64 BatchNorm (explicit mean and biased variance) and through the
command line's ``--json`` summaries.
"""
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from losslab._functional import ensure_forward_ad, resolve_bn
from losslab.cli.main import main
from losslab.curvature import HessianOperator, epsilon_sharpness
from losslab.curvature._problem import Problem
from losslab.errors import LosslabError
from losslab.evaluate import Evaluator

BN_NET = """
import torch
from torch import nn


def make(channels=2):
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, channels, 3), nn.BatchNorm2d(channels), nn.ReLU(), nn.Dropout(0.5),
                        nn.Flatten(), nn.Linear(channels * 16, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        net[1].running_mean.uniform_(-1.0, 1.0, generator=g)   # stale statistics: eval != recompute
        net[1].running_var.uniform_(0.5, 2.0, generator=g)
    return net
"""


def _tiny_bn(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    m = nn.Sequential(nn.Conv1d(1, 2, 3), nn.BatchNorm1d(2), nn.Tanh(), nn.Flatten(), nn.Linear(8, 2),
                      nn.BatchNorm1d(2), nn.Tanh(), nn.Linear(2, 3)).to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
        for b in (m[1], m[5]):
            b.running_mean.uniform_(-1, 1, generator=g)
            b.running_var.uniform_(0.5, 2, generator=g)
    x = torch.randn(23, 1, 6, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (23,), generator=g)
    return m.eval(), x, y


def _manual(m, x, y, flat, recompute):
    """The loss written out: BatchNorm with the batch's mean and biased variance (or the running ones)."""
    names = [k for k, _ in m.named_parameters()]
    d, i = {}, 0
    for k, p in m.named_parameters():
        d[k] = flat[i:i + p.numel()].view(p.shape)
        i += p.numel()
    assert set(d) == set(names)

    def bn(h, idx, dims):
        shape = [1, -1] + [1] * (h.dim() - 2)
        if recompute:
            mu = h.mean(dims, keepdim=True)
            var = ((h - mu) ** 2).mean(dims, keepdim=True)
        else:
            mu = m[idx].running_mean.view(shape)
            var = m[idx].running_var.view(shape)
        return (h - mu) / torch.sqrt(var + m[idx].eps) * d[f"{idx}.weight"].view(shape) + d[f"{idx}.bias"].view(shape)

    h = torch.tanh(bn(F.conv1d(x, d["0.weight"], d["0.bias"]), 1, (0, 2))).flatten(1)
    h = torch.tanh(bn(h @ d["4.weight"].T + d["4.bias"], 5, (0,)))
    return F.cross_entropy(h @ d["7.weight"].T + d["7.bias"], y)


@pytest.mark.parametrize("bn", ["recompute", "eval"])
def test_loss_and_hessian_match_a_hand_written_batchnorm(bn):
    m, x, y = _tiny_bn()
    flat = torch.cat([p.detach().reshape(-1) for p in m.parameters()])
    ref = float(_manual(m, x, y, flat, bn == "recompute"))
    for strategy in ("loop", "vmap"):
        assert Evaluator(m, (x, y), bn=bn, strategy=strategy).evaluate({})["loss"] == pytest.approx(ref, abs=1e-12)
    assert Problem(m, F.cross_entropy, (x, y), bn=bn).loss() == pytest.approx(ref, abs=1e-12)
    ensure_forward_ad()
    dense = torch.func.hessian(lambda v: _manual(m, x, y, v, bn == "recompute"))(flat)
    for backend in ("reuse", "fresh", "jvp"):
        H = HessianOperator(m, (x, y), loss=F.cross_entropy, bn=bn, backend=backend)
        assert torch.allclose(H.to_dense(), dense, atol=1e-10), backend
    # the modes differ here (stale running statistics), so the checks above could tell them apart
    other = float(_manual(m, x, y, flat, bn != "recompute"))
    assert abs(other - ref) > 1e-3


def test_recompute_refuses_batches_and_is_auto_for_batchnorm_models():
    m, x, y = _tiny_bn()
    assert resolve_bn(m, "auto") == "recompute"
    assert resolve_bn(nn.Linear(2, 2), "auto") == "eval"
    with pytest.raises(LosslabError, match="one batch"):
        Problem(m, F.cross_entropy, (x, y), bn="recompute", batch_size=5)
    Problem(m, F.cross_entropy, (x, y), bn="eval", batch_size=5)  # fine: the statistics are fixed
    with pytest.raises(LosslabError, match="bn must be one of"):
        Problem(m, F.cross_entropy, (x, y), bn="train")
    # the sharpness measures run on the same function: their base loss is the evaluator's
    s = epsilon_sharpness(m, (x, y), loss=F.cross_entropy, epsilon=1e-3, steps=1, bn="recompute")
    assert s.base_loss == pytest.approx(Evaluator(m, (x, y), bn="recompute").evaluate({})["loss"], abs=1e-12)
    assert not m.training and all(b.track_running_stats for b in (m[1], m[5]))  # the model is untouched


def _setup(tmp_path, monkeypatch):
    (tmp_path / "bnnet.py").write_text(BN_NET)
    g = np.random.default_rng(0)
    np.savez(tmp_path / "imgs.npz", x=g.normal(size=(48, 1, 6, 6)).astype(np.float32), y=g.integers(0, 3, 48))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    ck = tmp_path / "net.pt"
    import importlib

    torch.save(importlib.import_module("bnnet").make().state_dict(), ck)
    return [str(ck), "--model", "bnnet:make", "--data", "imgs.npz"]


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("bn", ["recompute", "eval"])
def test_surface_centre_evaluate_and_hessian_agree_through_the_cli(tmp_path, monkeypatch, capsys, bn):
    target = _setup(tmp_path, monkeypatch)
    ev = _json(capsys, ["evaluate", *target, "--bn", bn, "--json"])
    su = _json(capsys, ["surface", *target, "--bn", bn, "--dim", "1", "--grid", "3", "--no-progress", "--json"])
    he = _json(capsys, ["hessian", *target, "--bn", bn, "--top-k", "1", "--skip", "trace", "negative", "epsilon",
                        "adaptive", "basin", "--json"])
    assert ev["bn"] == su["bn"] == he["bn"] == bn
    assert su["loss_at_origin"] == pytest.approx(ev["train_loss"], abs=1e-6)
    assert he["loss"] == pytest.approx(ev["train_loss"], abs=1e-6)
    # the reference: plain torch, dropout off, BatchNorm per the mode
    import bnnet

    net = bnnet.make().eval()
    if bn == "recompute":
        net[1].train().track_running_stats = False
    z = np.load(tmp_path / "imgs.npz")
    with torch.no_grad():
        ref = float(F.cross_entropy(net(torch.as_tensor(z["x"])), torch.as_tensor(z["y"])))
    assert ev["train_loss"] == pytest.approx(ref, abs=1e-6)
    assert ev["test_loss"] is None and ev["test_error"] is None  # no test split: null in the JSON, not NaN
    assert main(["evaluate", *target, "--bn", bn]) == 0
    assert f"BatchNorm {bn}" in capsys.readouterr().out


def test_hessian_recompute_refuses_minibatches(tmp_path, monkeypatch, capsys):
    target = _setup(tmp_path, monkeypatch)
    assert main(["hessian", *target, "--batch-size", "8", "--skip", "basin"]) == 2
    assert "--bn recompute" in capsys.readouterr().err


MLP = """
import torch


def make():
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return net
"""


def test_hessian_tol_governs_lambda_min(tmp_path, monkeypatch, capsys):
    (tmp_path / "tolnet.py").write_text(MLP)
    g = np.random.default_rng(0)
    np.savez(tmp_path / "pts.npz", x=g.normal(size=(30, 3)), y=g.integers(0, 3, 30))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import tolnet

    z = np.load(tmp_path / "pts.npz")
    x, y = torch.as_tensor(z["x"]), torch.as_tensor(z["y"])
    net = tolnet.make()
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    shapes = [(k, p.shape) for k, p in net.named_parameters()]

    def loss(v):
        d, i = {}, 0
        for k, s in shapes:
            d[k] = v[i:i + s.numel()].view(s)
            i += s.numel()
        return F.cross_entropy(torch.func.functional_call(net, d, (x,)), y)

    ensure_forward_ad()
    eig = torch.linalg.eigvalsh(torch.func.hessian(loss)(flat))
    ck = tmp_path / "mlp.pt"
    torch.save(net.state_dict(), ck)
    target = [str(ck), "--model", "tolnet:make", "--data", "pts.npz", "--data-kwargs", "x_dtype=float64",
              "--top-k", "1", "--skip", "trace", "epsilon", "adaptive", "basin", "--json"]
    tight = _json(capsys, ["hessian", *target, "--tol", "1e-10", "--max-iter", "200"])
    assert eig[0] < 0 and tight["negative_converged"]  # a point with negative curvature, found to the tolerance
    assert tight["lambda_min"] == pytest.approx(float(eig[0]), abs=1e-8 * float(eig[-1]))
    assert tight["eigenvalues"][0] == pytest.approx(float(eig[-1]), rel=1e-8)
    files = sorted(p.name for p in (tmp_path / "hessian").glob("negative-*.json"))
    _json(capsys, ["hessian", *target, "--tol", "1e-3"])
    assert len(sorted(p.name for p in (tmp_path / "hessian").glob("negative-*.json"))) == len(files) + 1  # own cache
