"""The forward pass of any ``nn.Module`` as a chain of layers, for :func:`~losslab.connect.spec_for`.

:func:`chain_layers` traces a model with ``torch.fx`` and, when the traced graph is a single chain
(each operation consumes the previous one's output and nothing else), returns it as ``(name,
module)`` pairs in forward order: called submodules as themselves, functional operations as the
equivalent parameter-free module (``F.relu`` -> ``nn.ReLU()``, ``torch.flatten(x, 1)`` and
``x.view(x.size(0), -1)`` -> ``nn.Flatten()``, ``F.max_pool2d`` -> a channel-wise layer...). The
permutation walker then treats a model written as a class exactly like the equivalent
``nn.Sequential``. Branches (skip connections, several inputs), parameters used functionally and
operations of unknown permutation behaviour are refused with a one-line reason.
"""
from __future__ import annotations

import operator
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LosslabError
from ..models._zoo import ResidualBlock

__all__ = ["chain_layers"]

_ELEMENTWISE_FUNCS: set[Any] = {
    torch.relu, torch.relu_, torch.tanh, torch.sigmoid, F.relu, F.relu6, F.elu, F.selu, F.celu, F.gelu,
    F.silu, F.mish, F.leaky_relu, F.softplus, F.softsign, F.hardtanh, F.hardswish, F.hardsigmoid,
    F.tanhshrink, F.logsigmoid, F.dropout, F.alpha_dropout, F.tanh, F.sigmoid,
}
_ELEMENTWISE_METHODS = {"relu", "relu_", "tanh", "tanh_", "sigmoid", "sigmoid_", "contiguous", "clone", "float",
                        "double"}
_CHANNELWISE_FUNCS: set[Any] = {
    F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.dropout1d, F.dropout2d, torch.max_pool1d, torch.max_pool2d,
    torch.avg_pool1d, torch.adaptive_avg_pool1d, torch.adaptive_max_pool1d,
}
# operations on shapes (x.size(0), x.shape[0], ...): they read the activation but do not transform it
_META_METHODS = {"size", "dim"}
_META_ATTRS = {"shape", "ndim"}


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, with losslab's ResidualBlock kept whole (the walker knows its structure)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, ResidualBlock) or super().is_leaf_module(m, qualname)


def chain_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``model``'s forward pass as ``(name, module)`` pairs in order (see the module docstring).

    Raises:
        LosslabError: the model cannot be traced, has several inputs, branches, uses parameters
            functionally, or calls an operation whose permutation behaviour is unknown.
    """
    what = type(model).__name__
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # noqa: BLE001 - any tracing failure means: no automatic spec
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise LosslabError(f"spec_for: cannot trace {what} with torch.fx ({first}); pass your own spec") from None
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise LosslabError(f"spec_for: {what}.forward takes {len(inputs)} inputs; only one-input models are derived; "
                           "pass your own spec")
    meta: set[Any] = set()
    cur = inputs[0]
    layers: list[tuple[str, nn.Module]] = []
    for node in graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            if _tensor_args(node, meta) != [cur]:
                raise LosslabError(f"spec_for: {what} does not return the last layer's output alone; "
                                   "pass your own spec")
            break
        if _is_meta(node, meta):
            meta.add(node)
            continue
        if node.op == "get_attr":
            raise LosslabError(f"spec_for: {what} uses the tensor {node.target!r} directly in forward (not through a "
                               "layer); pass your own spec")
        args = _tensor_args(node, meta)
        if args != [cur]:
            raise LosslabError(f"spec_for: {what} is not a single chain of layers ({_describe(node)} does not take "
                               "the previous layer's output alone: a skip connection or branch?); pass your own spec")
        layers.append(_as_layer(model, node))
        cur = node
    return layers


def _tensor_args(node: Any, meta: set[Any]) -> list[Any]:
    found: list[Any] = []
    torch.fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) if n not in meta else None)
    return found


def _is_meta(node: Any, meta: set[Any]) -> bool:
    """A shape computation: ``x.size(...)``, ``x.shape``, or arithmetic/indexing on those only."""
    if node.op == "call_method" and node.target in _META_METHODS:
        return True
    if node.op == "call_function" and node.target is getattr and len(node.args) > 1 and node.args[1] in _META_ATTRS:
        return True
    if node.op == "call_function" and node.target in (operator.getitem, operator.mul, operator.add,
                                                      operator.floordiv, operator.sub):
        found: list[Any] = []
        torch.fx.node.map_arg(node.args, found.append)
        return bool(found) and all(n in meta for n in found)
    return False


def _describe(node: Any) -> str:
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"{node.op} {target!r}"


def _flatten(node: Any, default_start: int) -> nn.Module:
    rest = list(node.args[1:])
    start = node.kwargs.get("start_dim", rest[0] if rest else default_start)
    end = node.kwargs.get("end_dim", rest[1] if len(rest) > 1 else -1)
    if not (isinstance(start, int) and isinstance(end, int)):
        raise LosslabError(f"spec_for: {_describe(node)} with non-constant dimensions; pass your own spec")
    return nn.Flatten(start, end)


def _reshape(node: Any) -> nn.Module:
    """``x.view(n, -1)``, ``x.reshape(-1, F)``, ``torch.reshape(x, (n, -1))``: a Flatten(1, -1).

    (A reshape that also mixed the batch axis would be caught by :func:`~losslab.connect.align`'s
    output check; the next Linear's fan-in is checked by the walker.)
    """
    shape = list(node.args[1:])
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = list(shape[0])
    if len(shape) == 2 and (shape[1] == -1 or shape[0] == -1):
        return nn.Flatten()
    raise LosslabError(f"spec_for: {_describe(node)} to shape {shape}: only (batch, -1) reshapes are derived; "
                       "pass your own spec")


_FUNCTION_LAYERS: dict[Any, Callable[[Any], nn.Module]] = {
    torch.flatten: lambda n: _flatten(n, 0),
    torch.reshape: _reshape,
}


def _as_layer(model: nn.Module, node: Any) -> tuple[str, nn.Module]:
    if node.op == "call_module":
        return str(node.target), model.get_submodule(node.target)
    name = f"<{node.name}>"
    if node.op == "call_function":
        if node.target in _ELEMENTWISE_FUNCS:
            return name, nn.Identity()
        if node.target in _CHANNELWISE_FUNCS:
            return name, nn.Dropout2d()  # stands for any layer that keeps the channel axis
        if node.target in _FUNCTION_LAYERS:
            return name, _FUNCTION_LAYERS[node.target](node)
    elif node.op == "call_method":
        if node.target in _ELEMENTWISE_METHODS:
            return name, nn.Identity()
        if node.target == "flatten":
            return name, _flatten(node, 0)
        if node.target in ("view", "reshape"):
            return name, _reshape(node)
    raise LosslabError(f"spec_for: unsupported operation {_describe(node)} in {type(model).__name__}.forward; "
                       "pass your own spec")
