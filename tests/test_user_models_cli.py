"""Your model, your data, your loss through every command (issue 15), checked against the Python API.

A temporary folder holds a module the project has never seen (a small ResNet with BatchNorm, a small
transformer returning ``{"logits": ...}``, a token-data function, a loss) and an ``.npz`` file; ``train``,
``evaluate``, ``surface``, ``hessian``, ``interpolate`` and ``connect --method linear --align`` run on them
through ``--model mod:factory``, ``--data`` and ``--loss``, and their numbers equal the library's.
"""
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from losslab import params as P
from losslab.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig, config_hash
from losslab.connect import linear_path
from losslab.curvature import HessianOperator, lanczos_eigs
from losslab.evaluate import Evaluator
from losslab.runs import Run
from test_probes_cli import run_cli as _json  # main(argv), exit 0, the --json summary

LABNETS = '''
import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResNet(nn.Module):
    def __init__(self, width=4, num_classes=3):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.block = Block(width)
        self.pool, self.head = nn.AdaptiveAvgPool2d(1), nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.block(F.relu(self.bn(self.stem(x))))), 1))


def resnet(width=4, num_classes=3):
    return ResNet(width, num_classes)


class TinyLM(nn.Module):
    def __init__(self, vocab=7, d=8, length=5):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(length, d) * 0.1)
        self.mix = nn.TransformerEncoderLayer(d, 2, 16, dropout=0.1, batch_first=True)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        return {"logits": self.head(self.mix(self.emb(ids) + self.pos))}


def lm(vocab=7):
    torch.manual_seed(0)
    return TinyLM(vocab)


def tokens(n=24, length=5, vocab=7):
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, vocab, (n + 8, length), generator=g)
    y = (x + 1) % vocab
    return x[:n], y[:n], x[n:], y[n:]


def images():
    import numpy as np

    z = np.load("imgs.npz")
    return torch.as_tensor(z["x"]), torch.as_tensor(z["y"])


def smooth_ce(out, y):
    return F.cross_entropy(out.transpose(1, 2) if out.dim() == 3 else out, y, label_smoothing=0.1)
'''

IMG = ["--data", "imgs.npz"]


@pytest.fixture()
def lab(tmp_path, monkeypatch):
    (tmp_path / "labnets.py").write_text(LABNETS)
    g = np.random.default_rng(0)
    x = g.normal(size=(40, 1, 6, 6)).astype(np.float32)
    y = (x[:, 0, :3].sum((1, 2)) > 0).astype(np.int64) + (x[:, 0, 3:].mean((1, 2)) > 0.2)
    np.savez(tmp_path / "imgs.npz", x=x[:32], y=y[:32], x_test=x[32:], y_test=y[32:])
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path




def _train(capsys, *extra):
    return _json(capsys, "train", "--model", "labnets:resnet", *IMG, "--epochs", "2", "--batch-size", "16",
                 "--checkpoints", "none", "--out", "runs", "--no-progress", "--json", *extra)


@pytest.mark.slow
def test_a_resnet_and_an_npz_through_every_command(lab, capsys):
    s = _train(capsys)
    run = Run.open(s["run_dir"])
    # the run's name is the hash of the model, data and loss specs
    from losslab._io import file_sha256

    # ... and of the data file's content
    cfg = TrainConfig(data=DataConfig(dataset=str(lab / "imgs.npz"), dataset_sha256=file_sha256(lab / "imgs.npz")),
                      model=ModelConfig(model="labnets:resnet"),
                      optim=OptimConfig(epochs=2, batch_size=16), ckpt=CheckpointConfig(checkpoints="none"))
    assert Path(s["run_dir"]).name == f"train-{config_hash(cfg)}"
    other = TrainConfig(data=cfg.data, model=cfg.model, ckpt=cfg.ckpt,
                        optim=OptimConfig(epochs=2, batch_size=16, loss="labnets:smooth_ce"))
    assert config_hash(other) != config_hash(cfg)
    model, bundle = run.build_model(), run.bundle()
    api = {bn: Evaluator(model, bundle.train, bn=bn).evaluate({})["loss"] for bn in ("recompute", "eval")}
    assert abs(api["recompute"] - api["eval"]) > 1e-6  # the two policies differ on this model

    for bn in ("recompute", "eval"):
        ev = _json(capsys, "evaluate", s["run_dir"], "--bn", bn, "--json")
        assert ev["train_loss"] == pytest.approx(api[bn], abs=1e-6)
        ck = run.checkpoints()[-1][1]
        bare = _json(capsys, "evaluate", str(ck), "--model", "labnets:resnet", *IMG, "--bn", bn, "--json")
        assert bare["train_loss"] == pytest.approx(api[bn], abs=1e-6)
    assert ev["train_loss"] == pytest.approx(run.metrics[-1]["train_loss"], abs=1e-6)  # the trainer's record: eval

    su = _json(capsys, "surface", s["run_dir"], "--dim", "1", "--grid", "3", "--no-progress", "--json")
    assert su["loss_at_origin"] == pytest.approx(api["recompute"], abs=1e-6)
    he = _json(capsys, "hessian", s["run_dir"], "--top-k", "1", "--skip", "trace", "negative", "epsilon", "adaptive",
               "basin", "--json")
    assert he["loss"] == pytest.approx(api["recompute"], abs=1e-6)
    H = HessianOperator(model, bundle.train, loss=F.cross_entropy, bn="recompute")
    lam = float(lanczos_eigs(H, k=1, seed=0).eigenvalues[0])
    assert he["eigenvalues"][0] == pytest.approx(lam, rel=1e-3)

    b = _train(capsys, "--seed", "1")
    pa, pb = P.get_point(model), P.get_point(Run.open(b["run_dir"]).build_model())
    it = _json(capsys, "interpolate", s["run_dir"], b["run_dir"], "--num", "3", "--no-progress", "--json")
    mid = Evaluator(model, bundle.train).evaluate({k: 0.5 * pa[k] + 0.5 * pb[k] for k in pa})["loss"]
    assert it["train_loss"][1] == pytest.approx(mid, abs=1e-6)
    co = _json(capsys, "connect", s["run_dir"], b["run_dir"], "--method", "linear", "--align", "--num", "3", "--json")
    ref = linear_path(model, bundle, point_a=P.get_point(model, buffers=True),
                      point_b=P.get_point(Run.open(b["run_dir"]).build_model(), buffers=True), num=3)
    assert co["align"]["linear_loss_barrier_before"] == pytest.approx(ref.barrier("loss", split="test"), abs=1e-6)
    assert co["bn"] == "recompute" and co["align"]["verified"]


def test_a_resnet_through_a_data_function_and_a_named_loss(lab, capsys):
    import labnets

    net = labnets.resnet().eval()
    with torch.no_grad():
        for m in net.modules():  # stale running statistics: the two policies differ
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(0.3)
                m.running_var.fill_(2.0)
    ck = lab / "resnet.pt"
    torch.save(net.state_dict(), ck)
    x, y = labnets.images()
    target = [str(ck), "--model", "labnets:resnet", "--data", "labnets:images", "--loss", "cross-entropy"]
    for bn in ("eval", "recompute"):
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.train(bn == "recompute")
                m.track_running_stats = bn == "eval"
        with torch.no_grad():
            ref = float(F.cross_entropy(net(x), y))
        ev = _json(capsys, "evaluate", *target, "--bn", bn, "--json")
        assert ev["train_loss"] == pytest.approx(ref, abs=1e-6) and ev["bn"] == bn
        su = _json(capsys, "surface", *target, "--bn", bn, "--dim", "1", "--grid", "3", "--no-progress", "--json")
        assert su["loss_at_origin"] == pytest.approx(ref, abs=1e-6)
    assert abs(ev["train_loss"] - _json(capsys, "evaluate", *target, "--bn", "eval", "--json")["train_loss"]) > 1e-4


def test_a_transformer_with_token_targets_through_a_data_function_and_a_loss(lab, capsys):
    import labnets

    model = labnets.lm().eval()
    ck = lab / "lm.pt"
    torch.save(model.state_dict(), ck)
    x, y, _, _ = labnets.tokens()
    with torch.no_grad():
        logits = model(x)["logits"]  # eval mode: dropout off, as every command measures
    ref = float(F.cross_entropy(logits.reshape(-1, 7), y.reshape(-1)))
    target = [str(ck), "--model", "labnets:lm", "--data", "labnets:tokens", "--data-kwargs", "x_dtype=keep",
              "--loss", "token-cross-entropy", "--output-key", "logits"]
    ev = _json(capsys, "evaluate", *target, "--json")
    assert ev["train_loss"] == pytest.approx(ref, abs=1e-6) and ev["loss_fn"] == "token-cross-entropy"
    su = _json(capsys, "surface", *target, "--dim", "1", "--grid", "3", "--no-progress", "--json")
    assert su["loss_at_origin"] == pytest.approx(ref, abs=1e-6)
    he = _json(capsys, "hessian", *target, "--top-k", "1", "--skip", "trace", "negative", "epsilon", "adaptive",
               "basin", "--json")
    assert he["loss"] == pytest.approx(ref, abs=1e-6)
    # your own loss function, by pkg.module:function
    own = _json(capsys, "evaluate", str(ck), "--model", "labnets:lm", "--data", "labnets:tokens", "--data-kwargs",
                "x_dtype=keep", "--loss", "labnets:smooth_ce", "--output-key", "logits", "--json")
    assert own["train_loss"] == pytest.approx(
        float(F.cross_entropy(logits.transpose(1, 2), y, label_smoothing=0.1)), abs=1e-6)


@pytest.mark.slow
def test_train_runs_a_transformer_on_token_targets(lab, capsys):
    s = _json(capsys, "train", "--model", "labnets:lm", "--data", "labnets:tokens", "--data-kwargs", "x_dtype=keep",
              "--loss", "token-cross-entropy", "--output-key", "logits", "--epochs", "3", "--batch-size", "8",
              "--optimizer", "adam", "--lr", "0.01", "--out", "runs", "--no-progress", "--json")
    run = Run.open(s["run_dir"])
    assert run.config.optim.loss == "token-cross-entropy" and run.config.model.model == "labnets:lm"
    first, last = run.metrics[0], run.metrics[-1]
    assert last["train_loss"] < first["train_loss"]
    assert 0.0 <= last["train_error"] <= 1.0  # per-token error
    ev = _json(capsys, "evaluate", s["run_dir"], "--json")
    assert ev["train_loss"] == pytest.approx(last["train_loss"], abs=1e-5)  # no BatchNorm: the same function


def test_the_loss_settings_key_runs_and_results_only_when_set():
    from losslab.experiments._base import result_key

    plain, own = TrainConfig(), TrainConfig(optim=OptimConfig(loss="labnets:smooth_ce"))
    assert result_key("X1", plain) == result_key("X1", TrainConfig(optim=OptimConfig(loss="", output_key="")))
    assert result_key("X1", own) != result_key("X1", plain)
    assert config_hash(own) != config_hash(plain)
    assert config_hash(TrainConfig(optim=OptimConfig(output_key="logits"))) != config_hash(plain)
