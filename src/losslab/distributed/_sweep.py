"""Parallel sweeps: independent jobs (seeds, instability children, intrinsic-dimension ``d`` values) spread
over ranks or local processes, results collected in task order."""
from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

from ..errors import LosslabError
from ._runtime import (
    DEFAULT_TIMEOUT, DistributedError, _collect, _error_text, _Job, _WorkerFailed, current_context,
)

__all__ = ["run_sweep", "TaskFailure"]


@dataclass(frozen=True)
class TaskFailure:
    """Stands in for the result of a task that raised (with ``on_error="return"``).

    Attributes:
        index: the task's position in ``tasks``.
        error: ``"ExceptionType: message"``.
        traceback: the formatted traceback (last 4000 characters).
        rank: the rank (or ``-1`` for a local process) that ran it.
    """

    index: int
    error: str
    traceback: str
    rank: int = -1


def _call(fn: Callable[[Any], Any], task: Any, index: int, on_error: str, rank: int) -> Any:
    try:
        return fn(task)
    except Exception as e:  # noqa: BLE001
        if on_error == "return":
            return TaskFailure(index, _error_text(e), "".join(traceback.format_exception(e))[-4000:], rank)
        raise


def _init_process(threads: int) -> None:
    from ..settings import set_threads

    set_threads(threads)


def _available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def run_sweep(
    tasks: Sequence[Any],
    fn: Callable[[Any], Any],
    *,
    mode: Literal["auto", "distributed", "processes", "serial"] = "auto",
    schedule: Literal["dynamic", "static"] = "dynamic",
    max_workers: int | None = None,
    threads_per_worker: int = 1,
    on_error: Literal["raise", "return"] = "raise",
    broadcast: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    mp_context: str = "spawn",
) -> list[Any] | None:
    """Run ``fn(task)`` for every task, in parallel, and return the results in task order.

    Modes:

    * ``"distributed"`` (the ``"auto"`` choice under a process group with more than one rank): call on
      every rank with the same ``tasks``; ``schedule="dynamic"`` hands tasks out through an atomic
      counter (a rank that finishes early takes the next one), ``"static"`` gives rank ``r`` tasks
      ``r, r + R, r + 2R, ...``. Rank 0 runs tasks too and collects every result (pickled through the
      job's c10d store: keep results small, e.g. metrics, not models). Returns the list on rank 0
      and ``None`` elsewhere (the list everywhere with ``broadcast=True``).
    * ``"processes"`` (``"auto"`` without a process group): a ``concurrent.futures``
      ``ProcessPoolExecutor`` of ``max_workers`` processes (default: available cores), each with
      ``threads_per_worker`` torch threads; ``fn`` and the tasks must be picklable (a module-level
      function) and the ``mp_context`` start method is ``"spawn"`` by default (safe with torch).
    * ``"serial"``: a plain loop in this process (``"auto"`` with ``max_workers=1`` or one task).

    Args:
        tasks: the job descriptions (e.g. seeds, configs).
        fn: ``fn(task) -> result``.
        mode, schedule, max_workers, threads_per_worker, mp_context: see above.
        on_error: ``"raise"`` stops everything at the first failure and raises
            :class:`~losslab.distributed.DistributedError` naming the task; ``"return"`` puts a
            :class:`TaskFailure` in that task's slot and goes on.
        broadcast: distributed mode: return the results on every rank, not only rank 0.
        timeout: distributed mode: seconds rank 0 waits without hearing from any other rank.

    Returns:
        ``[fn(t) for t in tasks]`` (computed in parallel), or ``None`` on ranks other than 0.

    Example:
        >>> run_sweep([1, 2, 3], abs, mode="serial")
        [1, 2, 3]
    """
    tasks = list(tasks)
    if on_error not in ("raise", "return"):
        raise LosslabError(f"on_error must be 'raise' or 'return', got {on_error!r}")
    if schedule not in ("dynamic", "static"):
        raise LosslabError(f"schedule must be 'dynamic' or 'static', got {schedule!r}")
    ctx = current_context()
    if mode == "auto":
        if ctx.distributed:
            mode = "distributed"
        elif len(tasks) <= 1 or max_workers == 1:
            mode = "serial"
        else:
            mode = "processes"
    if mode == "distributed":
        if not ctx.distributed:
            mode = "serial"
        else:
            return _distributed(tasks, fn, ctx, schedule, on_error, broadcast, timeout)
    if mode == "serial":
        out = []
        for i, t in enumerate(tasks):
            try:
                out.append(_call(fn, t, i, on_error, -1))
            except Exception as e:  # noqa: BLE001
                raise DistributedError(f"task {i} failed: {_error_text(e)}") from e
        return out
    if mode == "processes":
        return _processes(tasks, fn, max_workers, threads_per_worker, on_error, mp_context)
    raise LosslabError(f"mode must be 'auto', 'distributed', 'processes' or 'serial', got {mode!r}")


def _processes(tasks: list[Any], fn: Callable[[Any], Any], max_workers: int | None, threads: int,
               on_error: str, mp_context: str) -> list[Any]:
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    if not tasks:
        return []
    workers = min(len(tasks), int(max_workers) if max_workers else _available_cores())
    if workers < 1:
        raise LosslabError(f"max_workers must be >= 1, got {max_workers}")
    ctx = multiprocessing.get_context(mp_context)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_process, initargs=(int(threads),)) as pool:
        futures = [pool.submit(_call, fn, t, i, on_error, -1) for i, t in enumerate(tasks)]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for i, f in enumerate(futures):
            if f.done() and f.exception() is not None:
                for g in futures:
                    g.cancel()
                e = f.exception()
                raise DistributedError(f"task {i} failed: {_error_text(e)}") from e
        return [f.result() for f in futures]


def _distributed(tasks: list[Any], fn: Callable[[Any], Any], ctx: Any, schedule: str, on_error: str,
                 broadcast: bool, timeout: float) -> list[Any] | None:
    job = _Job("sweep", ctx, timeout)
    n = len(tasks)
    world = ctx.world_size

    if schedule == "static":
        mine = iter(range(ctx.rank, n, world))

        def next_index() -> int:
            return next(mine, n)
    else:
        first = [True]

        def next_index() -> int:
            # item 0 belongs to rank 0; the counter hands out 1, 2, ... to whoever asks
            if ctx.is_root and first[0]:
                first[0] = False
                return 0
            return job.claim()

    if not ctx.is_root:
        current = [-1]
        try:
            while True:
                msg = job.aborted()
                if msg is not None:
                    raise DistributedError(msg)
                i = next_index()
                if i >= n:
                    break
                current[0] = i
                job.send("res", (i, _call(fn, tasks[i], i, on_error, ctx.rank)))
                current[0] = -1
            job.send("fin", None)
            out = job.wait_for("done")
        except DistributedError:
            job.ack()
            raise
        except BaseException as e:
            job.report_failure(e, f"task {current[0]}: {_error_text(e)}" if current[0] >= 0 else None)
            raise
        job.ack()
        return out

    results: dict[int, Any] = {}
    fins: set[int] = set()

    def handle(msgs: list[tuple[int, str, Any]]) -> None:
        for r, k, payload in msgs:
            if k == "res":
                results[int(payload[0])] = payload[1]
            elif k == "fin":
                fins.add(r)
            elif k == "err":
                raise _WorkerFailed(r, str(payload))

    try:
        try:
            while True:
                i = next_index()
                if i >= n:
                    break
                try:
                    results[i] = _call(fn, tasks[i], i, on_error, 0)
                except Exception as e:  # noqa: BLE001
                    raise DistributedError(f"task {i} failed on rank 0: {_error_text(e)}") from e
                handle(job.receive())
            _collect(job, handle, lambda: len(results) >= n and len(fins) >= world - 1, timeout,
                     lambda: (f"no message from rank(s) {[r for r in range(1, world) if r not in fins]} within "
                              f"{timeout:g} s ({n - len(results)} task results missing)"))
        except _WorkerFailed as e:
            raise DistributedError(f"rank {e.rank} failed: {e.summary}") from None
    except BaseException as e:
        job.abort(f"sweep stopped: {e if isinstance(e, DistributedError) else 'rank 0 raised ' + _error_text(e)}")
        job.wait_acks(1.0 if isinstance(e, (KeyboardInterrupt, SystemExit)) else min(timeout, 10.0))
        raise
    out = [results[i] for i in range(n)]
    job.publish("done", out if broadcast else None)
    job.wait_acks(min(timeout, 60.0))
    return out
