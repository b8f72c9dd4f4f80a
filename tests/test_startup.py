"""Start-up: the digits arrays are cached (bit-identical to scikit-learn's), and a cached digits bundle,
a model and an optimizer are built without importing scikit-learn; losslab itself never pulls in
``torch._dynamo`` (torch's optimizers do, on construction: see bench/RESULTS.md)."""
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
opts = [type(make_optimizer(TrainConfig(optim=OptimConfig(optimizer=o)), m)).__name__
        for o in ("sgd", "adam", "rmsprop")]
after = {k: k in sys.modules for k in ("sklearn", "torch._dynamo")}
print(json.dumps({"before_optimizer": before_optimizer, "after": after, "optimizers": opts,
                  "n": len(b.train)}))
"""


def _probe(cache: Path) -> dict:
    env = {**os.environ, "LOSSLAB_CACHE": str(cache), "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=300)
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
    assert second["after"]["sklearn"] is False
    assert second["optimizers"] == ["SGD", "Adam", "RMSprop"]
