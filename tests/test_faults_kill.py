"""SIGKILL at chosen points (issue 16): `train` killed before its first epoch, mid-epoch, after a saved
state, after the last epoch and in the middle of an atomic write, one kill after another on the same
run, then finished: every file is bit-identical to an uninterrupted run's and no temporary file is
left. `reproduce --jobs 2` (spawned workers) killed mid-row: no process survives 5 s, and the rerun
finishes with the same results.

The kills are deterministic: the child process kills itself with SIGKILL at the chosen point (a
callback that does not change the run, or the N-th rename of an atomic write)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from losslab.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, SeedConfig, TrainConfig  # noqa: F401 (CFG)
from losslab.runs import Run, run_dir_for
from losslab.train import train

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL and /proc")

CFG = """TrainConfig(data=DataConfig(dataset="moons", dataset_kwargs={"n_train": 64, "n_test": 32}),
                  model=ModelConfig(model="mlp", model_kwargs={"width": 8, "depth": 1}),
                  optim=OptimConfig(epochs=6, batch_size=16), ckpt=CheckpointConfig(checkpoints="epoch:1"),
                  seeds=SeedConfig(seed=SEED))"""


def _cfg(seed: int = 0) -> TrainConfig:
    return eval(CFG.replace("SEED", str(seed)))  # the config the child scripts train


TRAIN_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import losslab.train as T
    from losslab.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, SeedConfig, TrainConfig

    T.SAVE_EVERY_S = 0.0  # a resume state after every epoch: the kills land between saves, not only before
    where, n = sys.argv[2].split(":")
    n = int(n)

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    class Killer:  # an observer (cache_key None): the same run as without it
        def cache_key(self):
            return None
        def on_train_start(self, state):
            if where == "start":
                die()
        def on_step_end(self, state):
            if where == "step" and state.step == n:
                die()
        def on_epoch_end(self, state):
            if where == "epoch" and state.epoch == n:
                die()
        def on_train_end(self, state):
            if where == "end":
                die()

    if where == "write":  # killed after the n-th atomic write filled its temp file, before the rename
        real, count = os.replace, [0]
        def replace(a, b):
            count[0] += 1
            if count[0] == n:
                die()
            return real(a, b)
        os.replace = replace
    cfg = CFG
    T.train(cfg, out=sys.argv[1], callbacks=[Killer()], progress=False)
    print("finished")
""").replace("CFG", CFG.replace("SEED", "0"))


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LOSSLAB_THREADS": "1"}


def _kill_at(out: Path, point: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(out), point], capture_output=True, text=True,
                          env=_env(), timeout=300)


def _same_files(a: Path, b: Path) -> None:
    fa = {p.relative_to(a).as_posix(): p.read_bytes() for p in sorted(a.rglob("*")) if p.is_file()}
    fb = {p.relative_to(b).as_posix(): p.read_bytes() for p in sorted(b.rglob("*")) if p.is_file()}
    assert sorted(fa) == sorted(fb)  # no temporary file left over either
    assert [k for k in fa if fa[k] != fb[k] and k != "run.json"] == []  # run.json holds timings


def test_train_killed_mid_write_leaves_a_temp_file_that_the_rerun_removes(tmp_path):
    r = _kill_at(tmp_path / "k", "write:4")  # config.json, run.json, metrics.json, then the init checkpoint
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    rdir = run_dir_for(_cfg(), tmp_path / "k")
    assert list((rdir / "checkpoints").glob(".step_00000000.pt.*.tmp")), "the kill did not land mid-write"
    done = train(_cfg(), out=tmp_path / "k", progress=False)
    whole = train(_cfg(), out=tmp_path / "w", progress=False)
    assert done.intact
    _same_files(whole.path, done.path)


@pytest.mark.slow
def test_train_killed_at_several_points_finishes_bit_identical(tmp_path):
    out = tmp_path / "k"
    rdir = run_dir_for(_cfg(), out)
    resumed = []
    # 4 steps an epoch; "write:14" is the 14th rename of its call (resumed at epoch 1): epoch 5's state
    for point in ("start:0", "step:6", "epoch:2", "write:14", "epoch:6", "end:0"):
        r = _kill_at(out, point)
        assert r.returncode == -signal.SIGKILL, (point, r.stderr[-2000:])
        assert not Run(rdir).done, point
        resumed.append(Run(rdir).info.get("resumed_from_epoch"))
    # each call went on from the last saved state: never back to the start after the first epoch saved
    assert resumed == [0, 0, 1, 1, 4, 5], resumed
    r = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(out), "none:0"], capture_output=True, text=True,
                       env=_env(), timeout=300)
    assert r.returncode == 0 and "finished" in r.stdout, r.stderr[-2000:]
    whole = train(_cfg(), out=tmp_path / "w", progress=False)
    assert Run(rdir).intact and Run(rdir).info["resumed_from_epoch"] == 6
    _same_files(whole.path, rdir)


REPRODUCE_SCRIPT = textwrap.dedent('''
    import dataclasses, os, sys, time, types
    from losslab.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, SeedConfig, TrainConfig
    from losslab.experiments import ExperimentResult, Verdict, _registry, common

    def module(row_id, seed):
        s = seed

        @dataclasses.dataclass(frozen=True)
        class Config:
            seed: int = s

            @classmethod
            def quick(cls):
                return cls()

            full = quick

        def run(config, *, cache_dir, work_dir, progress):
            SEED = config.seed
            r = common.train_run(CFG, cache_dir, progress)
            time.sleep(float(os.environ.get("ROW_SLEEP", "0")))
            return ExperimentResult.create(row_id, config, verdict=Verdict("inconclusive", "stand-in"),
                                           measurements={"train_loss": r.summary["train_loss"],
                                                         "test_error": r.summary["test_error"]})

        m = types.ModuleType(f"fake_{row_id}")
        m.ID, m.Config, m.run, m.judge, m.COST = row_id, Config, run, (lambda x: Verdict("inconclusive", "")), {}
        return m

    # module level: spawned workers run it too (as __mp_main__), so they see the same rows
    _registry.EXPERIMENTS.clear()
    _registry.EXPERIMENTS.update({r: module(r, i) for i, r in enumerate(("A1", "A2", "A3"))})

    if __name__ == "__main__":
        from losslab.cli.main import main
        sys.exit(main(["reproduce", "A1", "A2", "A3", "--jobs", "2", "--out", sys.argv[1]]))
''').replace("CFG", CFG)


def _finished(run_dir: Path) -> bool:
    try:
        return Run(run_dir).done
    except ValueError:  # being written
        return False


@pytest.mark.slow
def test_sigkill_to_reproduce_jobs_2_leaves_no_process_and_the_rerun_gives_the_same_results(tmp_path):
    import json

    from test_reproduce_signals import _alive, _children

    script = tmp_path / "fake_reproduce.py"
    script.write_text(REPRODUCE_SCRIPT)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**_env(), "ROW_SLEEP": "60"}, start_new_session=True)
    deadline, kids = time.time() + 120, set()
    while time.time() < deadline and proc.poll() is None:  # both workers busy in a row (trained, sleeping)
        kids |= _children(proc.pid)
        runs = [Path(p).parent for p in (out / "cache" / "runs").glob("train-*/run.json")] if out.is_dir() else []
        if sum(_finished(p) for p in runs) >= 2 and len(_children(proc.pid)) >= 2:
            break
        time.sleep(0.2)
    kids |= _children(proc.pid)
    assert proc.poll() is None and len(kids) >= 2, proc.communicate()[1][-2000:]
    proc.kill()
    proc.communicate(timeout=10)
    deadline = time.time() + 5
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.1)
    assert not [k for k in kids if _alive(k)], "processes alive 5 s after SIGKILL"  # workers, resource tracker
    assert not list((out / "results").glob("*/result.json"))  # killed before any row finished

    r = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, env=_env(),
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for i, row in enumerate(("A1", "A2", "A3")):
        (f,) = (out / "results").glob(f"{row}-*/result.json")
        got = json.loads(f.read_text())["measurements"]
        want = train(_cfg(i), out=tmp_path / "ref", progress=False).summary
        assert got == {"train_loss": want["train_loss"], "test_error": want["test_error"]}, row
    for run in (out / "cache" / "runs").glob("train-*"):
        assert Run(run).intact
        assert not [p for p in run.rglob("*.tmp")]


@pytest.mark.slow
def test_sigterm_to_train_exits_143_with_one_line_and_the_rerun_resumes(tmp_path):
    from losslab.cli.main import main

    # long enough (about 6 s on a quiet 2-core machine) that a resume state is saved (every 2 s,
    # train.SAVE_EVERY_S) well before the end: with 60 epochs the first state.pt was the last one
    argv = ["train", "--dataset", "moons", "--dataset-kwargs", "n_train=4096", "n_test=64", "--model", "mlp",
            "--model-kwargs", "width=32", "depth=1", "--epochs", "300", "--batch-size", "16", "--no-progress"]
    out = tmp_path / "k"
    proc = subprocess.Popen([sys.executable, "-m", "losslab", *argv, "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(out.glob("train-*/state.pt")):
        time.sleep(0.05)
    assert proc.poll() is None, "finished before the signal"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("losslab: terminated (finished work is saved")
    (rdir,) = out.glob("train-*")
    assert not Run(rdir).done and not list(rdir.rglob("*.tmp"))
    assert main([*argv, "--out", str(out)]) == 0
    assert Run(rdir).info["resumed_from_epoch"] > 0
    assert main([*argv, "--out", str(tmp_path / "w")]) == 0
    (whole,) = (tmp_path / "w").glob("train-*")
    assert Run(rdir).info["manifest"] == Run(whole).info["manifest"]  # bit-identical
