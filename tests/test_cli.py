"""The command line as a user meets it: --json summaries, one-line errors, non-zero exits."""
import json
import os
import subprocess
import sys

import pytest
import torch

from losslab.cli.main import main


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "losslab", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=300)


TINY = ["--model-kwargs", "width=32", "depth=1", "--epochs", "3", "--no-progress"]


def test_train_states_the_batchnorm_mode_of_its_metrics(tmp_path, capsys):
    args = ["train", "--dataset", "digits", "--model", "mlp", "--model-kwargs", "width=8", "depth=1", "norm=bn",
            "--epochs", "1", "--no-progress", "--out", str(tmp_path)]
    assert main(args) == 0
    assert "BatchNorm: metrics use the running statistics" in capsys.readouterr().out
    assert main([*args, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["bn"] == "eval" and s["reused"] is True
    ev = cli("evaluate", s["run_dir"], "--bn", "eval", "--json")  # the same numbers as evaluate in that mode
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["train_loss"] == pytest.approx(s["train_loss"], rel=1e-6)


def test_train_json_and_reuse(tmp_path):
    r = cli("train", "--dataset", "digits", "--model", "mlp", *TINY, "--out", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert set(s) >= {"run_dir", "train_loss", "train_error", "test_loss", "test_error", "checkpoints"}
    assert s["reused"] is False and s["checkpoints"] >= 2 and s["bn"] is None  # no BatchNorm: no mode to state
    r2 = cli("train", "--dataset", "digits", "--model", "mlp", *TINY, "--out", str(tmp_path), "--json")
    s2 = json.loads(r2.stdout)
    assert s2["reused"] is True and s2["run_dir"] == s["run_dir"]
    r3 = cli("train", "--dataset", "digits", "--model", "mlp", *TINY, "--out", str(tmp_path), "--json", "--seed", "1")
    assert json.loads(r3.stdout)["run_dir"] != s["run_dir"]
    # evaluate the run dir and its bare checkpoint
    ev = cli("evaluate", s["run_dir"], "--json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["test_error"] == pytest.approx(s["test_error"], abs=1e-12)
    ck = sorted((tmp_path / os.path.basename(s["run_dir"]) / "checkpoints").glob("*.pt"))[-1]
    ev2 = cli("evaluate", str(ck), "--model", "mlp", "--model-kwargs", "width=32", "depth=1", "--json")
    assert ev2.returncode == 0, ev2.stderr
    assert json.loads(ev2.stdout)["test_error"] == pytest.approx(s["test_error"], abs=1e-12)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--dataset", "nope"], "nope"),
        (["train", "--model", "transformer9000"], "transformer9000"),
        (["train", "--label-noise", "1.5"], "label noise p must be in [0, 1]"),
        (["train", "--label-noise", "-0.1"], "label noise p must be in [0, 1]"),
        (["train", "--optimizer", "lion"], "unknown optimizer"),
        (["train", "--checkpoints", "often"], "bad checkpoint schedule"),
        (["train", "--model-kwargs", "widthh=3"], "widthh"),
        (["evaluate", "/nonexistent/ckpt.pt", "--model", "mlp"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_error(tmp_path, capsys, args, needle):
    code = main([*args, "--out", str(tmp_path)] if args[0] == "train" else args)
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert err.count("\n") == 1 and err.startswith("losslab: error:"), err
    assert "Traceback" not in err


def test_unreadable_and_mismatched_checkpoints(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    assert main(["evaluate", str(bad), "--model", "mlp"]) == 2
    err = capsys.readouterr().err
    assert "cannot read checkpoint" in err and err.count("\n") == 1
    # a checkpoint of another architecture: names missing and unexpected keys
    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, other)
    assert main(["evaluate", str(other), "--model", "mlp"]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "unexpected" in err and "fc.weight" in err and err.count("\n") == 1
    # a pickle with code in it is refused by weights_only loading
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "obj": object.__new__(Evil)}, evil)
    assert main(["evaluate", str(evil), "--model", "mlp"]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err


class Evil:
    pass


def test_non_finite_checkpoint_is_refused(tmp_path, capsys):
    from losslab import data, models

    b = data.load("digits")
    m = models.build("mlp", input_shape=b.input_shape, num_classes=b.num_classes, seed=0)
    good, nan = tmp_path / "good.pt", tmp_path / "nan.pt"
    torch.save(m.state_dict(), good)
    sd = m.state_dict()
    name = next(k for k in sd if k.endswith("bias"))
    sd[name] = torch.full_like(sd[name], float("nan"))
    torch.save(sd, nan)
    assert main(["evaluate", str(good), "--model", "mlp", "--json"]) == 0
    capsys.readouterr()
    for argv in (["evaluate", str(nan)], ["interpolate", str(good), str(nan), "--num", "3", "--no-progress"],
                 ["hessian", str(nan), "--top-k", "1"]):
        assert main([*argv, "--model", "mlp"]) == 2, argv
        err = capsys.readouterr().err
        assert f"non-finite values (NaN/inf) in {name}" in err and err.count("\n") == 1, (argv, err)


def test_env_json():
    r = cli("env", "--json")
    assert r.returncode == 0
    s = json.loads(r.stdout)
    assert s["torch"] == torch.__version__ and s["threads"] == 1


def test_help_reads_well():
    r = cli("--help")
    assert r.returncode == 0 and "train" in r.stdout and "env" in r.stdout
    r = cli("train", "--help")
    assert "--label-noise" in r.stdout and "--seed" in r.stdout and "example:" in r.stdout
