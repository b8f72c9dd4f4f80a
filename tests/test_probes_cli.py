"""End-to-end: `losslab ntk|stiffness|diversity RUN_DIR --json --plot` on tiny runs trained in tmp_path."""
import json

import numpy as np
import pytest

from losslab.cli.main import main
from losslab.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, SeedConfig, TrainConfig
from losslab.train import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe-runs")
    rs = []
    for seed in (0, 1):
        cfg = TrainConfig(data=DataConfig(dataset="digits", subsample=300),
                          model=ModelConfig(model_kwargs={"width": 16, "depth": 1}),
                          optim=OptimConfig(epochs=3, lr=0.1, batch_size=64), seeds=SeedConfig(seed=seed),
                          ckpt=CheckpointConfig(checkpoints="epoch:1"))
        rs.append(train(cfg, out=out, progress=False))
    return rs


def run_cli(capsys, *args):
    code = main(list(args))
    cap = capsys.readouterr()
    assert code == 0, cap.err
    return json.loads(cap.out)


@pytest.mark.slow
def test_ntk_cli(runs, capsys, tmp_path):
    s = run_cli(capsys, "ntk", str(runs[0].path), "--n-examples", "12", "--linearize", "--linear-epochs", "1",
                "--n-train", "100", "--out", str(tmp_path / "ntk"), "--plot", "--json")
    assert s["steps"] == [0, 5, 10, 15] and len(s["distance"]) == 3 and len(s["velocity_step"]) == 3
    assert all(0 <= d <= 1 for d in s["distance"]) and s["distance_from_init"][0] == pytest.approx(0, abs=1e-12)
    assert (tmp_path / "ntk" / "ntk.png").stat().st_size > 1000
    from losslab.probes import KernelVelocityResult, LinearizationResult

    v = KernelVelocityResult.load(tmp_path / "ntk" / "kernel_velocity")
    assert v.kernels.shape == (4, 12, 12)
    np.testing.assert_allclose(v.distance, s["distance"])
    lin = s["linearization"]
    assert lin["steps"] == [0, 5] and len(lin["linear_test_error"]) == 2
    assert LinearizationResult.load(tmp_path / "ntk" / "linearization").steps.tolist() == [0, 5]
    # text mode works too
    assert main(["ntk", str(runs[0].path), "--n-examples", "4", "--out", str(tmp_path / "ntk2")]) == 0
    assert "kernel distance init -> final" in capsys.readouterr().out


@pytest.mark.slow
def test_stiffness_cli(runs, capsys, tmp_path):
    s = run_cli(capsys, "stiffness", str(runs[0].path), "--n-per-class", "3", "--out", str(tmp_path / "st"),
                "--plot", "--json")
    assert set(s) >= {"init", "final", "within_gt_between", "files"}
    assert s["init"]["step"] == 0 and s["final"]["step"] == 15
    assert np.asarray(s["final"]["class_cos"]).shape == (10, 10)
    assert -1 <= s["final"]["within_cos"] <= 1
    assert (tmp_path / "st" / "stiffness.png").stat().st_size > 1000
    from losslab.probes import StiffnessResult

    a = StiffnessResult.load(tmp_path / "st" / "stiffness_init")
    b = StiffnessResult.load(tmp_path / "st" / "stiffness_final")
    np.testing.assert_array_equal(a.indices, b.indices)  # same examples at both points
    np.testing.assert_array_equal(a.distance_edges, b.distance_edges)


@pytest.mark.slow
def test_diversity_cli(runs, capsys, tmp_path):
    s = run_cli(capsys, "diversity", str(runs[0].path), str(runs[1].path), "--tail", "3", "--out",
                str(tmp_path / "dv"), "--plot", "--json")
    assert np.asarray(s["disagreement"]).shape == (2, 2)
    assert s["n_runs"] == 2 and set(s["checks"]) == {"across_run_gt_within_trajectory",
                                                     "independent_ensemble_beats_trajectory"}
    assert (tmp_path / "dv" / "diversity.png").stat().st_size > 1000
    assert (tmp_path / "dv" / "diversity.npz").exists()


@pytest.mark.parametrize("args, needle", [
    (["ntk", "/nonexistent"], "not a run directory"),
    (["diversity", "/nonexistent"], "not a run directory"),
    (["stiffness", "/nonexistent"], "does not exist"),
])
def test_probe_cli_errors(capsys, args, needle):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


@pytest.mark.slow
def test_noise_cli(runs, capsys, tmp_path):
    import torch

    from losslab.probes.noise import noise_scale

    s = run_cli(capsys, "noise", str(runs[0].path), "--examples", "40", "--top-k", "3", "--checkpoints", "all",
                "--out", str(tmp_path / "nz"), "--plot", "--json")
    assert [r["step"] for r in s["records"]] == [0, 5, 10, 15]
    assert s["examples"] == 40 and len(s["top_eigenvalues"]) == 3
    assert all(r["b_simple"] > 0 and r["top_eigenvalues"][0] <= r["trace_cov"] for r in s["records"])
    assert (tmp_path / "nz" / "noise.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "nz" / "noise.json").read_text())
    assert saved["records"][-1]["b_simple"] == pytest.approx(s["b_simple"])
    # the final record equals the library on the same 40 examples (a loop over examples as reference)
    model = runs[0].build_model(15)
    split = runs[0].bundle().train
    idx = torch.randperm(len(split.x), generator=torch.Generator().manual_seed(0))[:40]
    x, y = split.x[idx], split.y[idx]
    rows = []
    for i in range(40):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    ref = noise_scale(torch.stack(rows))
    assert s["b_simple"] == pytest.approx(ref["b_simple"], rel=1e-4)
    assert s["trace_cov"] == pytest.approx(ref["trace_cov"], rel=1e-4)
    # a bare checkpoint is one point: --checkpoints all is refused with a one-line error
    capsys.readouterr()
    assert main(["noise", str(runs[0].path / "checkpoints" / "step_00000015.pt"), "--model", "mlp",
                 "--model-kwargs", "width=16", "depth=1", "--dataset", "digits", "--checkpoints", "all"]) != 0
    assert "--checkpoints all needs a run directory" in capsys.readouterr().err
