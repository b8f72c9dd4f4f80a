"""Start-up: the digits arrays are cached (bit-identical to scikit-learn's), and a cached digits bundle,
a model and an optimizer are built without importing scikit-learn; losslab never pulls in
``torch._dynamo`` (torch's optimizers do, on construction and at every step: see bench/RESULTS.md and
:mod:`losslab.optim`), neither while training (steps, state dict round trips, a resumed run, subspace
training, a trained curve) nor in a whole ``losslab train --dataset digits`` command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from losslab.data import builtin

SRC = Path(__file__).resolve().parents[1] / "src"

_PROBE = """
import json, sys
import losslab
from losslab import data, models
from losslab.config import OptimConfig, TrainConfig
from losslab.train import make_optimizer
b = data.load("digits")
m = models.build("mlp", input_shape=tuple(b.input_shape), num_classes=b.num_classes, seed=0)
before_optimizer = {k: k in sys.modules for k in ("sklearn", "torch._dynamo")}
opts = []
for o in ("sgd", "adam", "rmsprop"):
    for kw in ({}, {"momentum": 0.9, "weight_decay": 1e-3, "nesterov": True}):
        if o == "adam":
            kw = {"weight_decay": kw.get("weight_decay", 0.0)}
        opt = make_optimizer(TrainConfig(optim=OptimConfig(optimizer=o, **kw)), m)
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            m(b.train.x[:32]).logsumexp(1).mean().backward()
            opt.step()
        opt.load_state_dict(opt.state_dict())
        opt.zero_grad(set_to_none=False)
        opts.append(type(opt).__module__ + "." + type(opt).__name__)
after = {k: k in sys.modules for k in ("sklearn", "torch._dynamo")}
print(json.dumps({"before_optimizer": before_optimizer, "after": after, "optimizers": opts,
                  "n": len(b.train)}))
"""

_TRAINING_PROBE = """
import json, sys, torch
from losslab import data, models
from losslab.config import OptimConfig, TrainConfig, DataConfig
from losslab.train import train
from losslab.subspace.training import _make_optimizer
from losslab.connect.curves import train_curve
out = sys.argv[1]
cfg = TrainConfig(data=DataConfig(dataset="blobs"), optim=OptimConfig(optimizer="sgd", momentum=0.9, epochs=2))
train(cfg, out=out, max_epochs=1, progress=False)  # time-boxed, then resumed from its saved optimizer state
run = train(cfg, out=out, progress=False)
z = torch.zeros(4, requires_grad=True)
for name in ("adam", "sgd", "rmsprop"):
    opt = _make_optimizer(name, [z], 0.1, 0.9, 1e-3)
    (z - 1).pow(2).sum().backward()
    opt.step()
b = data.load("blobs")
net = models.build("mlp", input_shape=tuple(b.input_shape), num_classes=b.num_classes, seed=0, width=8)
pa = {k: v.detach().clone() for k, v in net.named_parameters()}
pb = {k: v + 0.1 for k, v in pa.items()}
train_curve(net, b, point_a=pa, point_b=pb, epochs=1, num=3, progress=False)
print(json.dumps({"dynamo": "torch._dynamo" in sys.modules, "resumed": run.done}))
"""

_CLI_PROBE = """
import json, sys
from losslab.cli.main import main
rc = main(["train", "--dataset", "digits", "--epochs", "1", "--out", sys.argv[1], "--no-progress"])
print(json.dumps({"rc": rc, "dynamo": "torch._dynamo" in sys.modules, "sklearn": "sklearn" in sys.modules}))
"""


def _probe(cache: Path, code: str = _PROBE, *args: str) -> dict:
    env = {**os.environ, "LOSSLAB_CACHE": str(cache), "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_digits_cache_is_bit_identical_and_skips_sklearn(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSLAB_CACHE", str(tmp_path))
    fresh = builtin.digits()  # no cache yet: scikit-learn builds it
    files = list((tmp_path / "digits").glob("*.npz"))
    assert len(files) == 1
    cached = builtin.digits()
    for a, b in ((fresh.train, cached.train), (fresh.test, cached.test)):
        assert a.x.dtype == b.x.dtype and a.x.shape == b.x.shape
        assert np.array_equal(a.x.numpy(), b.x.numpy()) and np.array_equal(a.y.numpy(), b.y.numpy())
    # the reference: scikit-learn's arrays and split, computed here directly
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    tr, _ = train_test_split(np.arange(len(d.target)), test_size=0.25, stratify=d.target, random_state=0)
    ref = (d.images[np.sort(tr)] / 16.0)[:, None].astype(np.float32)
    assert np.array_equal(cached.train.x.numpy(), ref)
    assert np.array_equal(cached.train.y.numpy(), d.target[np.sort(tr)])
    # a damaged cache file is rebuilt, not trusted
    files[0].write_bytes(b"not an npz")
    again = builtin.digits()
    assert np.array_equal(again.train.x.numpy(), fresh.train.x.numpy())


def test_cached_digits_model_and_optimizer_import_neither_sklearn_nor_dynamo(tmp_path):
    first = _probe(tmp_path)  # fills the cache
    assert first["before_optimizer"]["sklearn"] is True and first["n"] == 1347
    second = _probe(tmp_path)
    assert second["before_optimizer"] == {"sklearn": False, "torch._dynamo": False}
    assert second["after"] == {"sklearn": False, "torch._dynamo": False}
    assert second["optimizers"] == [f"losslab.optim.{n}" for n in ("SGD", "SGD", "Adam", "Adam", "RMSprop", "RMSprop")]


def test_training_resuming_subspace_and_curves_import_no_dynamo(tmp_path):
    """Training with losslab's optimizers (a resumed run, subspace training, a trained curve) leaves
    ``torch._dynamo`` unimported: losslab.optim replaces torch's optimizers on CPU."""
    got = _probe(tmp_path / "cache", _TRAINING_PROBE, str(tmp_path / "runs"))
    assert got == {"dynamo": False, "resumed": True}


def test_train_digits_command_imports_no_dynamo(tmp_path):
    """The whole ``losslab train --dataset digits`` command (the start-up target of issue 18)."""
    _probe(tmp_path / "cache")  # fills the digits cache, as a second run onward has it
    got = _probe(tmp_path / "cache", _CLI_PROBE, str(tmp_path / "runs"))
    assert got == {"rc": 0, "dynamo": False, "sklearn": False}
