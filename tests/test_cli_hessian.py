"""`losslab hessian` end to end on a tiny trained run: keys, values, caching, bare checkpoints, errors."""
from __future__ import annotations

import json
import os

import pytest
import torch

from losslab.cli.main import main
from losslab.config import CheckpointConfig, ModelConfig, OptimConfig, TrainConfig
from losslab.curvature import HessianOperator, lanczos_eigs
from losslab.train import loss_fn_for, train

FAST = ["--top-k", "3", "--probes", "10", "--basin-directions", "3", "--ascent-steps", "5", "--subset", "400"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = TrainConfig(model=ModelConfig(model_kwargs={"width": 16, "depth": 1}), optim=OptimConfig(epochs=2),
                      ckpt=CheckpointConfig("epoch:1"))
    return train(cfg, out=tmp_path_factory.mktemp("runs"), progress=False)


def hessian_json(capsys, *args):
    code = main(["hessian", *args, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def subset(split, n, seed):
    idx = torch.sort(torch.randperm(len(split.x), generator=torch.Generator().manual_seed(seed))[:n]).values
    return split.x[idx], split.y[idx]


def test_hessian_cli_values_files_and_cache(run, capsys, tmp_path):
    out = tmp_path / "h"
    args = [str(run.path), *FAST, "--density", "--density-probes", "2", "--density-steps", "20", "--out", str(out)]
    s = hessian_json(capsys, *args)
    for key in ("loss", "eigenvalues", "residuals", "eigen_converged", "lambda_max", "trace", "trace_stderr",
                "frobenius", "trace_over_frobenius", "lambda_min", "negative_curvature_ratio", "epsilon_sharpness",
                "adaptive_sharpness", "basin", "density", "files", "cached", "seconds"):
        assert key in s, key
    assert s["examples"] == 400 and s["parameters"] == 64 * 16 + 16 + 16 * 10 + 10
    ev = s["eigenvalues"]
    assert len(ev) == 3 and ev == sorted(ev, reverse=True) and all(s["eigen_converged"])
    assert s["trace_stderr"] > 0 and s["trace"] > ev[0]  # PSD-dominated: trace exceeds the top eigenvalue
    assert s["lambda_min"] <= ev[-1] and 0 <= s["negative_curvature_ratio"] < 1
    assert s["epsilon_sharpness"] > 0 and s["adaptive_sharpness"] > 0
    b = s["basin"]
    assert b["num_directions"] == 3 and b["radius_quantiles"]["q05"] <= b["radius_mean"] <= b["radius_max"]
    assert b["threshold_loss"] == pytest.approx(s["loss"] + 0.1, rel=1e-5)
    assert os.path.getsize(s["density"]["png"]) > 1000
    assert not any(s["cached"].values())
    # λ1 agrees with a direct computation on the same examples (float64 reference)
    bundle = run.bundle()
    data = subset(bundle.train, 400, 0)
    H = HessianOperator(run.build_model(), data, loss=loss_fn_for(bundle.num_classes), dtype=torch.float64)
    ref = lanczos_eigs(H, k=1, tol=1e-9, seed=1)
    assert ev[0] == pytest.approx(float(ref.eigenvalues[0]), rel=1e-4)
    assert s["loss"] == pytest.approx(H.loss(), rel=1e-5)
    # the eigenvectors are saved for reuse (e.g. as surface directions)
    import numpy as np

    with np.load(s["files"]["eigenvectors"]) as z:
        v = torch.from_numpy(z["eigenvectors"][:, 0]).double()
    assert abs(float(v @ ref.eigenvectors[:, 0])) == pytest.approx(1.0, abs=1e-3)

    # rerun: everything from the cache (nothing recomputed), same numbers; a new --sigma only re-renders the plot
    os.remove(s["density"]["png"])
    s2 = hessian_json(capsys, *args, "--sigma", "0.05")
    assert s2["all_cached"] and all(s2["cached"].values())
    for key in ("eigenvalues", "trace", "trace_stderr", "epsilon_sharpness", "adaptive_sharpness", "basin",
                "negative_curvature_ratio"):
        assert s2[key] == s[key], key
    assert os.path.getsize(s2["density"]["png"]) > 1000
    # a changed setting recomputes only what depends on it
    s3 = hessian_json(capsys, *[a if a != "10" else "12" for a in args])
    assert s3["cached"]["trace"] is False and s3["cached"]["topk"] is True and s3["cached"]["basin"] is True
    assert s3["trace_probes"] == 12
    with open(out / "hessian.json") as fh:
        assert json.load(fh)["trace_probes"] == 12


def test_hessian_cli_table_checkpoint_and_errors(run, capsys, tmp_path):
    out = tmp_path / "h"
    code = main(["hessian", str(run.path), *FAST, "--skip", "basin", "adaptive", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    for row in ("λ1", "trace Tr(H)", "Tr(H)/||H||_F", "negative-curvature ratio", "ε-sharpness"):
        assert row in text, row
    assert "adaptive sharpness" not in text and "basin" not in text
    # default output directory: RUN_DIR/hessian
    s = hessian_json(capsys, str(run.path), "--top-k", "1", "--skip", "trace", "negative", "epsilon", "adaptive",
                     "basin", "--subset", "400")
    assert s["out"] == str(run.path / "hessian") and (run.path / "hessian" / "hessian.json").is_file()
    # a bare checkpoint with --model gives the same top eigenvalue as the run directory
    ckpt = run.checkpoints()[-1][1]
    c = hessian_json(capsys, str(ckpt), "--model", "mlp", "--model-kwargs", "width=16", "depth=1", "--top-k", "1",
                     "--skip", "trace", "negative", "epsilon", "adaptive", "basin", "--subset", "400",
                     "--out", str(tmp_path / "c"))
    assert c["eigenvalues"][0] == pytest.approx(s["eigenvalues"][0], rel=1e-6)
    assert main(["hessian", str(ckpt), "--out", str(tmp_path / "x")]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["hessian", str(run.path), "--top-k", "0"]) == 2
    assert "--top-k" in capsys.readouterr().err
