"""Permutation specs: which hidden axes act on which tensor axes, derived from a model.

The format and the math are in :mod:`losslab.connect.permute`, which re-exports these names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence, Union

from torch import Tensor, nn

from ..errors import LosslabError
from ..models._zoo import ResidualBlock

Entry = tuple[str, int, int]
Permutation = dict[str, Tensor]
SpecLike = Union["PermutationSpec", Mapping[str, Sequence[Sequence[object]]]]


# ------------------------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class PermutationSpec:
    """Which hidden axes (permutation groups) act on which axis of which tensor.

    Attributes:
        groups: ``{group_name: ((tensor_name, axis, block), ...)}``; constructed from 2- or 3-tuples
            (``block`` defaults to 1, see the module docstring), stored normalised as 3-tuples.
        buffers: names in ``groups`` that are buffers (BatchNorm ``running_mean``/``running_var``).
            They are permuted by :func:`apply_permutation` like parameters but left out of the
            weight-matching objective by default (statistics, not weights).

    Raises:
        LosslabError: a malformed entry (non-integer or negative axis, block < 1), an empty group, or
            a ``(tensor_name, axis)`` listed twice.
    """

    groups: Mapping[str, tuple[Entry, ...]]
    buffers: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        norm: dict[str, tuple[Entry, ...]] = {}
        seen: dict[tuple[str, int], str] = {}
        if not isinstance(self.groups, Mapping):
            raise LosslabError(f"spec groups must be a mapping {{group: [(name, axis), ...]}}, got {type(self.groups).__name__}")
        for g, entries in self.groups.items():
            if not isinstance(g, str) or not g:
                raise LosslabError(f"permutation group names must be non-empty strings, got {g!r}")
            out: list[Entry] = []
            for e in entries:
                if isinstance(e, (str, bytes)) or not isinstance(e, Sequence) or len(e) not in (2, 3):
                    raise LosslabError(f"group {g!r}: entry {e!r} is not (tensor_name, axis) or (tensor_name, axis, block)")
                name, axis = e[0], e[1]
                block = e[2] if len(e) == 3 else 1
                if not isinstance(name, str):
                    raise LosslabError(f"group {g!r}: tensor name must be a string, got {name!r}")
                for what, v, lo in (("axis", axis, 0), ("block", block, 1)):
                    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                        raise LosslabError(f"group {g!r}, tensor {name!r}: {what} must be an integer >= {lo}, got {v!r}")
                if (name, axis) in seen:
                    raise LosslabError(
                        f"axis {axis} of {name!r} is listed twice (groups {seen[(name, axis)]!r} and {g!r})")
                seen[(name, axis)] = g
                out.append((name, int(axis), int(block)))
            if not out:
                raise LosslabError(f"permutation group {g!r} has no entries")
            norm[g] = tuple(out)
        object.__setattr__(self, "groups", norm)
        object.__setattr__(self, "buffers", frozenset(self.buffers))

    @property
    def tensors(self) -> dict[str, dict[int, tuple[str, int]]]:
        """``{tensor_name: {axis: (group, block)}}``: the groups acting on each tensor."""
        out: dict[str, dict[int, tuple[str, int]]] = {}
        for g, entries in self.groups.items():
            for name, axis, block in entries:
                out.setdefault(name, {})[axis] = (g, block)
        return out

    def as_dict(self) -> dict[str, list[tuple[str, int, int]]]:
        """The user-facing format ``{group: [(tensor_name, axis, block), ...]}``."""
        return {g: list(e) for g, e in self.groups.items()}

    def group_sizes(self, point: Mapping[str, Tensor]) -> dict[str, int]:
        """Size ``n`` of every group, read from the tensors of ``point`` (absent tensors are skipped).

        Raises:
            LosslabError: an axis out of range, an axis size not divisible by its block, entries of one
                group disagreeing on ``n``, or a group none of whose tensors is in ``point``.
        """
        sizes: dict[str, int] = {}
        for g, entries in self.groups.items():
            for name, axis, block in entries:
                if name not in point:
                    continue
                t = point[name]
                if axis >= t.dim():
                    raise LosslabError(f"group {g!r}: {name!r} has {t.dim()} dims, no axis {axis}")
                m = t.shape[axis]
                if m % block:
                    raise LosslabError(f"group {g!r}: axis {axis} of {name!r} has size {m}, not a multiple of block {block}")
                n = m // block
                if sizes.setdefault(g, n) != n:
                    raise LosslabError(f"group {g!r}: {name!r} axis {axis} gives size {n}, other tensors give {sizes[g]}")
            if g not in sizes:
                raise LosslabError(f"group {g!r}: none of its tensors {[e[0] for e in entries]} is in the point")
        return sizes


def _as_spec(spec: SpecLike) -> PermutationSpec:
    if isinstance(spec, PermutationSpec):
        return spec
    if isinstance(spec, Mapping):
        return PermutationSpec(spec)  # type: ignore[arg-type]
    raise LosslabError(f"spec must be a PermutationSpec or a dict {{group: [(name, axis), ...]}}, got {type(spec).__name__}")


# ------------------------------------------------------------------------------- deriving the spec
_ELEMENTWISE = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
    nn.Tanhshrink, nn.LogSigmoid, nn.Dropout, nn.AlphaDropout,
)
# act on each channel separately (keep the channel axis of an (N, C, *spatial) tensor)
_CHANNELWISE = (
    nn.Dropout1d, nn.Dropout2d, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)
_CONVS = (nn.Conv1d, nn.Conv2d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


class _Walker:
    """Walks an ``nn.Sequential`` in forward order, tracking which group the hidden axis belongs to.

    State: ``group`` (``None`` while the activation is still the input), ``size`` (its number of
    units) and ``flat`` (activation is ``(N, F)`` with ``F = size * block``; else ``(N, C, *spatial)``
    with ``C = size``).
    """

    def __init__(self) -> None:
        self.groups: dict[str, list[Entry]] = {}
        self.buffers: set[str] = set()
        self.group: str | None = None
        self.size = 0
        self.flat = False

    # -- helpers
    def _add(self, group: str, name: str, axis: int, block: int = 1) -> None:
        self.groups.setdefault(group, []).append((name, axis, block))

    def _new(self, group: str, size: int, flat: bool) -> None:
        if group in self.groups:
            raise LosslabError(f"spec_for: duplicate permutation group {group!r}")
        self.groups[group] = []
        self.group, self.size, self.flat = group, size, flat

    def _block(self, layer: str, features: int) -> int:
        """Block of the current group on a feature axis of size ``features`` (1 unless after a Flatten)."""
        if features % self.size:
            raise LosslabError(
                f"spec_for: layer {layer!r} has {features} input features, not a multiple of the "
                f"{self.size} units of the preceding layer")
        return features // self.size

    def _input(self, layer: str, name: str, axis: int, features: int, *, conv: bool) -> None:
        """Register the input axis of a Linear/Conv weight with the current group."""
        if self.group is None:
            return
        if conv:
            if self.flat:
                raise LosslabError(f"spec_for: conv layer {layer!r} after a Flatten is not supported")
            if features != self.size:
                raise LosslabError(f"spec_for: {layer!r} expects {features} channels, got {self.size}")
            self._add(self.group, name, axis)
        else:
            self._add(self.group, name, axis, self._block(layer, features))

    def _per_unit(self, layer: str, prefix: str, module: nn.Module, features: int) -> None:
        """Per-unit parameters/buffers (norm affine, running stats) of the current group."""
        if self.group is None:
            return
        block = self._block(layer, features) if self.flat else 1
        if not self.flat and features != self.size:
            raise LosslabError(f"spec_for: {layer!r} has {features} channels, the activation has {self.size}")
        for pname, _ in module.named_parameters(recurse=False):
            self._add(self.group, prefix + pname, 0, block)
        for bname, buf in module.named_buffers(recurse=False):
            if buf is not None and buf.dim() == 1 and buf.numel() == features:
                self._add(self.group, prefix + bname, 0, block)
                self.buffers.add(prefix + bname)

    # -- layers
    def layer(self, name: str, module: nn.Module) -> None:
        prefix = name + "."
        if isinstance(module, ResidualBlock):
            self.residual(name, module)
        elif type(module) is nn.Sequential:
            for child_name, child in module.named_children():
                self.layer(prefix + child_name, child)
        elif isinstance(module, (nn.Linear, *_CONVS)):
            conv = not isinstance(module, nn.Linear)
            if conv and module.groups != 1:
                raise LosslabError(f"spec_for: grouped convolution {name!r} (groups={module.groups}) is not supported")
            fan_in, fan_out = ((module.in_channels, module.out_channels) if conv
                               else (module.in_features, module.out_features))
            self._input(name, prefix + "weight", 1, fan_in, conv=conv)
            self._new(f"P_{name}", fan_out, flat=not conv)
            self._add(self.group, prefix + "weight", 0)  # type: ignore[arg-type]
            if module.bias is not None:
                self._add(self.group, prefix + "bias", 0)  # type: ignore[arg-type]
        elif isinstance(module, _BATCHNORMS):
            self._per_unit(name, prefix, module, module.num_features)
        elif isinstance(module, nn.LayerNorm):
            if self.group is not None and (not self.flat or len(module.normalized_shape) != 1):
                raise LosslabError(
                    f"spec_for: LayerNorm {name!r} must normalise the features of a flat (N, F) activation")
            self._per_unit(name, prefix, module, module.normalized_shape[0])
        elif isinstance(module, nn.GroupNorm):
            if self.group is not None:
                if self.flat:
                    raise LosslabError(f"spec_for: GroupNorm {name!r} after a Flatten is not supported")
                if module.num_groups not in (1, module.num_channels):
                    raise LosslabError(
                        f"spec_for: GroupNorm {name!r} with {module.num_groups} groups of channels is not "
                        "permutation-equivariant (only num_groups=1 or num_groups=num_channels are)")
            self._per_unit(name, prefix, module, module.num_channels)
        elif isinstance(module, nn.PReLU):
            if module.num_parameters > 1:
                self._per_unit(name, prefix, module, module.num_parameters)
        elif isinstance(module, _ELEMENTWISE):
            pass
        elif isinstance(module, _CHANNELWISE):
            self.channelwise(name)
        elif isinstance(module, nn.Flatten):
            self.flatten(name, module.start_dim, module.end_dim)
        elif isinstance(module, nn.Unflatten):
            if self.group is not None:
                raise LosslabError(f"spec_for: nn.Unflatten {name!r} after the first layer is not supported")
        else:
            raise LosslabError(
                f"spec_for: unsupported layer {name!r} ({type(module).__name__}); pass your own spec "
                "{group: [(tensor_name, axis), ...]} instead")

    def channelwise(self, name: str) -> None:
        """A layer that keeps the channel axis (pooling, channel dropout)."""
        if self.group is not None and self.flat:
            raise LosslabError(f"spec_for: channel-wise layer {name!r} after a Flatten is not supported")

    def flatten(self, name: str, start_dim: int, end_dim: int) -> None:
        if self.group is not None and not self.flat:
            if start_dim != 1 or end_dim != -1:
                raise LosslabError(
                    f"spec_for: {name!r} = nn.Flatten({start_dim}, {end_dim}) inside the network; only "
                    "nn.Flatten(1, -1) is supported after the first layer")
            self.flat = True

    def residual(self, name: str, block: ResidualBlock) -> None:
        r"""``out = act2(norm2(conv2(act1(norm1(conv1(x))))) [+ shortcut(x)])``.

        With an identity shortcut the block's output lives in the same residual stream as its input, so
        ``conv2``/``norm2`` join the current group; otherwise (no skip, or a projection shortcut) the
        output gets its own group ``P_{name}``, which the projection's outputs join.
        """
        if self.group is None or self.flat:
            raise LosslabError(f"spec_for: residual block {name!r} must follow a conv layer")
        p = name + "."
        stream, size = self.group, self.size
        self.layer(p + "conv1", block.conv1)
        self.layer(p + "norm1", block.norm1)
        self.layer(p + "act1", block.act1)
        identity = isinstance(block.shortcut, nn.Identity)
        if block.skip and identity:
            out_group = stream
            if block.conv2.out_channels != size:
                raise LosslabError(f"spec_for: {name!r} identity shortcut with changing width")
        else:
            out_group = f"P_{name}"
            if out_group in self.groups:
                raise LosslabError(f"spec_for: duplicate permutation group {out_group!r}")
            self.groups[out_group] = []
        # conv2: input is the inner group, output the block's output group
        c2 = block.conv2
        if c2.groups != 1:
            raise LosslabError(f"spec_for: grouped convolution {p + 'conv2'!r} is not supported")
        self._input(p + "conv2", p + "conv2.weight", 1, c2.in_channels, conv=True)
        self._add(out_group, p + "conv2.weight", 0)
        if c2.bias is not None:
            self._add(out_group, p + "conv2.bias", 0)
        self.group, self.size, self.flat = out_group, c2.out_channels, False
        self.layer(p + "norm2", block.norm2)
        if not identity:
            # projection: input from the incoming stream, output into the block's output group
            self.group, self.size = stream, size
            sc = block.shortcut
            if not isinstance(sc, nn.Sequential):
                raise LosslabError(f"spec_for: unsupported shortcut {p + 'shortcut'!r} ({type(sc).__name__})")
            for cname, child in sc.named_children():
                cn = f"{p}shortcut.{cname}"
                if isinstance(child, _CONVS):
                    if child.groups != 1:
                        raise LosslabError(f"spec_for: grouped convolution {cn!r} is not supported")
                    self._input(cn, cn + ".weight", 1, child.in_channels, conv=True)
                    self.group, self.size = out_group, child.out_channels
                    self._add(out_group, cn + ".weight", 0)
                    if child.bias is not None:
                        self._add(out_group, cn + ".bias", 0)
                else:
                    self.layer(cn, child)
            if self.group != out_group:
                raise LosslabError(f"spec_for: shortcut {p + 'shortcut'!r} has no conv layer")
        self.group, self.size, self.flat = out_group, c2.out_channels, False
        self.layer(p + "act2", block.act2)

    def finish(self) -> PermutationSpec:
        # the last group is the model's output axis: it must not be permuted
        if self.group is not None:
            del self.groups[self.group]
        groups = {g: e for g, e in self.groups.items() if e}
        used = {name for e in groups.values() for name, _, _ in e}
        return PermutationSpec(groups, buffers=frozenset(self.buffers & used))


def spec_for(model: nn.Module) -> PermutationSpec:
    """Derive the permutation spec of a model from its module graph.

    Walks ``model`` in forward order: an ``nn.Sequential`` (nested Sequentials allowed) child by child,
    any other module through its ``torch.fx`` graph: functional calls count as their layers
    (``F.relu``, ``torch.flatten(x, 1)``, ``x.view(x.size(0), -1)``, ``F.max_pool2d``...), and the
    sum or product of two activations (a residual connection ``h + f(h)``, a gate) puts both operands
    in one group, as a residual stream must be permuted as a whole. Each Linear or
    Conv (``groups=1``) opens a group ``"P_<layer name>"`` for its output axis (weight axis 0, bias);
    BatchNorm/LayerNorm/GroupNorm(1 or C groups)/PReLU parameters and BatchNorm running statistics join
    the current group on axis 0; the next Linear/Conv takes it on its input axis (weight axis 1). After
    ``nn.Flatten`` of an ``(N, C, *spatial)`` activation the next Linear's input axis has ``C *
    prod(spatial)`` features, channel-major, so the entry gets ``block = prod(spatial)``. Elementwise
    activations, dropout and pooling pass through. A losslab :class:`~losslab.models.ResidualBlock` with
    an identity shortcut keeps the residual stream's group (one permutation shared by the stem and every
    block output it reaches); ``conv1`` gets its own group; a block without skip or with a projection
    shortcut starts a new group ``"P_<block name>"`` (the projection conv's outputs join it). The last
    group (the model's outputs) is dropped: outputs are never permuted.

    Args:
        model: an ``nn.Sequential`` (e.g. any model of :mod:`losslab.models`) or any module whose
            forward ``torch.fx`` can trace.

    Returns:
        The spec; ``buffers`` holds the names of the BatchNorm running statistics.

    Raises:
        LosslabError: the forward pass cannot be derived (several inputs or outputs, untraceable
            control flow, concatenation, a skip from the raw input), or contains a layer or operation
            whose permutation behaviour is unknown (the message names it; pass your own spec then).
    """
    w = _Walker()
    if isinstance(model, nn.Sequential):
        for name, child in model.named_children():
            w.layer(name, child)
    else:
        from ._chain import walk_graph

        walk_graph(model, w)
    return w.finish()


def _kinds(model: nn.Module) -> set[str]:
    kinds = set()
    for m in model.modules():
        if isinstance(m, ResidualBlock):
            kinds.add("residual")
        elif isinstance(m, _CONVS):
            kinds.add("conv")
        elif isinstance(m, nn.Linear):
            kinds.add("linear")
    return kinds


def mlp_spec(model: nn.Module) -> PermutationSpec:
    """Spec of an MLP (``flatten, fc0, [norm0], act0, ..., head``): group ``P_fc{i}`` per hidden layer.

    ``P_fc{i}`` acts on ``fc{i}.weight`` axis 0, ``fc{i}.bias``, ``norm{i}.*`` (and BatchNorm running
    stats) axis 0, and on axis 1 of the next layer's weight.

    Raises:
        LosslabError: the model has conv layers or residual blocks, or an unsupported layer.
    """
    if _kinds(model) - {"linear"}:
        raise LosslabError("mlp_spec: the model has conv layers; use cnn_spec, resnet_spec or spec_for")
    return spec_for(model)


def cnn_spec(model: nn.Module) -> PermutationSpec:
    """Spec of a plain 1-D/2-D CNN (``[reshape], conv{i}, [norm{i}], act{i}, ..., [pool], flatten, head``).

    Group ``P_conv{i}`` acts on ``conv{i}`` output channels (weight axis 0, bias), ``norm{i}`` axis 0 and
    ``conv{i+1}.weight`` axis 1. The last conv's group acts on ``head.weight`` axis 1 with ``block =
    prod(spatial)`` when ``pool="flatten"`` (channel ``c`` owns features ``[c*S, (c+1)*S)``), ``block =
    1`` after global average pooling.

    Raises:
        LosslabError: the model has no conv layer, has residual blocks, or an unsupported layer.
    """
    kinds = _kinds(model)
    if "conv" not in kinds or "residual" in kinds:
        raise LosslabError("cnn_spec: expected a plain CNN (conv layers, no residual blocks); use spec_for")
    return spec_for(model)


def resnet_spec(model: nn.Module) -> PermutationSpec:
    """Spec of a losslab ResNet (stem ``conv0, [norm0], act0``, ``block{j}``, pool, flatten, head).

    With ``skip=True`` one group ``P_conv0`` (the residual stream) acts on the stem's outputs and on
    every ``block{j}.conv2``/``norm2`` output reached through identity shortcuts, and on the input axis
    of each ``block{j}.conv1`` (and of the head). Each ``block{j}.conv1`` has its own group
    ``P_block{j}.conv1`` (acting on ``norm1`` and ``conv2``'s input axis). A block with a projection
    shortcut starts a new stream ``P_block{j}``, shared by ``conv2``, ``norm2`` and ``shortcut.conv/norm``.
    With ``skip=False`` every block output has its own group ``P_block{j}``.

    Raises:
        LosslabError: the model has no residual block, or an unsupported layer.
    """
    if "residual" not in _kinds(model):
        raise LosslabError("resnet_spec: the model has no ResidualBlock; use mlp_spec, cnn_spec or spec_for")
    return spec_for(model)
