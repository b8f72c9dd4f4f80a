"""Loss, accuracy and user metrics of one model at many points in parameter space.

An :class:`Evaluator` holds a model, a dataset (resident tensors, moved to the device once) and a
loss; it turns points (``dict[str, Tensor]`` keyed like ``model.named_parameters()``) into numbers
without ever touching the user's model. For a point :math:`\\theta` and data
:math:`\\{(x_n, y_n)\\}_{n=1}^N` split into chunks :math:`C_1, \\dots, C_m` it returns

.. math::

    L(\\theta) = \\frac{1}{N} \\sum_{c=1}^{m} |C_c| \\, \\bar\\ell_c(\\theta), \\qquad
    \\bar\\ell_c(\\theta) = \\mathrm{loss}(f_\\theta(x_{C_c}), y_{C_c}),

i.e. the full-batch mean, exact for any chunking (chunks may differ in size). Every metric is
aggregated the same way, so a metric must return the *mean over the examples of its batch*.

How the model is run:

* The model is copied once into a private *shell* whose tensors live on the ``meta`` device (no
  memory is duplicated) and which is always evaluated with ``torch.func.functional_call`` under
  ``torch.inference_mode()``. The user's parameters, buffers and ``training`` flags are never read
  for writing, so they are bit-identical before and after every call. Evaluation is always in
  eval mode (dropout off), whatever mode the user's model is in.
* Keys absent from a point are taken from the model's parameters as they were at construction
  (shared storage when no device/dtype conversion is needed) and from a snapshot of its buffers.
* Strategies: ``"loop"`` evaluates one point after another; ``"vmap"`` evaluates groups of
  ``points_per_chunk`` stacked points at once with ``torch.vmap(functional_call)``; ``"auto"``
  measures both once, at the first call with two or more points: the loop on the first point
  (time :math:`t_1`), then vmap on the first :math:`m = \\mathrm{clip}(\\mathrm{round}(\\tau / t_1),
  2, \\min(\\texttt{points\\_per\\_chunk}, \\max(2, \\lfloor K/4 \\rfloor)))` points of that call
  (:math:`K` points given, :math:`\\tau` = 20 ms), over all the data, and keeps the strategy with
  the smaller time per point for the evaluator's lifetime. No point is repeated to fill a group.
  The probe's results are kept when they are what the chosen strategy computes anyway (the loop's
  first point; vmap's group when :math:`m` covers the whole first group), so the overhead is
  :math:`m` points evaluated by the slower strategy (or, when vmap wins on a partial group, the
  probe redone as part of that group). The time is process CPU time on a CPU with one torch thread
  (steady on a loaded machine), wall-clock time otherwise. The choice and the timings are
  recorded in :attr:`Evaluator.info`.
* Points that are linear combinations :math:`\\theta_k = \\theta_0 + \\sum_j c_{kj} d_j` (grids,
  lines) can be given as coefficients (:meth:`Evaluator.evaluate_combinations`): the loop then
  writes each point into one reused buffer just before evaluating it (no stacked copies of the
  parameters, no page faults), vmap builds one stacked group at a time; both compute
  :math:`((\\theta_0 + c_{k1} d_1) + c_{k2} d_2) + \\dots` elementwise in the evaluation dtype, so a
  point's tensors are bit-identical whichever strategy builds them.
* First layer (combinations, loop or vmap): the first layer with parameters is affine in its parameters
  and, when it qualifies, sees an input that depends on the data only, so its output at
  :math:`\\theta_k` is :math:`T_0 + \\sum_j c_{kj} T_j` with :math:`T_j` the layer applied to the
  data with direction :math:`j`'s weight and bias (:math:`T_0`: the base, or the model's values
  for keys no direction moves). With ``first_layer="precompute"`` (or ``"auto"`` when the fan-in
  is at least :data:`FIRST_LAYER_MIN_RATIO` times the number of terms) the :math:`T_j` are
  computed once per set of directions on the evaluation chunks and combined at each point (for
  vmap, for the K points of a call at once, as one extra input of the vmapped forward), replacing
  the layer's matrix product by a few additions: an MLP on 784-pixel images runs about 2x faster,
  one on 40 inputs a few percent. The layer qualifies when it is an exact ``nn.Linear`` or
  ``nn.Conv1d/2d/3d`` without hooks or shared parameters, runs once, no module with parameters
  or buffers runs before it, and every parameter belongs to a leaf module; before use, the model's
  output on a few examples at :math:`c = (1, \\dots, 1)` is checked against computing the layer
  (relative difference at most 1e-3), and the terms must fit in half the memory budget.
  Otherwise, or with ``"compute"``, the layer is computed; :attr:`Evaluator.info` says which and
  why. The results equal the computed ones to rounding (not bit for bit).
* BatchNorm: ``bn="recompute"`` (the default when the model has BatchNorm layers that track
  running statistics) resets the running statistics at every point and recomputes them with one
  pass over ``bn_data`` (default: the evaluation data) in chunks of ``batch_size`` with the
  BatchNorm layers in train mode and cumulative-average semantics (``momentum=None``, as
  ``torch.optim.swa_utils.update_bn`` and Garipov et al.'s ``update_bn``): after chunks
  :math:`1..m`, ``running_mean`` is the plain average of the per-chunk batch means and
  ``running_var`` of the per-chunk unbiased variances; with a single chunk they are the exact
  full-data statistics. Other layers (dropout) stay in eval mode during this pass, so it is
  deterministic. Then the point is evaluated in eval mode with those statistics. ``bn="eval"``
  uses the model's stored buffers (or buffers given in the point).
* Memory: one probe forward of a few examples with hooks on every leaf module measures the
  activation bytes per example, :math:`b = \\text{input bytes} + \\sum_{\\text{leaf modules}}
  \\text{output bytes}` (a conservative bound: it counts all activations as alive at once), and
  the largest single activation per example, :math:`a = \\max(\\text{input}, \\text{leaf outputs})`.
  With a budget :math:`M` bytes the chunk is :math:`B = \\min(N, \\lfloor M / b \\rfloor)` examples
  (or ``batch_size``) and a group of points is :math:`K = \\min(64, \\lfloor M / (B b + P)
  \\rfloor)` points (``P``: bytes of one point), or ``points_per_chunk``. :math:`B` is the
  BatchNorm chunking and does not depend on the strategy, so BatchNorm statistics are the same
  for both.
* Cache (CPU): a full-batch forward on a CPU is slowed down by its size: ``malloc`` serves large
  activations with ``mmap`` or hands them back to the OS after each use, so the next forward
  page-faults and zeroes them again (measured: up to 45% of the time in the kernel), and they do
  not stay in cache. With ``cache_mb`` = :math:`C` (default 4 MiB on a CPU, off on GPUs) the
  evaluation passes use chunks of :math:`B_c = \\mathrm{clip}(\\lfloor C / a \\rfloor, 64, B)`
  examples (cut into equal chunks), for the loop and for vmap, and each vmap call takes
  :math:`K_c = \\mathrm{clip}(\\lfloor C / (a B_c) \\rfloor, 1, K)` points of a group (so
  :math:`K_c B_c a \\approx C`: the same calls per point as any split of that product, with the
  largest per-point matrix products); the memory budget stays the upper bound. glibc's allocator
  thresholds are then raised above one chunk's activations (see :meth:`Evaluator._warm_allocator`),
  so chunks after the first reuse memory without page faults. Results do not depend on the
  chunking beyond rounding, and a point always shares its vmap call with the same points, so
  reruns are bit-identical. Measured on a 2-core EPYC, one thread, fresh process, loop, ms per
  point: MNIST-1D CNN 44-63 at full batch (6000 page faults per point), 23 at 4 MiB; MNIST-1D MLP
  40-512-512-10 44-53 (700-1900 faults), 34-38; with the allocator warm, chunks of 1/4 to all of
  the data are within 5% of each other, and chunks under 512 examples are slower (per-call
  overhead).
* Non-finite values are recorded as NaN/inf, never raised.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from losslab.evaluate import Evaluator
    >>> from losslab import params
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(20, 3, generator=g), torch.randint(0, 2, (20,), generator=g)
    >>> model = nn.Linear(3, 2)
    >>> ev = Evaluator(model, (x, y), batch_size=8)
    >>> r = ev.evaluate(params.get_point(model))
    >>> sorted(r)
    ['accuracy', 'loss']
    >>> abs(r["loss"] - nn.functional.cross_entropy(model(x), y).item()) < 1e-6
    True
    >>> ev.evaluate_many([params.get_point(model)] * 3)["loss"].shape
    (3,)
"""
from __future__ import annotations

import copy
import math
import sys
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterable,
    Iterator,
    Literal,
    Mapping,
    Sequence,
    Union,
)

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import params as P
from .errors import LosslabError

if TYPE_CHECKING:  # pragma: no cover
    from .data._base import Split

__all__ = ["Evaluator", "LossFn", "MetricFn", "PointSource", "has_batchnorm", "accuracy", "DEFAULT_CACHE_MB"]

Point = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss(output, target) -> scalar``: the *mean* loss over the examples of the batch."""
MetricFn = Callable[[Tensor, Tensor], Union[Tensor, float]]
"""``metric(output, target) -> scalar``: the *mean* over the examples of the batch."""
PointSource = Union[Sequence[Mapping[str, Tensor]], Callable[[np.ndarray], Mapping[str, Tensor]]]
"""A sequence of points, or ``make(indices) -> stacked point`` (leading dimension ``len(indices)``)."""

_MAX_POINTS_PER_CHUNK = 64
_PROBE_EXAMPLES = 32
DEFAULT_CACHE_MB = 4.0
"""Default ``cache_mb`` on a CPU: the largest activation of a chunk (times its points, for vmap), MiB."""
_MIN_CACHE_CHUNK = 64  # examples: smaller chunks cost more in per-call overhead than the cache saves
_PROBE_SECONDS = 0.02  # auto: vmap is measured on about this much of the loop's work (at least 2 points)
_WARMUP_MIN_BYTES = 4 * 2**20  # allocator warm-up block: bounds (glibc adjusts its thresholds up to 32 MiB)
_WARMUP_MAX_BYTES = 30 * 2**20
FIRST_LAYER_MIN_RATIO = 16
"""``first_layer="auto"`` precomputes when the layer's fan-in >= this x the number of terms."""
_AFFINE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_VMAP_MIN_OVERHEAD = 0.1
"""auto: vmap is measured only when the loop's fixed cost per point is at least this fraction of it."""


def _positive_number(v: Any) -> bool:
    if isinstance(v, (str, bool)):
        return False
    try:
        return float(v) > 0
    except (TypeError, ValueError):
        return False


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer that tracks running statistics."""
    return any(_is_bn(m) for m in model.modules())


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm) and bool(m.track_running_stats)


def accuracy(output: Tensor, target: Tensor) -> Tensor:
    """Fraction of correct arg-max predictions (class dimension 1, as for cross-entropy), batch mean."""
    return (output.argmax(1) == target).to(torch.float64).mean()


# ---- built-in per-example losses (work on (B, ...) and on vmapped (K, B, ...) outputs) ----------


def _ce_per_example(out: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy per example; ``out`` is (K, B, C) (or (K, B, C, d...)), ``y`` (B, ...)."""
    k, b = out.shape[:2]
    yk = y.unsqueeze(0).expand(k, *y.shape).reshape(k * b, *y.shape[1:])
    per = F.cross_entropy(out.reshape(k * b, *out.shape[2:]), yk, reduction="none")
    return per.reshape(k, b, -1).mean(-1)


def _mse_per_example(out: Tensor, y: Tensor) -> Tensor:
    k, b = out.shape[:2]
    if y.shape != out.shape[1:]:
        if y.numel() == out[0].numel():
            y = y.reshape(out.shape[1:])
        else:
            raise LosslabError(f"mse: output shape {tuple(out.shape[1:])} vs target shape {tuple(y.shape)}")
    return ((out - y.unsqueeze(0)) ** 2).reshape(k, b, -1).mean(-1)


def _acc_per_example(out: Tensor, y: Tensor) -> Tensor:
    """Correct predictions per example; the class dimension of (K, B, C, ...) outputs is 2."""
    return (out.argmax(2) == y.unsqueeze(0)).reshape(out.shape[0], out.shape[1], -1).to(torch.float64).mean(-1)


_BUILTIN_LOSSES = {"cross_entropy": _ce_per_example, "mse": _mse_per_example}


def check_model_output(out: Any, y: Tensor, *, classification: bool) -> None:
    """One-line :class:`LosslabError` when a model's output cannot go into a built-in loss: not a tensor
    (a dict or tuple), fewer than 2 dimensions for cross-entropy, or fewer classes than the labels use."""
    if not isinstance(out, Tensor):
        kind = type(out).__name__ + (f" with keys {list(out)[:5]}" if isinstance(out, Mapping) else "")
        raise LosslabError(f"the model returns a {kind}, not a tensor: pass loss= a callable that takes this "
                           f"output, or wrap the model so that it returns the logits")
    if classification and not y.is_floating_point() and y.numel():
        if out.dim() < 2:
            raise LosslabError(f"cross_entropy needs outputs (N, classes, ...), the model returns {tuple(out.shape)}")
        top = int(y.max())
        if top >= out.shape[1]:
            raise LosslabError(f"the model outputs {out.shape[1]} classes but the labels go up to {top}")


class Evaluator:
    """Evaluate loss/accuracy/metrics of one model at many points over a resident dataset.

    Args:
        model: the network; used as a template only (never modified).
        data: a ``Split`` (anything with ``.x`` and ``.y``) or an ``(x, y)`` tuple of tensors.
        loss: ``"cross_entropy"``, ``"mse"`` (mean over all output elements) or a callable
            ``loss(output, target) -> scalar`` returning the mean loss over the batch.
        metrics: extra ``{name: metric(output, target)}``, each returning the *mean* over the
            batch (a scalar tensor or float); aggregated as size-weighted means over chunks.
            ``"accuracy"`` is added automatically for integer targets with ``loss="cross_entropy"``
            unless ``metrics`` already has that name.
        batch_size: examples per chunk (the BatchNorm pass uses exactly this chunking; the
            evaluation passes at most this, see ``cache_mb``); ``None`` = full batch, chunked to
            ``memory_budget_mb``.
        memory_budget_mb: activation memory budget used to size data and point chunks.
        strategy: ``"loop"``, ``"vmap"`` or ``"auto"`` (measure both once, keep the faster).
        points_per_chunk: points evaluated together (vmap) / between callbacks; ``None`` = from
            the memory budget, at most 64.
        bn: ``"recompute"``, ``"eval"`` or ``"auto"`` (= ``"recompute"`` if the model has BatchNorm
            layers tracking running stats, else ``"eval"``).
        bn_data: data for recomputing BatchNorm statistics (default: ``data``). Pass the training
            split here when ``data`` is a test split.
        device: where to evaluate (default: the model's device).
        dtype: floating dtype of parameters and inputs (default: the model's).
        cache_mb: cache target of the evaluation passes, MiB: the examples (times points, for vmap)
            per chunk are chosen so that the largest activation stays about this size (see the
            module docstring). ``"auto"`` (default) = :data:`DEFAULT_CACHE_MB` on a CPU and
            ``None`` elsewhere; ``None`` = chunks of ``batch_size`` (memory budget only).
        first_layer: for points given as linear combinations (:meth:`evaluate_combinations`),
            ``"precompute"`` computes the first layer's output once per term
            and combines it at each point instead of running that layer (see the module
            docstring); ``"compute"`` always runs it; ``"auto"`` (default) precomputes when the
            layer qualifies, the outputs fit in half the memory budget and the layer's fan-in is
            at least :data:`FIRST_LAYER_MIN_RATIO` times the number of terms.

    Attributes:
        info: description of the setup (chunk sizes, bytes per example, bn mode, cache target,
            strategy chosen and the auto timings), JSON-serialisable.
        batch_size: examples per chunk of the memory budget (and of the BatchNorm pass).
        loop_batch_size: examples per chunk of the loop's evaluation pass.
        vmap_batch_size: examples per chunk of vmap's evaluation pass.
        vmap_points_per_call: points per ``vmap`` call (a group of ``points_per_chunk`` is
            evaluated in calls of this many).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
        >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> ev = Evaluator(m, (x, y), strategy="loop")
        >>> ev.bn
        'recompute'
        >>> 0.0 <= ev.evaluate({})["accuracy"] <= 1.0
        True
    """

    def __init__(
        self,
        model: nn.Module,
        data: "Split | tuple[Tensor, Tensor]",
        *,
        loss: str | LossFn = "cross_entropy",
        metrics: Mapping[str, MetricFn] | None = None,
        batch_size: int | None = None,
        memory_budget_mb: float = 512.0,
        strategy: Literal["auto", "loop", "vmap"] = "auto",
        points_per_chunk: int | None = None,
        bn: Literal["auto", "recompute", "eval"] = "auto",
        bn_data: "Split | tuple[Tensor, Tensor] | None" = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        cache_mb: float | Literal["auto"] | None = "auto",
        first_layer: Literal["auto", "precompute", "compute"] = "auto",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise LosslabError(f"model must be an nn.Module, got {type(model).__name__}")
        if strategy not in ("auto", "loop", "vmap"):
            raise LosslabError(f"strategy must be 'auto', 'loop' or 'vmap', got {strategy!r}")
        if bn not in ("auto", "recompute", "eval"):
            raise LosslabError(f"bn must be 'auto', 'recompute' or 'eval', got {bn!r}")
        if batch_size is not None and int(batch_size) < 1:
            raise LosslabError(f"batch_size must be >= 1, got {batch_size}")
        if points_per_chunk is not None and int(points_per_chunk) < 1:
            raise LosslabError(f"points_per_chunk must be >= 1, got {points_per_chunk}")
        if not memory_budget_mb > 0:
            raise LosslabError(f"memory_budget_mb must be > 0, got {memory_budget_mb}")
        if first_layer not in ("auto", "precompute", "compute"):
            raise LosslabError(f"first_layer must be 'auto', 'precompute' or 'compute', got {first_layer!r}")
        if cache_mb is not None and cache_mb != "auto" and not _positive_number(cache_mb):
            raise LosslabError(f"cache_mb must be 'auto', None or a size > 0 in MiB, got {cache_mb!r}")

        ref = next(iter(model.parameters()), None)
        floats = [p for p in model.parameters() if p.is_floating_point()]
        self.device = torch.device(device) if device is not None else (ref.device if ref is not None else torch.device("cpu"))
        self.dtype = dtype if dtype is not None else (floats[0].dtype if floats else torch.get_default_dtype())

        self._param_names = [k for k, _ in model.named_parameters()]
        self._buffer_names = [k for k, _ in model.named_buffers()]
        self._base: Point = {k: self._cast(v.detach()) for k, v in model.named_parameters()}
        self._base_buffers: Point = {k: self._cast(v.detach()).clone() for k, v in model.named_buffers()}
        self._shell = _make_shell(model)
        self._bn_modules = [m for m in self._shell.modules() if _is_bn(m)]
        self._bn_buffers = {
            f"{name}.{b}": m
            for name, m in self._shell.named_modules()
            if _is_bn(m)
            for b in ("running_mean", "running_var", "num_batches_tracked")
            if getattr(m, b, None) is not None
        }
        self.bn = ("recompute" if self._bn_modules else "eval") if bn == "auto" else bn

        self.x, self.y = self._resident(data, "data")
        self.n = int(self.x.shape[0])
        if self.n == 0:
            raise LosslabError("data is empty")
        if bn_data is None:
            self.bn_x = self.x
        else:
            self.bn_x, _ = self._resident(bn_data, "bn_data")
            if self.bn_x.shape[0] == 0:
                raise LosslabError("bn_data is empty")

        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)
        if isinstance(loss, str):
            if loss not in _BUILTIN_LOSSES:
                raise LosslabError(f"unknown loss {loss!r}; use 'cross_entropy', 'mse' or a callable")
            self._loss_batched: Callable[[Tensor, Tensor], Tensor] | None = _BUILTIN_LOSSES[loss]
            self._loss_fn: LossFn | None = None
        elif callable(loss):
            self._loss_batched, self._loss_fn = None, loss
        else:
            raise LosslabError(f"loss must be a name or a callable, got {type(loss).__name__}")
        self._metrics: dict[str, MetricFn] = dict(metrics or {})
        if "loss" in self._metrics:
            raise LosslabError("'loss' is reserved; choose another metric name")
        self._acc_builtin = (
            loss == "cross_entropy" and not self.y.is_floating_point() and "accuracy" not in self._metrics
        )
        self.metric_names: list[str] = ["loss"] + (["accuracy"] if self._acc_builtin else []) + list(self._metrics)

        self.memory_budget_mb = float(memory_budget_mb)
        budget = self.memory_budget_mb * 2**20
        self.bytes_per_example, self.max_activation_bytes = self._probe_activation_bytes()
        self.point_bytes = sum(v.numel() * v.element_size() for v in self._base.values())
        fit = max(1, int(budget // self.bytes_per_example))
        self.batch_size = int(batch_size) if batch_size is not None else min(self.n, fit)
        if points_per_chunk is not None:
            self.points_per_chunk = int(points_per_chunk)
        else:
            per_point = self.batch_size * self.bytes_per_example + self.point_bytes
            self.points_per_chunk = max(1, min(_MAX_POINTS_PER_CHUNK, int(budget // per_point)))
        if cache_mb == "auto":
            self.cache_mb: float | None = DEFAULT_CACHE_MB if self.device.type == "cpu" else None
        else:
            self.cache_mb = None if cache_mb is None else float(cache_mb)
        self.loop_batch_size = self._cache_batch()
        self.allocator_warmup_bytes = self._warm_allocator()
        self.first_layer_requested = first_layer
        self._first, first_reason = (None, "off") if first_layer == "compute" else self._find_first_layer()
        self._first_cache: _FirstCache | None = None
        self._split_cache: dict[int, tuple[list[Tensor], list[Tensor]]] = {}
        self.strategy_requested = strategy
        self.strategy: str | None = None if strategy == "auto" else strategy
        if not self._tensor_output:  # a dict/tuple output goes to the user's loss one point at a time
            if strategy == "vmap":
                raise LosslabError("strategy='vmap' needs a model that returns a tensor; use 'loop' or 'auto'")
            self.strategy = "loop"
        self.info: dict[str, Any] = {
            "strategy_requested": strategy,
            "strategy": self.strategy,
            "timing": None,
            "loss": self.loss_name,
            "metrics": list(self.metric_names),
            "bn": self.bn,
            "n": self.n,
            "n_bn": int(self.bn_x.shape[0]),
            "batch_size": self.batch_size,
            "points_per_chunk": self.points_per_chunk,
            "bytes_per_example": int(self.bytes_per_example),
            "memory_budget_mb": self.memory_budget_mb,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "cache_mb": self.cache_mb,
            "max_activation_bytes_per_example": int(self.max_activation_bytes),
            "loop_batch_size": self.loop_batch_size,
            "vmap_batch_size": self.vmap_batch_size,
            "vmap_points_per_call": self.vmap_points_per_call,
            "allocator_warmup_bytes": self.allocator_warmup_bytes,
            "first_layer": {
                "requested": first_layer,
                "layer": None if self._first is None else self._first.name,
                "reason": first_reason,
                "used": False,
            },
        }

    # ---- setup helpers ------------------------------------------------------------------------

    def _cast(self, t: Tensor) -> Tensor:
        if t.is_floating_point():
            return t.to(device=self.device, dtype=self.dtype)
        return t.to(device=self.device)

    def _resident(self, data: Any, what: str) -> tuple[Tensor, Tensor]:
        if isinstance(data, (tuple, list)) and len(data) == 2:
            x, y = data
        elif hasattr(data, "x") and hasattr(data, "y"):
            x, y = data.x, data.y
        else:
            raise LosslabError(f"{what} must be a Split or an (x, y) tuple, got {type(data).__name__}")
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise LosslabError(f"{what}: x and y must be tensors")
        if x.shape[0] != y.shape[0]:
            raise LosslabError(f"{what}: x has {x.shape[0]} examples but y has {y.shape[0]}")
        for name, t in (("x", x), ("y", y)):
            if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                first = int((~torch.isfinite(t.reshape(t.shape[0], -1))).any(1).nonzero()[0])
                raise LosslabError(f"{what}: {name} holds {bad} non-finite value(s) (NaN/inf), the first in example "
                                   f"{first}: every loss would be NaN")
        return self._cast(x.detach()), self._cast(y.detach())

    def _probe_activation_bytes(self) -> tuple[int, int]:
        """Activation bytes per example, (sum, largest single one), from one forward of a few examples.

        The sum counts the input, every leaf module's output and the model's output (see the
        module docstring); the largest is the biggest of those tensors.
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

    def _check_output(self, out: Any) -> None:
        """Check the probe forward's output against the loss; sets ``_tensor_output``."""
        self._tensor_output = isinstance(out, Tensor)
        if self._loss_batched is not None:
            check_model_output(out, self.y, classification=self._loss_batched is _ce_per_example)

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
        examples, times the points of a vmap call), raises them at once. Measured on the MNIST-1D
        CNN in a fresh process, loop chunks of 819 examples: 6091 page faults and 44 ms per point
        without, 1 and 23 ms with. It never lowers a threshold and changes nothing elsewhere.

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

    # ---- public API ---------------------------------------------------------------------------

    def prepare(self, point: Mapping[str, Tensor]) -> Point:
        """Check a point's keys and move its tensors to the evaluator's device/dtype."""
        if not isinstance(point, Mapping):
            raise LosslabError(f"a point must be a dict of tensors, got {type(point).__name__}")
        known = set(self._param_names) | set(self._buffer_names)
        extra = [k for k in point if k not in known]
        if extra:
            raise LosslabError(f"point has keys the model lacks: {sorted(extra)[:5]}")
        return {k: self._cast(v.detach()) for k, v in point.items()}

    def base_point(self) -> Point:
        """The model's parameters as the evaluator sees them (device/dtype converted; shared storage)."""
        return dict(self._base)

    def evaluate(self, point: Mapping[str, Tensor]) -> dict[str, float]:
        """Metrics at one point (keys missing from ``point`` come from the model).

        Example:
            >>> import torch
            >>> ev = Evaluator(torch.nn.Linear(2, 2), (torch.randn(5, 2), torch.tensor([0, 1, 0, 1, 1])))
            >>> list(ev.evaluate({}))
            ['loss', 'accuracy']
        """
        p = self.prepare(point)
        with torch.inference_mode():
            res = self._run_loop([p], *self._data("loop"))
        return {name: float(res[0, i]) for i, name in enumerate(self.metric_names)}

    def evaluate_stacked(self, stacked: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
        """Metrics at K points stacked along a leading dimension (as :func:`losslab.params.stack`).

        Uses the selected strategy (for ``"auto"``, the first call with K >= 2 measures both); with
        ``"vmap"`` the K points are split into groups of ``points_per_chunk``.
        """
        st = self.prepare(stacked)
        ks = {v.shape[0] for v in st.values()}
        if len(ks) > 1:
            raise LosslabError(f"stacked point has inconsistent leading sizes {sorted(ks)}")
        if not ks:
            raise LosslabError("evaluate_stacked needs at least one key to know the number of points")
        k = ks.pop()
        for name, v in st.items():
            ref = self._base.get(name, self._base_buffers.get(name))
            if ref is not None and tuple(v.shape[1:]) != tuple(ref.shape):
                raise LosslabError(f"stacked point {name!r} has shape {tuple(v.shape)}, expected (K, *{tuple(ref.shape)})")
        return self._results(self._evaluate_source(_Stacked(st, k)))

    def evaluate_combinations(
        self,
        coeffs: np.ndarray | Sequence[Sequence[float]] | Tensor,
        basis: Sequence[Mapping[str, Tensor]],
        base: Mapping[str, Tensor] | None = None,
    ) -> dict[str, np.ndarray]:
        """Metrics at the K points :math:`\\theta_k = \\theta_0 + \\sum_j c_{kj}\\, d_j`.

        The same numbers as :meth:`evaluate_stacked` on those points stacked, without building
        them all: the loop writes each point into one reused buffer just before evaluating it,
        vmap builds one group of ``points_per_chunk`` at a time. Every key is computed as
        ``((base + c_k1 * d_1) + c_k2 * d_2) + ...`` over the ``d_j`` that have it (coefficients
        cast to the evaluator's dtype), so values are bit-identical across strategies and calls
        (with the first layer precomputed, see ``first_layer``, equal to rounding).

        Args:
            coeffs: ``(K, J)`` coefficients (a 1-D array when ``J == 1``).
            basis: the ``J`` directions :math:`d_j` (points; each may cover only some keys).
            base: :math:`\\theta_0` (``None``: no base term, e.g. :math:`(1-a)\\theta_A + a\\theta_B`).
                Keys in neither ``base`` nor ``basis`` come from the model.

        Returns:
            ``{metric: float64 array of shape (K,)}``.

        Example:
            >>> import torch
            >>> m = torch.nn.Linear(2, 2)
            >>> ev = Evaluator(m, (torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 1, 0])))
            >>> d = {"weight": torch.ones(2, 2)}
            >>> r = ev.evaluate_combinations([[0.0], [0.5]], [d], base={"weight": m.weight.detach()})
            >>> r["loss"].shape, bool(r["loss"][0] == ev.evaluate({})["loss"])
            ((2,), True)
        """
        dirs = [self.prepare(d) for d in basis]
        b = None if base is None else self.prepare(base)
        c = torch.as_tensor(np.asarray(coeffs, dtype=np.float64) if not isinstance(coeffs, Tensor) else coeffs)
        if c.dim() == 1 and len(dirs) == 1:
            c = c.reshape(-1, 1)
        if c.dim() != 2 or c.shape[1] != len(dirs):
            raise LosslabError(f"coeffs must be (K, {len(dirs)}) for {len(dirs)} directions, got {tuple(c.shape)}")
        if not dirs and b is None:
            raise LosslabError("evaluate_combinations needs a base or at least one direction")
        for what, pt in [("base", b or {})] + [(f"basis[{j}]", d) for j, d in enumerate(dirs)]:
            for name, v in pt.items():
                if not v.is_floating_point():
                    raise LosslabError(f"{what}[{name!r}] is not a floating tensor")
                ref = self._base.get(name, self._base_buffers.get(name))
                if ref is not None and tuple(v.shape) != tuple(ref.shape):
                    raise LosslabError(f"{what}[{name!r}] has shape {tuple(v.shape)}, the model's is {tuple(ref.shape)}")
        src = _Combinations(c.to(device=self.device, dtype=self.dtype), dirs, b)
        return self._results(self._evaluate_source(src))

    def evaluate_many(
        self,
        points: PointSource,
        n: int | None = None,
        *,
        callback: Callable[[np.ndarray, dict[str, np.ndarray]], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Metrics at many points, processed ``points_per_chunk`` at a time.

        Args:
            points: a sequence of points (same keys), or ``make(indices) -> stacked point`` that
                builds the points ``indices`` (an int64 array) stacked along dimension 0; then ``n``
                (the number of points) is required.
            n: number of points for a callable source.
            callback: called after each chunk as ``callback(indices, results)``; an exception it
                raises stops the evaluation (and propagates).

        Returns:
            ``{metric: float64 array of shape (n,)}``.

        Example:
            >>> import torch
            >>> from losslab import params
            >>> m = torch.nn.Linear(2, 2)
            >>> ev = Evaluator(m, (torch.randn(5, 2), torch.tensor([0, 1, 0, 1, 1])), strategy="vmap")
            >>> w = m.weight.detach()
            >>> make = lambda idx: {"weight": w + torch.as_tensor(idx, dtype=w.dtype)[:, None, None]}
            >>> ev.evaluate_many(make, n=4)["loss"].shape
            (4,)
        """
        if callable(points) and not isinstance(points, Sequence):
            if n is None:
                raise LosslabError("evaluate_many with a callable source needs n (the number of points)")
            total = int(n)

            def get(idx: np.ndarray) -> Mapping[str, Tensor]:
                return points(idx)

        else:
            seq = list(points)
            total = len(seq)
            if n is not None and int(n) != total:
                raise LosslabError(f"n={n} but {total} points were given")

            def get(idx: np.ndarray) -> Mapping[str, Tensor]:
                chunk = [seq[i] for i in idx]
                keys = set(chunk[0])
                if any(set(c) != keys for c in chunk):
                    raise LosslabError("points evaluated together must have the same keys")
                return P.stack([{k: c[k] for k in chunk[0]} for c in chunk])

        out = {name: np.full(total, np.nan) for name in self.metric_names}
        for s in range(0, total, self.points_per_chunk):
            idx = np.arange(s, min(total, s + self.points_per_chunk), dtype=np.int64)
            res = self.evaluate_stacked(get(idx))
            for name in self.metric_names:
                out[name][idx] = res[name]
            if callback is not None:
                callback(idx, res)
        return out

    # ---- internals ----------------------------------------------------------------------------

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

    def _results(self, res: Tensor) -> dict[str, np.ndarray]:
        res_np = res.cpu().numpy()
        return {name: res_np[:, i].copy() for i, name in enumerate(self.metric_names)}

    def _evaluate_source(self, src: _Source) -> Tensor:
        """``(K, M)`` float64 metrics of the K points of ``src`` with the selected strategy."""
        k = src.n
        parts: list[Tensor] = []
        strategy = self.strategy
        if strategy is None and k >= 2:
            strategy, kept = self._choose_strategy(src)
            parts.append(kept)
        strategy = strategy or "loop"
        start = sum(int(p.shape[0]) for p in parts)
        with torch.inference_mode():
            if start < k and strategy == "loop":
                parts.append(self._loop_span(src, start, k))
            elif start < k:
                self.info["vmap_batch_size"] = self.vmap_batch_size
                self.info["vmap_points_per_call"] = self.vmap_points_per_call
                try:
                    parts.append(self._run_vmap_span(src, start, k))
                except LosslabError:
                    raise
                except Exception as e:  # noqa: BLE001
                    raise LosslabError(f"vmap evaluation failed ({type(e).__name__}: {e}); use strategy='loop'") from e
        if not parts:
            return torch.zeros(0, len(self.metric_names), dtype=torch.float64, device=self.device)
        return torch.cat(parts)

    def _merged(self, point: Mapping[str, Tensor], buffers: Mapping[str, Tensor]) -> dict[str, Tensor]:
        full: dict[str, Tensor] = dict(self._base)
        full.update(self._base_buffers)
        full.update(point)
        full.update(buffers)
        return full

    def _forward_one(self, tensors: Mapping[str, Tensor], x: Tensor) -> Tensor:
        return torch.func.functional_call(self._shell, dict(tensors), (x,), strict=False)

    def _set_bn_mode(self, train: bool, momentum: float | None = None) -> None:
        self._shell.eval()
        for m in self._bn_modules:
            m.train(train)
            if momentum is not None:
                m.momentum = momentum

    def _fresh_bn(self, k: int | None) -> Point:
        """Reset running stats (as ``reset_running_stats``): mean 0, var 1, count 0; stacked if k."""
        out: Point = {}
        lead = () if k is None else (k,)
        for name, m in self._bn_buffers.items():
            nf = m.running_mean.shape[0] if m.running_mean is not None else m.num_features
            if name.endswith("running_mean"):
                out[name] = torch.zeros(*lead, nf, device=self.device, dtype=self.dtype)
            elif name.endswith("running_var"):
                out[name] = torch.ones(*lead, nf, device=self.device, dtype=self.dtype)
            else:
                out[name] = torch.zeros(lead, device=self.device, dtype=torch.long)
        return out

    def _reduce(self, outs: Tensor, y: Tensor) -> Tensor:
        """Per-point sums over the chunk of (mean metric × chunk size): (K, M) float64."""
        b = y.shape[0]
        cols = []
        if self._loss_batched is not None:
            cols.append(self._loss_batched(outs, y).to(torch.float64).mean(1))
        else:
            cols.append(torch.stack([torch.as_tensor(self._loss_fn(o, y)).to(torch.float64).reshape(()) for o in outs]))
        if self._acc_builtin:
            cols.append(_acc_per_example(outs, y).mean(1))
        for fn in self._metrics.values():
            cols.append(
                torch.stack(
                    [torch.as_tensor(fn(o, y), device=outs.device).to(torch.float64).reshape(()) for o in outs]
                )
            )
        return torch.stack([c.to(outs.device) for c in cols], dim=1) * b

    def _reduce_one(self, out: Tensor, y: Tensor) -> Tensor:
        """:meth:`_reduce` for one point's output (no point dimension), with fewer ops: (M,) float64."""
        b = y.shape[0]
        cols = []
        if self._loss_batched is _ce_per_example:
            per = F.cross_entropy(out, y, reduction="none")
            if per.dim() > 1:
                per = per.reshape(b, -1).mean(1)
            cols.append(per.sum(dtype=torch.float64))
        elif self._loss_batched is not None:
            cols.append(self._loss_batched(out.unsqueeze(0), y)[0].sum(dtype=torch.float64))
        else:
            assert self._loss_fn is not None
            cols.append(torch.as_tensor(self._loss_fn(out, y), device=y.device).to(torch.float64).reshape(()) * b)
        if self._acc_builtin:
            hit = out.argmax(1) == y
            cols.append(hit.sum(dtype=torch.float64) if hit.dim() == 1 else hit.reshape(b, -1).to(torch.float64).mean(1).sum())
        for fn in self._metrics.values():
            cols.append(torch.as_tensor(fn(out, y), device=y.device).to(torch.float64).reshape(()) * b)
        return torch.stack(cols)

    def _run_loop(self, points: Iterable[Point], xs: Sequence[Tensor], bxs: Sequence[Tensor], ys: Sequence[Tensor],
                  first: "_FirstCache | None" = None, coeffs: Sequence[Sequence[float]] | None = None) -> Tensor:
        """Metrics of each point, one at a time (``points`` may reuse one buffer: each is used up first).

        With ``first`` (built for these ``xs``) the first layer's output of point ``i`` is
        combined from the precomputed terms with ``coeffs[i]`` instead of being computed.
        """
        rows = []
        recompute = self.bn == "recompute" and bool(self._bn_modules)
        with torch.inference_mode():
            for i, p in enumerate(points):
                buffers: Point = {}
                if recompute:
                    buffers = self._fresh_bn(None)
                    tensors = self._merged(p, buffers)
                    for q, xc in enumerate(bxs, 1):
                        self._set_bn_mode(True, 1.0 / q)
                        self._forward_one(tensors, xc)
                    self._set_bn_mode(False)
                tensors = self._merged(p, buffers)
                acc = torch.zeros(len(self.metric_names), dtype=torch.float64, device=self.device)
                if first is None:
                    for xc, yc in zip(xs, ys):
                        acc += self._reduce_one(self._forward_one(tensors, xc), yc)
                else:
                    assert coeffs is not None
                    layer = first.layer
                    rest = {k: v for k, v in tensors.items() if k not in layer.keys}
                    try:
                        for q, (xc, yc) in enumerate(zip(xs, ys)):
                            layer.slot.value = first.combine(q, coeffs[i])
                            out = torch.func.functional_call(layer.shell, rest, (xc,), strict=False)
                            acc += self._reduce_one(out, yc)
                    finally:
                        layer.slot.value = None
                rows.append(acc / self.n)
        if not rows:
            return torch.zeros(0, len(self.metric_names), dtype=torch.float64, device=self.device)
        return torch.stack(rows)

    def _loop_span(self, src: "_Source", lo: int, hi: int) -> Tensor:
        """Points ``lo..hi-1`` of ``src`` with the loop (first layer precomputed when it applies)."""
        xs, bxs, ys = self._data("loop")
        cache = self._first_cache_for(src, xs) if isinstance(src, _Combinations) else None
        if cache is None:
            return self._run_loop(src.each(lo, hi), xs, bxs, ys)
        self.info["first_layer"]["used"] = True
        assert isinstance(src, _Combinations)
        return self._run_loop(src.each(lo, hi), xs, bxs, ys, first=cache, coeffs=src.c[lo:hi].tolist())

    # ---- first layer precomputation ------------------------------------------------------------

    def _find_first_layer(self) -> tuple["_FirstLayer | None", str]:
        """The first layer with parameters, if its output can be precomputed per direction.

        It qualifies when it is a plain ``Linear``/``Conv1d/2d/3d`` (exact type, no hooks), called
        once per forward, its parameters are not shared, and no module with parameters or buffers
        runs before it while every parameter of the model belongs to a leaf module (so its input
        depends on the data only). Returns the layer (or None) and the reason.
        """
        shell = self._shell
        leaves = {id(m): n for n, m in shell.named_modules() if next(m.children(), None) is None}
        uses: dict[int, int] = {}
        for name, prm in shell.named_parameters(remove_duplicate=False):
            if id(shell.get_submodule(name.rpartition(".")[0])) not in leaves:
                return None, f"parameter {name!r} is not owned by a leaf module"
            uses[id(prm)] = uses.get(id(prm), 0) + 1
        order = self._leaf_order  # recorded by the activation probe

        def stateful(m: nn.Module) -> bool:
            return any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False))

        layer = next((m for m in order if stateful(m)), None)
        if layer is None:
            return None, "no layer with parameters runs"
        name = leaves[id(layer)]
        label = repr(name) if name else "the model"
        if type(layer) not in _AFFINE_TYPES:
            return None, f"the first layer with parameters, {label}, is a {type(layer).__name__}, not Linear/Conv"
        if sum(m is layer for m in order) != 1:
            return None, f"the first layer, {label}, runs more than once"
        if layer._forward_hooks or layer._forward_pre_hooks or any(True for _ in layer.buffers(recurse=False)):
            return None, f"the first layer, {label}, has hooks or buffers"
        if any(uses[id(prm)] > 1 for prm in layer.parameters(recurse=False)):
            return None, f"the first layer's parameters ({label}) are shared"
        slot = _Injected()
        if name:
            fl_shell = copy.deepcopy(shell)
            parent, _, attr = name.rpartition(".")
            setattr(fl_shell.get_submodule(parent), attr, slot)
        else:
            fl_shell = slot
        keys = {f"{name}.{k}" if name else k: k for k, _ in layer.named_parameters(recurse=False)}
        return _FirstLayer(name, layer, fl_shell, slot, keys, int(layer.weight[0].numel())), "qualifies"

    def _first_cache_for(self, src: "_Combinations", xs: Sequence[Tensor]) -> "_FirstCache | None":
        """The first layer's output terms on the loop chunks ``xs`` for ``src`` (cached), or None."""
        fl = self._first
        if fl is None:
            return None
        note = self.info["first_layer"]
        base, basis = src.base_pt, src.basis_pts
        wkey = next(k for k, v in fl.keys.items() if v == "weight")
        bkey = next((k for k, v in fl.keys.items() if v == "bias"), None)

        def const(key: str | None) -> Tensor | None:
            if key is None:
                return None
            if base is not None and key in base:
                return base[key]
            if any(key in d for d in basis):
                return None
            return self._base[key]

        terms: list[tuple[int, Tensor | None, Tensor | None]] = []
        cw, cb = const(wkey), const(bkey)
        if cw is not None or cb is not None:
            terms.append((-1, cw, cb))
        for j, d in enumerate(basis):
            dw, db = d.get(wkey), (d.get(bkey) if bkey is not None else None)
            if dw is not None or db is not None:
                terms.append((j, dw, db))
        if not terms:
            return None
        if self.first_layer_requested == "auto" and fl.fan_in < FIRST_LAYER_MIN_RATIO * len(terms):
            note["reason"] = f"fan-in {fl.fan_in} < {FIRST_LAYER_MIN_RATIO} x {len(terms)} terms"
            return None
        key = (tuple((x.data_ptr(), tuple(x.shape)) for x in xs),) + tuple(
            (t.data_ptr(), t._version, tuple(t.shape)) if t is not None else None for _, w, b in terms for t in (w, b)
        )
        if self._first_cache is not None and self._first_cache.key == key:
            return self._first_cache
        self._first_cache = None

        def term_outputs(u: Tensor) -> list[Tensor]:
            outs = []
            for _, w, b in terms:
                tensors = {"weight": w if w is not None else torch.zeros_like(self._base[wkey])}
                if bkey is not None:
                    tensors["bias"] = b if b is not None else torch.zeros_like(self._base[bkey])
                outs.append(torch.func.functional_call(fl.module, tensors, (u,)))
            return outs

        with torch.inference_mode():
            # validate on a few examples at c = 1 for every direction: precomputed == computed
            xv = self.x[: min(self.n, _PROBE_EXAMPLES)]
            ones = [1.0] * len(basis)
            point = next(src.each_coeffs(ones))
            direct = self._forward_one(self._merged(point, {}), xv)
            probe = _FirstCache(fl, [term_outputs(self._first_input(xv))], [j for j, _, _ in terms], key)
            fl.slot.value = probe.combine(0, ones)
            try:
                rest = {k: v for k, v in self._merged(point, {}).items() if k not in fl.keys}
                got = torch.func.functional_call(fl.shell, rest, (xv,), strict=False)
            finally:
                fl.slot.value = None
            if not isinstance(direct, Tensor) or not torch.isfinite(direct).all():
                note["reason"] = "validation output not finite"
                return None
            scale = float(direct.abs().max()) + 1e-30
            if got.shape != direct.shape or float((got - direct).abs().max()) > 1e-3 * scale:
                note["reason"] = "validation failed: the precomputed first layer changes the output"
                return None
            per_example = sum(t.numel() for t in probe.terms[0]) * probe.terms[0][0].element_size() / xv.shape[0]
            if per_example * self.n > self.memory_budget_mb * 2**20 / 2:
                note["reason"] = f"terms need {per_example * self.n / 2**20:.0f} MiB > half the memory budget"
                return None
            chunks = [term_outputs(self._first_input(xc)) for xc in xs]
        note["reason"] = f"precomputed: {len(terms)} terms, fan-in {fl.fan_in}"
        self._first_cache = _FirstCache(fl, chunks, [j for j, _, _ in terms], key)
        return self._first_cache

    def _first_input(self, x: Tensor) -> Tensor:
        """The first layer's input for data ``x`` (the forward stops there)."""
        fl = self._first
        assert fl is not None
        got: list[Tensor] = []

        def grab(_m: nn.Module, args: tuple[Any, ...]) -> None:
            got.append(args[0])
            raise _StopForward

        h = fl.module.register_forward_pre_hook(grab)
        try:
            self._forward_one(self._merged({}, self._base_buffers), x)
        except _StopForward:
            pass
        finally:
            h.remove()
        if not got:
            raise LosslabError("the first layer did not run")
        return got[0]

    def _run_vmap(self, stacked: Point, xs: Sequence[Tensor], bxs: Sequence[Tensor], ys: Sequence[Tensor],
                  first: "_FirstCache | None" = None, coeffs: Tensor | None = None) -> Tensor:
        """Metrics of K stacked points in one vmap call per chunk; with ``first`` (built for these
        ``xs``) the first layer's outputs are combined from the precomputed terms with ``coeffs``
        ``(K, J)`` and passed in instead of being computed."""
        k = next(iter(stacked.values())).shape[0]
        shell = self._shell
        with torch.inference_mode():
            recompute = self.bn == "recompute" and bool(self._bn_modules)
            buffers: Point = self._fresh_bn(k) if recompute else {}
            common = {n: v for n, v in self._merged({}, {}).items() if n not in stacked and n not in buffers}

            def f(pp: Point, bb: Point, x: Tensor) -> Tensor:
                t = dict(common)
                t.update(pp)
                t.update(bb)
                return torch.func.functional_call(shell, t, (x,), strict=False)

            fwd = torch.vmap(f, in_dims=(0, 0, None))
            for i, xc in enumerate(bxs if recompute else (), 1):
                self._set_bn_mode(True, 1.0 / i)
                fwd(stacked, buffers, xc)
            self._set_bn_mode(False)
            acc = torch.zeros(k, len(self.metric_names), dtype=torch.float64, device=self.device)
            if first is None:
                for xc, yc in zip(xs, ys):
                    acc += self._reduce(fwd(stacked, buffers, xc), yc)
                return acc / self.n
            assert coeffs is not None
            layer = first.layer
            rest_common = {n: v for n, v in common.items() if n not in layer.keys}
            rest = {n: v for n, v in stacked.items() if n not in layer.keys}

            def g(pp: Point, bb: Point, z: Tensor, x: Tensor) -> Tensor:
                t = dict(rest_common)
                t.update(pp)
                t.update(bb)
                layer.slot.value = z
                return torch.func.functional_call(layer.shell, t, (x,), strict=False)

            fwd_first = torch.vmap(g, in_dims=(0, 0, 0, None))
            try:
                for q, (xc, yc) in enumerate(zip(xs, ys)):
                    acc += self._reduce(fwd_first(rest, buffers, first.combine_many(q, coeffs), xc), yc)
            finally:
                layer.slot.value = None
        return acc / self.n

    def _run_vmap_span(self, src: _Source, start: int, stop: int) -> Tensor:
        """Points ``start..stop-1`` of ``src`` with vmap: groups of ``points_per_chunk`` from 0,
        each in calls of ``vmap_points_per_call`` from the group's start (``start`` must be a
        call boundary), so that a point always shares its call with the same points."""
        kv, ppc = self.vmap_points_per_call, self.points_per_chunk
        data = self._data("vmap")
        cache = self._first_cache_for(src, data[0]) if isinstance(src, _Combinations) else None
        if cache is not None:
            self.info["first_layer"]["used"] = True
        parts = []
        for g0 in range((start // ppc) * ppc, stop, ppc):
            g1 = min(src.n, g0 + ppc)
            for lo in range(g0, min(g1, stop), kv):
                hi = min(g1, lo + kv, stop)
                if hi <= start:
                    continue
                lo = max(lo, start)
                if cache is None:
                    parts.append(self._run_vmap(src.stacked(lo, hi), *data))
                else:
                    assert isinstance(src, _Combinations)
                    parts.append(self._run_vmap(src.stacked(lo, hi), *data, first=cache, coeffs=src.c[lo:hi]))
        return torch.cat(parts)

    def _choose_strategy(self, src: _Source) -> tuple[str, Tensor]:
        """Measure loop (first point) and vmap (first ``m`` points) once; keep the faster per point.

        vmap is not measured when the loop's fixed cost per point (the same point on 2 examples,
        best of 5) is under :data:`_VMAP_MIN_OVERHEAD` of its full cost: amortising that cost is all vmap can
        gain, and on CPUs its batched layers are slower than the loop's.

        Returns the strategy and the probe's results that the strategy would have computed anyway:
        the loop's first point, or vmap's results from the probe's complete calls (those that
        coincide with the calls of a normal evaluation).
        """
        k = src.n
        group = min(k, self.points_per_chunk)
        clock_name, clock = self._clock()

        def timed(fn: Callable[[], Tensor]) -> tuple[float, Tensor]:
            self._sync()
            t0 = clock()
            out = fn()
            self._sync()
            return clock() - t0, out

        m = 0
        t_over: float | None = None
        t_vmap: float | None = None
        err = None
        with torch.inference_mode():
            t_loop, r_loop = timed(lambda: self._loop_span(src, 0, 1))
            bxs = [self.bn_x[:2]] if self.bn == "recompute" and self._bn_modules else []
            try:  # best of 5: the first call with a new shape is slow (allocation, kernel setup)
                t_over = min(timed(lambda: self._run_loop(src.each(0, 1), [self.x[:2]], bxs, [self.y[:2]]))[0]
                             for _ in range(5))
            except Exception:  # noqa: BLE001 - e.g. BatchNorm on too few values: measure vmap
                t_over = None
            skip = t_over is not None and t_over < _VMAP_MIN_OVERHEAD * t_loop
            if not skip:
                want = round(_PROBE_SECONDS / t_loop) if t_loop > 0 else group
                m = max(1, min(group, max(2, k // 4), max(2, want)))
                try:
                    t_vmap, r_vmap = timed(lambda: self._run_vmap_span(src, 0, m))
                except Exception as e:  # noqa: BLE001
                    err = f"{type(e).__name__}: {e}"
        per_vmap = None if t_vmap is None else t_vmap / m
        choice = "vmap" if per_vmap is not None and per_vmap < t_loop else "loop"
        if choice == "loop":
            kept = r_loop
        else:  # the probe's complete calls (all of them when it covered the first group)
            kv = self.vmap_points_per_call
            kept = r_vmap[: m if m == group else (m // kv) * kv]
        self.strategy = choice
        self.info["strategy"] = choice
        self.info["timing"] = {
            "clock": clock_name,
            "examples": self.n,
            "loop_points": 1,
            "loop_s": t_loop,
            "loop_s_per_point": t_loop,
            "overhead_s": t_over,
            "vmap_measured": not skip,
            "points": m,
            "vmap_s": t_vmap,
            "vmap_s_per_point": per_vmap,
            "vmap_error": err,
            "kept_points": int(kept.shape[0]),
        }
        return choice, kept

    def _clock(self) -> tuple[str, Callable[[], float]]:
        """Process CPU time on a CPU with one torch thread (steady under load), else wall-clock time."""
        if self.device.type == "cpu" and torch.get_num_threads() == 1:
            return "cpu", time.process_time
        return "wall", time.perf_counter

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __repr__(self) -> str:
        return (
            f"Evaluator(n={self.n}, loss={self.loss_name!r}, bn={self.bn!r}, strategy={self.info['strategy'] or 'auto'!r}, "
            f"batch_size={self.batch_size}, points_per_chunk={self.points_per_chunk})"
        )


# ---- point sources: stacked points, or linear combinations built on demand -----------------------


class _Source:
    """K points, available stacked (a group, for vmap) or one at a time (for the loop)."""

    n: int

    def stacked(self, lo: int, hi: int) -> Point:  # pragma: no cover - interface
        raise NotImplementedError

    def each(self, lo: int, hi: int) -> Iterator[Point]:  # pragma: no cover - interface
        raise NotImplementedError


class _Stacked(_Source):
    def __init__(self, st: Point, n: int) -> None:
        self.st, self.n = st, n

    def stacked(self, lo: int, hi: int) -> Point:
        return {k: v[lo:hi] for k, v in self.st.items()}

    def each(self, lo: int, hi: int) -> Iterator[Point]:
        for i in range(lo, hi):
            yield {k: v[i] for k, v in self.st.items()}


class _Group:
    """Keys sharing the same terms (base or not, which directions), laid out in flat vectors."""

    def __init__(self, keys: list[str], base: Tensor | None, dirs: list[Tensor], js: list[int],
                 layout: list[tuple[str, int, int, torch.Size]]) -> None:
        self.keys, self.base, self.dirs, self.js, self.layout = keys, base, dirs, js, layout
        self.buf: Tensor | None = None
        self.tmp: Tensor | None = None


class _Combinations(_Source):
    """``theta_k = base + sum_j c[k, j] d_j`` for the rows of ``c`` (see Evaluator.evaluate_combinations)."""

    def __init__(self, c: Tensor, basis: list[Point], base: Point | None) -> None:
        self.c, self.n = c, int(c.shape[0])
        self.base_pt, self.basis_pts = base, basis
        keys = list(dict.fromkeys([*(base or {}), *(k for d in basis for k in d)]))
        sigs: dict[tuple[bool, tuple[int, ...]], list[str]] = {}
        for key in keys:
            sig = (base is not None and key in base, tuple(j for j, d in enumerate(basis) if key in d))
            sigs.setdefault(sig, []).append(key)
        self.fixed: Point = {}
        self.groups: list[_Group] = []
        for (in_base, js), ks in sigs.items():
            if not js:  # a base value no direction moves
                assert base is not None
                for key in ks:
                    self.fixed[key] = base[key]
                continue
            layout, off = [], 0
            for key in ks:
                shape = basis[js[0]][key].shape
                layout.append((key, off, int(shape.numel()), shape))
                off += int(shape.numel())

            def flat(pt: Point, ks: list[str] = ks) -> Tensor:
                if len(ks) == 1:
                    return pt[ks[0]].reshape(-1)
                return torch.cat([pt[key].reshape(-1) for key in ks])

            self.groups.append(_Group(ks, flat(base) if in_base and base is not None else None,
                                      [flat(basis[j]) for j in js], list(js), layout))
        self._point: Point | None = None

    def stacked(self, lo: int, hi: int) -> Point:
        c = self.c[lo:hi]
        k = int(c.shape[0])
        out: Point = {key: v.unsqueeze(0).expand(k, *v.shape) for key, v in self.fixed.items()}
        for g in self.groups:
            v: Tensor | None = None if g.base is None else g.base.unsqueeze(0).expand(k, -1)
            for d, j in zip(g.dirs, g.js):
                t = c[:, j].reshape(k, 1) * d.unsqueeze(0)
                v = t if v is None else v + t
            assert v is not None
            for key, o, numel, shape in g.layout:
                out[key] = v[:, o : o + numel].view(k, *shape)
        return out

    def each(self, lo: int, hi: int) -> Iterator[Point]:
        for i in range(lo, hi):
            yield self._fill(self.c[i])

    def each_coeffs(self, *rows: Sequence[float]) -> Iterator[Point]:
        """The points of the given coefficient rows (same reused buffer as :meth:`each`)."""
        for row in rows:
            yield self._fill(torch.as_tensor(row, dtype=self.c.dtype, device=self.c.device))

    def _fill(self, c: Tensor) -> Point:
        if self._point is None:  # one buffer per group, reused for every point
            self._point = dict(self.fixed)
            for g in self.groups:
                ref = g.dirs[0]
                g.buf = torch.empty(ref.shape, dtype=ref.dtype, device=ref.device)
                if len(g.dirs) > 1:
                    g.tmp = torch.empty_like(g.buf)
                for key, o, numel, shape in g.layout:
                    self._point[key] = g.buf[o : o + numel].view(shape)
        for g in self.groups:
            assert g.buf is not None
            torch.mul(g.dirs[0], c[g.js[0]], out=g.buf)
            if g.base is not None:
                g.buf.add_(g.base)
            for d, j in zip(g.dirs[1:], g.js[1:]):
                assert g.tmp is not None
                torch.mul(d, c[j], out=g.tmp)
                g.buf.add_(g.tmp)
        return self._point


class _StopForward(Exception):
    """Raised by a hook to stop a forward pass once the first layer's input is known."""


class _Injected(nn.Module):
    """Stands in for the first layer: returns the output combined for the current chunk."""

    def __init__(self) -> None:
        super().__init__()
        self.value: Tensor | None = None

    def forward(self, *_args: Any, **_kwargs: Any) -> Tensor:
        assert self.value is not None
        return self.value


class _FirstLayer:
    """A first layer whose output can be precomputed: its shell module, and a shell without it."""

    def __init__(self, name: str, module: nn.Module, shell: nn.Module, slot: _Injected,
                 keys: dict[str, str], fan_in: int) -> None:
        self.name, self.module, self.shell, self.slot, self.keys, self.fan_in = name, module, shell, slot, keys, fan_in


class _FirstCache:
    """Per chunk, the first layer's output for each term: the constant part (``j = -1``) and the
    directions ``j``; :meth:`combine` forms ``T_const + sum_j c_j T_j`` in a reused buffer."""

    def __init__(self, layer: _FirstLayer, terms: list[list[Tensor]], js: list[int], key: Any) -> None:
        self.layer, self.terms, self.js, self.key = layer, terms, js, key
        self.bufs: list[Tensor | None] = [None] * len(terms)

    def combine(self, q: int, c: Sequence[float]) -> Tensor:
        ts, js = self.terms[q], self.js
        buf = self.bufs[q]
        if buf is None:
            buf = self.bufs[q] = torch.empty_like(ts[0])
        if js[0] < 0:
            if len(ts) > 1:
                torch.add(ts[0], ts[1], alpha=float(c[js[1]]), out=buf)
            else:
                buf.copy_(ts[0])
            start = 2
        else:
            torch.mul(ts[0], float(c[js[0]]), out=buf)
            start = 1
        for t, j in zip(ts[start:], js[start:]):
            buf.add_(t, alpha=float(c[j]))
        return buf

    def combine_many(self, q: int, c: Tensor) -> Tensor:
        """``(K, *out)``: the first layer's outputs on chunk ``q`` at the K coefficient rows ``c``."""
        ts, js = self.terms[q], self.js
        dirs = [(t, j) for t, j in zip(ts, js) if j >= 0]
        k = int(c.shape[0])
        if dirs:
            w = c[:, [j for _, j in dirs]].to(ts[0].dtype)  # (K, nd)
            z = torch.tensordot(w, torch.stack([t for t, _ in dirs]), dims=1)
        else:
            z = torch.zeros((k, *ts[0].shape), dtype=ts[0].dtype, device=ts[0].device)
        if js[0] < 0:
            z = z + ts[0]
        return z


def _make_shell(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are empty ``meta`` tensors.

    It keeps the module structure (and weight tying) without duplicating memory; it is only ever
    run through ``functional_call`` with every tensor supplied, and its flags are ours to toggle.
    """
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty(b.shape, dtype=b.dtype, device="meta")
    try:
        shell = copy.deepcopy(model, memo)
    except Exception as e:  # noqa: BLE001
        raise LosslabError(f"cannot copy the model's structure ({type(e).__name__}: {e})") from e
    shell.eval()
    return shell
