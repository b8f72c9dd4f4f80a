"""Memory and cache sizing of the evaluator: activation bytes per example, chunk sizes for the memory
budget and the cache target, and the allocator warm-up (see the package docstring of
:mod:`losslab.evaluate`, "Memory" and "Cache")."""
from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..errors import LosslabError

if TYPE_CHECKING:  # pragma: no cover
    from ._sources import _Source

_MAX_POINTS_PER_CHUNK = 64
_MAC_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PROBE_EXAMPLES = 32
DEFAULT_CACHE_MB = 4.0
"""Default ``cache_mb`` on a CPU: the largest activation of a chunk (times its points, for vmap), MiB."""
_MIN_CACHE_CHUNK = 64  # examples: smaller chunks cost more in per-call overhead than the cache saves
_WARMUP_MIN_BYTES = 4 * 2**20  # allocator warm-up block: bounds (glibc adjusts its thresholds up to 32 MiB)
_WARMUP_MAX_BYTES = 30 * 2**20


def _positive_number(v: Any) -> bool:
    if isinstance(v, (str, bool)):
        return False
    try:
        return float(v) > 0
    except (TypeError, ValueError):
        return False


class _MemoryMixin:
    """The :class:`~losslab.evaluate.Evaluator`'s sizing: activation probe, chunk sizes (by rule or
    measured), allocator warm-up."""

    def _probe_activation_bytes(self) -> tuple[int, int]:
        """Activation bytes per example, (sum, largest single one), from one forward of a few examples.

        The sum counts the input, every leaf module's output and the model's output (see the
        docstring of :mod:`losslab.evaluate`); the largest is the biggest of those tensors.
        """
        nb = min(self.n, _PROBE_EXAMPLES)
        xb = self.x[:nb]
        total = [0]
        largest = [0]

        def count(obj: Any) -> int:
            if isinstance(obj, Tensor):
                return obj.numel() * obj.element_size()
            if isinstance(obj, (tuple, list)):
                return sum(count(o) for o in obj)
            if isinstance(obj, dict):
                return sum(count(o) for o in obj.values())
            return 0

        self._leaf_order: list[nn.Module] = []

        self._leaf_macs: dict[int, float] = {}  # multiply-adds per example of each Linear/ConvNd leaf

        def hook(m: nn.Module, _i: Any, out: Any) -> None:
            self._leaf_order.append(m)  # leaves do not nest: completion order is call order
            w = getattr(m, "weight", None)
            if isinstance(m, _MAC_TYPES) and isinstance(out, Tensor) and isinstance(w, Tensor) and w.dim() >= 2:
                self._leaf_macs[id(m)] = self._leaf_macs.get(id(m), 0.0) + out.numel() * w[0].numel() / nb
            c = count(out)
            total[0] += c
            largest[0] = max(largest[0], c)

        leaves = [m for m in self._shell.modules() if next(m.children(), None) is None]
        handles = [m.register_forward_hook(hook) for m in leaves]
        try:
            with torch.inference_mode():
                out = self._forward_one(self._merged({}, self._base_buffers), xb)
        except Exception as e:  # noqa: BLE001
            raise LosslabError(f"the model failed on the data: {type(e).__name__}: {e}") from e
        finally:
            for h in handles:
                h.remove()
        self._check_output(out)
        per = (count(xb) + total[0] + count(out)) / nb
        big = max(count(xb), largest[0], count(out)) / nb
        return max(1, math.ceil(per)), max(1, math.ceil(big))

    def _cache_batch(self) -> int:
        """Examples per evaluation chunk: ``clip(C / a, 64, batch_size)`` (see ``cache_mb``)."""
        if self.cache_mb is None:
            return self.batch_size
        fit = int(self.cache_mb * 2**20 // self.max_activation_bytes)
        return max(1, min(self.batch_size, max(fit, _MIN_CACHE_CHUNK)))

    def _chunks(self, t: Tensor) -> list[Tensor]:
        """``t`` in chunks of ``batch_size`` (the BatchNorm pass's chunking)."""
        return list(t.split(self.batch_size))

    def _eval_chunks(self, size: int) -> tuple[list[Tensor], list[Tensor]]:
        """The evaluation data in ``ceil(n / size)`` chunks of (nearly) equal size, at most ``size``."""
        got = self._split_cache.get(size)
        if got is None:
            parts = -(-self.n // max(1, size))
            got = (list(self.x.tensor_split(parts)), list(self.y.tensor_split(parts)))
            if len(self._split_cache) > 4:
                self._split_cache.clear()
            self._split_cache[size] = got
        return got

    def _data(self, strategy: str) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """``(x chunks, BatchNorm x chunks, y chunks)`` for ``strategy``."""
        size = self.loop_batch_size if strategy == "loop" else self.vmap_batch_size
        xs, ys = self._eval_chunks(size)
        bxs = self._chunks(self.bn_x) if self.bn == "recompute" and self._bn_modules else []
        return xs, bxs, ys

    def _setup_chunking(self, measured: bool) -> dict[str, Any]:
        """Queue the chunk sizes the loop's first points measure (one point each, see
        :meth:`_probe_chunk`) when ``measured`` and there is more than one; returns the
        ``info["chunking"]`` record."""
        candidates = self._chunk_candidates() if measured else [self.loop_batch_size]
        self._chunk_queue: list[int] = list(candidates) if len(candidates) > 1 else []
        self._chunk_times: dict[int, float] = {}
        return {"mode": "measured" if self._chunk_queue else "rule", "candidates": candidates,
                "s_per_point": None, "chosen": None if self._chunk_queue else self.loop_batch_size}

    def _chunk_candidates(self) -> list[int]:
        """Chunk sizes the loop measures with ``cache_mb="auto"`` on a CPU: the cache rule's size
        ``B_c``, doubled while under ``batch_size``, and ``batch_size`` itself; one size per distinct
        number of chunks (the data is cut into ``ceil(N / size)`` equal chunks)."""
        sizes, s = [], max(1, self.loop_batch_size)
        while s < self.batch_size:
            sizes.append(s)
            s *= 2
        sizes.append(self.batch_size)
        out: list[int] = []
        seen: set[int] = set()
        for s in sizes:
            parts = -(-self.n // s)
            if parts not in seen:
                seen.add(parts)
                out.append(s)
        return out

    def _warm_allocator(self) -> int:
        """Raise glibc's dynamic ``malloc`` thresholds above one chunk's activations (Linux CPU, cache on).

        glibc serves blocks at or above its mmap threshold (initially 128 KiB) with ``mmap``, and
        returns free heap memory above its trim threshold to the OS; both thresholds rise to the
        size of the largest ``mmap``-ed block freed so far (at most 32 MiB), trim = 2 x mmap. Until
        they have risen, every chunk's activations are fresh pages: faulted in and zeroed at every
        forward. Allocating and freeing (untouched) one block of :math:`T = \\mathrm{clip}(W, 4,
        30)` MiB, :math:`W` = bytes of a chunk's activations (``bytes_per_example`` times the
        examples, times the points of a vmap call), raises them at once, so the chunks after the
        first reuse memory instead of page-faulting it in (bench/RESULTS.md has the measured
        effect). It never lowers a threshold and changes nothing elsewhere.

        Returns:
            ``T`` in bytes, or 0 when not done.
        """
        if self.cache_mb is None or self.device.type != "cpu" or not sys.platform.startswith("linux"):
            return 0
        work = self.bytes_per_example * max(self.loop_batch_size, self.vmap_batch_size * self.vmap_points_per_call)
        size = int(min(max(work, _WARMUP_MIN_BYTES), _WARMUP_MAX_BYTES))
        block = torch.empty(size, dtype=torch.uint8)
        del block
        return size

    @property
    def vmap_batch_size(self) -> int:
        """Examples per chunk of vmap's evaluation pass (the loop's with a cache target, else ``batch_size``)."""
        return self.batch_size if self.cache_mb is None else self.loop_batch_size

    @property
    def vmap_points_per_call(self) -> int:
        """Points per ``vmap`` call: ``points_per_chunk``, or with a cache target
        ``clip(C / (a * vmap_batch_size), 1, points_per_chunk)`` (so that the call's largest
        activation stays about ``cache_mb``). A group of ``points_per_chunk`` points is evaluated
        in consecutive calls of this many points (the last may be smaller)."""
        if self.cache_mb is None:
            return self.points_per_chunk
        fit = int(self.cache_mb * 2**20 // (self.max_activation_bytes * self.vmap_batch_size))
        return max(1, min(self.points_per_chunk, fit))

    def _probe_chunk(self, src: "_Source", i: int) -> Tensor:
        """Point ``i`` evaluated (and timed) in chunks of the next candidate size; the sizes are
        tried in increasing order while they get faster (the first one slower than the best so
        far ends the search, so a slow size costs one point), then the loop keeps the fastest.

        Every candidate is measured on a whole point (each point exact for its own chunking, so no
        work is thrown away), with the first layer computed; each size's first use pays its own
        one-off costs (allocation, kernel set-up), so no candidate is favoured. The chosen size is
        recorded as the cache target whose rule gives it (``cache_mb = size x largest
        activation``), so an evaluator built with that ``cache_mb`` (as a resumed surface is) uses
        the same chunks without measuring.
        """
        size = self._chunk_queue.pop(0)
        xs, ys = self._eval_chunks(size)
        bxs = self._data("loop")[1]
        _, clock = self._clock()
        self._sync()
        t0 = clock()
        out = self._run_loop(src.each(i, i + 1), xs, bxs, ys)
        self._sync()
        dt = clock() - t0
        if self._chunk_times and dt > min(self._chunk_times.values()):
            self._chunk_queue.clear()  # slower than a smaller size: larger ones are not tried
        self._chunk_times[size] = dt
        if not self._chunk_queue:
            best = min(self._chunk_times, key=lambda s: self._chunk_times[s])
            self.loop_batch_size = best
            self.cache_mb = best * self.max_activation_bytes / 2**20
            self.allocator_warmup_bytes = max(self.allocator_warmup_bytes, self._warm_allocator())
            self.info.update(loop_batch_size=best, cache_mb=self.cache_mb, vmap_batch_size=self.vmap_batch_size,
                             vmap_points_per_call=self.vmap_points_per_call,
                             allocator_warmup_bytes=self.allocator_warmup_bytes)
            self.info["chunking"].update(chosen=best, s_per_point={str(s): t for s, t in self._chunk_times.items()})
        return out
