"""The adaptive-precision surface driver: what :func:`losslab.surface.plane`/``line`` run with ``precision``.

The method (the lattice, the estimator, the waves of points) is :mod:`losslab.precision`; this module
runs its waves with the surface's bookkeeping (progress bar, checkpoints, callback, ``max_points``).
By default the waves are evaluated in this process (:func:`local_waves`). :mod:`losslab.distributed`
sets :data:`WAVE_DRIVER` around its call of ``plane``/``line`` to share each wave's points over the
ranks instead; the point construction, resumption and results are this module's either way.
"""
from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from .precision import _BIG, AdaptiveGrid, Precision, _labels, _point_values

__all__ = ["run_adaptive", "local_waves", "planned_waves", "WAVE_DRIVER", "WaveDriver"]

Values = Callable[[int, "np.ndarray | None"], np.ndarray]


class WaveDriver(Protocol):
    """Evaluates the waves of an :class:`~losslab.precision.AdaptiveGrid` (see :func:`local_waves`)."""

    def run(self, grid: AdaptiveGrid, values: Values, step: Callable[[int], None], budget: int, block: int,
            snapshot: Callable[[], Any]) -> None: ...

    def meta(self) -> dict[str, Any]: ...


WAVE_DRIVER: ContextVar[WaveDriver | None] = ContextVar("losslab_wave_driver", default=None)
"""The driver :func:`run_adaptive` hands its waves to (``None``: :func:`local_waves`); its ``meta()``
is merged into every snapshot's metadata."""


def planned_waves(grid: AdaptiveGrid, budget: int) -> Iterator[list[int]]:
    """The waves a run evaluates, for every driver: ``grid.plan()`` (taken after the previous wave was
    applied), cut to what is left of ``budget`` points; ends when the plan is empty or the budget spent."""
    done = 0
    while done < budget:
        todo = grid.plan()[: budget - done]
        if not todo:
            return
        yield todo
        done += len(todo)


def local_waves(grid: AdaptiveGrid, values: Values, step: Callable[[int], None], budget: int, block: int) -> None:
    """Evaluate wave after wave of ``grid`` (:func:`planned_waves`) in blocks of ``block`` points,
    ``step(points)`` after each."""
    for todo in planned_waves(grid, budget):
        for s in range(0, len(todo), block):
            idx = todo[s : s + block]
            grid.evaluate(idx, values)
            step(len(idx))


def run_adaptive(result: Any, precision: Precision, ev: Any, coeffs: np.ndarray, base: dict[str, Any] | None,
                 basis: Sequence[dict[str, Any]], *, progress: bool, checkpoint_path: Any, checkpoint_every: int,
                 max_points: int | None, callback: Callable[[Any], None] | None, prior: tuple[float, int],
                 anchors: Sequence[int] = ()) -> Any:
    """Run (or resume) an adaptive surface: what :func:`losslab.surface.plane`/``line`` do with ``precision``.

    Args:
        result: the (empty or partial) ``SurfaceResult`` to continue; its ``metrics``/``done``/
            ``arrays`` are the saved state.
        precision: the settings.
        ev: the :class:`~losslab.evaluate.Evaluator`.
        coeffs, base, basis: point ``k`` is ``base + sum_j coeffs[k, j] * basis[j]``.
        progress, checkpoint_path, checkpoint_every, max_points, callback: as in ``plane``; a
            block is up to ``ev.points_per_chunk`` points of one wave.
        prior: ``(seconds, points)`` already spent by earlier calls.
        anchors: indices along x added to the exact lattice (:class:`~losslab.precision.AdaptiveGrid`).

    Returns:
        The ``SurfaceResult``, complete unless ``max_points`` stopped it (then resumable).
    """
    import dataclasses
    import time

    from .results import jsonable
    from .surface_result import BlockLog

    driver = WAVE_DRIVER.get()
    grid = AdaptiveGrid(precision, result.x, result.y, ev.metric_names, _labels(ev), ev.n, metrics=result.metrics,
                        done=result.done, arrays=result.arrays, anchors=anchors)
    keys = list(dict.fromkeys([*(base or {}), *(k for d in basis for k in d)]))
    shape = result.shape

    def point_at(k: int) -> dict[str, Any]:  # point k: ((base + c_1 d_1) + c_2 d_2) + ...
        pt = {}
        for key in keys:
            v = None if base is None else base.get(key)
            for j, d in enumerate(basis):
                if key in d:
                    t = d[key] * float(coeffs[k, j])
                    v = t if v is None else v + t
            pt[key] = v
        return pt

    values = _point_values(ev, point_at)
    t0, evaluated = time.perf_counter(), 0

    def snapshot() -> Any:
        secs, pts = prior[0] + (time.perf_counter() - t0), prior[1] + evaluated
        timing = {"seconds": secs, "points_evaluated": pts, "points_per_s": (pts / secs) if secs > 0 else None}
        meta = {**result.meta, "timing": timing, "evaluator": dict(ev.info), "precision": grid.summary(),
                **(driver.meta() if driver is not None else {})}
        return dataclasses.replace(result, metrics=grid.metrics(shape), done=grid.done(shape),
                                   arrays=grid.arrays(shape, keep_reference=not grid.complete),
                                   meta=jsonable(meta, max_array_size=64))

    def step(points: int) -> None:
        nonlocal evaluated
        evaluated += points
        log.block(points)

    budget = _BIG if max_points is None else int(max_points)
    block = max(1, int(ev.points_per_chunk))
    log = BlockLog(snapshot, int(np.prod(shape)), int(grid.evaluated.sum()), progress, "adaptive", checkpoint_path,
                   checkpoint_every, callback)
    try:
        if driver is None:
            local_waves(grid, values, step, budget, block)
        else:
            driver.run(grid, values, step, budget, block, snapshot)
        if not grid.plan():
            grid.finish()
    finally:
        log.close()
    return log.final()
