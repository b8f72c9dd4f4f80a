"""Memory and cache sizing of the evaluator: activation bytes per example, chunk sizes for the memory
budget and the cache target, and the allocator warm-up (see the package docstring of
:mod:`losslab.evaluate`, "Memory" and "Cache")."""
from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import LosslabError

_MAX_POINTS_PER_CHUNK = 64
_PROBE_EXAMPLES = 32
DEFAULT_CACHE_MB = 4.0
"""Default ``cache_mb`` on a CPU: the largest activation of a chunk (times its points, for vmap), MiB."""
_MIN_CACHE_CHUNK = 64  # examples: smaller chunks cost more in per-call overhead than the cache saves
_WARMUP_MIN_BYTES = 4 * 2**20  # allocator warm-up block: bounds (glibc adjusts its thresholds up to 32 MiB)
_WARMUP_MAX_BYTES = 30 * 2**20


class _MemoryMixin:
    """The :class:`~losslab.evaluate.Evaluator`'s sizing: activation probe, chunk sizes, allocator warm-up."""

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

        def hook(m: nn.Module, _i: Any, out: Any) -> None:
            self._leaf_order.append(m)  # leaves do not nest: completion order is call order
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
