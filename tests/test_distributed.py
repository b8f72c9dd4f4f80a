"""losslab.distributed: sharded surfaces, data-parallel curvature, sweeps and the torchrun CLI.

The multi-process tests start 2 CPU processes (gloo) on a free localhost port: this file doubles as
the worker script (``python tests/test_distributed.py SCENARIO OUTDIR``, run under the environment
``torchrun`` sets), and the CLI test runs ``python -m torch.distributed.run``. References are
single-process float64 results computed in the test process.
"""
from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

HERE = Path(__file__).resolve()
LAUNCH_TIMEOUT = 150  # seconds for one 2-process launch (the machine may be loaded)
N_EX, SIZES = 25, [7, 18]  # examples, uneven data shards of the 2 ranks
GRID = dict(nx=7, ny=5, x_span=(-1.0, 1.5), y_span=(-0.5, 1.0))


# ---- the shared tiny problem (built identically in every process) ------------------------------------


def problem():
    from losslab import models, params

    model = models.build("mlp", input_shape=(4,), num_classes=3, seed=0, width=8, depth=1).double().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_EX, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (N_EX,), generator=g)
    w = params.get_point(model)
    dx = params.randn_like(w, generator=g)
    dy = params.randn_like(w, generator=g)
    end = params.add(w, params.scale(params.randn_like(w, generator=g), 0.5))
    return model, (x, y), dx, dy, end


def probe_metric(out, y):
    """A harmless extra metric (every rank must have the same metric names)."""
    return out.abs().mean()


# ---- worker side -----------------------------------------------------------------------------------------


def _save(out: Path, name: str, obj) -> None:
    (out / f"{name}.json").write_text(json.dumps(obj))


def worker_main(out: Path) -> int:
    """One 2-rank job runs every scenario (process start-up dominates the cost of these tests)."""
    from losslab import distributed as D

    ctx = D.init_distributed(timeout=60)
    assert ctx.world_size == 2 and ctx.backend == "gloo", ctx
    try:
        _scenario_main(ctx, out)
        _stage("cli")
        _scenario_cli(ctx, out)
        _stage("fail")
        _scenario_fail(ctx, out)
        _stage("end")
        return 0
    finally:
        D.shutdown(ctx)


def _stage(name: str) -> None:
    """A timestamped progress line on the worker's stderr (shown when a launch fails)."""
    import time

    print(f"[{time.strftime('%H:%M:%S')}] {time.perf_counter():.2f} {name}", file=sys.stderr, flush=True)


def _scenario_main(ctx, out: Path) -> int:
    from losslab import distributed as D
    from losslab.curvature import (
        GGNOperator,
        GradientCovarianceOperator,
        HessianOperator,
        hutchinson_trace,
        lanczos_eigs,
        slq_density,
    )
    from losslab.evaluate import Evaluator

    _stage("plane")
    model, data, dx, dy, end = problem()
    r = ctx.rank
    # 1. a 2-rank plane (strategy auto: rank 0 times it on block 0, the worker adopts its choice)
    res = D.distributed_plane(model, data, dx=dx, dy=dy, **GRID, points_per_chunk=4, progress=False,
                              checkpoint_path=out / "plane")
    _save(out, f"plane_rank{r}", {"loss": res.metrics["loss"].tolist(), "acc": res.metrics["accuracy"].tolist(),
                                  "done": int(res.n_done), "distributed": res.meta["distributed"]})
    _stage("line")
    # 2. a 2-rank interpolation line
    res = D.distributed_line(model, data, start=model, end=end, span=(-0.5, 1.5), num=9, points_per_chunk=2,
                             progress=False)
    _save(out, f"line_rank{r}", {"loss": res.metrics["loss"].tolist()})
    _stage("given evaluator")
    # 2b. a caller's evaluator (strategy auto) is used and left as it was: the settled strategy goes to a copy
    given = Evaluator(model, data)

    def state():
        return [given.strategy, given.points_per_chunk, json.dumps(given.info, sort_keys=True, default=str)]

    before = state()
    res = D.distributed_plane(model, None, dx=dx, dy=dy, **GRID, evaluator=given, progress=False)
    _save(out, f"given_rank{r}", {"before": before, "after": state(), "loss": res.metrics["loss"].tolist(),
                                  "strategy": res.meta["evaluator"]["strategy"]})
    _stage("max_points")
    # 3. stopped by max_points, then resumed (rank 0 alone reads and writes the checkpoint)
    kw = dict(**GRID, points_per_chunk=4, progress=False, checkpoint_path=out / "part", resume_from=out / "part",
              strategy="vmap")
    first = D.distributed_plane(model, data, dx=dx, dy=dy, max_points=10, **kw)
    second = D.distributed_plane(model, data, dx=dx, dy=dy, **kw)
    _save(out, f"resume_rank{r}", {"first_done": int(first.n_done), "second_done": int(second.n_done),
                                   "loss": second.metrics["loss"].tolist(),
                                   "points": [p.get("points") for p in second.meta["distributed"]["per_rank"]]})
    _stage("callback")
    # 4. a callback raising on rank 0 stops every rank; the rerun resumes to the same result
    calls = []

    def stop_after_two(partial):
        calls.append(partial.n_done)
        if len(calls) == 2:
            raise KeyboardInterrupt("stop requested by the callback")

    kw = dict(**GRID, points_per_chunk=3, progress=False, checkpoint_path=out / "cb", resume_from=out / "cb",
              strategy="loop")
    err = None
    try:
        D.distributed_plane(model, data, dx=dx, dy=dy, callback=stop_after_two if r == 0 else None, **kw)
    except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt on rank 0, DistributedError on rank 1
        err = f"{type(e).__name__}: {e}"
    from losslab.surface import SurfaceResult

    saved = SurfaceResult.load(out / "cb").n_done if r == 0 else None
    again = D.distributed_plane(model, data, dx=dx, dy=dy, **kw)
    _save(out, f"callback_rank{r}", {"error": err, "saved_done": saved, "final_done": int(again.n_done),
                                     "loss": again.metrics["loss"].tolist()})
    _stage("data parallel")
    # 5. data parallel: uneven shards, Hessian/GGN/covariance products, Lanczos, Hutchinson, SLQ, loss, grad
    local = D.shard(data, sizes=SIZES)
    loss_fn = nn.CrossEntropyLoss()
    H = D.DistributedOperator(HessianOperator(model, local, loss=loss_fn, batch_size=5))
    n = H.shape[0]
    V = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    eig = lanczos_eigs(H, k=2, seed=0)
    tr = hutchinson_trace(H, num_probes=4, seed=0)
    slq = slq_density(H, num_probes=1, lanczos_steps=6, seed=0)
    G = D.DistributedOperator(GGNOperator(model, local, loss=loss_fn))
    C = D.DistributedOperator(GradientCovarianceOperator(model, local, loss=loss_fn))
    ev = D.DistributedEvaluator(Evaluator(model, local, strategy="loop"))
    _save(out, f"dp_rank{r}", {
        "shard_sizes": H.shard_sizes, "Hv": (H @ V).tolist(), "Gv": (G @ V[:, 0]).tolist(),
        "Cv": (C @ V[:, 1]).tolist(), "eig": eig.eigenvalues.tolist(), "eig_matvecs": eig.num_matvecs,
        "trace": float(tr.trace), "slq_nodes": np.asarray(slq.nodes).reshape(-1).tolist(),
        "loss": H.loss(), "grad": H.gradient(as_dict=False).tolist(), "eval": ev.evaluate({}),
        "dict_ok": sorted(H @ H.unflatten(V[:, 2])) == sorted(H.names),
    })
    _stage("sweeps")
    # 6. sweeps, dynamic and static
    dyn = D.run_sweep(list(range(9)), _sweep_task)
    sta = D.run_sweep(list(range(5)), _sweep_task, schedule="static", broadcast=True)
    _save(out, f"sweep_rank{r}", {"dynamic": dyn, "static": sta})
    return 0


def _sweep_task(t):
    from losslab.distributed import current_context

    return [t * t, current_context().rank]


CLI_FLAGS = ["--model", "mlp", "--model-kwargs", "width=16", "depth=1", "--dataset", "digits", "--grid", "5", "4",
             "--points-per-chunk", "3", "--json", "--no-progress"]


def run_cli_module(argv: list[str]) -> tuple[object, str]:
    """``python -m losslab.distributed <argv>`` run in this process (exactly the ``-m`` module):
    ``(exit code or None, stdout)``."""
    import contextlib
    import io
    import runpy

    saved, buf, code = sys.argv, io.StringIO(), None
    sys.argv = ["losslab.distributed", *argv]
    try:
        with contextlib.redirect_stdout(buf):
            runpy.run_module("losslab.distributed", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = saved
    return code, buf.getvalue()


def _scenario_cli(ctx, out: Path) -> None:
    """``python -m losslab.distributed surface ...`` run in-process on each rank."""
    code, stdout = run_cli_module(["surface", str(out / "model.pt"), *CLI_FLAGS, "--out", str(out / "cli")])
    _save(out, f"cli_rank{ctx.rank}", {"code": code, "stdout": stdout})


def _scenario_fail(ctx, out: Path) -> None:
    """Rank 1 raises during its second block; then (second run) rank 1 hangs and rank 0 times out."""
    import time

    from losslab import distributed as D

    model, data, dx, dy, _ = problem()
    r = ctx.rank
    calls = [0]

    def flaky(o, t):  # rank 0 is slowed down so that rank 1 surely claims a block, where it fails
        calls[0] += 1
        if r == 1:
            raise RuntimeError("injected failure on rank 1")
        time.sleep(0.02)
        return o.abs().mean()

    kw = dict(**GRID, points_per_chunk=4, progress=False, strategy="loop", checkpoint_path=out / "fail",
              resume_from=out / "fail", metrics={"probe": flaky})
    report = {}
    try:
        D.distributed_plane(model, data, dx=dx, dy=dy, **kw)
        report["raised"] = None
    except Exception as e:  # noqa: BLE001
        report["raised"] = f"{type(e).__name__}: {e}"
    hung = [0]

    def hangs(o, t):
        hung[0] += 1
        if r == 1 and hung[0] == 1:  # a silent rank (stuck, or dead: torchrun would then stop the job)
            time.sleep(5)
        if r == 0:
            time.sleep(0.02)
        return o.abs().mean()

    kw.update(metrics={"probe": hangs}, checkpoint_path=out / "hang", resume_from=out / "hang", timeout=2.5)
    try:
        D.distributed_plane(model, data, dx=dx, dy=dy, **kw)
        report["hang"] = None
    except Exception as e:  # noqa: BLE001
        report["hang"] = f"{type(e).__name__}: {e}"
    _save(out, f"fail_rank{r}", report)


# ---- test side -------------------------------------------------------------------------------------------


def launch(out: Path) -> subprocess.CompletedProcess:
    """Run this file as a 2-rank job under ``python -m torch.distributed.run`` (torchrun)."""
    env = {**os.environ, "LOSSLAB_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(HERE), str(out)], capture_output=True, text=True, env=env, timeout=LAUNCH_TIMEOUT)
    assert p.returncode == 0, f"torchrun exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return p


def load(out: Path, name: str):
    return json.loads((out / f"{name}.json").read_text())


def reference_plane(**kw):
    from losslab.surface import plane

    model, data, dx, dy, _ = problem()
    return plane(model, data, dx=dx, dy=dy, **GRID, progress=False, **kw)


@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
    from losslab import models

    out = tmp_path_factory.mktemp("dist")
    model = models.build("mlp", input_shape=(1, 8, 8), num_classes=10, seed=0, width=16, depth=1)
    torch.save(model.state_dict(), out / "model.pt")  # a bare checkpoint for the CLI scenario
    launch(out)
    return out


@pytest.mark.slow
def test_two_rank_plane_equals_one_rank(main_run):
    from losslab.surface import SurfaceResult

    ref = reference_plane(points_per_chunk=4)
    for r in (0, 1):  # every rank returns the full result
        got = load(main_run, f"plane_rank{r}")
        np.testing.assert_allclose(got["loss"], ref.metrics["loss"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(got["acc"], ref.metrics["accuracy"], rtol=0, atol=1e-12)
        assert got["done"] == 35
    saved = SurfaceResult.load(main_run / "plane")  # written by rank 0 alone
    assert saved.complete and saved.meta["distributed"]["world_size"] == 2
    np.testing.assert_allclose(saved.metrics["loss"], ref.metrics["loss"], rtol=0, atol=1e-6)
    per_rank = saved.meta["distributed"]["per_rank"]
    assert sum(p["points"] for p in per_rank) == 35 and per_rank[0]["points"] >= 4  # each point once
    assert len({p["strategy"] for p in per_rank}) == 1  # the worker adopted rank 0's auto choice


@pytest.mark.slow
def test_two_rank_line_equals_one_rank(main_run):
    from losslab.surface import line

    model, data, _, _, end = problem()
    ref = line(model, data, start=model, end=end, span=(-0.5, 1.5), num=9, points_per_chunk=2, progress=False)
    for r in (0, 1):
        np.testing.assert_allclose(load(main_run, f"line_rank{r}")["loss"], ref.metrics["loss"], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_given_evaluator_is_not_modified(main_run):
    ref = reference_plane()
    for r in (0, 1):
        got = load(main_run, f"given_rank{r}")
        assert got["after"] == got["before"] and got["before"][0] is None  # still "auto", info unchanged
        assert got["strategy"] in ("loop", "vmap")
        np.testing.assert_allclose(got["loss"], ref.metrics["loss"], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_max_points_then_resume(main_run):
    ref = reference_plane(points_per_chunk=4, strategy="vmap")
    got = load(main_run, "resume_rank0")
    assert got["first_done"] == 10 and got["second_done"] == 35
    assert sum(got["points"]) == 25  # the rerun evaluated only what was missing
    np.testing.assert_allclose(got["loss"], ref.metrics["loss"], rtol=0, atol=1e-6)
    assert load(main_run, "resume_rank1")["loss"] == got["loss"]


@pytest.mark.slow
def test_callback_raising_on_rank0_stops_all_and_resumes(main_run):
    ref = reference_plane(points_per_chunk=3, strategy="loop")
    g0, g1 = load(main_run, "callback_rank0"), load(main_run, "callback_rank1")
    assert g0["error"].startswith("KeyboardInterrupt")
    assert g1["error"].startswith("DistributedError") and "rank 0 raised KeyboardInterrupt" in g1["error"]
    assert 3 <= g0["saved_done"] < 35
    assert g0["final_done"] == g1["final_done"] == 35
    np.testing.assert_allclose(g0["loss"], ref.metrics["loss"], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_data_parallel_operators_equal_single_process(main_run):
    from losslab.curvature import (
        GGNOperator,
        GradientCovarianceOperator,
        HessianOperator,
        hutchinson_trace,
        lanczos_eigs,
        slq_density,
    )
    from losslab.evaluate import Evaluator

    model, data, _, _, _ = problem()
    loss_fn = nn.CrossEntropyLoss()
    H = HessianOperator(model, data, loss=loss_fn, batch_size=5)
    n = H.shape[0]
    V = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    dense = torch.autograd.functional.hessian(
        lambda f: loss_fn(torch.func.functional_call(model, H.unflatten(f), data[0]), data[1]), H.flatten(H.point))
    eig = lanczos_eigs(H, k=2, seed=0)
    ev = Evaluator(model, data, strategy="loop").evaluate({})
    got = [load(main_run, f"dp_rank{r}") for r in (0, 1)]
    for g in got:
        assert g["shard_sizes"] == SIZES
        np.testing.assert_allclose(g["Hv"], (H @ V).numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g["Hv"], (dense @ V).numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(g["Gv"], (GGNOperator(model, data, loss=loss_fn) @ V[:, 0]).numpy(), rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(g["Cv"], (GradientCovarianceOperator(model, data, loss=loss_fn) @ V[:, 1]).numpy(),
                                   rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(g["eig"], eig.eigenvalues.numpy(), rtol=1e-9)
        assert g["eig_matvecs"] == eig.num_matvecs
        assert g["trace"] == pytest.approx(float(hutchinson_trace(H, num_probes=4, seed=0).trace), rel=1e-9)
        slq = slq_density(H, num_probes=1, lanczos_steps=6, seed=0)
        np.testing.assert_allclose(g["slq_nodes"], np.asarray(slq.nodes).reshape(-1), rtol=1e-7, atol=1e-9)
        assert g["loss"] == pytest.approx(H.loss(), rel=1e-12)
        np.testing.assert_allclose(g["grad"], H.gradient(as_dict=False).numpy(), rtol=1e-10, atol=1e-13)
        for k in ev:
            assert g["eval"][k] == pytest.approx(ev[k], rel=1e-12, abs=1e-14)
        assert g["dict_ok"]
    assert got[0]["eig"] == got[1]["eig"]  # identical on both ranks (same reduced products)


@pytest.mark.slow
def test_sweeps_over_ranks(main_run):
    g0, g1 = load(main_run, "sweep_rank0"), load(main_run, "sweep_rank1")
    assert [v[0] for v in g0["dynamic"]] == [t * t for t in range(9)]
    assert g1["dynamic"] is None  # results are gathered on rank 0
    assert g0["static"] == g1["static"] == [[t * t, t % 2] for t in range(5)]  # round-robin, broadcast


@pytest.mark.slow
def test_rank_failure_keeps_partial_and_reports(main_run):
    from losslab.surface import SurfaceResult, plane

    f0, f1 = load(main_run, "fail_rank0"), load(main_run, "fail_rank1")
    assert f0["raised"].startswith("DistributedError: rank 1 failed: RuntimeError: injected failure on rank 1")
    assert "saved at" in f0["raised"] and "resume" in f0["raised"]
    assert f1["raised"].startswith("RuntimeError: injected failure")  # the failing rank raises its own error
    assert f0["hang"].startswith("DistributedError: no message from rank(s) [1] within 2.5 s")
    assert f1["hang"].startswith("DistributedError: stopped because no message from rank(s) [1]")
    model, data, dx, dy, _ = problem()
    kw = dict(**GRID, points_per_chunk=4, progress=False, strategy="loop", metrics={"probe": probe_metric})
    ref = plane(model, data, dx=dx, dy=dy, **kw)
    for name in ("fail", "hang"):
        part = SurfaceResult.load(main_run / name)
        assert 4 <= part.n_done < part.n_points
        np.testing.assert_allclose(part.metrics["loss"][part.done], ref.metrics["loss"][part.done], atol=1e-6, rtol=0)
        resumed = plane(model, data, dx=dx, dy=dy, resume_from=main_run / name, **kw)  # loadable, resumable
        assert resumed.meta["timing"]["points_evaluated"] == part.n_points
        np.testing.assert_allclose(resumed.metrics["loss"], ref.metrics["loss"], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_torchrun_cli_surface_equals_single_process(main_run, tmp_path, capsys):
    from losslab.cli.main import main
    from losslab.surface import SurfaceResult

    c0, c1 = load(main_run, "cli_rank0"), load(main_run, "cli_rank1")
    assert c0["code"] == 0 and c1["code"] == 0 and c1["stdout"] == ""  # rank 0 alone prints
    summary = json.loads(c0["stdout"])
    assert summary["world_size"] == 2 and summary["done"] == 20 and sum(summary["points_per_rank"]) == 20
    assert main(["surface", str(main_run / "model.pt"), *CLI_FLAGS, "--out", str(tmp_path / "ref")]) == 0
    ref_summary = json.loads(capsys.readouterr().out)
    ref, got = SurfaceResult.load(tmp_path / "ref" / "surface"), SurfaceResult.load(main_run / "cli" / "surface")
    np.testing.assert_allclose(got.metrics["loss"], ref.metrics["loss"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got.x, ref.x)
    np.testing.assert_array_equal(got.y, ref.y)
    assert summary["loss_min"] == pytest.approx(ref_summary["loss_min"], abs=1e-6)
    assert sorted(p.name for p in (main_run / "cli").glob("direction*")) == sorted(
        p.name for p in (tmp_path / "ref").glob("direction*"))


# ---- single-process behaviour (no process group) ---------------------------------------------------------


def test_single_process_fallbacks_equal_plain_calls():
    from losslab import distributed as D
    from losslab.curvature import HessianOperator, lanczos_eigs

    assert not D.current_context().distributed
    ref = reference_plane(points_per_chunk=4)
    model, data, dx, dy, _ = problem()
    got = D.distributed_plane(model, data, dx=dx, dy=dy, **GRID, points_per_chunk=4, progress=False)
    np.testing.assert_array_equal(got.metrics["loss"], ref.metrics["loss"])
    H = HessianOperator(model, data, loss=nn.CrossEntropyLoss())
    W = D.DistributedOperator(HessianOperator(model, D.shard(data), loss=nn.CrossEntropyLoss()))
    assert W.shard_sizes == [N_EX] and W.weight == 1.0
    torch.testing.assert_close(W.to_dense(), H.to_dense())
    assert float(lanczos_eigs(W, k=1, seed=0).eigenvalues[0]) == pytest.approx(
        float(lanczos_eigs(H, k=1, seed=0).eigenvalues[0]), rel=1e-12)


def test_signatures_are_those_of_plane_and_line_plus_timeout():
    import inspect

    from losslab import distributed as D
    from losslab import surface as S

    for dist, fn in ((D.distributed_plane, S.plane), (D.distributed_line, S.line)):
        got, ref = inspect.signature(dist).parameters, inspect.signature(fn).parameters
        assert list(got) == list(ref)[:-1] + ["timeout", "evaluator_kwargs"]
        assert all(got[k].default == ref[k].default for k in ref)
    model, data, dx, dy, _ = problem()
    with pytest.raises(TypeError, match="dy"):  # checked against plane's signature before anything runs
        D._surface._split("plane", model, data, {"dx": dx})
    geom, opts, ev_kw = D._surface._split("plane", model, data, {"dx": dx, "dy": dy, "nx": 3, "max_points": 2,
                                                                 "strategy": "loop"})
    assert sorted(geom) == ["dx", "dy", "nx"] and ev_kw == {"strategy": "loop"}
    assert opts["max_points"] == 2 and opts["progress"] is True and opts["checkpoint_every"] == 1


def test_shards():
    from losslab.distributed import shard, shard_bounds
    from losslab.errors import LosslabError

    assert shard_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    x, y = torch.arange(10.0), torch.arange(10)
    parts = [shard((x, y), sizes=[3, 0, 7], rank=r, world_size=3) for r in (0, 2)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    with pytest.raises(LosslabError, match="sum to 10"):
        shard_bounds(10, 2, sizes=[3, 3])
    with pytest.raises(LosslabError, match="empty"):
        shard((x, y), sizes=[10, 0], rank=1, world_size=2)


def _square_or_fail(t):
    if t == 3:
        raise ValueError("three is bad")
    return t * t, torch.get_num_threads()


def test_sweep_processes_and_errors():
    from losslab.distributed import DistributedError, TaskFailure, run_sweep

    # fork: no second torch import in the workers (start-up dominates this test); the default is spawn
    out = run_sweep([0, 1, 2, 4], _square_or_fail, mode="processes", max_workers=2, mp_context="fork")
    assert out == [(0, 1), (1, 1), (4, 1), (16, 1)]  # one torch thread per worker process
    res = run_sweep([2, 3], _square_or_fail, mode="serial", on_error="return")
    assert res[0] == (4, torch.get_num_threads()) and isinstance(res[1], TaskFailure)
    assert res[1].index == 1 and res[1].error == "ValueError: three is bad"
    with pytest.raises(DistributedError, match="task 1 failed: ValueError: three is bad"):
        run_sweep([2, 3], _square_or_fail, mode="serial")


def test_doctests():
    import losslab.distributed._operator as op
    import losslab.distributed._surface as su
    import losslab.distributed._sweep as sw

    for mod in (op, su, sw):
        assert doctest.testmod(mod, optionflags=doctest.ELLIPSIS).failed == 0, mod.__name__


if __name__ == "__main__":  # worker: torchrun --nproc_per_node 2 tests/test_distributed.py OUTDIR
    sys.exit(worker_main(Path(sys.argv[1])))
