"""Process groups, collectives and store-based coordination shared by losslab's distributed tools.

Two kinds of communication are used:

* **Collectives** (``all_reduce``) for data parallelism, where every rank does the same work on its
  own shard at the same time (:class:`~losslab.distributed.DistributedOperator`). They run on the
  process group's backend: ``gloo`` for CPU tensors, NCCL for CUDA tensors (``"cpu:gloo,cuda:nccl"``
  is chosen when CUDA is available, so both kinds of tensor work).
* **The c10d key-value store** (the ``TCPStore`` every ``torchrun`` job already has) for dynamic work
  sharing (surfaces, sweeps): an atomic counter hands out work items, workers post small messages
  (results, errors, "finished") under per-rank sequence-numbered keys that rank 0 polls between its
  own items, and rank 0 publishes control keys (``go``, ``abort``, ``done``). No collective is ever
  waited on, so one rank failing cannot leave the others blocked inside a collective: they see an
  ``abort`` key or time out with a clear :class:`DistributedError`. No file is shared or locked; only
  rank 0 writes files.
"""
from __future__ import annotations

import datetime as _dt
import itertools
import os
import pickle
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import LosslabError

__all__ = [
    "DEFAULT_TIMEOUT",
    "DistContext",
    "DistributedError",
    "all_reduce_sum",
    "choose_backend",
    "current_context",
    "init_distributed",
    "shutdown",
    "free_port",
    "run_local",
]

#: Seconds a rank waits for another before giving up (the process group's timeout, too).
DEFAULT_TIMEOUT = 1800.0


class DistributedError(LosslabError):
    """Another rank failed, stopped the run, or did not answer in time."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job.

    Attributes:
        rank: global rank (0 without a process group).
        world_size: number of processes (1 without a process group).
        local_rank: rank on this machine (``LOCAL_RANK``; selects the GPU).
        backend: the process group's backend, or ``None`` without one.
        device: the device this rank should compute on (``cuda:LOCAL_RANK`` when CUDA is available).
        initialized_here: whether :func:`init_distributed` created the process group (then
            :func:`shutdown` destroys it).
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str | None
    device: torch.device
    initialized_here: bool = False

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _default_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def choose_backend(device: torch.device | str | None = None) -> str:
    """``"cpu:gloo,cuda:nccl"`` when ``device`` (default: whatever is available) is CUDA, else ``"gloo"``.

    The combined backend runs collectives of CUDA tensors on NCCL and of CPU tensors on gloo.
    """
    cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if cuda and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def current_context(device: torch.device | str | None = None) -> DistContext:
    """The rank, world size and device of this process (rank 0 of 1 without a process group)."""
    local = _env_int("LOCAL_RANK", 0)
    dev = torch.device(device) if device is not None else _default_device(local)
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local, str(dist.get_backend()), dev)
    return DistContext(0, 1, local, None, dev)


def init_distributed(
    backend: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    device: torch.device | str | None = None,
    threads: int | None = None,
) -> DistContext:
    """Join the process group described by ``torchrun``'s environment (or stay a single process).

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` (set by
    ``torchrun``/``python -m torch.distributed.run``, or by hand); without ``WORLD_SIZE`` (or with
    ``WORLD_SIZE=1``) nothing is initialized and a single-process context is returned, so the same
    script runs with and without ``torchrun``. On CUDA the rank's GPU ``cuda:LOCAL_RANK`` is made current.

    Args:
        backend: process-group backend; default :func:`choose_backend` for ``device``.
        timeout: seconds before a collective or store wait gives up (a dead peer is then an error,
            not a hang).
        device: this rank's compute device (default ``cuda:LOCAL_RANK`` if CUDA is available, else CPU).
        threads: torch intra-op threads of this process (default: ``LOSSLAB_THREADS`` or 1).

    Returns:
        A :class:`DistContext`.
    """
    from ..settings import set_threads

    set_threads(threads)
    local = _env_int("LOCAL_RANK", 0)
    dev = torch.device(device) if device is not None else _default_device(local)
    if dev.type == "cuda":
        if dev.index is None:  # "cuda": this rank's GPU
            dev = _default_device(local)
        torch.cuda.set_device(dev)
    if dist.is_initialized():
        return current_context(dev)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(0, 1, local, None, dev)
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise LosslabError(f"WORLD_SIZE={world} but {name} is not set; launch with torchrun")
    backend = backend or choose_backend(dev)
    dist.init_process_group(backend, timeout=_dt.timedelta(seconds=float(timeout)))
    ctx = current_context(dev)
    return DistContext(ctx.rank, ctx.world_size, ctx.local_rank, ctx.backend, dev, initialized_here=True)


def shutdown(ctx: DistContext | None = None) -> None:
    """Destroy the process group if :func:`init_distributed` created it (or if ``ctx`` is ``None``)."""
    if dist.is_available() and dist.is_initialized() and (ctx is None or ctx.initialized_here):
        dist.destroy_process_group()


def all_reduce_sum(t: Tensor, group: Any = None) -> Tensor:
    """A new tensor holding the sum of ``t`` over the ranks of ``group`` (on ``t``'s device and dtype).

    CPU tensors under a pure NCCL group travel through the current GPU; CUDA tensors under a pure
    gloo group through the CPU. Every rank receives bitwise the same sum (the reduction is computed
    once per element and then copied), so algorithms driven by it take identical decisions on all ranks.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return t.clone()
    backend = str(dist.get_backend(group))
    if t.is_cuda and "nccl" not in backend:
        work = t.detach().cpu().clone()
    elif not t.is_cuda and "gloo" not in backend:
        work = t.detach().to(torch.device("cuda", torch.cuda.current_device()))
    else:
        work = t.detach().clone()
    dist.all_reduce(work, op=dist.ReduceOp.SUM, group=group)
    return work.to(t.device)


# ---- store-based coordination ------------------------------------------------------------------------

_MISSING = object()
_SEQ = itertools.count()


def _error_text(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}".rstrip(": ")


class _Poll:
    """Sleep with a backoff from 0.5 ms to 20 ms between polls (store round trips cost ~0.1 ms)."""

    def __init__(self) -> None:
        self.delay = 5e-4

    def reset(self) -> None:
        self.delay = 5e-4

    def sleep(self) -> None:
        time.sleep(self.delay)
        self.delay = min(0.02, self.delay * 2)


def _collect(job: "_Job", handle: Callable[[list], None], done: Callable[[], bool], timeout: float,
             silence: Callable[[], str]) -> None:
    """Root: hand the workers' messages to ``handle`` until ``done()``; a :class:`DistributedError` with
    ``silence()`` (who is silent, what is missing) when no message comes for ``timeout`` seconds."""
    last = time.monotonic()
    poll = _Poll()
    while not done():
        msgs = job.receive()
        if msgs:
            handle(msgs)
            last = time.monotonic()
            poll.reset()
            continue
        if time.monotonic() - last > timeout:
            raise DistributedError(silence())
        poll.sleep()


class _Job:
    """Coordination of one distributed call (a surface, a sweep) over the c10d store.

    Keys live under ``losslab/<kind>/<restart>/<n>/`` where ``n`` counts this process's jobs: every
    rank runs the same calls in the same order (SPMD), so the prefixes agree without a message, and
    an elastic restart (``TORCHELASTIC_RESTART_COUNT``) gets fresh keys.

    * root -> all: :meth:`publish` / :meth:`wait_for` (a worker's wait also watches ``abort``);
    * worker -> root: :meth:`send` / :meth:`receive` (per-rank sequence-numbered message keys);
    * work items: :meth:`claim` (an atomic counter, ``store.add``).
    """

    def __init__(self, kind: str, ctx: DistContext, timeout: float) -> None:
        from torch.distributed import distributed_c10d

        self.store = distributed_c10d._get_default_store()
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self.prefix = f"losslab/{kind}/{restart}/{next(_SEQ)}/"
        self.rank, self.world = ctx.rank, ctx.world_size
        self.timeout = float(timeout)
        self._sent = 0
        self._next = {r: 0 for r in range(1, self.world)}
        self._published: list[str] = []
        self._counters: set[str] = {"next"}

    def key(self, name: str) -> str:
        return self.prefix + name

    # -- root -> all ----------------------------------------------------------------------------
    def publish(self, name: str, obj: Any) -> None:
        self.store.set(self.key(name), pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        self._published.append(name)

    def peek(self, name: str) -> Any:
        if not self.store.check([self.key(name)]):
            return _MISSING
        return pickle.loads(self.store.get(self.key(name)))

    def aborted(self) -> str | None:
        v = self.peek("abort")
        return None if v is _MISSING else str(v)

    def abort(self, message: str) -> None:
        if self.aborted() is None:
            self.publish("abort", message)

    def wait_for(self, name: str, *, timeout: float | None = None, watch_abort: bool = True) -> Any:
        """Block until rank 0 publishes ``name``; raise if it publishes ``abort`` first or time runs out."""
        limit = self.timeout if timeout is None else timeout
        t0 = time.monotonic()
        poll = _Poll()
        while True:
            v = self.peek(name)
            if v is not _MISSING:
                return v
            if watch_abort:
                msg = self.aborted()
                if msg is not None:
                    raise DistributedError(msg)
            if time.monotonic() - t0 > limit:
                raise DistributedError(
                    f"rank {self.rank}: rank 0 did not publish {name!r} within {limit:g} s (did it fail?)"
                )
            poll.sleep()

    # -- worker -> root -------------------------------------------------------------------------
    def send(self, kind: str, payload: Any) -> None:
        self.store.set(self.key(f"msg/{self.rank}/{self._sent}"),
                       pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL))
        self._sent += 1

    def receive(self) -> list[tuple[int, str, Any]]:
        """Messages that arrived since the last call, in order per rank (root only; non-blocking)."""
        out = []
        for r in self._next:
            while True:
                k = self.key(f"msg/{r}/{self._next[r]}")
                if not self.store.check([k]):
                    break
                kind, payload = pickle.loads(self.store.get(k))
                self.store.delete_key(k)
                self._next[r] += 1
                out.append((r, kind, payload))
        return out

    def collect(self, kind: str, count: int, on_other: Any = None) -> dict[int, Any]:
        """Root: wait for one ``kind`` message from each of ``count`` ranks (others go to ``on_other``)."""
        got: dict[int, Any] = {}
        t0 = time.monotonic()
        poll = _Poll()
        while len(got) < count:
            msgs = self.receive()
            for r, k, payload in msgs:
                if k == kind:
                    got[r] = payload
                elif k == "err":
                    raise _WorkerFailed(r, str(payload))
                elif on_other is not None:
                    on_other(r, k, payload)
            if msgs:
                t0 = time.monotonic()
                poll.reset()
                continue
            if time.monotonic() - t0 > self.timeout:
                missing = sorted(set(range(1, self.world)) - set(got))
                raise DistributedError(
                    f"no {kind!r} message from rank(s) {missing} within {self.timeout:g} s (did they fail?)"
                )
            poll.sleep()
        return got

    # -- work items -----------------------------------------------------------------------------
    def claim(self, counter: str = "next") -> int:
        """The next work-item number from the shared counter ``counter``: 1, 2, ... (0 is never handed out)."""
        self._counters.add(counter)
        return int(self.store.add(self.key(counter), 1))

    # -- endings --------------------------------------------------------------------------------
    def ack(self) -> None:
        """Worker: tell rank 0 the final ``done``/``abort`` was read (rank 0 may host the store)."""
        try:
            self.store.add(self.key("acks"), 1)
        except Exception:  # noqa: BLE001 - the store may already be gone after an abort
            pass

    def wait_acks(self, limit: float) -> None:
        """Root: wait (at most ``limit`` s) until every worker acknowledged, then delete the job's keys.

        If some rank never acknowledges, the keys stay (a straggler still finds ``abort``/``done``).
        """
        t0 = time.monotonic()
        poll = _Poll()
        while True:
            if int(self.store.add(self.key("acks"), 0)) >= self.world - 1:
                break
            if time.monotonic() - t0 >= limit:
                return
            poll.sleep()
        for name in [*self._published, *sorted(self._counters), "acks"]:
            try:
                self.store.delete_key(self.key(name))
            except Exception:  # noqa: BLE001
                pass

    def report_failure(self, e: BaseException, summary: str | None = None) -> None:
        """Worker: send the error to rank 0 and give it a moment (bounded) to save and stop the others."""
        try:
            self.send("err", (summary or _error_text(e)) + "\n" + "".join(traceback.format_exception(e))[-4000:])
            t0 = time.monotonic()
            poll = _Poll()
            # an interrupt (Ctrl-C, torchrun's SIGTERM) reaches every rank: do not linger
            limit = 2.0 if isinstance(e, (KeyboardInterrupt, SystemExit)) else min(self.timeout, 60.0)
            while time.monotonic() - t0 < limit and self.aborted() is None:
                poll.sleep()
            self.ack()
        except Exception:  # noqa: BLE001 - never mask the original error
            pass


class _WorkerFailed(Exception):
    def __init__(self, rank: int, text: str) -> None:
        super().__init__(text)
        self.rank = rank
        self.summary = text.splitlines()[0] if text else "unknown error"


# ---- local launcher --------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on localhost that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_local(
    argv: Sequence[str],
    nprocs: int,
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> list[subprocess.CompletedProcess]:
    """Run ``python *argv`` in ``nprocs`` processes on this machine with ``torchrun``'s environment.

    A minimal stand-in for ``torchrun --standalone --nproc_per_node N`` (no elastic agent): each
    process gets ``RANK = LOCAL_RANK``, ``WORLD_SIZE = LOCAL_WORLD_SIZE = nprocs``, ``MASTER_ADDR =
    127.0.0.1``, a free ``MASTER_PORT`` and ``OMP_NUM_THREADS=1`` (unless set in ``env``), so
    :func:`init_distributed` works unchanged. Rank 0 hosts the store. Useful for tests, benchmarks and
    notebooks; use ``torchrun`` in production (it restarts and tears down failed groups).

    Args:
        argv: arguments after the interpreter, e.g. ``["-m", "losslab.distributed", "surface", ...]``.
        nprocs: number of processes.
        timeout: seconds for the whole group; on expiry every process is killed and
            ``subprocess.TimeoutExpired`` is raised.
        env: extra environment variables.
        cwd: working directory.

    Returns:
        The completed processes in rank order (``returncode``, ``stdout``, ``stderr`` as text).
    """
    import tempfile

    port = free_port()
    procs, files = [], []
    for r in range(int(nprocs)):
        e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {}), "RANK": str(r), "LOCAL_RANK": str(r),
             "WORLD_SIZE": str(nprocs), "LOCAL_WORLD_SIZE": str(nprocs), "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": str(port)}
        fo, fe = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # files: no pipe can fill up
        files.append((fo, fe))
        procs.append(subprocess.Popen([sys.executable, *argv], env=e, cwd=cwd, stdout=fo, stderr=fe, text=True))
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    expired = False
    try:
        for p in procs:
            left = None if deadline is None else max(0.1, deadline - time.monotonic())
            p.wait(timeout=left)
    except subprocess.TimeoutExpired:
        expired = True
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()
    texts = []
    for fo, fe in files:
        fo.seek(0)
        fe.seek(0)
        texts.append((fo.read(), fe.read()))
        fo.close()
        fe.close()
    if expired:
        dump = "\n".join(f"--- rank {r} stdout ---\n{o}\n--- rank {r} stderr ---\n{e}" for r, (o, e) in enumerate(texts))
        raise subprocess.TimeoutExpired([sys.executable, *argv], float(timeout or 0), output=dump)
    return [subprocess.CompletedProcess(p.args, p.returncode, o, e) for p, (o, e) in zip(procs, texts)]
