"""Scale out: sharded surfaces, data-parallel curvature and parallel sweeps over ``torch.distributed``.

Launch one process per core (CPU, ``gloo``) or per GPU (NCCL) with ``torchrun``; every process runs
the same script, calls :func:`init_distributed` and then the same losslab calls:

* :func:`distributed_plane` / :func:`distributed_line`: the arguments of
  :func:`losslab.surface.plane` / ``line``; grid blocks are handed out dynamically (an atomic counter
  in the job's c10d store), rank 0 merges, checkpoints (alone, atomically) and resumes; the values
  equal the single-process surface's. With ``precision=`` (adaptive precision) each wave's points
  are handed out the same way and the result is bit for bit the single-process adaptive surface.
* :class:`DistributedOperator`: wraps a curvature operator built on this rank's :func:`shard` of the
  data; products are size-weighted all-reduces, so :func:`~losslab.curvature.lanczos_eigs`,
  :func:`~losslab.curvature.hutchinson_trace` and :func:`~losslab.curvature.slq_density` run
  unchanged on every rank. :class:`DistributedEvaluator` does the same for loss/accuracy.
* :func:`run_sweep`: independent jobs over ranks (dynamic or static) or, without torch.distributed,
  over local processes with one torch thread each.
* ``torchrun --nproc_per_node N -m losslab.distributed surface RUN_DIR ...``: the ``losslab surface``
  command, sharded (its command line is :mod:`losslab.cli.distributed`). See ``docs/distributed.md``.

Without a process group (or with one rank) everything falls back to the single-process code, so the
same script runs with and without ``torchrun``.

Example (``torchrun --standalone --nproc_per_node 2 script.py``)::

    from losslab.distributed import init_distributed, distributed_plane, shutdown
    ctx = init_distributed()                      # gloo on CPU, NCCL (+gloo) on CUDA
    res = distributed_plane(model, data, dx=dx, dy=dy, nx=51, ny=51, device=ctx.device,
                            checkpoint_path="surface", resume_from="surface")
    shutdown(ctx)
"""
from __future__ import annotations

from ._operator import DistributedEvaluator, DistributedOperator, shard, shard_bounds
from ._runtime import (
    DEFAULT_TIMEOUT,
    DistContext,
    DistributedError,
    all_reduce_sum,
    choose_backend,
    current_context,
    free_port,
    init_distributed,
    run_local,
    shutdown,
)
from ._surface import distributed_line, distributed_plane
from ._sweep import TaskFailure, run_sweep

__all__ = [
    "DEFAULT_TIMEOUT",
    "DistContext",
    "DistributedError",
    "DistributedEvaluator",
    "DistributedOperator",
    "TaskFailure",
    "all_reduce_sum",
    "choose_backend",
    "current_context",
    "distributed_line",
    "distributed_plane",
    "free_port",
    "init_distributed",
    "run_local",
    "run_sweep",
    "shard",
    "shard_bounds",
    "shutdown",
]
