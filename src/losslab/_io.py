"""Atomic file writes and small JSON helpers (no losslab imports at module level: usable by every layer).

The results layer built on them (JSON conversion, npz + JSON results, hashes) is :mod:`losslab.results`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write a file atomically: ``write(fh)`` fills a temp file beside ``path``, which is then renamed.

    A crash mid-write leaves the old file (or none) in place, never a truncated one. The file gets
    the permissions an ordinary ``open`` would give it under the process umask (0644 under umask 022),
    not the private 0600 of the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os_err = _os_error_in_chain(exc)
        if os_err is not None and os_err.filename is None and isinstance(exc, (OSError, RuntimeError)):
            # a full disk or read-only file system found mid-write (torch.save wraps it in a RuntimeError):
            # say which file, keeping the errno
            raise OSError(os_err.errno, os.strerror(os_err.errno), str(path)) from exc
        raise
    return path


def _os_error_in_chain(exc: BaseException) -> OSError | None:
    """The first :class:`OSError` with an errno in ``exc``'s cause/context chain (``exc`` included)."""
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 10:
        if isinstance(e, OSError) and e.errno is not None:
            return e
        e = e.__cause__ or e.__context__
        seen += 1
    return None


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (``fcntl.flock``; a no-op where fcntl is missing).

    Not reentrant: a process that holds a lock on a path must not ask for the same path again.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files an interrupted :func:`atomic_write` left in ``directory``.

    Call it only while holding the lock of whatever writes there (a live writer's temp file would go).
    """
    d = Path(directory)
    gone = []
    if d.is_dir():
        for f in d.glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
                gone.append(f)
    return gone


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    """The process umask (read by setting and restoring it; there is no getter before Python 3.13's os)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text), mode="w")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh))


def atomic_savez(path: str | os.PathLike, **arrays: Any) -> Path:
    import numpy as np

    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a damaged one (truncated, not JSON) is a one-line :class:`~losslab.errors.DamagedFile`
    naming it."""
    from .errors import DamagedFile

    with open(path) as fh:
        try:
            return json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DamagedFile(path, f"not valid JSON: {exc}") from None


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
