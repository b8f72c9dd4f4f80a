"""Per-example values of an :class:`~losslab.evaluate.Evaluator`'s metrics on a subset of its data.

The evaluator's passes return means over the whole dataset. Estimators that subsample the data
(:mod:`losslab.precision`) need the value of every metric on each example of a subset instead:

.. math::

    v_{im}(\\theta) = m(f_\\theta(x_i), y_i), \\qquad i \\in I,

so that the full mean is :math:`\\frac1N \\sum_{i=1}^N v_{im}(\\theta)` (equal to
:meth:`~losslab.evaluate.Evaluator.evaluate` up to float rounding). The built-in losses and
accuracy are computed per example in one forward per chunk; a user's callable loss or metric
(defined as a batch mean) is called on each example as a batch of one.

This is a separate entry point: it reads the evaluator's setup (model shell, base point, data,
loss and metrics) and runs its own forwards, leaving the evaluator's passes as they are.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np
import torch
from torch import Tensor

from ..errors import LosslabError
from ._metrics import _acc_per_example

if TYPE_CHECKING:  # pragma: no cover
    from ._evaluator import Evaluator

__all__ = ["evaluate_examples"]


def evaluate_examples(ev: "Evaluator", point: Mapping[str, Tensor], index: np.ndarray | None = None) -> np.ndarray:
    """Every metric of ``ev`` on each example ``index`` at ``point``: float64 ``(len(index), M)``.

    Columns follow ``ev.metric_names``. Examples are taken in the order of ``index`` (default: all
    ``N``), in chunks of ``ev.loop_batch_size``; evaluation is in eval mode (dropout off).

    Args:
        ev: the evaluator (its model, data, loss and metrics).
        point: the point (keys missing from it come from the model, as in ``ev.evaluate``).
        index: int indices into the evaluator's data (``None``: all examples).

    Raises:
        LosslabError: the evaluator recomputes BatchNorm statistics at each point (then an
            example's value depends on the other examples), or an index is out of range.

    Example:
        >>> import torch
        >>> from losslab.evaluate import Evaluator
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(12, 3, generator=g).double(), torch.randint(0, 2, (12,), generator=g)
        >>> ev = Evaluator(torch.nn.Linear(3, 2).double(), (x, y))
        >>> v = evaluate_examples(ev, {})
        >>> v.shape, bool(abs(v[:, 0].mean() - ev.evaluate({})["loss"]) < 1e-12)
        ((12, 2), True)
    """
    if ev.bn == "recompute" and ev._bn_modules:
        raise LosslabError("per-example values need BatchNorm statistics that do not depend on the examples "
                           "chosen: use bn='eval' (recomputed statistics couple every example of the set)")
    idx = np.arange(ev.n, dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= ev.n):
        raise LosslabError(f"example indices must lie in [0, {ev.n}), got [{idx.min()}, {idx.max()}]")
    out = np.zeros((idx.size, len(ev.metric_names)), dtype=np.float64)
    if idx.size == 0:
        return out
    tensors: dict[str, Tensor] = {**ev._base, **ev._base_buffers, **ev.prepare(point)}
    shell = ev._shell
    shell.eval()
    tidx = torch.as_tensor(idx, device=ev.x.device)
    step = max(1, int(ev.loop_batch_size))
    with torch.inference_mode():
        for s in range(0, idx.size, step):
            sel = tidx[s : s + step]
            xc, yc = ev.x.index_select(0, sel), ev.y.index_select(0, sel)
            if ev._tensor_output:
                cols = _columns(ev, torch.func.functional_call(shell, tensors, (xc,), strict=False), yc)
            else:  # a dict/tuple output: one example at a time through the user's callables
                rows = [_columns(ev, torch.func.functional_call(shell, tensors, (xc[i : i + 1],), strict=False),
                                 yc[i : i + 1]) for i in range(xc.shape[0])]
                cols = torch.cat(rows)
            out[s : s + sel.numel()] = cols.cpu().numpy()
    return out


def _columns(ev: "Evaluator", out: object, y: Tensor) -> Tensor:
    """``(B, M)`` float64 per-example metric values of one chunk's output."""
    b = y.shape[0]
    cols: list[Tensor] = []
    if ev._loss_batched is not None:
        assert isinstance(out, Tensor)
        cols.append(ev._loss_batched(out.unsqueeze(0), y)[0].to(torch.float64))
    else:
        cols.append(_one_by_one(ev._loss_fn, out, y))
    if ev._acc_builtin:
        assert isinstance(out, Tensor)
        cols.append(_acc_per_example(out.unsqueeze(0), y)[0])
    for fn in ev._metrics.values():
        cols.append(_one_by_one(fn, out, y))
    return torch.stack([c.to(y.device).reshape(b) for c in cols], dim=1)


def _one_by_one(fn: object, out: object, y: Tensor) -> Tensor:
    """A batch-mean callable evaluated on each example of the chunk as a batch of one."""
    b = y.shape[0]
    if b == 1 or not isinstance(out, Tensor):
        return torch.as_tensor(fn(out, y), device=y.device).to(torch.float64).reshape(1)  # type: ignore[operator]
    return torch.stack([torch.as_tensor(fn(out[i : i + 1], y[i : i + 1]), device=y.device)  # type: ignore[operator]
                        .to(torch.float64).reshape(()) for i in range(b)])
