"""Adaptive-precision surfaces over the ranks: the waves of :mod:`losslab.precision` shared dynamically.

:func:`losslab.distributed.distributed_plane`/``distributed_line`` with ``precision=`` come here
after the common setup (rank 0 reads ``resume_from``; every rank builds its evaluator; the inputs
are compared across ranks). Every rank then calls :func:`losslab.surface.plane`/``line`` itself
with :data:`losslab._adaptive_surface.WAVE_DRIVER` set to a :class:`WaveSharing`, so the points, the
resumption and the result are the single-process code, and each rank keeps a replica of the
:class:`~losslab.precision.AdaptiveGrid`. Per wave:

1. every rank computes the same :meth:`~losslab.precision.AdaptiveGrid.plan` (a pure function of
   the replicated state) and cuts its first points (as many as ``max_points`` leaves, the points a
   single process would take) into the same blocks, about :data:`BLOCKS_PER_RANK` per rank;
2. the blocks are claimed through the wave's atomic counter; a rank computes a claimed block's rows
   (:meth:`~losslab.precision.AdaptiveGrid.compute`: estimates, standard errors, examples used,
   exact flags and, for lattice points, the per-example reference values) without changing its
   replica, and workers send them to rank 0;
3. rank 0 applies each block as it arrives (progress bar, checkpoint every ``checkpoint_every``
   blocks, ``callback``: the single-process bookkeeping), then publishes the wave's rows in
   flat-index order, and every other rank applies them: the replicas agree again.

When :meth:`~losslab.precision.AdaptiveGrid.plan` is empty (or the budget spent) rank 0 finishes the
grid (interpolation), saves and publishes the result to every rank. Points of one wave are
independent and each point's per-example values do not depend on the rank (the batch size and
dtype are checked equal), so the result is bit for bit the single-process adaptive surface's.
Failures stop every rank as on the exact path: a worker's exception reaches rank 0, which saves what
it merged, publishes ``abort`` and raises :class:`~losslab.distributed.DistributedError`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .._adaptive_surface import WAVE_DRIVER, planned_waves
from ..precision import AdaptiveGrid
from ._runtime import DistContext, DistributedError, _collect, _error_text, _Job, _WorkerFailed

__all__ = ["WaveSharing", "BLOCKS_PER_RANK", "run_sharded"]

#: Each wave is cut into about this many blocks per rank (at most the evaluator's ``points_per_chunk``).
BLOCKS_PER_RANK = 4


def waves(grid: AdaptiveGrid, budget: int, block: int, world: int) -> Iterator[list[list[int]]]:
    """The blocks (:func:`wave_blocks`) of each wave of :func:`~losslab._adaptive_surface.planned_waves`:
    the waves a single process evaluates, so both take the same points."""
    return (wave_blocks(todo, block, world) for todo in planned_waves(grid, budget))


def wave_blocks(todo: list[int], block: int, world: int) -> list[list[int]]:
    """``todo`` (one wave's points) in consecutive blocks of at most ``block`` points, about
    :data:`BLOCKS_PER_RANK` per rank."""
    size = max(1, min(int(block), -(-len(todo) // (BLOCKS_PER_RANK * world))))
    return [todo[s : s + size] for s in range(0, len(todo), size)]


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class WaveSharing:
    """The wave driver of one distributed adaptive surface (see the module docstring)."""

    def __init__(self, job: _Job, ctx: DistContext, timeout: float, checkpoint_path: str | Path | None) -> None:
        self.job, self.ctx, self.timeout, self.path = job, ctx, float(timeout), checkpoint_path
        self.busy, self.points, self.blocks, self.waves, self.total_blocks = 0.0, 0, 0, 0, 0
        self.stats: dict[int, Any] = {}
        self.final: Any = None
        self.handled = False  # the driver reported or propagated its own failure (abort/err sent)

    def mine(self) -> dict[str, Any]:
        return {"rank": self.ctx.rank, "blocks": self.blocks, "points": self.points, "busy_s": self.busy}

    def meta(self) -> dict[str, Any]:
        per_rank = [self.mine()] + [self.stats.get(r, {"rank": r}) for r in range(1, self.ctx.world_size)]
        return {"distributed": {"world_size": self.ctx.world_size, "backend": self.ctx.backend, "schedule": "dynamic",
                                "waves": self.waves, "blocks": self.total_blocks, "per_rank": per_rank}}

    def _compute(self, grid: AdaptiveGrid, idx: list[int], values: Callable[..., np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        rows = grid.compute(idx, values)
        self.busy += time.perf_counter() - t0
        self.points += len(idx)
        self.blocks += 1
        return rows

    def run(self, grid: AdaptiveGrid, values: Callable[..., np.ndarray], step: Callable[[int], None], budget: int,
            block: int, snapshot: Callable[[], Any]) -> None:
        if self.ctx.is_root:
            self._root(grid, values, step, budget, block, snapshot)
        else:
            self._worker(grid, values, budget, block)

    def _worker(self, grid: AdaptiveGrid, values: Callable[..., np.ndarray], budget: int, block: int) -> None:
        job = self.job
        try:
            for blocks in waves(grid, budget, block, self.ctx.world_size):
                while True:
                    msg = job.aborted()
                    if msg is not None:
                        raise DistributedError(msg)
                    j = job.claim(f"wave{self.waves}") - 1
                    if j >= len(blocks):
                        break
                    job.send("rows", (self.waves, j, self._compute(grid, blocks[j], values)))
                grid.apply(job.wait_for(f"wave/{self.waves}"))
                self.waves += 1
            job.send("fin", self.mine())
            self.final = job.wait_for("done")
            self.handled = True  # rank 0 is done: a later error here is this rank's alone
        except DistributedError:
            self.handled = True
            job.ack()
            raise
        except BaseException as e:
            self.handled = True
            job.report_failure(e)
            raise
        job.ack()

    def _root(self, grid: AdaptiveGrid, values: Callable[..., np.ndarray], step: Callable[[int], None], budget: int,
              block: int, snapshot: Callable[[], Any]) -> None:
        job, world = self.job, self.ctx.world_size
        got: dict[int, dict[str, np.ndarray]] = {}
        blocks: list[list[int]] = []

        def merge(j: int, rows: dict[str, np.ndarray]) -> None:
            if j not in got:
                got[j] = rows
                grid.apply(rows)
                step(len(blocks[j]))

        def handle(msgs: list[tuple[int, str, Any]]) -> None:
            for r, k, payload in msgs:
                if k == "rows" and payload[0] == self.waves:
                    merge(int(payload[1]), payload[2])
                elif k == "fin":
                    self.stats[r] = payload
                elif k == "err":
                    raise _WorkerFailed(r, str(payload))

        def silence() -> str:
            silent = [r for r in range(1, world) if r not in self.stats]
            missing = [j for j in range(len(blocks)) if j not in got]
            return (f"no message from rank(s) {silent} within {self.timeout:g} s; blocks {missing[:10]} of wave "
                    f"{self.waves} never arrived (a rank died or hangs)")

        try:
            try:
                for wave in waves(grid, budget, block, world):
                    blocks[:] = wave
                    got.clear()
                    self.total_blocks += len(blocks)
                    while True:
                        j = job.claim(f"wave{self.waves}") - 1
                        if j >= len(blocks):
                            break
                        merge(j, self._compute(grid, blocks[j], values))
                        handle(job.receive())
                    _collect(job, handle, lambda: len(got) >= len(blocks), self.timeout, silence)
                    job.publish(f"wave/{self.waves}", _concat([got[j] for j in range(len(blocks))]))
                    self.waves += 1
                blocks.clear()
                _collect(job, handle, lambda: len(self.stats) >= world - 1, self.timeout, silence)
            except _WorkerFailed as e:
                raise DistributedError(f"rank {e.rank} failed: {e.summary}") from None
        except BaseException as e:
            self.handled = True
            job.abort(f"stopped because {'rank 0 raised ' + _error_text(e) if not isinstance(e, DistributedError) else e}")
            saved = ""
            if self.path is not None:
                try:
                    part = snapshot()
                    part.save(self.path)
                    saved = (f"; the partial surface ({part.n_done}/{part.n_points} points) is saved at "
                             f"{part.paths(self.path)[0]}: run again with the same arguments to resume")
                except Exception:  # noqa: BLE001 - keep the original error
                    saved = "; saving the partial surface failed too"
            job.wait_acks(1.0 if isinstance(e, (KeyboardInterrupt, SystemExit)) else min(self.timeout, 10.0))
            if isinstance(e, DistributedError):
                raise DistributedError(f"{e}{saved}") from None
            raise


def run_sharded(job: _Job, ctx: DistContext, fn: Callable[..., Any], model: Any, data: Any, geom: dict[str, Any],
                ev: Any, prev: Any, opts: dict[str, Any], timeout: float) -> Any:
    """Every rank: ``fn`` (``surface.plane``/``line``) with the waves shared (rank 0 alone shows progress,
    writes the checkpoint and calls ``callback``); the finished result on every rank."""
    root = ctx.is_root
    path = opts["checkpoint_path"] if root else None
    driver = WaveSharing(job, ctx, timeout, path)
    token = WAVE_DRIVER.set(driver)
    try:
        res = fn(model, data, evaluator=ev, resume_from=prev, progress=bool(opts["progress"]) and root,
                 checkpoint_path=path, checkpoint_every=opts["checkpoint_every"], max_points=opts["max_points"],
                 callback=opts["callback"] if root else None, meta=opts["meta"], **geom)
    except BaseException as e:
        if not driver.handled:  # raised outside the waves (setting up, finishing, saving): stop the others
            if root:
                job.abort(f"stopped because rank 0 raised {_error_text(e)}")
                job.wait_acks(min(timeout, 10.0))
            else:
                job.report_failure(e)
        raise
    finally:
        WAVE_DRIVER.reset(token)
    if not root:
        return driver.final
    job.publish("done", res)
    job.wait_acks(min(timeout, 60.0))
    return res
