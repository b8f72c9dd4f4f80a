"""Running experiments: profiles, saved (resumable) results, parallel processes.

Layout of an output directory ``OUT`` (``losslab reproduce --out OUT``)::

    OUT/results/<ID>-<hash>/result.json   one finished experiment (hash of id, VERSION and config)
    OUT/results/<ID>-<hash>/*.png         its figures
    OUT/cache/runs/train-<hash>/          trained runs, shared by all experiments (losslab.train cache)
    OUT/report.html, OUT/report.md        written by losslab.report

A result is reused when ``result.json`` exists for the same key with status ``ok``; a failed or
interrupted experiment is recomputed (its trained runs are reused from the run cache).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import re
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from ..errors import DamagedFile, LosslabError
from ._base import ExperimentResult, now_iso, result_key
from ._registry import EXPERIMENTS, get

__all__ = ["PROFILES", "Outcome", "config_for", "result_dir", "load_saved", "run_experiment", "run_many",
           "shift_seeds", "SEED_STRIDE"]

PROFILES = ("quick", "full")
RESULTS = "results"
CACHE = "cache"
SEED_STRIDE = 1000
"""``--seed S`` adds ``S * SEED_STRIDE`` to every seed of every row (rows use seeds below the stride)."""

_SEED_FIELD = re.compile(r"(^|_)seeds?$")


def shift_seeds(config: Any, offset: int) -> Any:
    """A copy of a (nested, frozen) dataclass config with ``offset`` added to every seed.

    Every field named ``seed``, ``seeds``, ``*_seed`` or ``*_seeds`` holding an int or a tuple of ints
    is shifted, in nested dataclasses too (a :class:`~losslab.config.SeedConfig` shifts its master
    seed and each explicit per-purpose seed), and in tuples of dataclasses. Other fields are unchanged, so the data (e.g. the
    MNIST-1D sample) stays the same while every model, order, label and probe seed moves.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class C:
        ...     seeds: tuple = (0, 1, 2)
        ...     plane_seed: int = 0
        ...     lr: float = 0.1
        >>> shift_seeds(C(), 1000)
        C(seeds=(1000, 1001, 1002), plane_seed=1000, lr=0.1)
    """
    if offset == 0 or not (dataclasses.is_dataclass(config) and not isinstance(config, type)):
        return config
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            nv = shift_seeds(v, offset)
            if nv is not v:
                changes[f.name] = nv
        elif isinstance(v, (tuple, list)) and v and all(dataclasses.is_dataclass(x) and not isinstance(x, type)
                                                         for x in v):
            changes[f.name] = type(v)(shift_seeds(x, offset) for x in v)
        elif _SEED_FIELD.search(f.name):
            if isinstance(v, bool):
                continue
            if isinstance(v, int):
                changes[f.name] = v + offset
            elif isinstance(v, (tuple, list)) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                changes[f.name] = type(v)(x + offset for x in v)
    return dataclasses.replace(config, **changes) if changes else config


@dataclass(frozen=True)
class Outcome:
    """What happened to one experiment in a ``run_many`` call."""

    id: str
    result: ExperimentResult
    cached: bool
    seconds: float
    path: Path


def config_for(row_id: str, profile: str, seed: int = 0) -> Any:
    """The row's config for a profile (``"quick"`` or ``"full"``), every seed shifted by master ``seed``."""
    if profile not in PROFILES:
        raise LosslabError(f"profile must be one of {PROFILES}, got {profile!r}")
    if not isinstance(seed, int) or seed < 0:
        raise LosslabError(f"the master seed must be an integer >= 0, got {seed!r}")
    module = get(row_id)
    return shift_seeds(getattr(module.Config, profile)(), seed * SEED_STRIDE)


def result_dir(out: str | os.PathLike, row_id: str, config: Any) -> Path:
    module = get(row_id)
    return Path(out) / RESULTS / result_key(module.ID, config, getattr(module, "VERSION", 1))


def load_saved(out: str | os.PathLike, row_id: str, profile: str, seed: int = 0) -> ExperimentResult | None:
    """The saved, successful result of a row for a profile's current config (and master seed), if any."""
    d = result_dir(out, row_id, config_for(row_id, profile, seed))
    return _saved_ok(d / "result.json")


def _saved_ok(path: Path, progress: Callable[[str], None] | None = None) -> ExperimentResult | None:
    """The successful result saved at ``path``, or None: absent, failed, unreadable or damaged (a
    truncated file or one whose content hash does not match: ``progress`` is told, and it is recomputed)."""
    if not path.is_file():
        return None
    try:
        res = ExperimentResult.load(path)
    except DamagedFile as exc:
        if progress is not None:
            progress(f"saved result {exc.path} is damaged ({exc.reason}); recomputing it")
        return None
    except LosslabError:
        return None
    return res if res.status == "ok" else None


def _env() -> dict[str, Any]:
    import torch

    from .. import __version__

    return {"losslab": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "platform": platform.platform(), "pid": os.getpid()}


def make_progress(row_id: str, stream: TextIO | None, t0: float | None = None) -> Callable[[str], None]:
    """A progress function printing ``[ID  12.3s] message`` lines to ``stream`` (None: silent)."""
    start = time.perf_counter() if t0 is None else t0

    def progress(message: str) -> None:
        if stream is None:
            return
        print(f"[{row_id:>3} {time.perf_counter() - start:6.1f}s] {message}", file=stream, flush=True)

    return progress


def run_experiment(
    row_id: str,
    profile: str = "quick",
    *,
    out: str | os.PathLike,
    force: bool = False,
    config: Any = None,
    stream: TextIO | None = None,
    seed: int = 0,
) -> Outcome:
    """Run one experiment (or reuse its saved result) and save it under ``out``.

    Args:
        row_id: survey row id (``"A1"``).
        profile: ``"quick"`` or ``"full"``; ignored when ``config`` is given (profile "custom").
        out: output directory (results, figures, the shared run cache).
        force: recompute even when a saved result exists (trained runs are still reused).
        config: an explicit config instead of the profile's.
        stream: where progress lines go (None: silent).
        seed: master seed: every seed of the profile's config is shifted by ``seed * SEED_STRIDE``.

    Returns:
        The :class:`Outcome`; an exception inside the experiment gives a saved result with
        ``status="failed"`` and the error message (never raised), so one broken row does not stop
        the others.
    """
    module = get(row_id)
    row_id = module.ID
    prof = "custom" if config is not None else profile
    cfg = config if config is not None else config_for(row_id, profile, seed)
    key_dir = result_dir(out, row_id, cfg)
    path = key_dir / "result.json"
    t0 = time.perf_counter()
    progress = make_progress(row_id, stream, t0)
    if not force:
        saved = _saved_ok(path, progress)
        if saved is not None:
            progress(f"reusing saved result {key_dir.name} ({saved.verdict_status})")
            return Outcome(row_id, saved, True, time.perf_counter() - t0, path)
    key_dir.mkdir(parents=True, exist_ok=True)
    cpu0 = time.process_time()
    cache_dir = Path(out) / CACHE
    cache_dir.mkdir(parents=True, exist_ok=True)
    progress(f"start ({prof} profile) -> {key_dir}")
    try:
        result = module.run(cfg, cache_dir=cache_dir, work_dir=key_dir, progress=progress)
        if not isinstance(result, ExperimentResult):
            raise LosslabError(f"{module.__name__}.run returned {type(result).__name__}, not an ExperimentResult")
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded in the result, shown in the report
        tb = traceback.format_exc(limit=8)
        msg = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        progress(f"FAILED: {msg}")
        result = ExperimentResult.create(row_id, cfg, measurements={}, verdict=None)
        result.status = "failed"
        result.error = msg
        result.notes = [tb]
    total = time.perf_counter() - t0
    result.config_hash = key_dir.name.split("-", 1)[1]
    result.profile = prof
    if seed:
        result.seeds = {**result.seeds, "master": seed}
    result.timings = {**result.timings, "total": round(total, 3), "cpu": round(time.process_time() - cpu0, 3)}
    result.env = _env()
    result.created = now_iso()
    result.save(path)
    if result.status == "ok":
        progress(f"done in {total:.1f}s: {result.verdict_status}")
    return Outcome(row_id, result, False, total, path)


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker process end when ``parent_pid`` does (no orphans after a SIGKILL).

    On Linux the kernel's parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) does it at once;
    everywhere a daemon thread also polls the parent pid once a second. SIGINT is ignored: on Ctrl-C
    the parent stops the workers itself, so no worker prints a traceback.
    """
    import signal
    import threading

    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # pragma: no cover - not the main thread
        pass
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no prctl
            pass
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="losslab-parent-watch", daemon=True).start()


def _init_worker(threads: int, parent_pid: int | None = None) -> None:
    from ..settings import set_threads

    if parent_pid is not None:
        _die_with_parent(parent_pid)
    set_threads(threads)


class _DeferredSignals:
    """Hold SIGINT and SIGTERM while the parent waits on its worker pool; re-raise them at a safe point.

    A ``KeyboardInterrupt`` raised asynchronously inside ``concurrent.futures.wait`` can leave a
    future's lock held, after which the pool's manager thread blocks forever and the interpreter
    hangs on exit instead of printing "interrupted". Here the handlers only record the signal;
    :meth:`check`, called between waits, hands it to the handler that was installed before (the
    CLI's SIGTERM handler, Python's default Ctrl-C handler), which raises in plain code. Outside the
    main thread, signals cannot be handled and nothing changes.
    """

    _SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "_DeferredSignals":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in self._SIGNALS:
                num = getattr(signal, name, None)
                if num is None:
                    continue
                with contextlib.suppress(ValueError, OSError):
                    self.previous[num] = signal.signal(num, self._record)
        return self

    def _record(self, signum: int, frame: object) -> None:
        if self.received is None:
            self.received = signum

    def check(self) -> None:
        """Deliver a recorded signal to the previous handler (which raises for Ctrl-C and SIGTERM)."""
        import signal

        signum, self.received = self.received, None
        if signum is None:
            return
        prev = self.previous.get(signum)
        if callable(prev):
            prev(signum, None)
        elif prev == signal.SIG_DFL:
            self._restore()
            signal.raise_signal(signum)

    def _restore(self) -> None:
        import signal

        for num, prev in self.previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(num, prev)
        self.previous = {}

    def __exit__(self, exc_type: object, *rest: object) -> None:
        previous = dict(self.previous)
        self._restore()
        if exc_type is None and self.received is not None:  # a signal during the pool's shutdown
            self.previous = previous
            self.check()


def _worker(row_id: str, profile: str, out: str, force: bool, threads: int, seed: int) -> tuple[str, str, bool, float]:
    o = run_experiment(row_id, profile, out=out, force=force, stream=sys.stderr, seed=seed)
    return o.id, str(o.path), o.cached, o.seconds


def run_many(
    ids: Sequence[str] | None = None,
    profile: str = "quick",
    *,
    out: str | os.PathLike,
    jobs: int = 1,
    force: bool = False,
    stream: TextIO | None = None,
    threads: int = 1,
    start_method: str = "spawn",
    seed: int = 0,
) -> list[Outcome]:
    """Run several experiments, independent ones in parallel processes.

    Saved results are checked in this process first (a rerun with nothing changed starts no
    worker); the rest run in a ``ProcessPoolExecutor`` of ``jobs`` processes (``spawn`` start
    method, ``threads`` torch threads each), longest expected first (module ``COST``). Experiments
    that share trained runs coordinate through the run cache's lock files.

    Args:
        ids: row ids (default: every implemented row), in any case.
        profile: ``"quick"`` or ``"full"``.
        out: output directory.
        jobs: worker processes (1: run in this process).
        force: recompute saved results.
        stream: progress lines (None: silent).
        threads: torch threads per worker.
        start_method: ``"spawn"`` (default, safe with torch) or ``"fork"``.
        seed: master seed (see :func:`shift_seeds`); two master seeds give independent replications.

    Returns:
        One :class:`Outcome` per id, in survey order.
    """
    from ..settings import set_threads
    from ._registry import row_order

    wanted = [get(i).ID for i in (ids if ids else list(EXPERIMENTS))]
    wanted = sorted(dict.fromkeys(wanted), key=row_order)
    for row_id in wanted:
        config_for(row_id, profile, seed)  # fail early on a bad profile/config
    outcomes: dict[str, Outcome] = {}
    todo: list[str] = []
    for row_id in wanted:
        if not force:
            saved_path = result_dir(out, row_id, config_for(row_id, profile, seed)) / "result.json"
            saved = load_saved(out, row_id, profile, seed)
            if saved is not None:
                if stream is not None:
                    print(f"[{row_id:>3}    0.0s] reusing saved result {saved_path.parent.name} "
                          f"({saved.verdict_status})", file=stream, flush=True)
                outcomes[row_id] = Outcome(row_id, saved, True, 0.0, saved_path)
                continue
        todo.append(row_id)

    def cost(row_id: str) -> float:
        c = getattr(EXPERIMENTS[row_id], "COST", None) or {}
        return float(c.get(profile, 60.0))

    todo.sort(key=cost, reverse=True)
    if todo and (jobs <= 1 or len(todo) == 1):
        set_threads(threads)
        for row_id in todo:
            outcomes[row_id] = run_experiment(row_id, profile, out=out, force=force, stream=stream, seed=seed)
    elif todo:
        import multiprocessing

        ctx = multiprocessing.get_context(start_method)
        with _DeferredSignals() as signals, ProcessPoolExecutor(
                max_workers=min(jobs, len(todo)), mp_context=ctx, initializer=_init_worker,
                initargs=(threads, os.getpid())) as pool:
            futures: dict[Future, str] = {
                pool.submit(_worker, row_id, profile, str(out), force, threads, seed): row_id for row_id in todo
            }
            try:
                pending = set(futures)
                while pending:
                    signals.check()  # Ctrl-C / SIGTERM surface here, never inside the executor's locks
                    done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    for fut in done:
                        row_id = futures[fut]
                        try:
                            rid, path, cached, secs = fut.result()
                            outcomes[row_id] = Outcome(rid, ExperimentResult.load(path), cached, secs, Path(path))
                        except Exception as exc:  # noqa: BLE001 - a crashed worker (killed, OOM)
                            res = ExperimentResult.create(row_id, config_for(row_id, profile, seed), measurements={},
                                                          verdict=None)
                            res.status, res.error = "failed", f"worker crashed: {type(exc).__name__}: {exc}"
                            res.profile = profile
                            outcomes[row_id] = Outcome(row_id, res, False, 0.0,
                                                       result_dir(out, row_id, config_for(row_id, profile, seed)) / "result.json")
                signals.check()
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM (the CLI turns it into KeyboardInterrupt)
                # stop the workers now: the rows they were running are recomputed on the next call, the
                # finished ones are saved; their trained runs resume from the last checkpoint
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    with contextlib.suppress(Exception):
                        proc.kill()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    return [outcomes[i] for i in wanted]
