"""The result of a surface (:mod:`losslab.surface`): a (possibly partial) line or plane, saved as
``.npz`` + ``.json`` (no pickles) and loaded back losslessly; resumable surfaces continue from it."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np

from ._io import atomic_savez, atomic_write_json
from .errors import LosslabError
from .results import Result, jsonable, load_arrays, result_paths, seal

__all__ = ["SurfaceResult", "FORMAT", "FORMAT_VERSION", "BlockLog"]

FORMAT = "losslab.surface"
FORMAT_VERSION = 1


# ---- result ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SurfaceResult(Result):
    """A (possibly partial) 1-D or 2-D surface.

    Attributes:
        kind: ``"line"`` or ``"plane"``.
        x: coordinates along the first direction, shape ``(nx,)`` (the ``a`` values of a line).
        y: coordinates along the second direction, shape ``(ny,)``, or ``None`` for a line.
        metrics: ``{name: float64 array}`` shaped ``(nx,)`` (line) or ``(ny, nx)`` (plane; rows = y,
            columns = x), NaN where not done (and where the value itself was non-finite).
        done: boolean mask of the same shape: which points have been evaluated.
        meta: JSON-serialisable description: directions' metadata, data, evaluator setup
            (strategy, chunk sizes, timings), seeds, timing (seconds, points/s), versions,
            fingerprint of the inputs (used to validate resumption); ``meta["precision"]`` for an
            adaptive surface (settings, tolerance, ``example_evaluations``, ``exact_equivalent``,
            ``savings``).
        arrays: per-point arrays of an adaptive-precision surface (:mod:`losslab.precision`):
            ``stderr__<metric>``, ``examples_used``, ``exact``, ``interpolated`` (and, while
            unfinished, the lattice's per-example ``reference`` values); empty for an exact one.

    Example:
        >>> import numpy as np
        >>> r = SurfaceResult.empty("line", np.linspace(0, 1, 3), None, ["loss"])
        >>> r = r.with_values(np.array([1]), {"loss": np.array([0.5])})
        >>> r.done.tolist(), r.n_done, r.complete
        ([False, True, False], 1, False)
    """

    kind: Literal["line", "plane"]
    x: np.ndarray
    y: np.ndarray | None
    metrics: dict[str, np.ndarray]
    done: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("line", "plane"):
            raise LosslabError(f"kind must be 'line' or 'plane', got {self.kind!r}")
        if (self.kind == "plane") != (self.y is not None):
            raise LosslabError("a plane needs y coordinates and a line must not have them")
        shape = self.shape
        if self.done.shape != shape or self.done.dtype != np.bool_:
            raise LosslabError(f"done must be a bool array of shape {shape}, got {self.done.dtype} {self.done.shape}")
        for k, v in self.metrics.items():
            if v.shape != shape:
                raise LosslabError(f"metric {k!r} has shape {v.shape}, expected {shape}")
        for k, v in self.arrays.items():
            if k != "reference" and v.shape != shape:
                raise LosslabError(f"array {k!r} has shape {v.shape}, expected {shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        """``(nx,)`` for a line, ``(ny, nx)`` for a plane."""
        return (len(self.x),) if self.y is None else (len(self.y), len(self.x))

    @property
    def n_points(self) -> int:
        return int(np.prod(self.shape))

    @property
    def n_done(self) -> int:
        return int(self.done.sum())

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    @property
    def stderr(self) -> dict[str, np.ndarray]:
        """Standard error of each metric per point: 0 where evaluated exactly, NaN where not done."""
        zero = np.where(self.done, 0.0, np.nan)
        return {k: self.arrays.get(f"stderr__{k}", zero).copy() for k in self.metrics}

    @property
    def examples_used(self) -> np.ndarray:
        """Examples evaluated per point (all ``N`` for an exact surface, 0 where interpolated)."""
        return self.arrays.get("examples_used", np.where(self.done, int(self.meta.get("data", {}).get("n", 0)), 0))

    @property
    def exact(self) -> np.ndarray:
        """Which points were evaluated on every example."""
        return self.arrays.get("exact", self.done)

    @property
    def interpolated(self) -> np.ndarray:
        """Which points were filled by interpolation (never evaluated)."""
        return self.arrays.get("interpolated", np.zeros(self.shape, bool))

    @classmethod
    def empty(
        cls,
        kind: Literal["line", "plane"],
        x: np.ndarray,
        y: np.ndarray | None,
        metric_names: Sequence[str],
        meta: Mapping[str, Any] | None = None,
    ) -> "SurfaceResult":
        """A result with nothing done: metrics all NaN, ``done`` all False."""
        x = np.asarray(x, dtype=np.float64)
        y = None if y is None else np.asarray(y, dtype=np.float64)
        shape = (len(x),) if y is None else (len(y), len(x))
        return cls(kind, x, y, {m: np.full(shape, np.nan) for m in metric_names}, np.zeros(shape, bool), dict(meta or {}))

    def with_values(self, flat_index: np.ndarray, values: Mapping[str, np.ndarray]) -> "SurfaceResult":
        """A copy with ``values`` written at the flat (row-major) indices and those points marked done."""
        idx = np.asarray(flat_index, dtype=np.int64)
        metrics = {k: v.copy() for k, v in self.metrics.items()}
        for k, v in values.items():
            if k not in metrics:
                raise LosslabError(f"unknown metric {k!r}; have {sorted(metrics)}")
            metrics[k].reshape(-1)[idx] = v
        done = self.done.copy()
        done.reshape(-1)[idx] = True
        return dataclasses.replace(self, metrics=metrics, done=done)

    def with_meta(self, **updates: Any) -> "SurfaceResult":
        """A copy with ``meta`` updated (shallow merge)."""
        return dataclasses.replace(self, meta={**self.meta, **updates})

    # ---- I/O --------------------------------------------------------------------------------

    @staticmethod
    def paths(path: str | Path) -> tuple[Path, Path]:
        """``(npz, json)`` for ``path`` given with or without ``.npz``/``.json`` (:func:`losslab.results.result_paths`)."""
        return result_paths(path)

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.npz`` (arrays) and ``<path>.json`` (description), each atomically.

        The files need only numpy and json to read: the npz holds ``x``, ``y`` (planes),
        ``done`` and one ``metric__<name>`` array per metric (no pickles); the JSON holds
        ``kind``, ``metrics`` (names), ``shape``, the layout note and ``meta``.

        Returns:
            The ``.npz`` path.
        """
        npz, js = self.paths(path)
        arrays: dict[str, np.ndarray] = {"x": self.x, "done": self.done}
        if self.y is not None:
            arrays["y"] = self.y
        for k, v in self.metrics.items():
            arrays[f"metric__{k}"] = v
        arrays.update({f"array__{k}": v for k, v in self.arrays.items()})
        atomic_savez(npz, **arrays)
        atomic_write_json(
            js,
            seal({
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "kind": self.kind,
                "metrics": list(self.metrics),
                "shape": list(self.shape),
                "layout": "metric[j, i] is at (x[i], y[j]) (rows = y)" if self.kind == "plane" else "metric[i] at x[i]",
                "n_done": self.n_done,
                "meta": jsonable(self.meta, max_array_size=64),
            }),  # with its content hash, checked by load (so is the npz's CRC-32)
        )
        return npz

    @classmethod
    def load(cls, path: str | Path) -> "SurfaceResult":
        """Read a result written by :meth:`save`."""
        arrays, desc = load_arrays(path, FORMAT, what="surface")
        metrics = {m: arrays[f"metric__{m}"].astype(np.float64) for m in desc["metrics"]}
        return cls(
            desc["kind"],
            arrays["x"].astype(np.float64),
            arrays["y"].astype(np.float64) if "y" in arrays else None,
            metrics,
            arrays["done"].astype(bool),
            desc.get("meta", {}),
            {k[len("array__"):]: v for k, v in arrays.items() if k.startswith("array__")},
        )


class BlockLog:
    """The bookkeeping after each block of a surface run: the progress bar, the checkpoint every
    ``checkpoint_every`` blocks and the callback; at the end, the final result saved.

    Args:
        snapshot: returns the current (partial) result.
        total, initial, progress, desc: the progress bar (:func:`losslab.results.progress_bar`).
        checkpoint_path, checkpoint_every, callback: as in :func:`losslab.surface.plane`.
    """

    def __init__(self, snapshot: Callable[[], SurfaceResult], total: int, initial: int, progress: bool, desc: str,
                 checkpoint_path: str | Path | None, checkpoint_every: int,
                 callback: Callable[[SurfaceResult], None] | None) -> None:
        from .results import progress_bar

        self.snapshot, self.path, self.every, self.callback = snapshot, checkpoint_path, int(checkpoint_every), callback
        self.bar = progress_bar(total, initial, progress=progress, desc=desc, unit="pt")
        self.since = 0

    def block(self, points: int) -> None:
        """A block of ``points`` points is done."""
        self.since += 1
        if self.bar is not None:
            self.bar.update(points)
        if self.path is not None and self.since >= self.every:
            self.snapshot().save(self.path)
            self.since = 0
        if self.callback is not None:
            self.callback(self.snapshot())

    def close(self) -> None:
        """Close the progress bar (call it in a ``finally``)."""
        if self.bar is not None:
            self.bar.close()

    def final(self) -> SurfaceResult:
        """The final result, saved to the checkpoint path if there is one."""
        out = self.snapshot()
        if self.path is not None:
            out.save(self.path)
        return out
