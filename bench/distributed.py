"""Benchmark: a 2-D loss surface on 2 ranks x 1 thread vs 1 rank x 1 thread (grid points per second).

The case is compute-bound: the MNIST-1D MLP 40-512-512-10 on its 4000 training examples (about
2.3 GFLOP per grid point), zoo init with seed 0, filter-normalized ``random_plane`` directions, an
``N x N`` grid. Each measurement is a fresh group of processes launched with
:func:`losslab.distributed.run_local` (``torchrun``'s environment, gloo, ``OMP_NUM_THREADS=1``,
``LOSSLAB_THREADS=1``):

* ``ranks_1``: one process (no process group: :func:`losslab.distributed.distributed_plane` is then
  exactly :func:`losslab.surface.plane`);
* ``ranks_2``: two processes sharing the grid dynamically.

In every process the model, data and directions are built first, then all ranks meet at a barrier
(a store barrier) and the timed region is one ``distributed_plane`` call (setup, dynamic sharing,
merging on rank 0, publishing the result), measured on rank 0 in wall-clock and process-CPU time.
Process start-up (importing torch) is reported separately (``launch_s``), not counted. Runs alternate
1, 2, 1, 2, ... so machine load hits both alike; numbers are medians over repeats. The 2-rank result
is checked against the 1-rank one (``max_abs_loss_diff``).

Target (reported, never asserted): ``speedup`` = points/s (2 ranks) / points/s (1 rank) >= 1.7.
On a shared machine (load average above the core count) wall-clock numbers are noisy (two
processes can even get more than twice one process's share of the CPUs): read
``machine.load_average_start``/``load_average_end`` and rerun when the machine is quieter. Two
load-independent companions: ``speedup_cpu_estimate`` = CPU seconds of the 1-rank run / CPU seconds
of the busier rank of the 2-rank run (the wall-clock speedup with a core per process: it includes
load imbalance and the per-rank overhead, not waiting) and ``cpu_overhead_2_ranks`` = total CPU
seconds of both ranks / those of 1 rank (1.0 = sharding costs nothing).

Usage::

    .venv/bin/python bench/distributed.py                  # 10 x 10 grid, 2 repeats (~1-2 min idle)
    .venv/bin/python bench/distributed.py --strategy auto --points-per-chunk 4   # auto strategy, small blocks
    .venv/bin/python bench/distributed.py --grid 6 --repeats 1 --out distributed.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

HERE = Path(__file__).resolve()
TARGET = 1.7


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", type=int, default=10, help="grid side N (N x N points; default 10)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per configuration (default 2)")
    p.add_argument("--width", type=int, default=512, help="MLP width (default 512)")
    p.add_argument("--strategy", choices=("auto", "loop", "vmap"), default="loop",
                   help="evaluator strategy (default loop: auto would add its one-off timing to every rank)")
    p.add_argument("--points-per-chunk", type=int, default=0,
                   help="block size (default 0 = the library's automatic choice: the memory-derived chunk "
                        "for 1 rank, about 4 blocks per rank for 2)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per launch (default 900)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: result file of a rank
    return p.parse_args(argv)


# ---- one process of a measurement ---------------------------------------------------------------------


def worker(args: argparse.Namespace) -> int:
    import numpy as np
    import torch.distributed as dist

    from losslab import data, models
    from losslab.directions import random_plane
    from losslab.distributed import distributed_plane, init_distributed, shutdown

    ctx = init_distributed(timeout=args.timeout)
    bundle = data.load("mnist1d")
    model = models.build("mlp", input_shape=bundle.input_shape, num_classes=bundle.num_classes, seed=0,
                         width=args.width, depth=2).eval()
    dx, dy = random_plane(model, seed=0)
    coords = np.linspace(-1.0, 1.0, args.grid)
    kw: dict[str, Any] = {"strategy": args.strategy}  # (--points-per-chunk 0: automatic)
    if args.points_per_chunk:
        kw["points_per_chunk"] = args.points_per_chunk
    if ctx.distributed:
        dist.barrier()  # everyone built its inputs: start the clock together
    c0, w0 = time.process_time(), time.perf_counter()
    res = distributed_plane(model, (bundle.train.x, bundle.train.y), dx=dx, dy=dy, x=coords, y=coords,
                            progress=False, **kw)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    if not ctx.is_root:
        Path(f"{args.worker}.rank{ctx.rank}").write_text(json.dumps({"cpu_s": cpu, "wall_s": wall}))
    if ctx.is_root:
        out = {
            "world_size": ctx.world_size, "points": int(res.n_done), "wall_s": wall, "cpu_s_rank0": cpu,
            "points_per_s": res.n_done / wall, "strategy": res.meta["evaluator"]["strategy"],
            "points_per_chunk": res.meta["evaluator"]["points_per_chunk"],
            "per_rank": res.meta.get("distributed", {}).get("per_rank"),
            "loss": res.metrics["loss"].tolist(),
        }
        Path(args.worker).write_text(json.dumps(out))
    shutdown(ctx)
    return 0


# ---- driver ---------------------------------------------------------------------------------------------


def measure(ranks: int, args: argparse.Namespace, tmp: Path, i: int) -> dict[str, Any]:
    from losslab.distributed import run_local

    result = tmp / f"r{ranks}-{i}.json"
    argv = [str(HERE), "--worker", str(result), "--grid", str(args.grid), "--width", str(args.width),
            "--strategy", args.strategy, "--timeout", str(args.timeout)]
    if args.points_per_chunk:
        argv += ["--points-per-chunk", str(args.points_per_chunk)]
    t0 = time.perf_counter()
    procs = run_local(argv, ranks, timeout=args.timeout, env={"LOSSLAB_THREADS": "1", "OMP_NUM_THREADS": "1"})
    total = time.perf_counter() - t0
    for r, p in enumerate(procs):
        if p.returncode != 0:
            raise SystemExit(f"rank {r} of {ranks} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    out = json.loads(result.read_text())
    out["launch_s"] = total - out["wall_s"]  # start-up + teardown, not counted
    out["cpu_s_per_rank"] = [out["cpu_s_rank0"]] + [
        json.loads(Path(f"{result}.rank{r}").read_text())["cpu_s"] for r in range(1, ranks)]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    import numpy as np

    C.set_threads(1)  # as the measured processes (LOSSLAB_THREADS=1)
    machine = C.machine_info()
    # generate MNIST-1D once (cached) so no measured process pays for it
    from losslab import data

    data.load("mnist1d")
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.repeats):
            for ranks in (1, 2):
                C.log(f"repeat {i + 1}/{args.repeats}: {ranks} rank(s), {args.grid}x{args.grid} grid")
                runs[ranks].append(measure(ranks, args, Path(d), i))
                C.log(f"  {runs[ranks][-1]['points_per_s']:.2f} points/s (load {C.load_average()})")
    pps = {r: C.median(x["points_per_s"] for x in runs[r]) for r in runs}
    loss1, loss2 = np.asarray(runs[1][0]["loss"]), np.asarray(runs[2][0]["loss"])
    speedup = C.ratio(pps[2], pps[1])
    # what the wall-clock speedup would be with a core per process: CPU seconds of the critical path
    cpu1 = C.median(x["cpu_s_per_rank"][0] for x in runs[1])
    cpu2_max = C.median(max(x["cpu_s_per_rank"]) for x in runs[2])
    cpu2_sum = C.median(sum(x["cpu_s_per_rank"]) for x in runs[2])
    result = {
        "benchmark": "distributed_surface",
        "case": {"dataset": "mnist1d", "n_examples": 4000, "model": f"mlp 40-{args.width}-{args.width}-10",
                 "grid": [args.grid, args.grid], "strategy": args.strategy,
                 "points_per_chunk": {r: runs[r][0]["points_per_chunk"] for r in runs}},
        "machine": {**machine, "load_average_end": C.load_average()},
        "ranks_1": {"points_per_s": pps[1], "runs": [_brief(x) for x in runs[1]]},
        "ranks_2": {"points_per_s": pps[2], "runs": [_brief(x) for x in runs[2]]},
        "speedup": speedup,
        "speedup_cpu_estimate": C.ratio(cpu1, cpu2_max),
        "cpu_overhead_2_ranks": C.ratio(cpu2_sum, cpu1),
        "check": {"max_abs_loss_diff": float(np.nanmax(np.abs(loss1 - loss2)))},
        "targets": {"speedup_ge_1.7": bool(speedup is not None and speedup >= TARGET)},
    }
    C.emit(C.rounded(result), args.out)
    return 0


def _brief(run: dict[str, Any]) -> dict[str, Any]:
    out = {k: run[k] for k in ("wall_s", "cpu_s_per_rank", "points_per_s", "launch_s", "strategy")}
    if run.get("per_rank"):
        out["per_rank"] = [{k: p.get(k) for k in ("rank", "blocks", "points", "busy_s", "recomputed_points")}
                           for p in run["per_rank"]]
    return out


if __name__ == "__main__":
    sys.exit(main())
