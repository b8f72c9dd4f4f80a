"""Finished runs carry a manifest of content hashes: a truncated, bit-flipped or missing file is detected
(`Run.verify`), never reused, and the next `train` repairs the run bit-identically."""
import pytest
import torch

from losslab.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
from losslab.experiments import common
from losslab.runs import Run, file_sha256
from losslab.train import train


def _cfg():
    return TrainConfig(data=DataConfig(dataset="moons", dataset_kwargs={"n_train": 64, "n_test": 32}),
                       model=ModelConfig(model="mlp", model_kwargs={"width": 8, "depth": 1}),
                       optim=OptimConfig(epochs=3, batch_size=16), ckpt=CheckpointConfig(checkpoints="epoch:1"))


def test_manifest_detects_truncation_and_bit_flips_and_train_repairs(tmp_path, capsys):
    run = train(_cfg(), out=tmp_path)
    manifest = run.info["manifest"]
    final = run.checkpoints()[-1][1].relative_to(run.path).as_posix()
    assert final in manifest and "metrics.json" in manifest and run.verify() == [] and run.intact
    assert manifest[final] == file_sha256(run.path / final)

    # truncate the final checkpoint
    f = run.path / final
    f.write_bytes(f.read_bytes()[:100])
    assert run.verify() == [f"{final} (changed)"] and not run.intact
    # flip one byte of metrics.json
    m = run.path / "metrics.json"
    b = bytearray(m.read_bytes())
    b[len(b) // 2] ^= 0x01
    m.write_bytes(bytes(b))
    assert set(run.verify()) == {f"{final} (changed)", "metrics.json (changed)"}

    again = train(_cfg(), out=tmp_path)  # detects, says so in one line, retrains
    err = capsys.readouterr().err
    assert err.count("is damaged") == 1 and final in err
    assert again.path == run.path and again.verify() == []
    assert again.info["manifest"] == manifest  # bit-identical repair (deterministic training)
    torch.load(f, weights_only=True)


def test_missing_checkpoint_is_detected_and_the_reproduce_cache_retrains(tmp_path):
    cfg = _cfg()
    run = common.train_run(cfg, tmp_path)
    ck = run.checkpoints()[1][1]
    ck.unlink()
    assert f"{ck.relative_to(run.path).as_posix()} (missing)" in Run(run.path).verify()
    msgs = []
    again = common.train_run(cfg, tmp_path, msgs.append)
    assert any(x.startswith("training") for x in msgs)  # not "reusing": a damaged run is never reused
    assert ck.is_file() and again.intact


def test_runs_without_a_manifest_are_not_flagged(tmp_path):
    from losslab._io import atomic_write_json, read_json

    run = train(_cfg(), out=tmp_path)
    info = read_json(run.path / "run.json")
    info.pop("manifest")
    info.pop("sha256")
    atomic_write_json(run.path / "run.json", info)  # as saved by an older losslab
    assert run.done and run.verify() == [] and run.intact


def test_measurement_commands_refuse_unfinished_and_damaged_runs(tmp_path, capsys):
    from losslab.cli.main import main

    part = train(_cfg(), out=tmp_path, max_epochs=1)  # time-boxed: unfinished
    assert not part.done
    assert main(["evaluate", str(part.path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has not finished training" in err and "--allow-unfinished" in err
    assert main(["evaluate", str(part.path), "--allow-unfinished", "--json"]) == 0
    steps = [s for s, _ in part.checkpoints()]
    assert main(["evaluate", str(part.path), "--step", str(steps[0]), "--json"]) == 0
    capsys.readouterr()
    run = train(_cfg(), out=tmp_path)  # finishes it
    (run.path / "metrics.json").write_text("[]")
    assert main(["evaluate", str(run.path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is damaged (metrics.json (changed))" in err


def test_a_truncated_resume_state_starts_over_and_a_bad_dataset_creates_nothing(tmp_path, capsys):
    from losslab.errors import LosslabError

    full = train(_cfg(), out=tmp_path / "a")
    part = train(_cfg(), out=tmp_path / "b", max_epochs=1)
    st = part.path / "state.pt"
    st.write_bytes(st.read_bytes()[:50])
    done = train(_cfg(), out=tmp_path / "b")
    assert "training run" in capsys.readouterr().err and done.done
    assert done.info["manifest"] == full.info["manifest"]  # same bytes as an uninterrupted run
    bad = TrainConfig(data=DataConfig(dataset="moons", dataset_kwargs={"no_such_kwarg": 1}))
    with pytest.raises(LosslabError, match="no_such_kwarg"):
        train(bad, out=tmp_path / "c")
    assert not (tmp_path / "c").exists()


SCRIPT = """
import os, sys
from losslab.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
from losslab.train import train

class Witness:  # a pure observer (cache_key None): notes which process really trained
    def cache_key(self):
        return None
    def on_train_start(self, state):
        with open(sys.argv[2], "a") as fh:
            fh.write(f"{os.getpid()}\\n")

cfg = TrainConfig(data=DataConfig(dataset="moons", dataset_kwargs={"n_train": 256, "n_test": 32}),
                  model=ModelConfig(model="mlp", model_kwargs={"width": 64, "depth": 2}),
                  optim=OptimConfig(epochs=40, batch_size=16), ckpt=CheckpointConfig(checkpoints="epoch:1"))
run = train(cfg, out=sys.argv[1], callbacks=[Witness()])
print(run.path.name, run.intact)
"""


def test_a_second_train_waits_on_the_lock_and_reuses_the_run(tmp_path):
    """The fast form of the next test: while another holder has the run's lock, `train` waits; when the
    holder leaves a finished run behind, `train` reuses it without training."""
    import shutil
    import threading
    import time

    from losslab._io import file_lock
    from losslab.runs import run_dir_for

    ref = train(_cfg(), out=tmp_path / "ref")
    out = tmp_path / "runs"
    started, result = [], []

    class Witness:
        def cache_key(self):
            return None

        def on_train_start(self, state):
            started.append(1)

    with file_lock(out / ".locks" / f"{ref.path.name}.train.lock"):
        t = threading.Thread(target=lambda: result.append(train(_cfg(), out=out, callbacks=[Witness()])))
        t.start()
        time.sleep(0.5)
        assert t.is_alive() and not run_dir_for(_cfg(), out).exists()  # waiting, nothing created
        shutil.copytree(ref.path, run_dir_for(_cfg(), out))  # what the other process trained
    t.join(60)
    assert result and result[0].intact and not started


@pytest.mark.slow
def test_two_identical_trains_train_once_and_stale_temporaries_go(tmp_path):
    import os
    import subprocess
    import sys

    script = tmp_path / "t.py"
    script.write_text(SCRIPT)
    witness = tmp_path / "witness.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LOSSLAB_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "runs"), str(witness)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    assert outs[0][0] == outs[1][0] and outs[0][0].strip().endswith("True")
    assert len(witness.read_text().split()) == 1  # the second waited on the lock and reused the run

    # a temp file left by a process killed mid-write is removed by the next train of that run
    run_dir = next((tmp_path / "runs").glob("train-*"))
    stale = run_dir / ".metrics.json.abc123.tmp"
    stale.write_text("{")
    from losslab._io import read_json, atomic_write_json
    from losslab.results import seal
    info = read_json(run_dir / "run.json")
    info["status"] = "running"  # pretend it was interrupted so that train takes the lock again
    atomic_write_json(run_dir / "run.json", seal(info))
    subprocess.run([sys.executable, str(script), str(tmp_path / "runs"), str(witness)], check=True, env=env,
                   capture_output=True, timeout=300)
    assert not stale.exists()
