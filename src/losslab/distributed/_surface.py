"""Sharded loss surfaces: the grid of :func:`losslab.surface.plane` / :func:`~losslab.surface.line` split over ranks.

Every rank calls :func:`distributed_plane` (or :func:`distributed_line`) with the same arguments.
The grid's flat indices are cut into the same blocks a single process uses (``points_per_chunk``
consecutive row-major indices, minus the points already done, truncated to ``max_points``), and the
blocks are shared **dynamically**:

1. Rank 0 loads ``resume_from`` (the only rank that reads it) and publishes it; every rank builds its
   evaluator and checks its inputs (fingerprint of directions, origin, data, loss, and the chunking);
   rank 0 compares all ranks and publishes the block list (``go``) or an error.
2. Rank 0 takes block 0 (which settles ``strategy="auto"``: the faster of loop/vmap, timed once, is
   then used on every rank, so each point is computed exactly as a single process would); every
   other block goes to whichever rank asks next through an atomic counter (``store.add``) kept by
   the job's c10d store, so a rank that finishes early takes more.
3. Workers post each block's values to rank 0, which merges them, writes the checkpoint (only rank 0
   writes, atomically, through :meth:`~losslab.surface.SurfaceResult.save`), calls ``callback`` and
   finally publishes the finished result to every rank.

The values equal a single-process surface's: the same blocks are evaluated with the same strategy
and data chunking; only the rank that computes a block differs. A failure anywhere stops the job
without a hang: a worker's exception reaches rank 0, which saves what it has, publishes ``abort``
and raises :class:`~losslab.distributed.DistributedError`; an exception on rank 0 (including one
raised by ``callback``) publishes ``abort`` too; a rank that dies silently is detected by ``timeout``.
Rerunning with the same arguments resumes from the checkpoint.

Each block is evaluated by calling :func:`losslab.surface.plane` / ``line`` itself with a
``resume_from`` result in which only that block's points are not done (and the evaluator built
once), so the point construction, fingerprint and evaluation are the single-process code.

With ``precision=`` (adaptive precision) steps 2 and 3 go by waves instead
(:mod:`losslab.distributed._adaptive`): every rank runs ``plane``/``line`` itself with a replica of
the :class:`~losslab.precision.AdaptiveGrid`, each wave's points are claimed in blocks, rank 0
merges the rows, checkpoints, calls ``callback`` and publishes them; the result is bit for bit the
single-process adaptive surface's.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import time
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from torch import nn

from ..results import jsonable
from .. import surface as S
from .._functional import model_then_data
from ..errors import LosslabError
from ..evaluate import Evaluator
from ..surface import SurfaceResult
from ._adaptive import run_sharded
from ._runtime import (
    DEFAULT_TIMEOUT,
    DistContext,
    DistributedError,
    _error_text,
    _Job,
    _collect,
    _WorkerFailed,
    current_context,
)

__all__ = ["distributed_plane", "distributed_line"]


@model_then_data
def distributed_plane(model: nn.Module, data: Any = None, *, timeout: float = DEFAULT_TIMEOUT,
                      **kwargs: Any) -> SurfaceResult:
    """:func:`losslab.surface.plane` with the grid points shared dynamically over the ranks.

    Call it on every rank (under ``torchrun``, after :func:`~losslab.distributed.init_distributed`)
    with the same arguments; each rank needs the model, data and directions (same values: checked).
    Without a process group, or with one rank, it is exactly :func:`losslab.surface.plane`.

    The metric at :math:`(x_i, y_j)` is :math:`\\mathcal L(\\theta_0 + x_i d_x + y_j d_y)`, computed by
    whichever rank claimed the block holding flat index :math:`j\\,n_x + i`; the values equal the
    single-process surface's (same blocks, strategy and data chunking).

    Args:
        model, data, dx, dy, origin, x, y, x_span, y_span, nx, ny, evaluator, meta, **evaluator_kwargs:
            as in :func:`losslab.surface.plane` (``device=`` selects this rank's device, e.g.
            ``ctx.device``).
        progress: a progress bar on rank 0 (when stderr is a terminal).
        resume_from: a saved path or result; read by rank 0 only and shared with the others.
        checkpoint_path: written by rank 0 only (atomically) every ``checkpoint_every`` merged blocks,
            on failure, and at the end.
        max_points: evaluate at most this many points in this call, over all ranks (the same points
            a single process would evaluate).
        callback: called on rank 0 with the partial result after each merged block; an exception it
            raises stops every rank (the checkpoint keeps what was merged).
        timeout: seconds a rank waits for another (setup, results of a claimed block, the final
            result) before raising :class:`~losslab.distributed.DistributedError`.

    Returns:
        The :class:`~losslab.surface.SurfaceResult`, on every rank (with ``precision=``: bit for bit the
        single-process adaptive surface, its waves shared over the ranks). ``meta["distributed"]`` records
        the world size, the blocks and points each rank evaluated and its busy seconds;
        ``meta["timing"]`` the wall time on rank 0.

    Example:
        >>> import numpy as np, torch
        >>> from losslab import params
        >>> from losslab.distributed import distributed_plane
        >>> model = torch.nn.Linear(3, 2)
        >>> data = (torch.randn(16, 3), torch.randint(0, 2, (16,)))
        >>> d = params.randn_like(params.get_point(model), generator=torch.Generator().manual_seed(0))
        >>> r = distributed_plane(model, data, dx=d, dy=d, nx=3, ny=2, progress=False)  # 1 process: plane()
        >>> r.metrics["loss"].shape
        (2, 3)
    """
    return _sharded("plane", model, data, timeout, kwargs)


@model_then_data
def distributed_line(model: nn.Module, data: Any = None, *, timeout: float = DEFAULT_TIMEOUT,
                     **kwargs: Any) -> SurfaceResult:
    """:func:`losslab.surface.line` with the points shared dynamically over the ranks.

    Arguments as in :func:`losslab.surface.line`, plus ``timeout``; rank roles, resumption and
    failures as in :func:`distributed_plane`. Without a process group it is exactly ``line``.
    """
    return _sharded("line", model, data, timeout, kwargs)


#: The arguments of plane()/line() that steer the run rather than place the points or build the evaluator.
_RUN_OPTIONS = ("evaluator", "progress", "resume_from", "checkpoint_path", "checkpoint_every", "max_points",
                "callback", "meta")


def _with_timeout(fn: Callable[..., Any]) -> inspect.Signature:
    """``fn``'s signature with ``timeout`` before its ``**evaluator_kwargs`` (what the sharded versions take)."""
    sig = inspect.signature(fn)
    ps = list(sig.parameters.values())
    t = inspect.Parameter("timeout", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_TIMEOUT, annotation="float")
    return sig.replace(parameters=ps[:-1] + [t, ps[-1]])


# the signatures are those of surface.plane / surface.line (one definition), plus timeout
distributed_plane.__signature__ = _with_timeout(S.plane)  # type: ignore[attr-defined]
distributed_line.__signature__ = _with_timeout(S.line)  # type: ignore[attr-defined]


def _split(kind: str, model: nn.Module, data: Any, kwargs: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """``kwargs`` of :func:`plane`/:func:`line` as (geometry, run options with their defaults, evaluator
    settings), checked against the signature (a missing or repeated argument raises ``TypeError`` here)."""
    fn = S.plane if kind == "plane" else S.line
    sig = inspect.signature(fn)
    sig.bind(model, data, **kwargs)
    params = sig.parameters
    geom = {k: v for k, v in kwargs.items() if k in params and k not in _RUN_OPTIONS}
    run = {k: kwargs.get(k, params[k].default) for k in _RUN_OPTIONS}
    ev_kw = {k: v for k, v in kwargs.items() if k not in params}
    return geom, run, ev_kw


# ---- internals -------------------------------------------------------------------------------------


def _signature(template: SurfaceResult, ev: Evaluator) -> dict[str, Any]:
    """What must agree across ranks for their blocks to fit together."""
    h = hashlib.sha256(template.x.tobytes())
    if template.y is not None:
        h.update(b"|y|" + template.y.tobytes())
    return {
        "fingerprint": template.meta.get("fingerprint"),
        "coordinates": h.hexdigest(),
        "metrics": list(template.metrics),
        "done": hashlib.sha256(np.packbits(template.done.reshape(-1)).tobytes()).hexdigest(),
        "batch_size": ev.batch_size,
        "dtype": str(ev.dtype),
    }


#: With an automatic ``points_per_chunk``, blocks are made small enough for this many per rank.
BLOCKS_PER_RANK = 4


def _balanced_block(ev: Evaluator, template: SurfaceResult, max_points: int | None, world: int) -> int | None:
    """Smaller automatic blocks so that every rank gets about :data:`BLOCKS_PER_RANK` of them (None: keep).

    Dynamic sharing balances at block granularity: 7 blocks of 64 points on 2 ranks split 4/3 (at
    most 1.75x); 4 blocks per rank bound the imbalance by a quarter of a rank's share. Only the
    grouping of points changes, not the points (values agree with other groupings to rounding).
    """
    todo = template.n_points - template.n_done
    if max_points is not None:
        todo = min(todo, int(max_points))
    target = max(1, -(-todo // (BLOCKS_PER_RANK * world)))
    return target if ev.points_per_chunk > target else None


def _derived(ev: Evaluator, **settings: Any) -> Evaluator:
    """A private copy of ``ev`` with ``settings`` (``points_per_chunk``, ``strategy``) changed.

    The caller's evaluator is never modified: the copy has its own attributes and ``info`` record
    and shares only the read-only data and the caches keyed by chunk size.
    """
    new = copy.copy(ev)
    new.info = copy.deepcopy(ev.info)
    for k, v in settings.items():
        if k not in ("points_per_chunk", "strategy"):
            raise LosslabError(f"cannot derive an evaluator with {k}")
        setattr(new, k, v)
        new.info[k] = v
    return new


class _BlockRunner:
    """Evaluates given flat indices with the single-process surface code (a ``resume_from`` mask)."""

    def __init__(self, kind: str, model: nn.Module, geom: dict[str, Any], ev: Evaluator, template: SurfaceResult):
        self.fn = S.plane if kind == "plane" else S.line
        self.model, self.geom, self.ev = model, geom, ev
        nan = {k: np.full(template.shape, np.nan) for k in template.metrics}
        self.mask = dataclasses.replace(template, metrics=nan, meta={"fingerprint": template.meta["fingerprint"],
                                                                     "evaluator": dict(self.ev.info)})
        self.busy = 0.0
        self.points = 0
        self.blocks = 0
        self.redone = 0  # points evaluated twice (a worker's first block, when its auto choice differed)

    def settle(self, strategy: str) -> None:
        """Evaluate with ``strategy`` from now on (a derived evaluator; the given one is left as it was)."""
        self.ev = _derived(self.ev, strategy=strategy)

    def __call__(self, idx: np.ndarray, redo: bool = False) -> np.ndarray:
        t0 = time.perf_counter()
        done = np.ones(self.mask.n_points, dtype=bool)
        done[idx] = False
        mask = dataclasses.replace(self.mask, done=done.reshape(self.mask.shape))
        res = self.fn(self.model, None, evaluator=self.ev, progress=False, resume_from=mask, **self.geom)
        vals = np.stack([res.metrics[k].reshape(-1)[idx] for k in res.metrics], axis=1)
        self.busy += time.perf_counter() - t0
        if redo:
            self.redone += int(idx.size)
        else:
            self.points += int(idx.size)
            self.blocks += 1
        return vals

    def stats(self, rank: int) -> dict[str, Any]:
        return {"rank": rank, "blocks": self.blocks, "points": self.points, "busy_s": self.busy,
                "strategy": self.ev.strategy, "recomputed_points": self.redone}


def _sharded(kind: Literal["line", "plane"], model: nn.Module, data: Any, timeout: float,
             kwargs: dict[str, Any]) -> SurfaceResult:
    ctx = current_context()
    if not ctx.distributed:
        fn = S.plane if kind == "plane" else S.line
        return fn(model, data, **kwargs)
    geom, opts, evaluator_kwargs = _split(kind, model, data, kwargs)
    evaluator, progress, resume_from = opts["evaluator"], opts["progress"], opts["resume_from"]
    checkpoint_path, checkpoint_every, max_points = opts["checkpoint_path"], opts["checkpoint_every"], opts["max_points"]
    callback, meta = opts["callback"], opts["meta"]
    if int(checkpoint_every) < 1:
        raise LosslabError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if max_points is not None and int(max_points) < 0:
        raise LosslabError(f"max_points must be >= 0, got {max_points}")
    if not timeout > 0:
        raise LosslabError(f"timeout must be > 0 seconds, got {timeout}")
    job = _Job(f"surface-{kind}", ctx, timeout)

    # 1. rank 0 reads the checkpoint and shares it
    if ctx.is_root:
        try:
            prev = S._load_resume(resume_from)  # as the single-process surface: a missing path starts fresh
        except BaseException as e:
            job.abort(f"rank 0 could not load {resume_from}: {_error_text(e)}")
            job.wait_acks(min(timeout, 10.0))
            raise
        job.publish("init", prev)
    else:
        try:
            prev = job.wait_for("init")
        except DistributedError:
            job.ack()
            raise

    # 2. every rank sets up; rank 0 checks that they agree and publishes the blocks
    setup_error: BaseException | None = None
    fn = S.plane if kind == "plane" else S.line
    adaptive = geom.get("precision") is not None  # the waves set the blocks (the evaluator is kept)
    try:
        # a private copy: the block size and the settled strategy change it, never the caller's evaluator
        # the evaluator surface.plane would build (a resumed run's chunking/strategy reused)
        ev = _derived(S._evaluator(model, data, evaluator, evaluator_kwargs, prev))
        if adaptive:  # refused before any work rather than at the first point (on whichever rank)
            from ..precision import require_fixed_bn

            require_fixed_bn(model, ev.bn)
        template = fn(model, data, evaluator=ev, progress=False, resume_from=prev,
                      max_points=0, meta=meta, **geom)
        if not adaptive and evaluator is None and evaluator_kwargs.get("points_per_chunk") is None and not (
                prev is not None and prev.meta.get("evaluator", {}).get("points_per_chunk")):
            target = _balanced_block(ev, template, max_points, ctx.world_size)
            if target is not None:
                ev = _derived(ev, points_per_chunk=target)
        ready: Any = ("ok", _signature(template, ev), ev.points_per_chunk, ev.strategy)
    except Exception as e:  # noqa: BLE001 - reported to rank 0, then re-raised
        setup_error = e
        ready = ("error", _error_text(e))
    if not ctx.is_root:
        job.send("ready", ready)
        if setup_error is not None:
            job.ack()
            raise setup_error
        try:
            go = job.wait_for("go")
        except DistributedError:
            job.ack()
            raise
        if go.get("adaptive"):
            return run_sharded(job, ctx, fn, model, data, geom, ev, prev, opts, timeout)
        return _worker(job, ctx, kind, model, geom, ev, template, go)
    try:
        readies = job.collect("ready", ctx.world_size - 1)
    except _WorkerFailed as e:  # pragma: no cover - workers send "ready" before anything else
        readies = {e.rank: ("error", e.summary)}
    except DistributedError as e:
        job.abort(f"setup failed: {e}")
        job.wait_acks(min(timeout, 10.0))
        raise
    problems = []
    if setup_error is not None:
        problems.append(f"rank 0: {_error_text(setup_error)}")
    for r in sorted(readies):
        status = readies[r]
        if status[0] == "error":
            problems.append(f"rank {r}: {status[1]}")
        elif setup_error is None and status[1] != ready[1]:
            diff = sorted(k for k in ready[1] if ready[1][k] != status[1].get(k))
            problems.append(f"rank {r}: inputs differ from rank 0's ({', '.join(diff)})")
    if problems:
        job.abort("setup failed: " + "; ".join(problems))
        job.wait_acks(min(timeout, 10.0))
        if setup_error is not None:
            raise setup_error
        raise DistributedError("ranks disagree or failed during setup: " + "; ".join(problems))
    if adaptive:
        job.publish("go", {"adaptive": True})
        return run_sharded(job, ctx, fn, model, data, geom, ev, prev, opts, timeout)
    blocks = S.block_plan(template.done, ev.points_per_chunk, max_points)
    job.publish("go", {"blocks": blocks, "strategy": ev.strategy})
    return _root(job, ctx, kind, model, geom, ev, template, blocks, progress=progress,
                 checkpoint_path=checkpoint_path, checkpoint_every=int(checkpoint_every), callback=callback,
                 timeout=timeout)


def _worker(job: _Job, ctx: DistContext, kind: str, model: nn.Module, geom: dict[str, Any], ev: Evaluator,
            template: SurfaceResult, go: dict[str, Any]) -> SurfaceResult:
    blocks: list[np.ndarray] = go["blocks"]
    known = go["strategy"] is not None
    run = _BlockRunner(kind, model, geom, ev, template)
    if known:
        run.settle(go["strategy"])
    try:
        while True:
            msg = job.aborted()
            if msg is not None:
                raise DistributedError(msg)
            j = job.claim()
            if j >= len(blocks):
                break
            if not known:
                s = job.peek("strategy")
                if isinstance(s, str):
                    run.settle(s)
                    known = True
            vals = run(blocks[j])
            if not known:  # settle auto the way rank 0 did (it timed block 0): redo if we chose otherwise
                s = job.wait_for("strategy")
                known = True
                used = run.ev.strategy or "loop"
                run.settle(s)
                if used != s:
                    vals = run(blocks[j], redo=True)
            job.send("res", (j, vals))
        job.send("fin", run.stats(ctx.rank))
        final = job.wait_for("done")
    except DistributedError:
        job.ack()
        raise
    except BaseException as e:
        job.report_failure(e)
        raise
    job.ack()
    return final


def _root(job: _Job, ctx: DistContext, kind: str, model: nn.Module, geom: dict[str, Any], ev: Evaluator,
          template: SurfaceResult, blocks: list[np.ndarray], *, progress: bool,
          checkpoint_path: str | Path | None, checkpoint_every: int,
          callback: Callable[[SurfaceResult], None] | None, timeout: float) -> SurfaceResult:
    names = list(template.metrics)
    metrics = {k: v.copy() for k, v in template.metrics.items()}
    done = template.done.copy()
    flat_m = {k: v.reshape(-1) for k, v in metrics.items()}
    flat_done = done.reshape(-1)
    t_prior = template.meta.get("timing", {}) or {}
    prior_s = float(t_prior.get("seconds") or 0.0)
    prior_pts = int(t_prior.get("points_evaluated") or 0)
    run = _BlockRunner(kind, model, geom, ev, template)
    stats: dict[int, Any] = {}
    state = {"merged": 0, "points": 0, "since_save": 0}
    received: set[int] = set()
    t0 = time.perf_counter()
    bar = _progress_bar(template.n_points, int(flat_done.sum()), progress, kind)

    def snapshot() -> SurfaceResult:
        secs = prior_s + (time.perf_counter() - t0)
        pts = prior_pts + state["points"]
        per_rank = [run.stats(0)] + [stats.get(r, {"rank": r}) for r in range(1, ctx.world_size)]
        m = {
            **template.meta,
            "timing": {"seconds": secs, "points_evaluated": pts, "points_per_s": (pts / secs) if secs > 0 else None},
            "evaluator": dict(run.ev.info),
            "distributed": {"world_size": ctx.world_size, "backend": ctx.backend, "schedule": "dynamic",
                            "blocks": len(blocks), "block_points": ev.points_per_chunk, "per_rank": per_rank},
        }
        return dataclasses.replace(template, metrics={k: v.copy() for k, v in metrics.items()}, done=done.copy(),
                                   meta=_jsonable(m))

    def merge(j: int, vals: np.ndarray) -> None:
        if j in received:
            return
        received.add(j)
        idx = blocks[j]
        for c, k in enumerate(names):
            flat_m[k][idx] = vals[:, c]
        flat_done[idx] = True
        state["merged"] += 1
        state["points"] += int(idx.size)
        state["since_save"] += 1
        if bar is not None:
            bar.update(int(idx.size))
        if checkpoint_path is not None and state["since_save"] >= checkpoint_every:
            snapshot().save(checkpoint_path)
            state["since_save"] = 0
        if callback is not None:
            callback(snapshot())

    def handle(msgs: list[tuple[int, str, Any]]) -> None:
        for r, k, payload in msgs:
            if k == "res":
                merge(int(payload[0]), payload[1])
            elif k == "fin":
                stats[r] = payload
            elif k == "err":
                raise _WorkerFailed(r, str(payload))

    try:
        try:
            j = 0
            while j < len(blocks):
                vals = run(blocks[j])
                if j == 0:
                    s = run.ev.strategy or "loop"
                    run.settle(s)
                    job.publish("strategy", s)
                merge(j, vals)
                handle(job.receive())
                j = job.claim()
            if not blocks:
                job.publish("strategy", run.ev.strategy or "loop")

            def silence() -> str:
                missing = [j for j in range(len(blocks)) if j not in received]
                silent = [r for r in range(1, ctx.world_size) if r not in stats]
                return (f"no message from rank(s) {silent} within {timeout:g} s; blocks {missing[:10]} never "
                        "arrived (a rank died or hangs)")

            _collect(job, handle, lambda: len(received) >= len(blocks) and len(stats) >= ctx.world_size - 1,
                     timeout, silence)
        except _WorkerFailed as e:
            raise DistributedError(f"rank {e.rank} failed: {e.summary}") from None
    except BaseException as e:
        job.abort(f"stopped because {'rank 0 raised ' + _error_text(e) if not isinstance(e, DistributedError) else e}")
        saved = ""
        if checkpoint_path is not None:
            try:
                part = snapshot()
                part.save(checkpoint_path)
                saved = (f"; the partial surface ({part.n_done}/{part.n_points} points) is saved at "
                         f"{SurfaceResult.paths(checkpoint_path)[0]}: run again with the same arguments to resume")
            except Exception:  # noqa: BLE001 - keep the original error
                saved = "; saving the partial surface failed too"
        if bar is not None:
            bar.close()
        job.wait_acks(1.0 if isinstance(e, (KeyboardInterrupt, SystemExit)) else min(timeout, 10.0))
        if isinstance(e, DistributedError):
            raise DistributedError(f"{e}{saved}") from None
        raise
    if bar is not None:
        bar.close()
    final = snapshot()
    if checkpoint_path is not None:
        final.save(checkpoint_path)
    job.publish("done", final)
    job.wait_acks(min(timeout, 60.0))
    return final


def _progress_bar(total: int, initial: int, progress: bool, desc: str) -> Any:
    """:func:`losslab.results.progress_bar` (only on a terminal), labelled ``(distributed)``."""
    from ..results import progress_bar

    return progress_bar(total, initial, progress=progress, desc=f"{desc} (distributed)", unit="pt")


def _jsonable(obj: Any) -> Any:
    """Metadata as strict JSON, as :mod:`losslab.surface` writes it."""
    return jsonable(obj, max_array_size=64)
