"""Bad input through the command line and the API: each case ends in exactly one `losslab: error:` line
and exit 2 (API: a LosslabError) naming the offending input. Issue 16's table itself is run row by row
in tests/test_faults_cli.py."""

import pytest

from losslab.cli.main import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from losslab.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
    from losslab.train import train

    cfg = TrainConfig(data=DataConfig(dataset="moons", dataset_kwargs={"n_train": 64, "n_test": 32}),
                      model=ModelConfig(model="mlp", model_kwargs={"width": 8, "depth": 1}),
                      optim=OptimConfig(epochs=1, batch_size=32))
    return train(cfg, out=tmp_path_factory.mktemp("runs"))


def test_api_refuses_huge_grids_and_takes_str_run_paths(tiny_run):
    from losslab.errors import LosslabError
    from losslab.runs import Run
    from losslab.surface import line, plane

    run = Run(str(tiny_run.path))  # a str works like a Path
    assert run.done and run.path == tiny_run.path
    model, data = run.build_model(), run.bundle().train
    d = {k: v.clone() for k, v in model.named_parameters()}
    with pytest.raises(LosslabError, match="1e\\+12 points"):
        plane(model, data, dx=d, dy=d, nx=10**6, ny=10**6)
    with pytest.raises(LosslabError, match="points"):
        line(model, data, direction=d, num=10**12)


def test_lanczos_refuses_more_pairs_than_dimensions():
    import torch

    from losslab.curvature import lanczos_eigs
    from losslab.errors import LosslabError

    with pytest.raises(LosslabError, match="k=10 eigenpairs asked of a 3-dimensional"):
        lanczos_eigs(torch.eye(3, dtype=torch.float64), k=10)


def test_hessian_unconverged_eigenpairs_exit_1_with_one_warning(tiny_run, tmp_path, capsys):
    rc = main(["hessian", str(tiny_run.path), "--top-k", "8", "--max-iter", "9", "--tol", "1e-12",
               "--skip", "trace", "negative", "epsilon", "adaptive", "basin", "--out", str(tmp_path / "h")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("losslab: warning:") == 1 and "did not converge" in err


def test_surface_resume_mismatch_is_one_line_and_force_starts_over(tiny_run, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["surface", str(tiny_run.path), "--grid", "3", "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    # the same output directory asked for another grid: cannot resume, says how to start over
    assert main(["surface", str(tiny_run.path), "--grid", "5", "--out", str(out), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot resume" in err and "--force" in err
    assert main(["surface", str(tiny_run.path), "--grid", "5", "--out", str(out), "--force", "--json"]) == 0
    import json

    assert json.loads(capsys.readouterr().out)["points"] == 25


def test_injected_enospc_in_atomic_write_names_the_file(tmp_path, monkeypatch):
    import errno

    import losslab._io as io

    monkeypatch.setattr(io.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "x")))
    with pytest.raises(OSError) as exc:
        io.atomic_write_json(tmp_path / "r.json", {"a": 1})
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(tmp_path / "r.json")
    assert not list(tmp_path.iterdir())  # no temp file left behind


@pytest.mark.parametrize("argv, needle", [
    (["train", "--dataset", "digits", "--epochs", "1e20"], "--epochs expects int"),
    (["no-such-command"], "invalid choice"),
    (["surface"], "required"),
])
def test_argument_errors_are_one_line_too(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("losslab: error: ") and err.count("\n") == 1 and needle in err


def test_api_refuses_non_finite_inputs():
    import torch
    from torch import nn

    from losslab.errors import LosslabError
    from losslab.evaluate import Evaluator

    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    x[4, 1] = float("nan")
    with pytest.raises(LosslabError, match="x holds 1 non-finite value.*example 4"):
        Evaluator(nn.Linear(3, 2), (x, y))
    yr = torch.randn(10)
    yr[7] = float("inf")
    with pytest.raises(LosslabError, match="y holds 1 non-finite value.*example 7"):
        Evaluator(nn.Linear(3, 1), (torch.randn(10, 3), yr), loss="mse")


def test_surfaces_refuse_bad_labels_and_non_finite_points():
    """`surface.plane` with targets out of range, or NaN in the model or a direction: a LosslabError."""
    import torch
    from torch import nn

    from losslab.errors import LosslabError
    from losslab.surface import line, plane

    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x, y = torch.randn(10, 3, generator=g), torch.randint(0, 2, (10,), generator=g)
    d = {k: torch.randn(v.shape, generator=g) for k, v in model.named_parameters()}
    for labels, needle in ((y + 3, "outputs 2 classes but the labels go up to 4"), (y - 1, "labels must be class "
                                                                                      "indices >= 0, got -1")):
        with pytest.raises(LosslabError, match=needle):
            plane(model, (x, labels), dx=d, dy=d, nx=3, ny=3)
    bad = {k: v.clone() for k, v in d.items()}
    bad["0.weight"][1, 2] = float("nan")
    with pytest.raises(LosslabError, match="direction 1 holds NaN/inf in '0.weight'"):
        plane(model, (x, y), dx=d, dy=bad, nx=3, ny=3)
    nan_model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        nan_model[2].bias[0] = float("inf")
    with pytest.raises(LosslabError, match="the origin .* holds NaN/inf in '2.bias'"):
        line(nan_model, (x, y), direction=d, num=3)
    res = plane(model, (x, y), dx=d, dy=d, nx=3, ny=3)  # the same inputs without the fault: finite
    assert res.metrics["loss"].shape == (3, 3) and bool((res.metrics["loss"] > 0).all())
