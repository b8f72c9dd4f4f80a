"""The empirical-risk problem every curvature operator works on.

``L(θ) = (1/N) Σ_i ℓ(f(x_i; θ), y_i)`` over the full dataset, evaluated in batches: ``loss_fn`` returns
the *mean* loss of a batch, so batch ``b`` with ``n_b`` examples enters with weight ``n_b / N``; this is
exact for uneven final batches. The model is evaluated with ``torch.func.functional_call`` at a private
copy of its parameters and buffers, on a :func:`losslab._functional.make_shell` copy of its structure, so
the user's module is never modified. BatchNorm follows the library's one policy (``bn``, see
:data:`losslab._functional.BN_MODES`): ``"recompute"`` normalizes with the statistics of the problem's data
at the point (differentiated through, so the Hessian is that of the function a surface evaluates), ``"eval"``
with the stored running statistics; both with dropout off. ``bn=None`` keeps the modes the model's modules
have at construction.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence, Union

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .._functional import LossFn, Point, as_xy, batchnorm_layers, batchnorm_recompute, make_shell, resolve_bn, unwrap_model
from ..errors import LosslabError

__all__ = ["DataLike", "LossFn", "Problem"]

#: A ``Split`` (anything with ``.x`` and ``.y``), an ``(x, y)`` pair of tensors, or a list of ``(x, y)`` batches.
DataLike = Union[Any, tuple[Tensor, Tensor], Sequence[tuple[Tensor, Tensor]]]

_MODES = ("exact", "minibatch")


def _is_pair(obj: Any) -> bool:
    return isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(t, Tensor) for t in obj)


def _split_batches(data: Any, batch_size: int | None) -> list[tuple[Tensor, Tensor]]:
    x, y = as_xy(data, None)
    n = int(x.shape[0])
    if batch_size is None or batch_size >= n:
        return [(x, y)]
    if batch_size < 1:
        raise LosslabError(f"batch_size must be >= 1, got {batch_size}")
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]


def as_batches(data: DataLike, batch_size: int | None) -> list[tuple[Tensor, Tensor]]:
    """Normalize ``data`` into a list of ``(x, y)`` batches (see :data:`DataLike`)."""
    if hasattr(data, "x") and hasattr(data, "y") and isinstance(getattr(data, "x"), Tensor):
        return _split_batches(data, batch_size)
    if _is_pair(data):
        return _split_batches(data, batch_size)
    if isinstance(data, (list, tuple)) or isinstance(data, Iterable):
        batches = list(data)
        if not batches:
            raise LosslabError("data is an empty list of batches")
        if not all(_is_pair(b) for b in batches):
            raise LosslabError("data must be a Split, an (x, y) pair of tensors, or a list of (x, y) batches")
        if batch_size is not None:
            raise LosslabError("batch_size cannot be used with data that is already a list of batches")
        out = []
        for bx, by in batches:
            if bx.shape[0] != by.shape[0] or bx.shape[0] == 0:
                raise LosslabError(f"bad batch: x has {bx.shape[0]} examples, y has {by.shape[0]}")
            out.append((bx, by))
        return out
    raise LosslabError(f"cannot use {type(data).__name__} as data: pass a Split, (x, y) or a list of batches")


class Problem:
    """The full-data risk of ``model`` with ``loss_fn`` over ``data``, as a function of selected parameters.

    Attributes:
        names: the selected parameter names, in ``model.named_parameters()`` order.
        theta: the selected parameters' values (detached private copies).
        fixed: every other parameter and all buffers (private copies, never differentiated).
        batches: resident ``(x, y)`` batches on the parameters' device.
        weights: ``n_b / N`` per batch.
        num_examples: ``N``.
        bn: ``"recompute"``, ``"eval"`` or ``None`` (the modules' own modes).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: DataLike,
        *,
        params: Sequence[str] | None = None,
        batch_size: int | None = None,
        mode: str = "exact",
        point: Mapping[str, Tensor] | None = None,
        dtype: torch.dtype | None = None,
        bn: str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise LosslabError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        model = unwrap_model(model)  # DataParallel/DDP/torch.compile: the module inside, same parameters
        if not callable(loss_fn):
            raise LosslabError("loss_fn must be callable: loss_fn(output, target) -> scalar mean loss")
        if mode not in _MODES:
            raise LosslabError(f"mode must be one of {_MODES}, got {mode!r}")
        self.model = model
        self.bn: str | None = None if bn is None else resolve_bn(model, bn)
        self.shell = make_shell(model, keep_mode=self.bn is None)
        if self.bn == "recompute":
            batchnorm_recompute(self.shell)
        self.loss_fn = loss_fn
        self.mode = mode

        all_params = dict(model.named_parameters())
        if not all_params:
            raise LosslabError("model has no parameters")
        if params is None:
            names = [k for k, v in all_params.items() if v.requires_grad]
            if not names:
                raise LosslabError("model has no trainable parameters; pass params=[...] explicitly")
        else:
            if isinstance(params, str):
                params = [params]
            unknown = [k for k in params if k not in all_params]
            if unknown:
                raise LosslabError(f"unknown parameter names {unknown}; allowed: {list(all_params)}")
            if len(set(params)) != len(params):
                raise LosslabError("params lists a name twice")
            wanted = set(params)
            names = [k for k in all_params if k in wanted]
            if not names:
                raise LosslabError("params selects no parameters")
        self.names: list[str] = names

        values: dict[str, Tensor] = {k: v.detach() for k, v in all_params.items()}
        buffers = {k: v.detach() for k, v in model.named_buffers()}
        if point is not None:
            unknown = [k for k in point if k not in values and k not in buffers]
            if unknown:
                raise LosslabError(f"point has keys the model lacks: {unknown}")
            for k, v in point.items():
                ref = values.get(k)
                if ref is not None and tuple(v.shape) != tuple(ref.shape):
                    raise LosslabError(f"point[{k!r}] has shape {tuple(v.shape)}, model has {tuple(ref.shape)}")
        if point is not None:
            for k, v in point.items():
                (values if k in values else buffers)[k] = v.detach()

        ref = values[names[0]]
        self.dtype: torch.dtype = dtype if dtype is not None else ref.dtype
        if not self.dtype.is_floating_point:
            raise LosslabError(f"dtype must be floating point, got {self.dtype}")
        self.device: torch.device = ref.device

        def cast(t: Tensor) -> Tensor:
            t = t.to(self.device)
            return t.to(self.dtype).clone() if t.is_floating_point() else t.clone()

        self.theta: Point = {k: cast(values[k]) for k in names}
        self.fixed: Point = {k: cast(v) for k, v in values.items() if k not in self.theta}
        self.fixed.update({k: cast(v) for k, v in buffers.items()})

        batches = as_batches(data, batch_size)
        if mode == "minibatch":
            batches = batches[:1]
        if self.bn == "recompute" and len(batches) > 1 and batchnorm_layers(model):
            raise LosslabError(f"bn='recompute' takes the BatchNorm statistics over the whole data, which must be one "
                               f"batch (got {len(batches)} batches): drop batch_size, or use bn='eval'")
        moved = []
        for x, y in batches:
            x = x.to(self.device)
            if x.is_floating_point():
                x = x.to(self.dtype)
            y = y.to(self.device)
            if y.is_floating_point():
                y = y.to(self.dtype)
            moved.append((x, y))
        self.batches: list[tuple[Tensor, Tensor]] = moved
        sizes = [int(x.shape[0]) for x, _ in moved]
        self.num_examples: int = sum(sizes)
        self.weights: list[float] = [s / self.num_examples for s in sizes]
        self.shapes: list[torch.Size] = [self.theta[k].shape for k in names]
        self.numels: list[int] = [self.theta[k].numel() for k in names]
        self.n: int = sum(self.numels)

    # -- evaluation -------------------------------------------------------------------------
    def forward(self, theta: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """The model's output on ``x`` at the selected parameters ``theta`` (the rest from :attr:`fixed`)."""
        merged = dict(self.fixed)
        merged.update(theta)
        # attention by the math kernel: the fused CPU/GPU kernels have no second derivative (Hessian products)
        with sdpa_kernel(SDPBackend.MATH):
            return torch.func.functional_call(self.shell, merged, (x,), strict=False)

    def loss_of_output(self, out: Tensor, y: Tensor) -> Tensor:
        loss = self.loss_fn(out, y)
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise LosslabError(f"loss_fn must return a scalar (mean over the batch), got {shape}")
        return loss

    def batch_loss(self, theta: Mapping[str, Tensor], b: int) -> Tensor:
        x, y = self.batches[b]
        return self.loss_of_output(self.forward(theta, x), y)

    def leaves(self, theta: Mapping[str, Tensor] | None = None) -> Point:
        """Fresh autograd leaves (sharing storage) for the selected parameters."""
        theta = self.theta if theta is None else theta
        return {k: theta[k].detach().requires_grad_(True) for k in self.names}

    def loss(self, theta: Mapping[str, Tensor] | None = None) -> float:
        theta = self.theta if theta is None else theta
        total = 0.0
        with torch.no_grad():
            for b, w in enumerate(self.weights):
                total += w * float(self.batch_loss(theta, b))
        return total

    def loss_and_grad(self, theta: Mapping[str, Tensor] | None = None) -> tuple[float, Tensor]:
        """Full-data loss and its flat gradient (in ``self.dtype``)."""
        with torch.enable_grad():
            return self._loss_and_grad(theta)

    def _loss_and_grad(self, theta: Mapping[str, Tensor] | None) -> tuple[float, Tensor]:
        leaves = self.leaves(theta)
        order = [leaves[k] for k in self.names]
        total = 0.0
        grad = torch.zeros(self.n, dtype=self.dtype, device=self.device)
        for b, w in enumerate(self.weights):
            loss = self.batch_loss(leaves, b)
            gs = torch.autograd.grad(loss, order, allow_unused=True, materialize_grads=True)
            grad.add_(self.flat(gs), alpha=w)
            total += w * float(loss.detach())
        return total, grad

    # -- flat <-> dict ----------------------------------------------------------------------
    def flat(self, tensors: Sequence[Tensor]) -> Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])

    def split(self, vec: Tensor) -> list[Tensor]:
        return [p.view(s) for p, s in zip(torch.split(vec, self.numels), self.shapes)]

    def to_dict(self, vec: Tensor) -> Point:
        return dict(zip(self.names, self.split(vec)))

    def from_dict(self, d: Mapping[str, Tensor]) -> Tensor:
        if set(d) != set(self.names):
            missing = sorted(set(self.names) - set(d))
            unexpected = sorted(set(d) - set(self.names))
            raise LosslabError(f"vector dict has wrong keys: missing {missing}, unexpected {unexpected}")
        parts = []
        for k, s in zip(self.names, self.shapes):
            if tuple(d[k].shape) != tuple(s):
                raise LosslabError(f"vector[{k!r}] has shape {tuple(d[k].shape)}, expected {tuple(s)}")
            parts.append(d[k].reshape(-1))
        return torch.cat(parts)
