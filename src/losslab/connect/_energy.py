"""AutoNEB energies: the :class:`Energy` protocol, :class:`FunctionEnergy` (any ``f(x)``) and
:class:`ModelEnergy` (a model and its data); :mod:`losslab.connect.neb` re-exports them."""
from __future__ import annotations

from typing import Any, Callable, Literal, Mapping, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from .. import params as P
from .._functional import model_then_data, resolve_loss
from ..errors import LosslabError
from ..evaluate import Evaluator, _make_shell
from .paths import _splits, as_point, xy


# ------------------------------------------------------------------------------------- energies
class Energy(Protocol):
    """What AutoNEB needs of an energy on flat vectors of dimension D."""

    def value_and_grad(self, x: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """Energies ``(K,)`` and gradients ``(K, D)`` at the K rows of ``x`` (may be a mini-batch
        estimate; ``step`` lets a stochastic energy pick the same batch for every pivot of a step)."""
        ...

    def values(self, x: Tensor) -> Tensor:
        """Exact energies ``(K,)`` at the K rows of ``x`` (used for the dense path and insertion)."""
        ...


class FunctionEnergy:
    """A deterministic energy from ``fn(x: (D,)) -> scalar tensor`` (differentiable by autograd).

    Example:
        >>> import torch
        >>> e = FunctionEnergy(lambda p: (p ** 2).sum())
        >>> v, g = e.value_and_grad(torch.tensor([[1.0, 2.0]]), 0)
        >>> v.tolist(), g.tolist()
        ([5.0], [[2.0, 4.0]])
    """

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        if not callable(fn):
            raise LosslabError("FunctionEnergy needs a callable fn(x) -> scalar")
        self.fn = fn
        self._vmap = True

    def value_and_grad(self, x: Tensor, step: int = 0) -> tuple[Tensor, Tensor]:
        if self._vmap:
            try:
                with torch.enable_grad():
                    g, v = torch.func.vmap(torch.func.grad_and_value(self.fn))(x.detach())
                return v.detach(), g.detach()
            except Exception:  # noqa: BLE001 - fn not vmappable: fall back to a loop
                self._vmap = False
        vals, grads = [], []
        for row in x:
            r = row.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                v = self.fn(r)
                (g,) = torch.autograd.grad(v, r)
            vals.append(v.detach().reshape(()))
            grads.append(g)
        return torch.stack(vals), torch.stack(grads)

    def values(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            if self._vmap:
                try:
                    return torch.func.vmap(self.fn)(x.detach()).reshape(-1)
                except Exception:  # noqa: BLE001
                    self._vmap = False
            return torch.stack([torch.as_tensor(self.fn(row)).reshape(()) for row in x])


class ModelEnergy:
    """The training loss of ``model`` as an energy on flattened parameters.

    Updates use the mini-batch loss (``batch_size`` examples, one batch per step shared by every
    pivot, drawn from a generator seeded with ``seed``; BatchNorm layers in train mode, i.e. batch
    statistics); :meth:`values` is the full-data loss from an :class:`~losslab.evaluate.Evaluator`
    (BatchNorm statistics recomputed at every point, ``bn="auto"``).

    Args:
        model: the architecture (never modified).
        data: a ``Bundle`` (its ``train`` split is the energy) , a ``Split`` or ``(x, y)``.
        batch_size: mini-batch size for updates (0: full batch).
        seed: seed of the mini-batch draws.
        loss: ``"cross_entropy"`` or ``"mse"``.
        bn: BatchNorm handling of :meth:`values`.
        device: where to compute (default: the model's device).
    """

    @model_then_data
    def __init__(self, model: nn.Module, data: Any, *, batch_size: int = 128, seed: int = 0,
                 loss: Literal["cross_entropy", "mse"] = "cross_entropy",
                 bn: Literal["auto", "recompute", "eval"] = "auto", device: torch.device | str | None = None) -> None:
        train, _ = _splits(data, None)
        self.model = model
        self.like = {k: v.detach() for k, v in model.named_parameters()}
        ref = next(iter(self.like.values()))
        self.device = torch.device(device) if device is not None else ref.device
        self.dtype = ref.dtype
        x, y = xy(train, "data")
        self.x = x.to(self.device)
        if self.x.is_floating_point():
            self.x = self.x.to(self.dtype)
        self.y = y.to(self.device)
        self.n = int(self.x.shape[0])
        if self.n == 0:
            raise LosslabError("ModelEnergy: training data is empty")
        self.batch_size = self.n if batch_size in (0, None) or batch_size >= self.n else int(batch_size)
        self.seed = int(seed)
        self._loss = resolve_loss(loss)  # the library's one resolver: names, pkg.module:function, callables
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)
        self._shell = _make_shell(model)
        self._shell.train()
        self._buffers = {k: v.detach().clone().to(self.device) for k, v in model.named_buffers()}
        self._evaluator = Evaluator(model, train, loss=loss, bn=bn, device=self.device)
        self.dim = P.numel(self.like)
        self.last: tuple[Tensor, dict[str, np.ndarray]] | None = None

    def to_flat(self, point: Mapping[str, Tensor] | nn.Module) -> Tensor:
        """The flat parameter vector of a point (buffers ignored)."""
        p = as_point(point)
        missing = [k for k in self.like if k not in p]
        if missing:
            raise LosslabError(f"point lacks parameters {missing[:5]}")
        P.check_compatible({k: p[k] for k in self.like}, self.like, "point and model")
        return torch.cat([p[k].detach().reshape(-1).to(self.device, self.dtype) for k in self.like])

    def to_point(self, vec: Tensor) -> dict[str, Tensor]:
        """The point of a flat vector (a view)."""
        return P.unflatten(vec, self.like)

    def _batch(self, step: int) -> Tensor:
        if self.batch_size >= self.n:
            return torch.arange(self.n, device=self.device)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(step))
        return torch.randperm(self.n, generator=g)[: self.batch_size].to(self.device)

    def value_and_grad(self, x: Tensor, step: int = 0) -> tuple[Tensor, Tensor]:
        idx = self._batch(step)
        xb, yb = self.x[idx], self.y[idx]
        vals, grads = [], []
        for row in x:
            r = row.detach().to(self.device, self.dtype).clone().requires_grad_(True)
            with torch.enable_grad():
                pt = P.unflatten(r, self.like)
                bufs = {k: v.clone() for k, v in self._buffers.items()}
                out = torch.func.functional_call(self._shell, {**pt, **bufs}, (xb,), strict=False)
                v = self._loss(out, yb)
                (g,) = torch.autograd.grad(v, r)
            vals.append(v.detach())
            grads.append(g)
        return torch.stack(vals), torch.stack(grads)

    def values(self, x: Tensor) -> Tensor:
        xs = x.detach()

        def make(idx: np.ndarray) -> dict[str, Tensor]:
            sub = xs[torch.as_tensor(idx)]
            return {k: v for k, v in zip(self.like, _unflatten_stacked(sub, self.like))}

        res = self._evaluator.evaluate_many(make, n=int(xs.shape[0]))
        self.last = (xs, res)  # the full metrics of the last call (neb_path reuses the final dense path's)
        return torch.as_tensor(res["loss"], dtype=torch.float64)


def _unflatten_stacked(x: Tensor, like: Mapping[str, Tensor]) -> list[Tensor]:
    out, i = [], 0
    for v in like.values():
        n = v.numel()
        out.append(x[:, i : i + n].reshape(x.shape[0], *v.shape))
        i += n
    return out
