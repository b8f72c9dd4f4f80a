"""Every kind of file losslab saves and reads back, truncated and bit-flipped (issue 16): the damage is
detected and reported in one line, and the file is recomputed from the last intact state (or, where
nothing can be recomputed without the user, a one-line error with exit 2 says how to start over).

Bit flips in JSON files change one digit, so that the file still parses: only the content hash can
tell. Each test compares the repaired files with the undamaged ones byte for byte."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from losslab.cli.main import main
from losslab.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
from losslab.errors import DamagedFile
from losslab.runs import Run, load_resume_state
from losslab.train import train

DAMAGE = ("truncate", "flip")


def damage(path: Path, how: str) -> None:
    """Truncate ``path`` to half its size, or flip one bit: in a JSON file the bit of a digit past the
    middle (the file stays valid JSON with another value), elsewhere the middle byte."""
    b = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(b[: len(b) // 2]))
        return
    if path.suffix == ".json":
        for i in (i for i in range(len(b) // 2, len(b)) if chr(b[i]).isdigit()):
            b[i] ^= 0x01
            try:
                json.loads(bytes(b))  # still valid JSON (a flip to a leading zero is not): only the hash notices
                break
            except ValueError:
                b[i] ^= 0x01
        else:
            raise AssertionError(f"no digit of {path} flips into valid JSON")
    else:
        b[len(b) // 2] ^= 0x01
    path.write_bytes(bytes(b))


def _cfg(epochs: int = 3) -> TrainConfig:
    return TrainConfig(data=DataConfig(dataset="moons", dataset_kwargs={"n_train": 64, "n_test": 32}),
                       model=ModelConfig(model="mlp", model_kwargs={"width": 8, "depth": 1}),
                       optim=OptimConfig(epochs=epochs, batch_size=16), ckpt=CheckpointConfig(checkpoints="epoch:1"))


def _files(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A finished run and a run time-boxed after 2 of 3 epochs, kept pristine (tests work on copies)."""
    root = tmp_path_factory.mktemp("ref")
    done = train(_cfg(), out=root / "done", progress=False)
    part = train(_cfg(), out=root / "part", progress=False, max_epochs=2)
    assert done.intact and not part.done
    return done, part


def _copy(run: Run, dest: Path) -> Run:
    shutil.copytree(run.path.parent, dest)
    return Run(dest / run.path.name)


FINISHED_KINDS = {
    "final checkpoint": lambda r: r.checkpoints()[-1][1],
    "first checkpoint": lambda r: r.checkpoints()[0][1],
    "metrics.json": lambda r: r.path / "metrics.json",
    "run.json": lambda r: r.path / "run.json",
    "config.json": lambda r: r.path / "config.json",
    "state.pt": lambda r: r.path / "state.pt",
}


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("kind", list(FINISHED_KINDS))
def test_a_finished_run_with_a_damaged_file_is_refused_then_repaired(kind, how, reference, tmp_path, capsys):
    done, _ = reference
    run = _copy(done, tmp_path / "runs")
    target = FINISHED_KINDS[kind](run)
    name = target.relative_to(run.path).as_posix()
    damage(target, how)
    assert not run.intact and any(v.startswith(name) for v in run.verify()), run.verify()
    # a measurement command refuses it in one line (exit 2), naming the file
    assert main(["evaluate", str(run.path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("losslab: error: ") and err.count("\n") == 1 and name in err and "damaged" in err, err
    # train says so in one line and retrains: every file is back, byte for byte
    again = train(_cfg(), out=run.path.parent, progress=False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is damaged" in err and name in err and "retraining" in err, err
    assert again.intact
    want, got = _files(done.path), _files(run.path)
    assert got.keys() == want.keys()
    diff = [k for k in want if got[k] != want[k] and k != "run.json"]  # run.json holds timings
    assert not diff, diff
    assert again.info["manifest"] == done.info["manifest"]


PARTIAL_KINDS = {
    "state.pt": lambda r: r.path / "state.pt",
    "metrics.json": lambda r: r.path / "metrics.json",
    "first checkpoint": lambda r: r.checkpoints()[0][1],
    "run.json": lambda r: r.path / "run.json",
}


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("kind", list(PARTIAL_KINDS))
def test_an_unfinished_run_with_a_damaged_file_resumes_from_the_last_intact_state(kind, how, reference, tmp_path,
                                                                                    capsys):
    done, part = reference
    run = _copy(part, tmp_path / "runs")
    damage(PARTIAL_KINDS[kind](run), how)
    finished = train(_cfg(), out=run.path.parent, progress=False)
    err = capsys.readouterr().err
    if kind == "metrics.json":  # the resume state holds the metrics: the damaged file is simply rewritten
        assert err == "" and finished.info["resumed_from_epoch"] == 2
    else:  # nothing intact to resume from: one line, then training from the start
        assert err.count("\n") == 1 and "is damaged" in err, err
        assert finished.info["resumed_from_epoch"] == 0
    assert finished.intact and finished.info["manifest"] == done.info["manifest"]  # bit-identical


def test_the_resume_state_is_sealed(reference, tmp_path):
    _, part = reference
    run = _copy(part, tmp_path / "runs")
    st = load_resume_state(run.path / "state.pt")
    assert st["epoch"] == 2 and len(json.loads(st["metrics"])) == 3
    assert sorted(st["checkpoints"]) == [p.relative_to(run.path).as_posix() for _, p in run.checkpoints()]
    damage(run.path / "state.pt", "flip")
    with pytest.raises(DamagedFile, match="state.pt is damaged"):
        load_resume_state(run.path / "state.pt")


# ------------------------------------------------------------------------------------------- surfaces


@pytest.fixture(scope="module")
def surface_ref(reference, tmp_path_factory):
    done, _ = reference
    out = tmp_path_factory.mktemp("surf") / "s"
    assert main(["surface", str(done.path), "--grid", "4", "--out", str(out), "--json"]) == 0
    return out


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("name", ["surface.npz", "surface.json", "direction0.json", "direction1.json"])
def test_a_damaged_surface_or_direction_file_is_recomputed_with_one_line(name, how, reference, surface_ref, tmp_path,
                                                                         capsys):
    done, _ = reference
    out = tmp_path / "s"
    shutil.copytree(surface_ref, out)
    capsys.readouterr()
    damage(out / name, how)
    if name.startswith("surface"):
        from losslab.surface import SurfaceResult

        with pytest.raises(DamagedFile, match=name):
            SurfaceResult.load(out / "surface")
    assert main(["surface", str(done.path), "--grid", "4", "--out", str(out), "--json"]) == 0
    err = capsys.readouterr().err
    if name.startswith("surface"):
        assert err.count("\n") == 1 and f"{name} is damaged" in err and "recomputing" in err, err
    else:  # directions are rebuilt (seeded) and rewritten by every run: nothing to report
        assert err == ""
    a, b = np.load(surface_ref / "surface.npz"), np.load(out / "surface.npz")
    for k in a.files:
        assert np.array_equal(a[k], b[k], equal_nan=True), k
    if name.startswith("direction"):  # the recipe is rewritten as it was
        assert json.loads((out / name).read_text()) == json.loads((surface_ref / name).read_text())


# ------------------------------------------------------------------------------------ hessian cache


@pytest.fixture(scope="module")
def hessian_ref(reference, tmp_path_factory):
    done, _ = reference
    out = tmp_path_factory.mktemp("hess") / "h"
    assert main(["hessian", str(done.path), "--top-k", "2", "--probes", "4", "--basin-directions", "2",
                 "--skip", "epsilon", "adaptive", "--out", str(out), "--json"]) == 0
    return out


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("prefix", ["topk-", "trace-", "basin-"])
def test_a_damaged_hessian_cache_file_is_recomputed_with_one_line(prefix, how, reference, hessian_ref, tmp_path,
                                                                  capsys):
    done, _ = reference
    out = tmp_path / "h"
    shutil.copytree(hessian_ref, out)
    argv = ["hessian", str(done.path), "--top-k", "2", "--probes", "4", "--basin-directions", "2",
            "--skip", "epsilon", "adaptive", "--out", str(out), "--json"]
    capsys.readouterr()
    target = sorted(out.glob(f"{prefix}*.json"))[0] if prefix != "basin-" else sorted(out.glob("basin-*.npz"))[0]
    damage(target, how)
    assert main(argv) == 0
    cap = capsys.readouterr()
    assert cap.err.count("\n") == 1 and f"{target.name} is damaged" in cap.err and "recomputing" in cap.err, cap.err
    ref = json.loads((hessian_ref / "hessian.json").read_text())
    now = json.loads((out / "hessian.json").read_text())
    for key in ("eigenvalues", "trace"):
        if key in ref:
            assert now[key] == ref[key], key
    assert main(argv) == 0 and capsys.readouterr().err == ""  # repaired: reused silently


# ------------------------------------------------------------------------------------ reproduce cache


def _fake_row(monkeypatch):
    """Register a stand-in row A1 that trains a tiny run through the shared run cache."""
    import dataclasses
    import types

    from losslab.experiments import ExperimentResult, Verdict, _registry, common

    @dataclasses.dataclass(frozen=True)
    class Config:
        seed: int = 0

        @classmethod
        def quick(cls):
            return cls()

        full = quick

    def run(config, *, cache_dir, work_dir, progress):
        r = common.train_run(_cfg(), cache_dir, progress)
        return ExperimentResult.create("A1", config, measurements={"loss": r.summary["train_loss"]},
                                       verdict=Verdict("inconclusive", "stand-in"))

    m = types.ModuleType("fake_a1")
    m.ID, m.Config, m.run, m.judge, m.VERSION = "A1", Config, run, (lambda x: Verdict("inconclusive", "")), 1
    monkeypatch.setitem(_registry.EXPERIMENTS, "A1", m)


@pytest.mark.parametrize("how", DAMAGE)
def test_reproduce_recomputes_a_damaged_row_and_its_damaged_cached_run(how, tmp_path, monkeypatch):
    import io

    from losslab.experiments import _runner

    _fake_row(monkeypatch)
    out = tmp_path / "r"
    first = _runner.run_many(["A1"], out=out, stream=io.StringIO())[0]
    assert first.result.status == "ok" and not first.cached
    saved = first.path.read_bytes()
    (cached,) = (out / "cache" / "runs").glob("train-*")
    ckpt = Run(cached).checkpoints()[-1][1]
    pristine = ckpt.read_bytes()
    damage(first.path, how)
    damage(ckpt, how)
    log = io.StringIO()
    again = _runner.run_many(["A1"], out=out, stream=log)[0]
    text = log.getvalue()
    assert "result.json is damaged" in text and "recomputing" in text, text
    assert not again.cached and again.result.status == "ok"
    assert again.result.measurements == first.result.measurements
    assert ckpt.read_bytes() == pristine  # the cached run was retrained, bit-identical
    assert json.loads(first.path.read_bytes())["measurements"] == json.loads(saved)["measurements"]
    third = _runner.run_many(["A1"], out=out, stream=io.StringIO())[0]
    assert third.cached


def test_sealed_results_of_the_results_layer(tmp_path):
    """save_arrays / Result.save seal their JSON; load_arrays checks it and every npz member's CRC-32."""
    import dataclasses

    from losslab.results import Result, load_arrays, save_arrays

    save_arrays(tmp_path / "r", "fmt", {"x": np.arange(50.0)}, {"meta": {"a": 1.25}})
    for name in ("r.npz", "r.json"):
        for how in DAMAGE:
            good = (tmp_path / name).read_bytes()
            damage(tmp_path / name, how)
            with pytest.raises(DamagedFile, match=name):
                load_arrays(tmp_path / "r", "fmt")
            (tmp_path / name).write_bytes(good)
    assert load_arrays(tmp_path / "r", "fmt")[1]["meta"] == {"a": 1.25}

    @dataclasses.dataclass
    class R(Result):
        v: float
        t: torch.Tensor

    R(0.5, torch.arange(3.0)).save(tmp_path / "g")
    damage(tmp_path / "g.json", "flip")
    with pytest.raises(DamagedFile, match="g.json"):
        R.load(tmp_path / "g")


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_direction_file_given_by_the_user_is_one_line(how, reference, tmp_path, capsys):
    done, _ = reference
    vec = tmp_path / "v"
    assert main(["surface", str(done.path), "--grid", "3", "--save-vectors", "--out", str(vec)]) == 0
    damage(vec / "direction0.npz", how)
    capsys.readouterr()
    rc = main(["surface", str(done.path), "--grid", "3", "--directions", str(vec / "direction0.npz"),
               "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("losslab: error: ") and err.count("\n") == 1, err
    assert "direction0.npz is damaged" in err and not (tmp_path / "s").exists()
