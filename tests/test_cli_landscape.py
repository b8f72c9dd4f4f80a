"""`losslab surface`, `interpolate` and `trajectory` end to end on a tiny trained run."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from losslab.config import CheckpointConfig, ModelConfig, OptimConfig, TrainConfig
from losslab.train import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cfg = TrainConfig(model=ModelConfig(model_kwargs={"width": 32, "depth": 1}), optim=OptimConfig(epochs=3),
                      ckpt=CheckpointConfig("epoch:1"))
    return train(cfg, out=tmp_path_factory.mktemp("runs"), progress=False)


def cli(*args, extra_path=None):
    path = os.pathsep.join(([str(extra_path)] if extra_path else []) + sys.path)
    r = subprocess.run([sys.executable, "-m", "losslab", *args, "--json", "--no-progress"], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": path}, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_surface_2d_files_and_origin(run_dir, tmp_path):
    s = cli("surface", str(run_dir.path), "--grid", "5", "4", "--range", "-1", "1", "-0.5", "0.5",
            "--plot", "--html", "--vtp", "--out", str(tmp_path / "s"))
    assert s["grid"] == [4, 5] and s["done"] == 20
    for key in ("result", "png", "png_3d", "html", "vtp"):
        assert os.path.getsize(s["files"][key]) > 0, key
    with open(s["files"]["html"]) as fh:
        html = fh.read()
    assert "<script src=" not in html
    # The grid has no exact origin (4 rows in [-.5, .5]); a 1-D line through 0 does:
    s1 = cli("surface", str(run_dir.path), "--dim", "1", "--grid", "5", "--out", str(tmp_path / "l"))
    model, b = run_dir.build_model(), run_dir.bundle()
    with torch.no_grad():
        ref = float(torch.nn.functional.cross_entropy(model(b.train.x), b.train.y))
    assert s1["loss_at_origin"] == pytest.approx(ref, abs=1e-6)
    # saved result readable with plain numpy; rows = y, columns = x
    with np.load(s["files"]["result"], allow_pickle=False) as z:
        assert z["metric__loss"].shape == (4, 5) and z["done"].all()
    # a rerun resumes the finished result instead of recomputing
    s2 = cli("surface", str(run_dir.path), "--grid", "5", "4", "--range", "-1", "1", "-0.5", "0.5",
             "--out", str(tmp_path / "s"))
    assert s2["loss_min"] == s["loss_min"]


def test_interpolate_from_init(run_dir, tmp_path):
    s = cli("interpolate", str(run_dir.path), "--num", "11", "--out", str(tmp_path), "--plot")
    m = run_dir.metrics
    assert s["train_loss"][0] == pytest.approx(m[0]["train_loss"], rel=1e-5)
    assert s["train_loss"][-1] == pytest.approx(m[-1]["train_loss"], rel=1e-5)
    assert s["test_error"][-1] == pytest.approx(m[-1]["test_error"], abs=1e-9)
    mono = s["monotonicity"]
    assert mono["steps"] == 10 and mono["non_monotone_steps"] >= 0 and os.path.isfile(s["plot"])
    s2 = cli("interpolate", str(run_dir.path), "--num", "11", "--range", "-0.5", "1.5", "--out", str(tmp_path))
    assert min(s2["alphas"]) == -0.5 and max(s2["alphas"]) == 1.5 and s2["monotonicity"]["steps"] == 10


def test_interpolate_default_dirs_never_collide(run_dir, tmp_path):
    # two settings, and two pairs of models, each get their own directory under the run's interpolations/
    s1 = cli("interpolate", str(run_dir.path), "--num", "5")
    s2 = cli("interpolate", str(run_dir.path), "--num", "5", "--range", "-0.5", "1.5")
    steps = [st for st, _ in run_dir.checkpoints()]
    s3 = cli("interpolate", str(run_dir.path), str(run_dir.path), "--step", str(steps[1]), "--num", "5")
    outs = {s1["out"], s2["out"], s3["out"]}
    assert len(outs) == 3 and all(os.path.dirname(o) == str(run_dir.path / "interpolations") for o in outs)
    assert os.path.basename(s1["out"]).startswith("init_to_final-")
    assert os.path.basename(s3["out"]).startswith("A_to_B-")
    assert len(s2["train_loss"]) > len(s1["train_loss"])
    assert os.path.isfile(os.path.join(s1["out"], "init_to_final_train.npz"))


def test_trajectory(run_dir, tmp_path):
    s = cli("trajectory", str(run_dir.path), "--grid", "4", "--out", str(tmp_path), "--plot")
    assert s["steps"] == [st for st, _ in run_dir.checkpoints()]
    assert 0 < sum(s["explained_variance_ratio"]) <= 1 + 1e-9
    assert len(s["coords"]) == len(s["steps"]) and os.path.isfile(s["plot"])
    assert s["coords"][-1] == pytest.approx([0.0, 0.0], abs=1e-6)  # the final point is the centre


def test_surface_on_user_model_checkpoint(tmp_path):
    (tmp_path / "mynet.py").write_text(textwrap.dedent("""
        import torch
        class Net(torch.nn.Module):
            def __init__(self, hidden=16):
                super().__init__()
                self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.Tanh(),
                                                torch.nn.Linear(hidden, 10))
            def forward(self, x):
                return self.body(x)
        def make(hidden=16):
            return Net(hidden)
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        import mynet

        torch.save(mynet.make(8).state_dict(), tmp_path / "ck.pt")
    finally:
        sys.path.remove(str(tmp_path))
    s = cli("surface", str(tmp_path / "ck.pt"), "--model", "mynet:make", "--model-kwargs", "hidden=8",
            "--dataset", "digits", "--dim", "1", "--grid", "3", "--out", str(tmp_path / "o"), extra_path=tmp_path)
    assert s["done"] == 3
    r = subprocess.run([sys.executable, "-m", "losslab", "surface", str(tmp_path / "ck.pt"), "--model", "mynet:make",
                        "--dataset", "digits", "--dim", "1", "--grid", "3"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path)] + sys.path)}, timeout=300)
    assert r.returncode == 2
    assert "missing" in r.stderr and "unexpected" in r.stderr or "shape" in r.stderr
    assert r.stderr.count("\n") == 1
