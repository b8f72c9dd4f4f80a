"""The foundation's acceptance runs, exactly as a user types them (marked slow: ~1 min in all)."""
import json
import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def cli_json(*args):
    r = subprocess.run([sys.executable, "-m", "losslab", *args, "--json", "--no-progress"], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_digits_mlp_defaults(tmp_path):
    t0 = time.perf_counter()
    s = cli_json("train", "--dataset", "digits", "--model", "mlp", "--out", str(tmp_path))
    assert time.perf_counter() - t0 < 120  # the < 1 min target is measured by the bench, not here
    assert s["train_error"] < 0.02 and s["test_error"] < 0.1, s


def test_mnist1d_cnn1d_defaults(tmp_path):
    s = cli_json("train", "--dataset", "mnist1d", "--model", "cnn1d", "--out", str(tmp_path))
    assert s["test_error"] < 0.15, s


def test_random_labels_are_memorized(tmp_path):
    """Zhang et al. 2016: with every label random, train error -> 0 while test error stays near chance."""
    s = cli_json("train", "--dataset", "mnist1d", "--model", "mlp", "--label-noise", "1.0", "--optimizer", "adam",
                 "--lr", "0.001", "--epochs", "60", "--model-kwargs", "width=512", "depth=2",
                 "--out", str(tmp_path))
    assert s["train_error"] < 0.02, s
    assert s["test_error"] > 0.8, s
