"""Trainer, run directories and resume; small digits MLPs (seconds each)."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from losslab.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, SeedConfig, TrainConfig
from losslab.errors import LosslabError
from losslab.runs import Run, load_resume_state, run_dir_for
from losslab.train import checkpoint_steps, lr_at, train

SMALL = TrainConfig(
    model=ModelConfig(model="mlp", model_kwargs={"width": 32, "depth": 1}),
    optim=OptimConfig(epochs=4, lr=0.05),
    ckpt=CheckpointConfig(checkpoints="epoch:1"),
)


def test_train_records_metrics_checkpoints_and_is_reused(tmp_path):
    run = train(SMALL, out=tmp_path, progress=False)
    assert run.done and run.path == run_dir_for(SMALL, tmp_path)
    m = run.metrics
    assert [r["epoch"] for r in m] == [0, 1, 2, 3, 4]
    assert m[-1]["train_error"] < m[0]["train_error"]
    steps = [s for s, _ in run.checkpoints()]
    spe = run.info["steps_per_epoch"]
    assert steps == [0, spe, 2 * spe, 3 * spe, 4 * spe]
    info = run.info
    assert info["seeds"] == {"init": 0, "order": 0, "label": 0}
    assert info["env"]["torch"] == torch.__version__
    cfg = json.loads((run.path / "config.json").read_text())
    assert cfg["non_default"]["optim"]["epochs"] == 4
    # Second call: reused, nothing retrained (files untouched).
    mtime = (run.path / "state.pt").stat().st_mtime_ns
    run2 = train(SMALL, out=tmp_path, progress=False)
    assert run2.path == run.path and (run.path / "state.pt").stat().st_mtime_ns == mtime
    # The rebuilt model reproduces the recorded final metrics.
    model = run.build_model()
    b = run.bundle()
    with torch.no_grad():
        err = int((model(b.test.x).argmax(-1) != b.test.y).sum()) / len(b.test)
    assert err == pytest.approx(m[-1]["test_error"], abs=1e-12)


def test_seeds_are_separate_and_change_the_run(tmp_path):
    a = train(SMALL, out=tmp_path, progress=False)
    import dataclasses

    b = train(dataclasses.replace(SMALL, seeds=SeedConfig(seed=1)), out=tmp_path, progress=False)
    assert a.path != b.path
    assert any(not torch.equal(v, b.state_dict(0)[k]) for k, v in a.state_dict(0).items())
    # Same init seed, different data order: identical init, different final weights.
    c = train(dataclasses.replace(SMALL, seeds=SeedConfig(seed=0, order_seed=7)), out=tmp_path, progress=False)
    for k, v in a.state_dict(0).items():
        assert torch.equal(v, c.state_dict(0)[k])
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


SLOW_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from losslab.config import *
    from losslab.train import train
    class Slow:
        def cache_key(self):  # an observer: the same run as without it
            return None
        def on_epoch_end(self, state):
            time.sleep(0.3)
    cfg = TrainConfig(model=ModelConfig(model="mlp", model_kwargs={"width": 32, "depth": 1}),
                      optim=OptimConfig(epochs=12, lr=0.05, optimizer=sys.argv[2]),
                      ckpt=CheckpointConfig(checkpoints="log:6"))
    train(cfg, out=sys.argv[1], callbacks=[Slow()], progress=False)
    """
)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_after_kill_matches_uninterrupted(tmp_path, optimizer):
    cfg = TrainConfig(model=ModelConfig(model="mlp", model_kwargs={"width": 32, "depth": 1}),
                      optim=OptimConfig(epochs=12, lr=0.05, optimizer=optimizer),
                      ckpt=CheckpointConfig(checkpoints="log:6"))
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SCRIPT, str(killed), optimizer],
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    state = run_dir_for(cfg, killed) / "state.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if state.is_file() and load_resume_state(state)["epoch"] >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = Run(run_dir_for(cfg, killed))
    assert not run.done, "the run finished before it could be killed"
    done_epochs = load_resume_state(state)["epoch"]
    assert 3 <= done_epochs < 12
    resumed = train(cfg, out=killed, progress=False)
    assert resumed.done and resumed.info["resumed_from_epoch"] == done_epochs
    whole = train(cfg, out=tmp_path / "whole", progress=False)
    a, b = resumed.state_dict(), whole.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [s for s, _ in resumed.checkpoints()] == [s for s, _ in whole.checkpoints()]
    assert resumed.metrics == whole.metrics


def test_max_epochs_time_box_then_resume(tmp_path):
    run = train(SMALL, out=tmp_path / "a", progress=False, max_epochs=2)
    assert not run.done and len(run.metrics) == 3
    run = train(SMALL, out=tmp_path / "a", progress=False)
    whole = train(SMALL, out=tmp_path / "b", progress=False)
    for k, v in whole.state_dict().items():
        assert torch.equal(v, run.state_dict()[k])


def test_full_batch_and_schedules(tmp_path):
    cfg = TrainConfig(model=ModelConfig(model_kwargs={"width": 16, "depth": 1}),
                      optim=OptimConfig(epochs=3, batch_size=0, lr=0.5, schedule="cosine", warmup_epochs=1))
    run = train(cfg, out=tmp_path, progress=False)
    assert run.info["steps_per_epoch"] == 1 and run.summary["steps"] == 3
    o = OptimConfig(epochs=10, lr=1.0, schedule="step", step_every=2, step_gamma=0.5, warmup_epochs=1)
    c = TrainConfig(optim=o)
    assert lr_at(c, 0, 10) == pytest.approx(0.1)
    assert lr_at(c, 9, 10) == pytest.approx(1.0)
    assert lr_at(c, 25, 10) == pytest.approx(0.5)
    cos = TrainConfig(optim=OptimConfig(epochs=4, lr=1.0, schedule="cosine"))
    assert lr_at(cos, 0, 10) == pytest.approx(1.0) and lr_at(cos, 20, 10) == pytest.approx(0.5)
    assert lr_at(cos, 40, 10) == pytest.approx(0.0, abs=1e-12)
    logs = checkpoint_steps(TrainConfig(optim=OptimConfig(epochs=10), ckpt=CheckpointConfig("log:5")), 100)
    assert logs[0] == 0 and logs[-1] == 1000 and logs == sorted(set(logs)) and 1 in logs


def test_callbacks_see_steps_and_record_extras(tmp_path):
    seen = []

    class CB:
        def on_step_end(self, state):
            seen.append(state.step)

        def on_epoch_end(self, state):
            state.extra["weight_norm"] = float(sum(p.detach().norm() ** 2 for p in state.model.parameters()) ** 0.5)

    run = train(SMALL, out=tmp_path, progress=False, callbacks=[CB()])
    assert seen == list(range(1, run.summary["steps"] + 1))
    assert all("weight_norm" in m for m in run.metrics[1:])


def test_checkpoints_hold_what_step_callbacks_changed(tmp_path):
    class ZeroLastBias:  # a callback that edits the parameters after every optimizer step
        def cache_key(self):
            return {"zero_last_bias": True}

        def on_step_end(self, state):
            with torch.no_grad():
                list(state.model.parameters())[-1].zero_()

    run = train(SMALL, out=tmp_path, progress=False, callbacks=[ZeroLastBias()])
    ckpts = run.trajectory()
    assert len(ckpts) == 5
    last_bias = [n for n, _ in run.build_model().named_parameters()][-1]
    for step, sd in ckpts[1:]:
        assert torch.count_nonzero(sd[last_bias]) == 0, step
    assert torch.count_nonzero(ckpts[0][1][last_bias]) > 0  # the step-0 checkpoint is the initialization


def test_divergence_is_a_clear_error(tmp_path):
    cfg = TrainConfig(model=ModelConfig(model_kwargs={"width": 16, "depth": 1}),
                      optim=OptimConfig(epochs=3, lr=1e38, momentum=0.0))
    with pytest.raises(LosslabError, match="diverged"):
        train(cfg, out=tmp_path, progress=False)


def test_label_noise_run_records_corruption(tmp_path):
    cfg = TrainConfig(data=DataConfig(label_noise=0.5), model=ModelConfig(model_kwargs={"width": 16, "depth": 1}),
                      optim=OptimConfig(epochs=1))
    run = train(cfg, out=tmp_path, progress=False)
    b = run.bundle()
    assert b.train.clean_y is not None
    changed = int((b.train.y != b.train.clean_y).sum())
    assert 0 < changed <= round(0.5 * len(b.train))


def test_state_is_saved_by_time_and_after_the_last_epoch(tmp_path, monkeypatch):
    """Many tiny epochs do not each write state.pt: it is saved every SAVE_EVERY_S seconds and after
    the last epoch of a call, and a resumed run still ends bit-identical to an uninterrupted one."""
    import losslab.train as T

    cfg = TrainConfig(model=ModelConfig(model="mlp", model_kwargs={"width": 16, "depth": 1}),
                      optim=OptimConfig(epochs=8, lr=0.05, batch_size=0), ckpt=CheckpointConfig(checkpoints="none"))
    saves: list[str] = []
    real = T.atomic_torch_save

    def count(path, obj):
        saves.append(os.path.basename(path))
        return real(path, obj)

    monkeypatch.setattr(T, "atomic_torch_save", count)
    monkeypatch.setattr(T, "SAVE_EVERY_S", 1e9)
    part = train(cfg, out=tmp_path / "a", progress=False, max_epochs=5)
    assert saves.count("state.pt") == 1 and load_resume_state(run_dir_for(cfg, tmp_path / "a") / "state.pt")["epoch"] == 5
    assert len(part.metrics) == 6  # epoch 0 (before training) and epochs 1-5
    done = train(cfg, out=tmp_path / "a", progress=False)
    assert saves.count("state.pt") == 2 and done.done and done.info["resumed_from_epoch"] == 5
    monkeypatch.setattr(T, "SAVE_EVERY_S", 0.0)  # every epoch
    whole = train(cfg, out=tmp_path / "b", progress=False)
    assert saves.count("state.pt") == 2 + 8
    a, b = done.state_dict(), whole.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert done.metrics == whole.metrics


class _Reg:
    """A user callback without cache_key: assumed to change the run."""

    def on_step_end(self, state):
        pass


class _Observer:
    def cache_key(self):
        return None

    def on_epoch_end(self, state):
        state.extra["seen"] = 1


def test_callbacks_are_part_of_the_run_identity(tmp_path):
    from losslab.probes import NormDecay
    from losslab.runs import callback_keys

    cfg = TrainConfig(model=ModelConfig(model="mlp", model_kwargs={"width": 16, "depth": 1}),
                      optim=OptimConfig(epochs=2, lr=0.05), ckpt=CheckpointConfig(checkpoints="none"))
    plain = train(cfg, out=tmp_path, progress=False)
    decayed = train(cfg, out=tmp_path, progress=False, callbacks=[NormDecay(0.1, 1.0)])
    assert decayed.path != plain.path and decayed.path.name.startswith(plain.path.name + "-")
    assert decayed.info["callbacks"][0]["key"] == {"strength": 0.1, "target": 1.0, "include_1d": False}
    other = train(cfg, out=tmp_path, progress=False, callbacks=[NormDecay(0.2, 1.0)])
    assert other.path not in (plain.path, decayed.path)
    w1, w2 = plain.state_dict(), decayed.state_dict()
    assert not all(torch.equal(w1[k], w2[k]) for k in w1)  # really a different run, not a reused one
    assert train(cfg, out=tmp_path, progress=False, callbacks=[NormDecay(0.1, 1.0)]).path == decayed.path
    unknown = train(cfg, out=tmp_path, progress=False, callbacks=[_Reg()])
    assert unknown.path not in (plain.path, decayed.path)
    assert callback_keys([_Observer()]) == []
    assert run_dir_for(cfg, tmp_path, [_Observer()]) == plain.path  # an observer shares the plain run
