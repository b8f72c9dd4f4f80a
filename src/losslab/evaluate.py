"""Loss, accuracy and user metrics of one model at many points in parameter space.

An :class:`Evaluator` holds a model, a dataset (resident tensors, moved to the device once) and a
loss; it turns points (``dict[str, Tensor]`` keyed like ``model.named_parameters()``) into numbers
without ever touching the user's model. For a point :math:`\\theta` and data
:math:`\\{(x_n, y_n)\\}_{n=1}^N` split into chunks :math:`C_1, \\dots, C_m` it returns

.. math::

    L(\\theta) = \\frac{1}{N} \\sum_{c=1}^{m} |C_c| \\, \\bar\\ell_c(\\theta), \\qquad
    \\bar\\ell_c(\\theta) = \\mathrm{loss}(f_\\theta(x_{C_c}), y_{C_c}),

i.e. the full-batch mean, exact for any chunking (the last chunk may be smaller). Every metric is
aggregated the same way, so a metric must return the *mean over the examples of its batch*.

How the model is run:

* The model is copied once into a private *shell* whose tensors live on the ``meta`` device (no
  memory is duplicated) and which is always evaluated with ``torch.func.functional_call`` under
  ``torch.inference_mode()``. The user's parameters, buffers and ``training`` flags are never read
  for writing, so they are bit-identical before and after every call. Evaluation is always in
  eval mode (dropout off), whatever mode the user's model is in.
* Keys absent from a point are taken from the model's parameters as they were at construction
  (shared storage when no device/dtype conversion is needed) and from a snapshot of its buffers.
* Strategies: ``"loop"`` evaluates one point after another, each over full-batch chunks;
  ``"vmap"`` evaluates K stacked points at once with ``torch.vmap(functional_call)``; ``"auto"``
  times both once, at the first call with two or more points, on one data chunk and
  ``points_per_chunk`` of those points (repeated if fewer), and keeps the faster for the
  evaluator's lifetime; when that run covered all the data its results are kept, so the
  overhead is one chunk of points evaluated by the slower strategy. The choice and the timings are recorded in :attr:`Evaluator.info`.
* BatchNorm: ``bn="recompute"`` (the default when the model has BatchNorm layers that track
  running statistics) resets the running statistics at every point and recomputes them with one
  pass over ``bn_data`` (default: the evaluation data) with the BatchNorm layers in train mode and
  cumulative-average semantics (``momentum=None``, as ``torch.optim.swa_utils.update_bn`` and
  Garipov et al.'s ``update_bn``): after chunks :math:`1..m`, ``running_mean`` is the plain average
  of the per-chunk batch means and ``running_var`` of the per-chunk unbiased variances; with a
  single chunk they are the exact full-data statistics. Other layers (dropout) stay in eval mode
  during this pass, so it is deterministic. Then the point is evaluated in eval mode with those
  statistics. ``bn="eval"`` uses the model's stored buffers (or buffers given in the point).
* Memory: one probe forward of a few examples with hooks on every leaf module measures the
  activation bytes per example, :math:`b = \\text{input bytes} + \\sum_{\\text{leaf modules}}
  \\text{output bytes}` (a conservative bound: it counts all activations as alive at once). With a
  budget :math:`M` bytes the data chunk is :math:`B = \\min(N, \\lfloor M / b \\rfloor)` examples (or
  ``batch_size``) and a chunk of points is :math:`K = \\min(64, \\lfloor M / (B b + P) \\rfloor)`
  points (``P``: bytes of one point), or ``points_per_chunk``. ``B`` does not depend on the
  strategy, so BatchNorm statistics (which depend on the chunking) are the same for both.
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
import time
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import params as P
from .errors import LosslabError

if TYPE_CHECKING:  # pragma: no cover
    from .data._base import Split

__all__ = ["Evaluator", "LossFn", "MetricFn", "PointSource", "has_batchnorm", "accuracy"]

Point = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss(output, target) -> scalar``: the *mean* loss over the examples of the batch."""
MetricFn = Callable[[Tensor, Tensor], Union[Tensor, float]]
"""``metric(output, target) -> scalar``: the *mean* over the examples of the batch."""
PointSource = Union[Sequence[Mapping[str, Tensor]], Callable[[np.ndarray], Mapping[str, Tensor]]]
"""A sequence of points, or ``make(indices) -> stacked point`` (leading dimension ``len(indices)``)."""

_MAX_POINTS_PER_CHUNK = 64
_PROBE_EXAMPLES = 32


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
        batch_size: examples per chunk; ``None`` = full batch, chunked to ``memory_budget_mb``.
        memory_budget_mb: activation memory budget used to size data and point chunks.
        strategy: ``"loop"``, ``"vmap"`` or ``"auto"`` (time both once, keep the faster).
        points_per_chunk: points evaluated together (vmap) / between callbacks; ``None`` = from
            the memory budget, at most 64.
        bn: ``"recompute"``, ``"eval"`` or ``"auto"`` (= ``"recompute"`` if the model has BatchNorm
            layers tracking running stats, else ``"eval"``).
        bn_data: data for recomputing BatchNorm statistics (default: ``data``). Pass the training
            split here when ``data`` is a test split.
        device: where to evaluate (default: the model's device).
        dtype: floating dtype of parameters and inputs (default: the model's).

    Attributes:
        info: description of the setup (chunk sizes, bytes per example, bn mode, strategy chosen
            and the auto timings), JSON-serialisable.

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
        self.bytes_per_example = self._probe_bytes_per_example()
        self.point_bytes = sum(v.numel() * v.element_size() for v in self._base.values())
        fit = max(1, int(budget // self.bytes_per_example))
        self.batch_size = int(batch_size) if batch_size is not None else min(self.n, fit)
        if points_per_chunk is not None:
            self.points_per_chunk = int(points_per_chunk)
        else:
            per_point = self.batch_size * self.bytes_per_example + self.point_bytes
            self.points_per_chunk = max(1, min(_MAX_POINTS_PER_CHUNK, int(budget // per_point)))
        self.strategy_requested = strategy
        self.strategy: str | None = None if strategy == "auto" else strategy
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
        return self._cast(x.detach()), self._cast(y.detach())

    def _probe_bytes_per_example(self) -> int:
        """Activation bytes per example from one forward of a few examples (see module docstring)."""
        nb = min(self.n, _PROBE_EXAMPLES)
        xb = self.x[:nb]
        total = [0]

        def count(obj: Any) -> int:
            if isinstance(obj, Tensor):
                return obj.numel() * obj.element_size()
            if isinstance(obj, (tuple, list)):
                return sum(count(o) for o in obj)
            if isinstance(obj, dict):
                return sum(count(o) for o in obj.values())
            return 0

        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            total[0] += count(out)

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
        per = (count(xb) + total[0] + count(out)) / nb
        return max(1, int(math.ceil(per)))

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
            res = self._run_loop([p], self._chunks(self.x), self._chunks(self.bn_x), self._chunks(self.y))
        return {name: float(res[0, i]) for i, name in enumerate(self.metric_names)}

    def evaluate_stacked(self, stacked: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
        """Metrics at K points stacked along a leading dimension (as :func:`losslab.params.stack`).

        Uses the selected strategy (for ``"auto"``, the first call with K >= 2 times both); with
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
        if k == 0:
            return {name: np.zeros(0) for name in self.metric_names}
        strategy = self.strategy
        parts: list[Tensor] = []
        if strategy is None and k >= 2:
            strategy, first = self._choose_strategy(st)
            if first is not None:
                parts.append(first)
        strategy = strategy or "loop"
        start = sum(p.shape[0] for p in parts)
        xs, bxs, ys = self._chunks(self.x), self._chunks(self.bn_x), self._chunks(self.y)
        with torch.inference_mode():
            if strategy == "loop":
                parts.append(self._run_loop(P.unstack(st)[start:], xs, bxs, ys))
            else:
                for s in range(start, k, self.points_per_chunk):
                    sub = {n: v[s : s + self.points_per_chunk] for n, v in st.items()}
                    try:
                        parts.append(self._run_vmap(sub, xs, bxs, ys))
                    except LosslabError:
                        raise
                    except Exception as e:  # noqa: BLE001
                        raise LosslabError(f"vmap evaluation failed ({type(e).__name__}: {e}); use strategy='loop'") from e
        res = torch.cat(parts)
        res_np = res.cpu().numpy()
        return {name: res_np[:, i].copy() for i, name in enumerate(self.metric_names)}

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
        return list(t.split(self.batch_size))

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

    def _run_loop(self, points: Sequence[Point], xs: Sequence[Tensor], bxs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensor:
        rows = []
        with torch.inference_mode():
            for p in points:
                buffers: Point = {}
                if self.bn == "recompute" and self._bn_modules:
                    buffers = self._fresh_bn(None)
                    tensors = self._merged(p, buffers)
                    for i, xc in enumerate(bxs, 1):
                        self._set_bn_mode(True, 1.0 / i)
                        self._forward_one(tensors, xc)
                self._set_bn_mode(False)
                tensors = self._merged(p, buffers)
                acc = torch.zeros(1, len(self.metric_names), dtype=torch.float64, device=self.device)
                for xc, yc in zip(xs, ys):
                    out = self._forward_one(tensors, xc)
                    acc += self._reduce(out.unsqueeze(0), yc)
                rows.append(acc / self.n)
        return torch.cat(rows) if rows else torch.zeros(0, len(self.metric_names), dtype=torch.float64, device=self.device)

    def _run_vmap(self, stacked: Point, xs: Sequence[Tensor], bxs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensor:
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
            for xc, yc in zip(xs, ys):
                acc += self._reduce(fwd(stacked, buffers, xc), yc)
        return acc / self.n

    def _choose_strategy(self, stacked: Point) -> tuple[str, Tensor | None]:
        """Time loop and vmap once each on one data chunk with ``points_per_chunk`` points.

        Returns the faster strategy and, when that timing run was a complete evaluation (one data
        chunk, a full group of real points), its results for the first ``points_per_chunk`` points.
        """
        xs, bxs, ys = self._chunks(self.x), self._chunks(self.bn_x), self._chunks(self.y)
        complete = len(xs) == 1 and len(bxs) == 1
        xs, bxs, ys = xs[:1], bxs[:1], ys[:1]
        k = self.points_per_chunk
        avail = next(iter(stacked.values())).shape[0]
        complete = complete and avail >= k
        sel = torch.arange(k, device=self.device) % avail  # fewer points given: repeat them
        sub = {n: v.index_select(0, sel) for n, v in stacked.items()}

        def timed(fn: Callable[[], Tensor]) -> tuple[float, Tensor]:
            self._sync()
            t0 = time.perf_counter()
            out = fn()
            self._sync()
            return time.perf_counter() - t0, out

        with torch.inference_mode():
            t_loop, r_loop = timed(lambda: self._run_loop(P.unstack(sub), xs, bxs, ys))
            err = None
            try:
                t_vmap, r_vmap = timed(lambda: self._run_vmap(sub, xs, bxs, ys))
            except Exception as e:  # noqa: BLE001
                t_vmap, r_vmap, err = math.inf, r_loop, f"{type(e).__name__}: {e}"
        choice = "vmap" if t_vmap < t_loop else "loop"
        self.strategy = choice
        self.info["strategy"] = choice
        self.info["timing"] = {
            "points": k,
            "examples": int(xs[0].shape[0]),
            "loop_s": t_loop,
            "vmap_s": None if err else t_vmap,
            "vmap_error": err,
        }
        return choice, ((r_vmap if choice == "vmap" else r_loop) if complete else None)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __repr__(self) -> str:
        return (
            f"Evaluator(n={self.n}, loss={self.loss_name!r}, bn={self.bn!r}, strategy={self.info['strategy'] or 'auto'!r}, "
            f"batch_size={self.batch_size}, points_per_chunk={self.points_per_chunk})"
        )


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
