"""The :class:`Evaluator`: public API, strategy choice (loop, vmap, auto), BatchNorm recompute and the
evaluation passes. Sizing lives in :mod:`._memory`, the first-layer precomputation in
:mod:`._first_layer`, point sources in :mod:`._sources`, built-in losses in :mod:`._metrics`; the
design is described in the package docstring of :mod:`losslab.evaluate`."""
from __future__ import annotations

import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterable,
    Literal,
    Mapping,
    Sequence,
    Union,
)

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import params as P
from .._functional import LOSS_NAMES, LossFn, Point, as_xy, make_shell, model_then_data, resolve_loss, unwrap_model
from ..errors import LosslabError
from ._first_layer import _FirstCache, _FirstLayerMixin
from ._layout import channels_last, choose_layout
from ._memory import _MAX_POINTS_PER_CHUNK, DEFAULT_CACHE_MB, _MemoryMixin, _positive_number
from ._metrics import _BUILTIN_LOSSES, _acc_per_example, _ce_per_example, _is_bn, check_model_output
from ._sources import _combination_key, _Combinations, _Source, _Stacked

if TYPE_CHECKING:  # pragma: no cover
    from ..data._base import Split

MetricFn = Callable[[Tensor, Tensor], Union[Tensor, float]]
"""``metric(output, target) -> scalar``: the *mean* over the examples of the batch."""
PointSource = Union[Sequence[Mapping[str, Tensor]], Callable[[np.ndarray], Mapping[str, Tensor]]]
"""A sequence of points, or ``make(indices) -> stacked point`` (leading dimension ``len(indices)``)."""

_PROBE_SECONDS = 0.02  # auto: vmap is measured on about this much of the loop's work (at least 2 points)
_VMAP_MIN_OVERHEAD = 0.1
"""auto: vmap is measured only when the loop's fixed cost per point is at least this fraction of it."""


class Evaluator(_MemoryMixin, _FirstLayerMixin):
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
            layers tracking running stats, else ``"eval"``); the library's one BatchNorm policy
            (:data:`losslab._functional.BN_MODES`): ``"recompute"`` normalizes with the mean and biased
            variance of ``bn_data`` at each point, as train-mode BatchNorm on ``bn_data`` as one batch
            (exactly when ``bn_data`` fits one chunk of ``batch_size``; else the statistics are averaged
            over its chunks).
        bn_data: data for recomputing BatchNorm statistics (default: ``data``). Pass the training
            split here when ``data`` is a test split.
        device: where to evaluate (default: the model's device).
        dtype: floating dtype of parameters and inputs (default: the model's).
        cache_mb: cache target of the evaluation passes, MiB: the examples (times points, for vmap)
            per chunk are chosen so that the largest activation stays about this size (see
            :mod:`losslab.evaluate`). ``"auto"`` (default) = on a CPU, start from
            :data:`DEFAULT_CACHE_MB` and let the loop's first points measure a few larger chunk
            sizes and keep the fastest ("Measured chunks" in :mod:`losslab.evaluate`); ``None``
            elsewhere. ``None`` = chunks of ``batch_size`` (memory budget only).
        first_layer: for points given as linear combinations (:meth:`evaluate_combinations`),
            ``"precompute"`` computes the first layer's output once per term
            and combines it at each point instead of running that layer (see
            :mod:`losslab.evaluate`); ``"compute"`` always runs it; ``"auto"`` (default) precomputes when the
            layer qualifies, the outputs fit in half the memory budget, the layer's fan-in is
            at least :data:`FIRST_LAYER_MIN_RATIO` times the number of terms and it does at least
            :data:`FIRST_LAYER_MIN_SHARE` of the forward's multiply-adds.
        memory_format: ``"auto"`` (channels-last for Conv2d nets on 4-D float32 inputs on a CPU, when a
            check forward agrees; see :mod:`._layout`), ``"contiguous"`` or ``"channels_last"``.

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

    @model_then_data
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
        memory_format: Literal["auto", "contiguous", "channels_last"] = "auto",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise LosslabError(f"model must be an nn.Module, got {type(model).__name__}")
        model = unwrap_model(model)  # DataParallel/DDP/torch.compile: measure the module inside
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
        self._shell = make_shell(model)
        self._bn_modules = [m for m in self._shell.modules() if _is_bn(m)]
        self._bn_buffers = {
            f"{name}.{b}": m
            for name, m in self._shell.named_modules()
            if _is_bn(m)
            for b in ("running_mean", "running_var", "num_batches_tracked")
            if getattr(m, b, None) is not None
        }
        self.bn = ("recompute" if self._bn_modules else "eval") if bn == "auto" else bn
        self._bn_per_row: dict[int, int] = {}  # values per channel and example, seen by the statistics pass
        for m in self._bn_modules:
            m.register_forward_pre_hook(self._record_bn_rows)

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
        if isinstance(loss, str) and loss not in LOSS_NAMES:
            loss = resolve_loss(loss)  # the other names and pkg.module:function specs: a callable
        if isinstance(loss, str):
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
        self.memory_format, layout_reason = choose_layout(
            memory_format, shell=self._shell, x=self.x, device=self.device, dtype=self.dtype,
            base=self._merged({}, self._base_buffers), forward=self._forward_one)
        if self.memory_format == "channels_last":  # stored once: chunks are views, points follow in prepare
            x_is_bn, self.x = self.bn_x is self.x, channels_last(self.x)
            self.bn_x = self.x if x_is_bn else channels_last(self.bn_x)
            self._base = self.prepare(self._base)
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
        chunking = self._setup_chunking(measured=cache_mb == "auto" and self.cache_mb is not None)
        self.first_layer_requested = first_layer
        self._first, first_reason = (None, "off") if first_layer == "compute" else self._find_first_layer()
        self._first_cache: _FirstCache | None = None
        self._split_cache: dict[int, tuple[list[Tensor], list[Tensor]]] = {}
        self._combinations: tuple[tuple[Any, ...], list[Tensor], _Combinations] | None = None
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
            "chunking": chunking,
            "memory_format": {"requested": memory_format, "used": self.memory_format, "reason": layout_reason},
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
        """``data`` as detached tensors on the evaluator's device/dtype (finite; may be empty here)."""
        x, y = as_xy(data, None, what=what, allow_empty=True, check_finite=True)
        return self._cast(x.detach()), self._cast(y.detach())

    def _check_output(self, out: Any) -> None:
        """Check the probe forward's output against the loss; sets ``_tensor_output``."""
        self._tensor_output = isinstance(out, Tensor)
        if self._loss_batched is not None:
            check_model_output(out, self.y, classification=self._loss_batched is _ce_per_example)

    # ---- public API ---------------------------------------------------------------------------

    def prepare(self, point: Mapping[str, Tensor]) -> Point:
        """Check a point's keys and move its tensors to the evaluator's device/dtype."""
        if not isinstance(point, Mapping):
            raise LosslabError(f"a point must be a dict of tensors, got {type(point).__name__}")
        known = set(self._param_names) | set(self._buffer_names)
        extra = [k for k in point if k not in known]
        if extra:
            raise LosslabError(f"point has keys the model lacks: {sorted(extra)[:5]}")
        cl = getattr(self, "memory_format", None) == "channels_last"  # 4-D weights as the inputs (_layout)
        return {k: channels_last(self._cast(v.detach())) if cl and k in self._base else self._cast(v.detach())
                for k, v in point.items()}

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
        them all: the loop writes each point into one reused set of buffers just before evaluating
        it, vmap builds one group of ``points_per_chunk`` at a time. Every key is computed in place
        as ``torch.add(base, d_1, alpha=c_k1)``, then ``add_(d_j, alpha=c_kj)`` over the other
        ``d_j`` that have it, in order (coefficients cast to the evaluator's dtype; without a base
        the first term is ``c_k1 * d_1``), so values are bit-identical across strategies and calls
        (with the first layer precomputed, see ``first_layer``, equal to rounding). A call with the
        same direction and base tensors as the previous one (same addresses and versions: not
        changed in place) reuses its buffers and first-layer terms.

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
        nd = len(basis)
        c = torch.as_tensor(np.ascontiguousarray(coeffs, dtype=np.float64) if not isinstance(coeffs, Tensor) else coeffs)
        if c.dim() == 1 and nd == 1:
            c = c.reshape(-1, 1)
        if c.dim() != 2 or c.shape[1] != nd:
            raise LosslabError(f"coeffs must be (K, {nd}) for {nd} directions, got {tuple(c.shape)}")
        if not basis and base is None:
            raise LosslabError("evaluate_combinations needs a base or at least one direction")
        c = c.to(device=self.device, dtype=self.dtype)
        key = _combination_key(basis, base)
        if key is not None and self._combinations is not None and self._combinations[0] == key:
            return self._results(self._evaluate_source(self._combinations[2].rebind(c)))
        self._combinations = None
        dirs = [self.prepare(d) for d in basis]
        b = None if base is None else self.prepare(base)
        for what, pt in [("base", b or {})] + [(f"basis[{j}]", d) for j, d in enumerate(dirs)]:
            for name, v in pt.items():
                if not v.is_floating_point():
                    raise LosslabError(f"{what}[{name!r}] is not a floating tensor")
                ref = self._base.get(name, self._base_buffers.get(name))
                if ref is not None and tuple(v.shape) != tuple(ref.shape):
                    raise LosslabError(f"{what}[{name!r}] has shape {tuple(v.shape)}, the model's is {tuple(ref.shape)}")
        src = _Combinations(c, dirs, b)
        if key is not None:  # the next call with the same directions reuses their buffers (and first-layer terms)
            refs = [t for pt in [*basis, base or {}] for t in pt.values()]
            self._combinations = (key, refs, src)
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

    def _record_bn_rows(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        if module.training and inputs and isinstance(inputs[0], Tensor) and inputs[0].dim() >= 2:
            self._bn_per_row[id(module)] = int(np.prod(inputs[0].shape[2:], dtype=np.int64))

    def _biased_bn_var(self, buffers: Point, bxs: Sequence[Tensor]) -> None:
        """The statistics pass leaves the unbiased variance ``m/(m-1)·σ²`` (``m`` values per channel in a
        chunk) in ``running_var``; scale it back to the biased ``σ²`` that train-mode BatchNorm normalizes
        with, in place (the one definition of ``bn="recompute"``)."""
        rows = sum(int(x.shape[0]) for x in bxs) / max(1, len(bxs))
        for name, m in self._bn_buffers.items():
            if name.endswith("running_var"):
                count = rows * self._bn_per_row.get(id(m), 1)
                if count > 1:
                    buffers[name].mul_((count - 1) / count)

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
                    self._biased_bn_var(buffers, bxs)
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
        """Points ``lo..hi-1`` of ``src`` with the loop (first layer precomputed when it applies);
        while chunk sizes are being measured, one point per candidate (see :meth:`_probe_chunk`)."""
        parts = []
        while lo < hi and self._chunk_queue:
            parts.append(self._probe_chunk(src, lo))
            lo += 1
        if lo < hi:
            xs, bxs, ys = self._data("loop")
            cache = self._first_cache_for(src, xs) if isinstance(src, _Combinations) else None
            if cache is None:
                parts.append(self._run_loop(src.each(lo, hi), xs, bxs, ys))
            else:
                self.info["first_layer"]["used"] = True
                assert isinstance(src, _Combinations)
                parts.append(self._run_loop(src.each(lo, hi), xs, bxs, ys, first=cache, coeffs=src.c[lo:hi].tolist()))
        return torch.cat(parts)

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
            if recompute:
                self._biased_bn_var(buffers, bxs)
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
            try:  # best of 5: the first call with a new shape is slow (allocation, kernel setup); a
                # time already under the threshold decides (the best can only be lower)
                for _ in range(5):
                    t = timed(lambda: self._run_loop(src.each(0, 1), [self.x[:2]], bxs, [self.y[:2]]))[0]
                    t_over = t if t_over is None else min(t_over, t)
                    if t_over < _VMAP_MIN_OVERHEAD * t_loop:
                        break
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
