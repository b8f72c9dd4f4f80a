"""Issue 16's table, row by row, through the command line: every bad input ends in exactly one
`losslab: error:` line naming the input, exit status 2 and no traceback; the damaged saved files of
the table that losslab can now recompute end in exit 0 with one line saying so.

The read-only directory and the full disk are real where the test may mount a tmpfs (root on
Linux); elsewhere the directory is made read-only with chmod and ENOSPC is injected into the writes."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from losslab.cli.main import main


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's errors
        rc = exc.code
    return rc, capsys.readouterr().err


def _one_error_line(err: str, needle: str) -> None:
    assert err.startswith("losslab: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, (needle, err)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from losslab.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
    from losslab.train import train

    cfg = TrainConfig(data=DataConfig(dataset="moons", dataset_kwargs={"n_train": 64, "n_test": 32}),
                      model=ModelConfig(model="mlp", model_kwargs={"width": 8, "depth": 1}),
                      optim=OptimConfig(epochs=1, batch_size=32))
    return train(cfg, out=tmp_path_factory.mktemp("runs"), progress=False).path


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    """A module of model factories on sys.path, and a checkpoint for each."""
    import torch

    (tmp_path / "faultfac.py").write_text(
        "import torch\n"
        "class D(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__(); self.l = torch.nn.Linear(64, 10)\n"
        "    def forward(self, x):\n        return {'logits': self.l(x.flatten(1))}\n"
        "def boom():\n    raise RuntimeError('needs a GPU')\n"
        "def linear():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))\n"
        "def five():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))\n"
        "def dictout():\n    return D()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "faultfac", raising=False)
    import faultfac

    ck = {}
    for name in ("linear", "five", "dictout"):
        ck[name] = tmp_path / f"{name}.pt"
        torch.save(getattr(faultfac, name)().state_dict(), ck[name])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    ck["empty"] = empty
    return ck


# (id, argv with {run}/{tmp}/{ck:name} placeholders, the words the one line must contain)
TABLE = [
    ("threads 0 (train)", ["train", "--dataset", "moons", "--threads", "0"], "threads must be >= 1"),
    ("threads -1 (train)", ["train", "--dataset", "moons", "--threads", "-1"], "threads must be >= 1"),
    ("threads 0 (connect)", ["connect", "{run}", "{run}", "--threads", "0"], "threads must be >= 1"),
    ("threads -1 (connect)", ["connect", "{run}", "{run}", "--threads", "-1"], "threads must be >= 1"),
    ("device cuda without a GPU", ["train", "--dataset", "moons", "--device", "cuda"], "device 'cuda'"),
    ("device bogus", ["train", "--dataset", "moons", "--device", "bogus"], "unknown device 'bogus'"),
    ("device cuda:99", ["train", "--dataset", "moons", "--device", "cuda:99"], "device 'cuda:99'"),
    ("reproduce seed -1", ["reproduce", "A1", "--seed", "-1", "--out", "{tmp}/r"], "--seed must be >= 0"),
    ("out is a file (train)", ["train", "--dataset", "moons", "--out", "{tmp}/afile"], "afile"),
    ("out is a file (surface)", ["surface", "{run}", "--grid", "3", "--out", "{tmp}/afile"], "afile"),
    ("surface grid 100000", ["surface", "{run}", "--grid", "100000", "--out", "{tmp}/s"], "over half of this machine"),
    ("points-per-chunk 0", ["surface", "{run}", "--grid", "3", "--points-per-chunk", "0", "--out", "{tmp}/s"],
     "--points-per-chunk must be >= 1"),
    ("0-byte checkpoint", ["evaluate", "{ck:empty}", "--model", "faultfac:linear", "--dataset", "digits"],
     "empty or truncated"),
    ("factory that raises", ["evaluate", "{ck:linear}", "--model", "faultfac:boom", "--dataset", "digits"],
     "faultfac:boom() raised RuntimeError: needs a GPU"),
    ("factory with an unknown kwarg", ["evaluate", "{ck:linear}", "--model", "faultfac:linear", "--model-kwargs",
                                       "depth=2", "--dataset", "digits"], "unexpected keyword argument 'depth'"),
    ("labels beyond the model's classes", ["evaluate", "{ck:five}", "--model", "faultfac:five", "--dataset", "digits"],
     "outputs 5 classes but the labels go up to 9"),
    ("dict outputs", ["evaluate", "{ck:dictout}", "--model", "faultfac:dictout", "--dataset", "digits"],
     "returns a dict"),
    ("corrupt config.json", ["evaluate", "{damaged:config.json}"], "config.json"),
    ("corrupt run.json", ["evaluate", "{damaged:run.json}"], "run.json is damaged"),
    ("epochs 1e20", ["train", "--dataset", "moons", "--epochs", "1e20"], "--epochs expects int"),
    ("hessian top-k beyond the parameters", ["hessian", "{run}", "--top-k", "1000", "--out", "{tmp}/h"],
     "exceeds the model's"),
]


def _fill(argv: list[str], run_dir: Path, tmp: Path, ck: dict[str, Path]) -> list[str]:
    import shutil

    out = []
    for a in argv:
        if a.startswith("{damaged:"):
            name = a[len("{damaged:"):-1]
            d = tmp / "damaged"
            shutil.copytree(run_dir, d)
            (d / name).write_text((d / name).read_text()[:20])  # truncated
            a = str(d)
        elif a.startswith("{ck:"):
            a = str(ck[a[4:-1]])
        out.append(a.replace("{run}", str(run_dir)).replace("{tmp}", str(tmp)))
    return out


@pytest.mark.parametrize("case", TABLE, ids=[c[0] for c in TABLE])
def test_every_bad_input_of_the_table_is_one_line_and_exit_2(case, run_dir, user_models, tmp_path, capsys,
                                                             monkeypatch):
    _, argv, needle = case
    work = tmp_path / "work"
    work.mkdir()
    (work / "afile").write_text("x")
    monkeypatch.chdir(work)
    argv = _fill(argv, run_dir, work, user_models)
    before = sorted(p.name for p in work.iterdir())
    rc, err = _cli(argv, capsys)
    assert rc == 2, err
    _one_error_line(err, needle)
    assert sorted(p.name for p in work.iterdir() if p.name != "damaged") == sorted(
        n for n in before if n != "damaged")  # validated before anything was created


def _mount_tmpfs(path: Path, options: str) -> bool:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("command", ["train", "surface", "hessian"])
def test_a_read_only_output_directory_is_one_line(command, run_dir, tmp_path, capsys):
    ro = tmp_path / "ro"
    mounted = _mount_tmpfs(ro, "ro,size=64k")
    if not mounted:
        ro.mkdir()
        ro.chmod(0o555)
    try:
        argv = {"train": ["train", "--dataset", "moons", "--out", ro],
                "surface": ["surface", run_dir, "--grid", "3", "--out", ro / "s"],
                "hessian": ["hessian", run_dir, "--top-k", "1", "--out", ro / "h"]}[command]
        rc, err = _cli(argv, capsys)
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=False)
        else:
            ro.chmod(0o755)
    assert rc == 2
    _one_error_line(err, str(ro))
    assert "Read-only file system" in err or "Permission denied" in err, err


@pytest.mark.parametrize("command", ["train", "surface", "hessian"])
def test_a_full_disk_names_the_file_and_is_one_line(command, run_dir, tmp_path, capsys, monkeypatch):
    full = tmp_path / "full"
    argv = {"train": ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "2", "--out", full],
            "surface": ["surface", run_dir, "--grid", "5", "--out", full / "s"],
            "hessian": ["hessian", run_dir, "--top-k", "2", "--probes", "2", "--out", full / "h"]}[command]
    # 8 KiB: a few small files fit, the first checkpoint, direction or eigenvector file does not
    mounted = _mount_tmpfs(full, "size=8k")
    if not mounted:  # no tmpfs here: every atomic write finds the disk full
        import losslab._io as io

        def no_space(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(io.os, "fsync", no_space)
    try:
        rc, err = _cli(argv, capsys)
        left = [p for p in full.rglob("*.tmp")] if full.is_dir() else []
    finally:
        if mounted:
            subprocess.run(["umount", str(full)], check=False)
    assert rc == 2
    _one_error_line(err, str(full))
    assert "No space left on device" in err and "disk full" in err, err
    assert not left, left  # the failed write removed its temporary file


def test_damaged_files_of_the_table_that_can_be_recomputed_are(run_dir, tmp_path, capsys):
    """corrupt metrics.json on resume, corrupt surface.npz / surface.json: recomputed, exit 0, one line."""
    import shutil

    from losslab.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
    from losslab.train import train

    cfg = TrainConfig(data=DataConfig(dataset="moons", dataset_kwargs={"n_train": 64, "n_test": 32}),
                      model=ModelConfig(model="mlp", model_kwargs={"width": 8, "depth": 1}),
                      optim=OptimConfig(epochs=3, batch_size=32))
    part = train(cfg, out=tmp_path / "runs", progress=False, max_epochs=1)
    (part.path / "metrics.json").write_text("[{\"epo")
    rc, err = _cli(["train", "--dataset", "moons", "--dataset-kwargs", "n_train=64", "n_test=32", "--model", "mlp",
                    "--model-kwargs", "width=8", "depth=1", "--epochs", "3", "--batch-size", "32",
                    "--out", tmp_path / "runs", "--no-progress"], capsys)
    assert rc == 0 and "Traceback" not in err, err
    assert part.done and len(part.metrics) == 4 and part.info["resumed_from_epoch"] == 1

    s = tmp_path / "s"
    assert _cli(["surface", run_dir, "--grid", "3", "--out", s], capsys)[0] == 0
    for name, text in (("surface.json", "{\"form"), ("surface.npz", "PK")):
        keep = s / "keep"
        shutil.copy(s / name, keep)
        (s / name).write_text(text)
        rc, err = _cli(["surface", run_dir, "--grid", "3", "--out", s], capsys)
        assert rc == 0 and err.count("\n") == 1 and f"{name} is damaged" in err and "recomputing" in err, err
        keep.unlink()


def test_every_new_file_and_directory_follows_the_umask(run_dir, tmp_path, capsys):
    """Under umask 022 every file losslab writes is 0644 and every directory 0755 (not mkstemp's 0600)."""
    old = os.umask(0o022)
    try:
        out = tmp_path / "o"
        assert _cli(["train", "--dataset", "moons", "--epochs", "1", "--out", out / "runs", "--no-progress"],
                    capsys)[0] == 0
        assert _cli(["surface", run_dir, "--grid", "3", "--plot", "--out", out / "s"], capsys)[0] == 0
        assert _cli(["hessian", run_dir, "--top-k", "1", "--probes", "2", "--out", out / "h"], capsys)[0] == 0
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 15
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o644)}, [
        (p.name, oct(p.stat().st_mode & 0o777)) for p in files if p.stat().st_mode & 0o777 != 0o644]
    assert {oct(p.stat().st_mode & 0o777) for p in out.rglob("*") if p.is_dir()} == {oct(0o755)}


def test_a_failed_surface_leaves_no_direction_files(user_models, tmp_path, capsys):
    out = tmp_path / "s"
    rc, err = _cli(["surface", user_models["five"], "--model", "faultfac:five", "--dataset", "digits", "--grid", "3",
                    "--out", out], capsys)
    assert rc == 2
    _one_error_line(err, "outputs 5 classes but the labels go up to 9")
    assert not out.exists()
