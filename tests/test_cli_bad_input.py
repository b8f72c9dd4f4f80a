"""Bad input through the command line: each case ends in exactly one `losslab: error:` line and exit 2,
names the offending input, and creates nothing."""
import os

import pytest

from losslab.cli.main import main


def _cases(tmp):
    afile = tmp / "afile"
    afile.write_text("x")
    empty = tmp / "empty.pt"
    empty.write_bytes(b"")
    return [
        (["train", "--dataset", "digits", "--threads", "0"], "threads must be >= 1"),
        (["train", "--dataset", "digits", "--threads", "-1"], "threads must be >= 1"),
        (["train", "--dataset", "digits", "--device", "bogus"], "unknown device 'bogus'"),
        (["train", "--dataset", "digits", "--device", "cuda:99"], "device 'cuda:99'"),
        (["train", "--dataset", "digits", "--out", str(afile)], f"{afile}"),
        (["evaluate", str(empty), "--model", "mlp", "--dataset", "digits"], "empty or truncated"),
        (["reproduce", "A1", "--seed", "-1", "--out", str(tmp / "r")], "--seed must be >= 0"),
    ]


@pytest.mark.parametrize("i", range(7))
def test_bad_input_is_one_line_and_exit_2(i, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, needle = _cases(tmp_path)[i]
    before = set(os.listdir(tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("losslab: error: ") and err.count("\n") == 1, err
    assert needle in err
    assert set(os.listdir(tmp_path)) == before  # nothing created


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from losslab.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
    from losslab.train import train

    cfg = TrainConfig(data=DataConfig(dataset="moons", dataset_kwargs={"n_train": 64, "n_test": 32}),
                      model=ModelConfig(model="mlp", model_kwargs={"width": 8, "depth": 1}),
                      optim=OptimConfig(epochs=1, batch_size=32))
    return train(cfg, out=tmp_path_factory.mktemp("runs"))


@pytest.mark.parametrize("argv, needle", [
    (["--grid", "100000"], "over half of this machine"),
    (["--grid", "5", "--points-per-chunk", "0"], "--points-per-chunk must be >= 1"),
])
def test_surface_flags_are_checked_before_anything_is_written(argv, needle, tiny_run, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["surface", str(tiny_run.path), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("losslab: error: ") and err.count("\n") == 1 and needle in err, err
    assert not out.exists()  # no direction files left behind


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


def test_damaged_saved_files_are_one_line(tiny_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run)
    (run / "config.json").write_text("{trunc")
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.json" in err and "damaged" in err, err


def test_hessian_top_k_beyond_the_parameters_is_one_line(tiny_run, tmp_path, capsys):
    n = sum(p.numel() for p in tiny_run.build_model().parameters())
    out = tmp_path / "h"
    assert main(["hessian", str(tiny_run.path), "--top-k", str(n + 5), "--out", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"exceeds the model's {n} parameters" in err


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


def test_a_failing_model_factory_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    import torch

    (tmp_path / "userfac.py").write_text(
        "import torch\n"
        "def boom():\n    raise RuntimeError('needs a GPU')\n"
        "def linear(width=3):\n    return torch.nn.Linear(64, 10)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "userfac", raising=False)
    ck = tmp_path / "ok.pt"
    torch.save(torch.nn.Linear(64, 10).state_dict(), ck)
    assert main(["evaluate", str(ck), "--model", "userfac:boom", "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "userfac:boom() raised RuntimeError: needs a GPU" in err
    assert main(["evaluate", str(ck), "--model", "userfac:linear", "--model-kwargs", "depth=2",
                 "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected keyword argument 'depth'" in err


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


def _mount_tmpfs(path, size="48k"):
    import subprocess
    import sys

    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def test_disk_full_names_the_path_and_exits_2(tmp_path, capsys, monkeypatch):
    import errno

    full = tmp_path / "full"
    argv = ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "2", "--out", str(full)]
    if _mount_tmpfs(full):  # a real full disk: a 48 KiB tmpfs
        try:
            assert main(argv) == 2
        finally:
            import subprocess

            subprocess.run(["umount", str(full)], check=False)
    else:  # no tmpfs here: inject ENOSPC into the atomic writes
        import losslab._io as io

        def no_space(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(io.os, "fsync", no_space)
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("losslab: error: ") and err.count("\n") == 1, err
    assert str(full) in err and "No space left on device" in err and "disk full" in err


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


def test_evaluate_checks_the_models_output_like_the_evaluator(tmp_path, capsys, monkeypatch):
    import sys

    import torch

    (tmp_path / "outfac.py").write_text(
        "import torch\n"
        "class D(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__(); self.l = torch.nn.Linear(64, 10)\n"
        "    def forward(self, x):\n        return {'logits': self.l(x.flatten(1))}\n"
        "def five():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))\n"
        "def dictout():\n    return D()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "outfac", raising=False)
    import outfac

    for name, needle in (("five", "outputs 5 classes but the labels go up to 9"), ("dictout", "returns a dict")):
        ck = tmp_path / f"{name}.pt"
        torch.save(getattr(outfac, name)().state_dict(), ck)
        assert main(["evaluate", str(ck), "--model", f"outfac:{name}", "--dataset", "digits"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err


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
