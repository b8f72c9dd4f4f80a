"""The analyses' own saved files, truncated and bit-flipped (issue 16): instability sweeps (parent
snapshots, children, paths, the sweep's summary), curvature-tracking records, intrinsic-dimension and
Goldilocks results. Each damage is detected from the file's content hash (or the npz's CRC-32s) and
either recomputed with one line, giving the undamaged result, or refused in one line."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from losslab.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, SeedConfig, TrainConfig
from losslab.connect import instability
from losslab.errors import DamagedFile
from losslab.runs import load_resume_state

from test_faults_files import DAMAGE, damage


def _cfg() -> TrainConfig:
    return TrainConfig(data=DataConfig("digits", subsample=120),
                       model=ModelConfig("mlp", {"width": 8, "depth": 1}),
                       optim=OptimConfig(epochs=2, batch_size=40, lr=0.1), seeds=SeedConfig(seed=5))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("inst")
    res = instability(_cfg(), [0, 3], out=out, num=4)
    return out, res


def _sweep_file(run_dir, name):
    return {"result.json": run_dir / "result.json",
            "parent snapshot": run_dir / "parent" / "step_00000003.pt",
            "child": run_dir / "k_00000003" / "child_1.pt",
            "path.json": run_dir / "k_00000003" / "path.json",
            "path.npz": run_dir / "k_00000003" / "path.npz"}[name]


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("name", ["result.json", "parent snapshot", "child", "path.json", "path.npz"])
def test_a_damaged_instability_file_is_recomputed_with_one_line(name, how, sweep, tmp_path, capsys):
    out, ref = sweep
    shutil.copytree(out, tmp_path / "o")
    run_dir = tmp_path / "o" / ref.run_dir.rsplit("/", 1)[-1]
    target = _sweep_file(run_dir, name)
    if name in ("result.json", "child", "path.json", "path.npz"):
        # what is recomputed depends on what the sweep reads first: the summary, then each step's path,
        # then its children; remove the later layers so that the damaged file is the one read
        if name != "result.json":
            (run_dir / "result.json").unlink()
        if name == "child":
            for f in (run_dir / "k_00000003").glob("path.*"):
                f.unlink()
    else:
        (run_dir / "result.json").unlink()
        for f in (run_dir / "k_00000003").glob("*"):
            f.unlink()
    damage(target, how)
    capsys.readouterr()
    again = instability(_cfg(), [0, 3], out=tmp_path / "o", num=4)
    err = capsys.readouterr().err
    damaged_lines = [ln for ln in err.splitlines() if "is damaged" in ln]
    assert len(damaged_lines) == 1 and target.name in damaged_lines[0] and "recomputing" in damaged_lines[0], err
    np.testing.assert_array_equal(again.barriers("error"), ref.barriers("error"))
    for p_again, p_ref in zip(again.paths, ref.paths):
        np.testing.assert_array_equal(p_again.metrics["test"]["error"], p_ref.metrics["test"]["error"])
    if name in ("parent snapshot", "child"):  # rewritten sealed, and equal to the undamaged state
        ref_file = _sweep_file(out / ref.run_dir.rsplit("/", 1)[-1], name)
        a, b = load_resume_state(target), load_resume_state(ref_file)
        sa, sb = (a["model"], b["model"]) if "model" in a else (a, b)
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_snapshots_and_children_are_sealed(sweep):
    """A flipped byte inside a tensor loads as another value with torch.load: the seal catches it."""
    out, ref = sweep
    run_dir = out / ref.run_dir.rsplit("/", 1)[-1]
    for f in (run_dir / "parent" / "step_00000003.pt", run_dir / "k_00000003" / "child_0.pt"):
        st = torch.load(f, weights_only=True)
        assert st["format"] == "losslab.train_state" and len(st["sha256"]) == 64
        assert load_resume_state(f)


# ------------------------------------------------------------------------------------ tracking


def test_damaged_curvature_records_are_refused_or_retrained(tmp_path, capsys):
    from losslab.curvature import load_curvature_records
    from losslab.experiments.c8_break_even import train_tracked

    cfg = TrainConfig(data=DataConfig("digits", subsample=100), model=ModelConfig("mlp", {"width": 8, "depth": 1}),
                      optim=OptimConfig(epochs=1, batch_size=50, lr=0.1), ckpt=CheckpointConfig("epoch:1"))
    tk = {"every": 1, "data_subset": 40, "seed": 0, "tol": 1e-3}
    lines: list[str] = []
    run, records = train_tracked(cfg, tk, cache_dir=tmp_path, progress=lines.append)
    f = run.path / "curvature.json"
    for how in DAMAGE:
        damage(f, how)
        with pytest.raises(DamagedFile, match="curvature.json is damaged"):
            load_curvature_records(run.path)
        lines.clear()
        run2, records2 = train_tracked(cfg, tk, cache_dir=tmp_path, progress=lines.append)
        assert sum("curvature.json is damaged" in ln and "recomputing" in ln for ln in lines) == 1, lines
        timeless = [[{k: v for k, v in r.items() if k != "seconds"} for r in rs] for rs in (records, records2)]
        assert timeless[0] == timeless[1]  # the same records (but for their timings)
        assert load_curvature_records(run2.path) == records2  # and the file rewritten, sealed


# ------------------------------------------------------------------ intrinsic dimension, Goldilocks


def test_intrinsic_and_goldilocks_results_are_sealed(tmp_path):
    from losslab.subspace import GoldilocksResult, IntrinsicDimResult

    cells = {m: np.array([[0.1, 0.2], [0.5, 0.6]]) for m in ("train_accuracy", "test_accuracy")}
    ir = IntrinsicDimResult(np.array([2, 4]), np.array([0, 1]), cells, np.ones((2, 2), bool),
                            {m: np.array([0.9, 0.9]) for m in cells}, np.ones(2, bool), "test_accuracy", 0.9, None,
                            {"note": 1.25})
    gr = GoldilocksResult(np.array([0.5, 1.0]), np.array([0, 1]), 3, False, np.array([1.0, 1.5]),
                          {m: np.array([[0.25, 0.5], [0.75, 0.5]]) for m in
                           ("trace_over_frobenius", "positive_fraction", "loss", "success", "test_accuracy")},
                          np.zeros((2, 2, 3)),
                          np.ones((2, 2), bool), {"note": 2.5})
    for res, cls, stem in ((ir, IntrinsicDimResult, "id"), (gr, GoldilocksResult, "gl")):
        res.save(tmp_path / stem)
        assert cls.load(tmp_path / stem).meta["note"] in (1.25, 2.5)
        for suffix in (".json", ".npz"):
            for how in DAMAGE:
                p = tmp_path / (stem + suffix)
                good = p.read_bytes()
                damage(p, how)
                with pytest.raises(DamagedFile, match=stem + suffix):
                    cls.load(tmp_path / stem)
                p.write_bytes(good)


def test_a_damaged_curve_is_one_line(tmp_path):
    """A saved Bezier curve: its control points (npz) and sidecar (sealed JSON) are checked on load."""
    from losslab import params
    from losslab.connect import CurveResult, train_curve

    from cases import zoo_mlp

    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 6, generator=g, dtype=torch.float64)
    y = (x @ torch.randn(6, 3, generator=g, dtype=torch.float64)).argmax(1)
    a, b = (params.get_point(zoo_mlp(s, input_dim=6, num_classes=3, width=8, depth=2, dtype=torch.float64))
            for s in (0, 1))
    model = zoo_mlp(0, input_dim=6, num_classes=3, width=8, depth=2, dtype=torch.float64)
    c = train_curve(model, (x, y), point_a=a, point_b=b, epochs=1, lr=0.1, batch_size=16, seed=0, num=3)
    c.save(tmp_path / "curve")
    assert torch.equal(CurveResult.load(tmp_path / "curve").control_points[1]["fc0.weight"],
                       c.control_points[1]["fc0.weight"])
    for name in ("curve.json", "curve.npz", "curve.path.json"):
        for how in DAMAGE:
            p = tmp_path / name
            good = p.read_bytes()
            damage(p, how)
            with pytest.raises(DamagedFile, match=name.replace(".", r"\.")):
                CurveResult.load(tmp_path / "curve")
            p.write_bytes(good)


def test_damaged_direction_headers_are_one_line(tmp_path):
    """Saved direction vectors (npz + sealed header) and recipes (a sealed header only)."""
    from losslab import directions as D

    w = {"a": torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
         "b": torch.zeros(3, dtype=torch.float64)}
    d = D.random_direction(w, seed=1)
    D.save_direction(d, tmp_path / "v", weights=w, vectors=True)
    D.save_direction(d, tmp_path / "r", weights=w)
    assert not (tmp_path / "r.npz").exists()
    for stem, name in (("v", "v.json"), ("v", "v.npz"), ("r", "r.json")):
        for how in DAMAGE:
            p = tmp_path / name
            good = p.read_bytes()
            damage(p, how)
            with pytest.raises(DamagedFile, match=name.replace(".", r"\.")):
                D.load_direction(tmp_path / stem, weights=w)
            p.write_bytes(good)
        back = D.load_direction(tmp_path / stem, weights=w).vector
        assert back.keys() == d.vector.keys() and all(torch.equal(back[k], d.vector[k]) for k in back)
