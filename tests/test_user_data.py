"""--data on the command line: files, functions, folders, normalization (issue 15), checked against plain torch."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from losslab import data
from losslab.errors import LosslabError

NETS = """
import torch


def make(width=8):
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, width), torch.nn.ReLU(), torch.nn.Linear(width, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return net


def arrays(n=40):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def as_dataset(n=40):
    return torch.utils.data.TensorDataset(*arrays(n))


def broken():
    raise ValueError("no data today")
"""


@pytest.fixture
def project(tmp_path):
    """A folder the project has never seen: a model module, an .npz, a checkpoint (run from there)."""
    name = f"usernets_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(NETS)
    sys.path.insert(0, str(tmp_path))
    try:
        mod = __import__(name)
    finally:
        sys.path.remove(str(tmp_path))
    x, y = mod.arrays()
    np.savez(tmp_path / "toy.npz", x=x.numpy(), y=y.numpy(), x_test=x[:10].numpy() * 2, y_test=y[:10].numpy())
    torch.save({"x": x, "y": y}, tmp_path / "toy.pt")
    torch.save(mod.make().state_dict(), tmp_path / "ck.pt")
    return tmp_path, name, mod


def _cli(cwd, *args):
    return subprocess.run([sys.executable, "-m", "losslab", *args], cwd=cwd, capture_output=True, text=True)


def test_evaluate_runs_on_a_file_or_a_function_from_the_working_directory(project, monkeypatch, capsys):
    from losslab.cli.main import main

    tmp, name, mod = project
    net, (x, y) = mod.make(), mod.arrays()
    with torch.no_grad():
        want = F.cross_entropy(net(x), y).item()
        want_test = F.cross_entropy(net(x[:10] * 2), y[:10]).item()
        want_norm = F.cross_entropy(net((x - 0.5) / 2), y).item()
    # a new process in that folder, no PYTHONPATH: pkg.module resolves from the working directory
    r = _cli(tmp, "evaluate", "ck.pt", "--model", f"{name}:make", "--data", f"{name}:arrays", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["train_loss"] == pytest.approx(want, rel=1e-6)
    monkeypatch.chdir(tmp)
    monkeypatch.syspath_prepend(str(tmp))
    cases = {("toy.npz",): want, ("toy.pt",): want, (f"{name}:as_dataset",): want,
             ("toy.npz", "--data-kwargs", "mean=0.5", "std=2"): want_norm}  # (x - mean) / std on every input
    for extra, loss in cases.items():
        assert main(["evaluate", "ck.pt", "--model", f"{name}:make", "--data", *extra, "--json"]) == 0
        s = json.loads(capsys.readouterr().out.replace("NaN", "null"))
        assert s["train_loss"] == pytest.approx(loss, rel=1e-6), extra
        if extra == ("toy.npz",):
            assert s["test_loss"] == pytest.approx(want_test, rel=1e-6)


def test_missing_or_bad_data_is_one_line(project, monkeypatch, capsys):
    from losslab.cli.main import main

    tmp, name, _ = project
    monkeypatch.chdir(tmp)
    monkeypatch.syspath_prepend(str(tmp))
    cases = [
        (("--model", f"{name}:make"), "say which data"),
        (("--model", f"{name}:make", "--data", "nope.npz"), "unknown data 'nope.npz'"),
        (("--model", f"{name}:make", "--data", f"{name}:broken"), "raised ValueError: no data today"),
        (("--model", f"{name}:make", "--data", f"{name}:missing"), "has no attribute 'missing'"),
        (("--model", f"{name}:make", "--data", "toy.npz", "--data-kwargs", "bogus=1"), "unknown arguments"),
    ]
    for extra, needle in cases:
        code, err = main(["evaluate", "ck.pt", *extra]), capsys.readouterr().err
        assert code == 2 and needle in err and err.count("\n") == 1, (extra, err)


def test_resolve_files_keys_and_folders(tmp_path):
    np.savez(tmp_path / "only_x.npz", x=np.zeros((3, 2), np.float32), labels=np.zeros(3))
    with pytest.raises(LosslabError, match=r"has no 'y' \(found keys \['labels', 'x'\]"):
        data.resolve(str(tmp_path / "only_x.npz"))
    np.savez(tmp_path / "half.npz", x=np.zeros((3, 2), np.float32), y=np.zeros(3, np.int64),
             x_test=np.zeros((1, 2), np.float32))
    with pytest.raises(LosslabError, match="only one of 'x_test' and 'y_test'"):
        data.resolve(str(tmp_path / "half.npz"))
    (tmp_path / "bad.pt").write_bytes(b"not a tensor file")
    with pytest.raises(LosslabError, match="cannot read data file"):
        data.resolve(str(tmp_path / "bad.pt"))
    # integer token inputs keep their dtype with x_dtype=keep; per-channel mean/std broadcast over dim 1
    np.savez(tmp_path / "tok.npz", x=np.arange(12).reshape(3, 4), y=np.array([0, 1, 0]))
    assert data.resolve(str(tmp_path / "tok.npz"), x_dtype="keep").train.x.dtype == torch.int64
    img = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    np.savez(tmp_path / "img.npz", x=img, y=np.array([0, 1]))
    b = data.resolve(str(tmp_path / "img.npz"), mean=[1.0, 2.0, 3.0], std=[2.0, 4.0, 8.0])
    want = (torch.from_numpy(img) - torch.tensor([1.0, 2, 3]).view(1, 3, 1, 1)) / torch.tensor([2.0, 4, 8]).view(
        1, 3, 1, 1)
    assert torch.equal(b.train.x, want) and b.meta["normalization"]["std"] == [2.0, 4.0, 8.0]
    with pytest.raises(LosslabError, match="mean has 2 values but inputs have 3 channels"):
        data.resolve(str(tmp_path / "img.npz"), mean=[1.0, 2.0])
    assert data.resolve("digits").name == "digits"  # built-in names still work
    folder = tmp_path / "imgs" / "cat"
    folder.mkdir(parents=True)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(LosslabError, match="needs torchvision"):
            data.resolve(str(tmp_path / "imgs"))


def test_token_targets_are_class_labels_per_position():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 50, (8, 6), generator=g), torch.randint(0, 39, (8, 6), generator=g)
    y[3, 2] = 39  # the largest label
    b = data.from_tensors(x, y, x_test=x[:2], y_test=y[:2], x_dtype=None, num_classes=50)
    assert b.train.y.shape == (8, 6) and b.train.x.dtype == torch.int64 and b.num_classes == 50
    assert b.meta["task"] == "classification" and torch.equal(b.test.y, y[:2])
    with pytest.raises(LosslabError, match=r"y_test labels have shape \(5,\) per example, y has \(6,\)"):
        data.from_tensors(x, y, x_test=x[:2], y_test=y[:2, :5], x_dtype=None)
    with pytest.raises(LosslabError, match="labels go up to 39 but num_classes=10"):
        data.from_tensors(x, y, num_classes=10, x_dtype=None)


def test_train_on_a_file_hashes_its_content(tmp_path, capsys):
    """The run's hash covers the data file's content: another file at the same path trains another run, and
    the old run, whose file changed, says so in one line instead of measuring other data."""
    import json

    from losslab.cli.main import main

    g = np.random.default_rng(0)
    f = tmp_path / "d.npz"

    def write(shift):
        x = g.normal(size=(60, 5)).astype("float32") + shift
        np.savez(f, x=x, y=(x[:, 0] > shift).astype("int64"))

    write(0.0)
    argv = ["train", "--data", str(f), "--epochs", "1", "--out", str(tmp_path / "runs"), "--json", "--no-progress"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)["run_dir"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["reused"] is True  # same content: the same run
    write(1.0)
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)["run_dir"]
    assert second != first
    assert main(["evaluate", first, "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has changed since the run was configured" in err[0]


def test_train_a_user_factory_on_real_valued_targets(tmp_path, monkeypatch, capsys):
    """Regression: a user factory sizes its own outputs; train with --loss mse, and evaluate's loss is the
    mean squared error of the saved model on the file's data. A zoo model asks for class labels in one line."""
    import json

    import torch

    from losslab.cli.main import main

    (tmp_path / "regnet.py").write_text(
        "from torch import nn\n"
        "def net():\n"
        "    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    g = np.random.default_rng(1)
    x = g.normal(size=(50, 5)).astype("float32")
    y = (2 * x[:, :1]).astype("float32")
    np.savez(tmp_path / "r.npz", x=x, y=y)
    out = tmp_path / "runs"
    assert main(["train", "--model", "regnet:net", "--data", str(tmp_path / "r.npz"), "--loss", "mse", "--epochs", "2",
                 "--out", str(out), "--json", "--no-progress"]) == 0
    run_dir = json.loads(capsys.readouterr().out)["run_dir"]
    assert main(["evaluate", run_dir, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["train_loss"]
    from losslab.runs import Run

    model = Run.open(run_dir).build_model()
    with torch.no_grad():
        want = float(torch.nn.functional.mse_loss(model(torch.from_numpy(x)), torch.from_numpy(y)))
    assert got == pytest.approx(want, rel=1e-6)
    assert main(["train", "--model", "mlp", "--data", str(tmp_path / "r.npz"), "--epochs", "1",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs class labels" in err[0]
