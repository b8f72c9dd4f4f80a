"""The forward pass of any ``nn.Module`` as a graph of layers, for :func:`~losslab.connect.spec_for`.

:func:`walk_graph` traces a model with ``torch.fx`` and feeds every operation to the permutation
walker in forward order: called submodules as themselves, functional operations as what the
equivalent layer does (``F.relu`` passes through, ``torch.flatten(x, 1)`` and
``x.view(x.size(0), -1)`` flatten, ``F.max_pool2d`` keeps the channel axis...), so a model written
as a class gets the spec of the equivalent ``nn.Sequential``. A sum or product of two
activations (a residual connection, a gate) puts both in one permutation group. Several inputs,
parameters used functionally, concatenations and operations of unknown permutation behaviour are
refused with a one-line reason.
"""
from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LosslabError
from ..models._zoo import ResidualBlock

__all__ = ["walk_graph"]

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
# reshapes that move no unit between positions of a permuted axis when they act on the raw input (before the
# first layer) or on the output (after the last): both are never permuted
_RESHAPE_METHODS = {"unsqueeze", "squeeze", "view", "reshape", "flatten", "permute", "transpose", "expand",
                    "unflatten", "movedim"}
_RESHAPE_FUNCS: set[Any] = {torch.unsqueeze, torch.squeeze, torch.reshape, torch.flatten, torch.permute,
                            torch.transpose, torch.movedim, torch.unflatten}
# operations on shapes (x.size(0), x.shape[0], ...): they read the activation but do not transform it
_META_METHODS = {"size", "dim"}
_META_ATTRS = {"shape", "ndim"}


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, with losslab's ResidualBlock kept whole (the walker knows its structure)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, ResidualBlock) or super().is_leaf_module(m, qualname)


_MERGE_FUNCS: set[Any] = {operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
                          torch.add, torch.sub, torch.mul}
_MERGE_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_"}


def walk_graph(model: nn.Module, walker: Any) -> None:
    """Feed ``model``'s traced forward pass to ``walker`` (a permutation ``_Walker``), node by node.

    Each value of the graph carries the walker's state (its permutation group, width and flatness).
    A layer or functional operation runs the walker from its input's state; an elementwise sum,
    difference or product of two activations (a skip connection, a gate) joins their groups into one,
    because both operands must be permuted alike. The model's output group is left unpermuted.

    Raises:
        LosslabError: the model cannot be traced, has several inputs, uses parameters functionally,
            combines activations of different widths or the raw input with a hidden one, or calls an
            operation whose permutation behaviour is unknown.
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
    alias: dict[str, str] = {}  # merged group -> the group it joined

    def find(g: str | None) -> str | None:
        while g is not None and g in alias:
            g = alias[g]
        return g

    meta: set[Any] = set()
    opaque: dict[Any, Any] = {}  # activations reshaped after the first layer -> the reshape (only the output may be)
    state: dict[Any, tuple[str | None, int, bool]] = {inputs[0]: (None, 0, False)}
    for node in graph.nodes:
        if node.op == "placeholder":
            continue
        if _is_meta(node, meta):
            meta.add(node)
            continue
        if node.op == "get_attr":
            raise LosslabError(f"spec_for: {what} uses the tensor {node.target!r} directly in forward (not through a "
                               "layer); pass your own spec")
        args = _tensor_args(node, meta)
        hidden = [opaque[a] for a in args if a in opaque]
        if hidden and node.op in ("call_function", "call_method") and len(args) == 1:
            opaque[node] = hidden[0]  # any one-input operation on a reshaped output (a scale, a softmax) is fine
            state[node] = state[args[0]]
            continue
        if hidden and node.op != "output":
            raise LosslabError(f"spec_for: unsupported operation {_describe(hidden[0])} in {what}.forward between "
                               "layers (a reshape is derived before the first layer or after the last); pass your "
                               "own spec")
        if node.op == "output":
            if len(args) != 1:
                raise LosslabError(f"spec_for: {what} returns {len(args)} tensors; only one output is derived; "
                                   "pass your own spec")
            walker.group, walker.size, walker.flat = find(state[args[0]][0]), *state[args[0]][1:]
            return
        if len(args) == 2 and _merges(node):
            state[node] = _merge(walker, node, [(find(state[a][0]), *state[a][1:]) for a in args], alias, what)
            continue
        if len(args) != 1:
            raise LosslabError(f"spec_for: {_describe(node)} in {what}.forward combines {len(args)} activations; "
                               "only sums and products of two are derived; pass your own spec")
        group, size, flat = state[args[0]]
        walker.group, walker.size, walker.flat = find(group), size, flat
        if _reshapes(node) and not _flattens(node, walker):
            if walker.group is not None:
                opaque[node] = node  # fine if it is the output; an error if a layer consumes it
            state[node] = (walker.group, walker.size, walker.flat)
            continue
        _apply(walker, model, node)
        state[node] = (walker.group, walker.size, walker.flat)
    raise LosslabError(f"spec_for: {what}'s traced graph has no output")  # pragma: no cover - fx always has one


def _reshapes(node: Any) -> bool:
    return (node.op == "call_function" and node.target in _RESHAPE_FUNCS) or (
        node.op == "call_method" and node.target in _RESHAPE_METHODS)


def _flattens(node: Any, walker: Any) -> bool:
    """A reshape that :func:`_apply` derives as ``Flatten(1, -1)`` of a hidden activation."""
    if walker.group is None:
        return False  # the raw input: any reshape passes through unpermuted
    if (node.op == "call_function" and node.target is torch.flatten) or (
            node.op == "call_method" and node.target == "flatten"):
        return True
    if (node.op == "call_function" and node.target is torch.reshape) or (
            node.op == "call_method" and node.target in ("view", "reshape")):
        try:
            _check_reshape(node)
        except LosslabError:
            return False
        return True
    return False


def _merges(node: Any) -> bool:
    return (node.op == "call_function" and node.target in _MERGE_FUNCS) or (
        node.op == "call_method" and node.target in _MERGE_METHODS)


def _merge(walker: Any, node: Any, operands: list[tuple[str | None, int, bool]], alias: dict[str, str],
           what: str) -> tuple[str | None, int, bool]:
    (g1, n1, f1), (g2, n2, f2) = operands
    if g1 is None and g2 is None:
        return None, 0, False
    if g1 is None or g2 is None:
        raise LosslabError(f"spec_for: {_describe(node)} in {what}.forward combines the model's input with a hidden "
                           "activation (that hidden layer cannot be permuted); pass your own spec")
    if n1 != n2 or f1 != f2:
        raise LosslabError(f"spec_for: {_describe(node)} in {what}.forward combines activations of {n1} and {n2} "
                           "units; pass your own spec")
    if g1 != g2:  # one permutation for both: the later group joins the earlier one
        walker.groups[g1].extend(walker.groups.pop(g2))
        alias[g2] = g1
    return g1, n1, f1


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


def _flatten_dims(node: Any) -> tuple[int, int]:
    """``(start_dim, end_dim)`` of ``torch.flatten(x, ...)`` / ``x.flatten(...)`` (both default to 0, -1)."""
    rest = list(node.args[1:])
    start = node.kwargs.get("start_dim", rest[0] if rest else 0)
    end = node.kwargs.get("end_dim", rest[1] if len(rest) > 1 else -1)
    if not (isinstance(start, int) and isinstance(end, int)):
        raise LosslabError(f"spec_for: {_describe(node)} with non-constant dimensions; pass your own spec")
    return start, end


def _check_reshape(node: Any) -> None:
    """``x.view(n, -1)``, ``x.reshape(-1, F)``, ``torch.reshape(x, (n, -1))`` act as ``Flatten(1, -1)``.

    (A reshape that also mixed the batch axis would be caught by :func:`~losslab.connect.align`'s
    output check; the next Linear's fan-in is checked by the walker.)
    """
    shape = list(node.args[1:])
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = list(shape[0])
    if not (len(shape) == 2 and (shape[1] == -1 or shape[0] == -1)):
        raise LosslabError(f"spec_for: {_describe(node)} to shape {shape}: only (batch, -1) reshapes are derived; "
                           "pass your own spec")


def _apply(walker: Any, model: nn.Module, node: Any) -> None:
    """Run ``walker`` over one operation: a called submodule, or a functional operation it knows."""
    if node.op == "call_module":
        walker.layer(str(node.target), model.get_submodule(node.target))
        return
    name, fn, method = f"<{node.name}>", node.op == "call_function", node.op == "call_method"
    if (fn and node.target in _ELEMENTWISE_FUNCS) or (method and node.target in _ELEMENTWISE_METHODS):
        return
    if fn and node.target in _CHANNELWISE_FUNCS:
        walker.channelwise(name)
    elif (fn and node.target is torch.flatten) or (method and node.target == "flatten"):
        walker.flatten(name, *_flatten_dims(node))
    elif (fn and node.target is torch.reshape) or (method and node.target in ("view", "reshape")):
        _check_reshape(node)
        walker.flatten(name, 1, -1)
    else:
        raise LosslabError(f"spec_for: unsupported operation {_describe(node)} in {type(model).__name__}.forward; "
                           "pass your own spec")
