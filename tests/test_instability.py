"""Instability analysis (Frankle et al. 2020): parent/child training, the sweep, its cache, and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from losslab.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, SeedConfig, TrainConfig, config_hash
from losslab.connect import InstabilityConfig, InstabilityResult, instability
from losslab.connect.instability import child_order_seed, train_child, train_parent
from losslab.errors import LosslabError
from losslab.runs import load_resume_state as load_state  # snapshots are sealed (issue 16)
from losslab.train import train


def _cfg(**optim) -> TrainConfig:
    o = dict(epochs=3, batch_size=50, lr=0.1)
    o.update(optim)
    return TrainConfig(data=DataConfig("digits", subsample=200), model=ModelConfig("mlp", {"width": 16, "depth": 1}),
                       optim=OptimConfig(**o), seeds=SeedConfig(seed=3))


def test_parent_reproduces_the_trainer_and_child_zero_is_the_run(tmp_path):
    cfg = _cfg()
    run = train(TrainConfig(cfg.data, cfg.model, cfg.optim, cfg.seeds, CheckpointConfig("step:1")),
                out=tmp_path / "runs", progress=False)
    snaps = train_parent(cfg, [0, 3, 5, 12], tmp_path / "parent")
    assert sorted(snaps) == [0, 3, 5, 12]
    for k, f in snaps.items():
        st = load_state(f)
        assert st["step"] == k
        ref = run.state_dict(k)
        for name, v in ref.items():
            assert torch.equal(st["model"][name], v), (k, name)
    # momentum buffers are in the snapshot after the first step
    assert load_state(snaps[3])["optimizer"]["state"]
    # a child spawned at 0 with the parent's own order seed *is* the ordinary run
    child = train_child(cfg, snaps[0], cfg.seeds.resolved()["order"])
    for name, v in run.state_dict().items():
        assert torch.equal(child.state_dict()[name], v)
    # existing snapshots are reused (no retraining: files untouched)
    mtime = snaps[5].stat().st_mtime_ns
    again = train_parent(cfg, [0, 3, 5, 12], tmp_path / "parent")
    assert again[5].stat().st_mtime_ns == mtime
    with pytest.raises(LosslabError, match="beyond the end"):
        train_parent(cfg, [13], tmp_path / "parent")


def test_children_copy_the_optimizer_state_and_differ_by_data_order(tmp_path):
    cfg = _cfg()
    snaps = train_parent(cfg, [5], tmp_path / "parent")
    st = load_state(snaps[5])
    c1 = train_child(cfg, st, child_order_seed(cfg, 1)).state_dict()
    c1b = train_child(cfg, st, child_order_seed(cfg, 1)).state_dict()
    c2 = train_child(cfg, st, child_order_seed(cfg, 2)).state_dict()
    assert all(torch.equal(c1[k], c1b[k]) for k in c1)  # deterministic
    assert any(not torch.equal(c1[k], c2[k]) for k in c1)  # data order matters
    fresh = dict(st, optimizer={"state": {}, "param_groups": st["optimizer"]["param_groups"]})
    c1_nomom = train_child(cfg, fresh, child_order_seed(cfg, 1)).state_dict()
    assert any(not torch.equal(c1[k], c1_nomom[k]) for k in c1)  # the momentum was carried over
    assert child_order_seed(cfg, 2) == 3 + 2 * 1_000_003


def test_instability_sweep_cache_and_threshold(tmp_path):
    cfg = _cfg()
    res = instability(cfg, [12, 0, 4], out=tmp_path, num=5, threshold=0.02)
    assert res.spawn_steps.tolist() == [0, 4, 12] and res.total_steps == 12
    b = res.barriers("error")
    assert b.shape == (3,) and np.all(b >= 0)
    # spawned at the very end: both children are the parent, the path is flat, the barrier exactly 0
    last = res.paths[-1]
    assert np.all(last.metrics["test"]["error"] == last.metrics["test"]["error"][0])
    assert b[-1] == 0.0 and res.stable_step is not None and res.stable_step <= 12
    assert res.paths[0].splits == ["test"] and res.paths[0].alphas.size == 5
    ch0 = res.summary()["sweep"][0]["test_error_children"]
    assert len(ch0) == 2
    run_dir = tmp_path / f"instability-{config_hash(InstabilityConfig(cfg, (0, 4, 12), 5))}"
    assert res.run_dir == str(run_dir)
    assert (run_dir / "result.json").is_file() and (run_dir / "k_00000004" / "child_1.pt").is_file()
    # a rerun is served from the cache; the threshold only re-reads the results
    again = instability(cfg, [0, 4, 12], out=tmp_path, num=5, threshold=1.0)
    assert again.meta.get("reused") is True
    np.testing.assert_array_equal(again.barriers("error"), b)
    assert again.stable_step == 0 and again.stable_from == 0
    never = instability(cfg, [0, 4, 12], out=tmp_path, num=5, threshold=0.0)
    assert never.stable_step is None and never.stable_from is None
    loaded = InstabilityResult.load(run_dir, threshold=0.02)
    np.testing.assert_array_equal(loaded.barriers("error", kind="interp"), res.barriers("error", kind="interp"))
    assert loaded.stable_step == res.stable_step
    with pytest.raises(LosslabError, match="no finished"):
        InstabilityResult.load(tmp_path)
    # an interrupted sweep resumes: remove one step's path and the summary, recompute only that
    (run_dir / "result.json").unlink()
    for f in (run_dir / "k_00000004").glob("path.*"):
        f.unlink()
    resumed = instability(cfg, [0, 4, 12], out=tmp_path, num=5)
    np.testing.assert_array_equal(resumed.barriers("error"), b)
    # other settings -> another directory; bad settings -> one-line errors
    other = instability(cfg, [0, 12], out=tmp_path, num=5, splits=("train", "test"))
    assert other.run_dir != res.run_dir and other.paths[0].splits == ["train", "test"]
    for bad, msg in (([0, 13], "beyond the end"), ([-1], ">= 0"), ([0, 0], "distinct")):
        with pytest.raises(LosslabError, match=msg):
            instability(cfg, bad, out=tmp_path, num=5)
    with pytest.raises(LosslabError, match="num"):
        instability(cfg, [0], out=tmp_path, num=2)


def test_cli_instability_end_to_end(tmp_path, capsys):
    from losslab.cli.main import main

    args = ["instability", "--dataset", "digits", "--subsample", "200", "--model", "mlp", "--model-kwargs", "width=16",
            "depth=1", "--epochs", "2", "--batch-size", "50", "--seed", "3", "--spawn-at", "0", "2", "8", "--num", "5",
            "--out", str(tmp_path), "--plot", str(tmp_path / "inst.png")]
    assert main([*args, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert [r["k"] for r in s["sweep"]] == [0, 2, 8] and s["total_steps"] == 8 and s["reused"] is False
    assert s["sweep"][-1]["test_error_barrier"] == 0.0 and s["stable_step"] is not None
    assert (tmp_path / "inst.png").stat().st_size > 1000
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "(reused)" in text and "stable" in text
    assert main(["instability", "--dataset", "digits", "--epochs", "1", "--spawn-at", "100000", "--out",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("losslab: error:") and "beyond the end" in err and err.count("\n") == 1
