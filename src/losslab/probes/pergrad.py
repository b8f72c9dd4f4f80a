"""Per-example gradients with ``torch.func``: ``vmap(grad(loss of one example))`` over chunks of examples.

For data :math:`\\{(x_n, y_n)\\}_{n=1}^N` and parameters :math:`\\theta \\in \\mathbb{R}^D` the result is
the matrix

.. math::

    G = \\begin{pmatrix} g_1^\\top \\\\ \\vdots \\\\ g_N^\\top \\end{pmatrix} \\in \\mathbb{R}^{N \\times D},
    \\qquad g_n = \\nabla_\\theta \\, \\ell(f_\\theta(x_n), y_n),

where :math:`\\ell(\\text{out}, y)` is ``loss`` applied to a batch of one example. The mean of the rows
is the full-batch gradient of the mean loss. The model is evaluated with ``functional_call`` on a private
meta-device copy in eval mode (BatchNorm uses its running statistics, dropout is off), so the user's
module is never modified.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from losslab.probes import per_example_grads
    >>> model = nn.Linear(3, 2)
    >>> x, y = torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1])
    >>> G = per_example_grads(model, (x, y), chunk_size=2)
    >>> G.shape
    torch.Size([5, 8])
    >>> full = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), list(model.parameters()))
    >>> torch.allclose(G.mean(0), torch.cat([g.reshape(-1) for g in full]), atol=1e-6)
    True
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from .._functional import model_then_data
from ..errors import LosslabError
from ._common import Functional, LossFn, as_xy, Point, check_chunk, default_loss, flatten_batched, iter_chunks

__all__ = ["per_example_grads", "DEFAULT_CHUNK"]

DEFAULT_CHUNK = 256


@model_then_data
def per_example_grads(
    model: nn.Module,
    data: Any,
    *,
    point: Mapping[str, Tensor] | None = None,
    loss: LossFn | None = None,
    chunk_size: int | None = DEFAULT_CHUNK,
    params: Sequence[str] | None = None,
    as_dict: bool = False,
    out_dtype: torch.dtype | None = None,
) -> Tensor | Point:
    """Gradients of the loss of each example separately.

    Args:
        model: the network (used only as a functional template).
        data: ``(x, y)`` (inputs ``(N, ...)``, targets ``(N, ...)``), a ``Split`` or a ``Bundle`` (its
            train split).
        point: parameters to differentiate at (``None``: the model's own); missing keys are taken
            from the model.
        loss: ``loss(output, target) -> scalar`` for a batch (called with a batch of one); default
            cross-entropy for integer labels, MSE for floating targets.
        chunk_size: examples per ``vmap`` call (memory is about ``chunk_size`` times one backward pass).
        params: names of the parameters to differentiate (default: all); the others are held fixed.
        as_dict: return ``{name: (N, *shape)}`` instead of the flat matrix.
        out_dtype: dtype of the result (default: the parameters').

    Returns:
        ``(N, D)`` matrix with rows :math:`g_n` (parameter order as ``named_parameters``, restricted to
        ``params``), or a dict of per-example gradients.
    """
    x, y = as_xy(data, allow_empty=True)
    fn = Functional(model)
    full = fn.point(point)
    wrt, fixed = fn.split(full, params)
    n = int(x.shape[0])
    if n == 0:
        raise LosslabError("no examples")
    if y.shape[0] != n:
        raise LosslabError(f"x has {n} examples but y has {y.shape[0]}")
    loss = loss if loss is not None else default_loss(y)
    size = check_chunk(chunk_size, n)

    def single(p: Point, xi: Tensor, yi: Tensor) -> Tensor:
        out = fn({**fixed, **p}, xi.unsqueeze(0))
        return loss(out, yi.unsqueeze(0))

    per = torch.func.vmap(torch.func.grad(single), in_dims=(None, 0, 0))
    if as_dict:
        parts: dict[str, list[Tensor]] = {k: [] for k in wrt}
        for i, j in iter_chunks(n, size):
            g = per(wrt, x[i:j], y[i:j])
            for k in wrt:
                parts[k].append(g[k].detach().to(out_dtype or g[k].dtype))
        return {k: torch.cat(v) for k, v in parts.items()}
    dim = sum(v.numel() for v in wrt.values())
    first = next(iter(wrt.values()))
    G = torch.empty(n, dim, dtype=out_dtype or first.dtype, device=first.device)
    for i, j in iter_chunks(n, size):
        g = per(wrt, x[i:j], y[i:j])
        G[i:j] = flatten_batched(g, j - i).detach()
    return G
