"""Adaptive precision over 2 ranks (gloo, CPU): bit for bit the single-process adaptive surface.

One 2-process job (:func:`losslab.distributed.run_local`; this file doubles as the worker script,
``python tests/test_distributed_adaptive.py OUTDIR``) runs every scenario: a plane, a line, a run
stopped by ``max_points`` then resumed, a worker that fails mid-run, and the torchrun CLI with
``--rtol``. References are single-process adaptive surfaces computed in the test process.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).resolve()
N_EX = 400
GRID = dict(nx=13, ny=11, x_span=(-1.0, 1.5), y_span=(-0.5, 1.0))
LINE = dict(num=21, span=(-1.0, 1.5))
CLI_FLAGS = ["--model", "mlp", "--model-kwargs", "width=16", "depth=1", "--dataset", "digits", "--grid", "9", "9",
             "--points-per-chunk", "3", "--rtol", "0.05", "--json", "--no-progress"]


def precision():
    from losslab.precision import Precision

    return Precision(rtol=0.02, initial=16, coarse=4)  # some points estimated, some exact, some interpolated


def problem():
    from losslab import params

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double().eval()
    g = torch.Generator().manual_seed(1)
    data = (torch.randn(N_EX, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (N_EX,), generator=g))
    w = params.get_point(model)
    return model, data, params.randn_like(w, generator=g), params.randn_like(w, generator=g)


def probe(out, y):
    return out.abs().mean()


def _save(out: Path, name: str, res=None, **extra) -> None:
    if res is not None:
        np.savez(out / f"{name}.npz", **{f"m_{k}": v for k, v in res.metrics.items()},
                 **{f"a_{k}": v for k, v in res.arrays.items()}, done=res.done)
        extra.update(precision=res.meta["precision"], distributed=res.meta.get("distributed"))
    (out / f"{name}.json").write_text(json.dumps(extra))


# ---- worker side -----------------------------------------------------------------------------------------


def worker_main(out: Path) -> int:
    import time

    from losslab import distributed as D

    ctx = D.init_distributed(timeout=60)
    assert ctx.world_size == 2 and ctx.backend == "gloo", ctx
    r = ctx.rank
    try:
        model, data, dx, dy = problem()
        P = precision()
        res = D.distributed_plane(model, data, dx=dx, dy=dy, **GRID, precision=P, points_per_chunk=4, progress=False,
                                  checkpoint_path=out / "plane")
        _save(out, f"plane{r}", res)
        res = D.distributed_line(model, data, direction=dx, **LINE, precision=P, points_per_chunk=3, progress=False)
        _save(out, f"line{r}", res)
        kw = dict(**GRID, precision=P, points_per_chunk=4, progress=False, checkpoint_path=out / "part",
                  resume_from=out / "part")
        first = D.distributed_plane(model, data, dx=dx, dy=dy, max_points=30, **kw)
        second = D.distributed_plane(model, data, dx=dx, dy=dy, **kw)
        _save(out, f"resume{r}", second, first_done=int(first.n_done), first_complete=bool(first.complete),
              first_evaluated=first.meta["precision"]["points_evaluated"])
        calls = [0]

        def flaky(o, t):  # rank 1 fails on its first block; rank 0 is slowed so that rank 1 surely claims one
            calls[0] += 1
            if r == 1:
                raise RuntimeError("injected failure on rank 1")
            if calls[0] % N_EX == 1:
                time.sleep(0.05)
            return o.abs().mean()

        err = None
        try:
            D.distributed_plane(model, data, dx=dx, dy=dy, **GRID, precision=P, points_per_chunk=4, progress=False,
                                checkpoint_path=out / "fail", resume_from=out / "fail", metrics={"probe": flaky})
        except Exception as e:  # noqa: BLE001
            err = f"{type(e).__name__}: {e}"
        _save(out, f"fail{r}", error=err)
        from test_distributed import run_cli_module

        code, stdout = run_cli_module(["surface", str(out / "model.pt"), *CLI_FLAGS, "--out", str(out / "cli")])
        _save(out, f"cli{r}", code=code, stdout=stdout)
        return 0
    finally:
        D.shutdown(ctx)


# ---- test side -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    from losslab import models
    from losslab.distributed import run_local

    out = tmp_path_factory.mktemp("distadapt")
    model = models.build("mlp", input_shape=(1, 8, 8), num_classes=10, seed=0, width=16, depth=1)
    torch.save(model.state_dict(), out / "model.pt")
    env = {"LOSSLAB_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = run_local([str(HERE), str(out)], 2, timeout=150, env=env)
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return out


def load(out: Path, name: str):
    info = json.loads((out / f"{name}.json").read_text())
    if (out / f"{name}.npz").exists():
        with np.load(out / f"{name}.npz") as z:
            info.update({k: z[k] for k in z.files})
    return info


def assert_same(got: dict, ref) -> None:
    """Values, standard errors, examples used, exact/interpolated flags and totals: bit for bit."""
    for k, v in ref.metrics.items():
        np.testing.assert_array_equal(got[f"m_{k}"], v, err_msg=k)
    for k, v in ref.arrays.items():
        np.testing.assert_array_equal(got[f"a_{k}"], v, err_msg=k)
    assert sorted(k[2:] for k in got if k.startswith("a_")) == sorted(ref.arrays)
    np.testing.assert_array_equal(got["done"], ref.done)
    assert got["precision"] == ref.meta["precision"]
    assert got["precision"]["take_all_examples"] == 16  # the take-all stratum (min(10% of N, initial)) on every rank


def ref_plane(**kw):
    from losslab.surface import plane

    model, data, dx, dy = problem()
    return plane(model, data, dx=dx, dy=dy, **GRID, precision=precision(), points_per_chunk=4, progress=False, **kw)


@pytest.mark.slow
def test_two_rank_adaptive_plane_and_line_equal_one_process(job):
    from losslab.surface import SurfaceResult, line

    ref = ref_plane()
    kinds = ref.exact & ~ref.interpolated, ~ref.exact & ~ref.interpolated, ref.interpolated
    assert all(k.any() for k in kinds)  # exact, estimated and interpolated points
    for r in (0, 1):
        assert_same(load(job, f"plane{r}"), ref)
    saved = SurfaceResult.load(job / "plane")  # written by rank 0 alone
    assert saved.complete and saved.meta["distributed"]["world_size"] == 2
    per_rank = saved.meta["distributed"]["per_rank"]
    assert sum(p["points"] for p in per_rank) == ref.meta["precision"]["points_evaluated"]  # each point once
    assert all(p["points"] > 0 for p in per_rank)  # both ranks evaluated points
    np.testing.assert_array_equal(saved.metrics["loss"], ref.metrics["loss"])
    np.testing.assert_array_equal(saved.arrays["stderr__loss"], ref.arrays["stderr__loss"])
    model, data, dx, _ = problem()
    ref_line = line(model, data, direction=dx, **LINE, precision=precision(), points_per_chunk=3, progress=False)
    assert ref_line.interpolated.any() and (~ref_line.exact & ~ref_line.interpolated).any()
    for r in (0, 1):
        assert_same(load(job, f"line{r}"), ref_line)


@pytest.mark.slow
def test_two_rank_adaptive_max_points_then_resume(job):
    ref = ref_plane()
    g0 = load(job, "resume0")
    assert g0["first_evaluated"] == 30 and not g0["first_complete"]
    assert sum(p["points"] for p in g0["distributed"]["per_rank"]) == ref.meta["precision"]["points_evaluated"] - 30
    for r in (0, 1):
        assert_same(load(job, f"resume{r}"), ref)


@pytest.mark.slow
def test_two_rank_adaptive_worker_failure_stops_both(job):
    from losslab.surface import SurfaceResult

    f0, f1 = load(job, "fail0")["error"], load(job, "fail1")["error"]
    assert f0.startswith("DistributedError: rank 1 failed: RuntimeError: injected failure on rank 1"), f0
    assert "saved at" in f0 and "resume" in f0
    assert f1.startswith("RuntimeError: injected failure on rank 1"), f1
    part = SurfaceResult.load(job / "fail")
    assert part.n_done < part.n_points
    ref = ref_plane(metrics={"probe": probe})
    resumed = ref_plane(metrics={"probe": probe}, resume_from=job / "fail")  # the partial state resumes exactly
    for k in ref.metrics:
        np.testing.assert_array_equal(resumed.metrics[k], ref.metrics[k])
    for k in ref.arrays:
        np.testing.assert_array_equal(resumed.arrays[k], ref.arrays[k])


@pytest.mark.slow
def test_torchrun_cli_adaptive_surface_equals_single_process(job, tmp_path, capsys):
    from losslab.cli.main import main
    from losslab.surface import SurfaceResult

    c0, c1 = load(job, "cli0"), load(job, "cli1")
    assert c0["code"] == 0 and c1["code"] == 0 and c1["stdout"] == ""
    summary = json.loads(c0["stdout"])
    assert summary["world_size"] == 2 and summary["done"] == 81
    assert main(["surface", str(job / "model.pt"), *CLI_FLAGS, "--out", str(tmp_path / "ref")]) == 0
    ref_summary = json.loads(capsys.readouterr().out)
    ref, got = SurfaceResult.load(tmp_path / "ref" / "surface"), SurfaceResult.load(job / "cli" / "surface")
    assert ref.meta["precision"]["example_evaluations"] < ref.meta["precision"]["exact_equivalent"]
    for k in ref.metrics:
        np.testing.assert_array_equal(got.metrics[k], ref.metrics[k])
    for k in ref.arrays:
        np.testing.assert_array_equal(got.arrays[k], ref.arrays[k])
    assert summary["precision"] == ref_summary["precision"]


if __name__ == "__main__":  # worker: python tests/test_distributed_adaptive.py OUTDIR (under run_local)
    sys.exit(worker_main(Path(sys.argv[1])))
