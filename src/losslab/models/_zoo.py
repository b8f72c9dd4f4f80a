"""Built-in models: ``mlp``, ``cnn1d``, ``cnn2d``, ``resnet``.

Every model is an ``nn.Sequential`` with named children in forward order, so its structure can be
read from ``named_children()`` / ``named_parameters()`` (e.g. to derive weight-matching permutation
specs). ``{i}`` counts from 0; a layer in brackets exists only for some options.

``mlp``::

    flatten, fc0, [norm0], act0, fc1, [norm1], act1, ..., head
    fc{i}: Linear(in, width); norm{i}: BatchNorm1d(width) ("bn") or LayerNorm(width) ("ln");
    head: Linear(width, num_classes). Hidden axis i is the output axis of fc{i} and norm{i} and the
    input axis of fc{i+1} (of head for the last one).

``cnn1d`` / ``cnn2d``::

    [reshape], conv0, [norm0], act0, ..., conv{depth-1}, [norm], act, [pool], flatten, head
    reshape: nn.Unflatten adding a channel of size 1 when input_shape has no channel dim (cnn1d:
    nn.Flatten of the spatial dims of a (C, H, W) input; cnn2d: (L,) -> (1, 1, L));
    conv{i}: Conv(in, channels, kernel_size, stride, padding=kernel_size // 2);
    norm{i}: BatchNorm ("bn") or GroupNorm(1, channels) ("ln": layer norm over channels and positions,
    per-channel affine); pool: AdaptiveAvgPool(1) when pool="avg";
    head: Linear(channels * prod(spatial), num_classes). With pool="flatten" the head's input index is
    channel-major: feature c * prod(spatial) + position, so permuting channels permutes blocks.

``resnet``::

    [reshape], conv0, [norm0], act0, block0, ..., block{depth-1}, pool, flatten, head
    block{j} (ResidualBlock): conv1, norm1, act1, conv2, norm2, shortcut, act2
        (norm1/norm2 are nn.Identity when norm=None; conv1 carries the block's stride)
        out = act2(norm2(conv2(act1(norm1(conv1(x))))) + shortcut(x))     (skip=True)
        out = act2(norm2(conv2(act1(norm1(conv1(x))))))                   (skip=False)
    shortcut: nn.Identity, or nn.Sequential(conv: 1x1 Conv with the block's stride, [norm]) where the
    block changes width or resolution (first block of stages 1, 2, ...).

Layers directly followed by BatchNorm have no bias (it would be cancelled by the batch mean and leave
a flat direction in the landscape); all other Linear/Conv layers have a bias.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Sequence

from torch import Tensor, nn

from ..errors import LosslabError
from ._registry import register

__all__ = ["mlp", "cnn1d", "cnn2d", "resnet", "ResidualBlock", "ACTIVATIONS", "NORMS", "POOLS"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}
NORMS: tuple[str | None, ...] = (None, "bn", "ln")
POOLS: tuple[str, ...] = ("flatten", "avg")


# --------------------------------------------------------------------------------------------- checks
def _choice(what: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise LosslabError(f"{what} must be one of {list(choices)}, got {value!r}")


def _int(what: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LosslabError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_common(activation: str, norm: str | None) -> None:
    _choice("activation", activation, list(ACTIVATIONS))
    _choice("norm", norm, NORMS)


def _activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def _conv_norm(dim: int, norm: str, channels: int) -> nn.Module:
    if norm == "bn":
        return nn.BatchNorm1d(channels) if dim == 1 else nn.BatchNorm2d(channels)
    return nn.GroupNorm(1, channels)


def _conv(dim: int, cin: int, cout: int, kernel_size: int, stride: int, bias: bool) -> nn.Module:
    cls = nn.Conv1d if dim == 1 else nn.Conv2d
    return cls(cin, cout, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias)


def _out_size(n: int, kernel_size: int, stride: int) -> int:
    return (n + 2 * (kernel_size // 2) - kernel_size) // stride + 1


def _conv_input(
    name: str, input_shape: tuple[int, ...], dim: int, lenient: bool = False
) -> tuple[list[tuple[str, nn.Module]], int, list[int]]:
    """Layers giving the input the ``(C, *spatial)`` layout a ``dim``-D conv needs, C and the spatial sizes.

    Strict: ``dim`` dims get a channel of size 1, ``dim + 1`` dims are used as they are. Lenient (the
    plain CNNs, so every model accepts every dataset): for ``dim == 1`` extra trailing dims are flattened
    into one sequence (``(C, H, W) -> (C, H * W)``); for ``dim == 2`` a vector ``(L,)`` becomes a
    ``1 x 1 x L`` image.
    """
    if len(input_shape) == dim:
        return [("reshape", nn.Unflatten(-1, (1, input_shape[0])) if dim == 1
                 else nn.Unflatten(-2, (1, input_shape[0])))], 1, list(input_shape)
    if len(input_shape) == dim + 1:
        return [], input_shape[0], list(input_shape[1:])
    if lenient and dim == 1 and len(input_shape) > 2:
        k = len(input_shape) - 1
        return [("reshape", nn.Flatten(-k, -1))], input_shape[0], [math.prod(input_shape[1:])]
    if lenient and dim == 2 and len(input_shape) == 1:
        return [("reshape", nn.Unflatten(-1, (1, 1, input_shape[0])))], 1, [1, input_shape[0]]
    want = {1: "(L,) or (C, L)", 2: "(H, W) or (C, H, W)"}[dim]
    if lenient:
        want = {1: "(L,), (C, L) or (C, *spatial)", 2: "(L,), (H, W) or (C, H, W)"}[dim]
    raise LosslabError(f"{name} expects input_shape {want}, got {input_shape}")


def _head(dim_features: int, num_classes: int) -> nn.Linear:
    return nn.Linear(dim_features, num_classes)


def _conv_layer(i: int, dim: int, cin: int, cout: int, kernel_size: int, stride: int, activation: str,
                norm: str | None) -> list[tuple[str, nn.Module]]:
    """``conv{i} -> [norm{i}] -> act{i}`` (the conv has no bias when BatchNorm follows), built in that order."""
    layers: list[tuple[str, nn.Module]] = [(f"conv{i}", _conv(dim, cin, cout, kernel_size, stride, bias=norm != "bn"))]
    if norm is not None:
        layers.append((f"norm{i}", _conv_norm(dim, norm, cout)))
    layers.append((f"act{i}", _activation(activation)))
    return layers


def _pooled_head(dim: int, pool: str, channels: int, spatial: Sequence[int], num_classes: int
                 ) -> list[tuple[str, nn.Module]]:
    """``[pool], flatten, head`` after conv layers with ``channels`` x ``spatial`` outputs (``pool="avg"``:
    global average pooling first, so the head sees ``channels`` features)."""
    layers: list[tuple[str, nn.Module]] = []
    if pool == "avg":
        layers.append(("pool", nn.AdaptiveAvgPool1d(1) if dim == 1 else nn.AdaptiveAvgPool2d(1)))
        spatial = [1] * dim
    layers.append(("flatten", nn.Flatten()))
    layers.append(("head", _head(channels * math.prod(spatial), num_classes)))
    return layers


# ------------------------------------------------------------------------------------------------ MLP
@register("mlp")
def mlp(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    width: int = 256,
    depth: int = 2,
    activation: str = "relu",
    norm: str | None = None,
) -> nn.Sequential:
    """Fully connected network: flatten, ``depth`` hidden layers of ``width`` units, linear head.

    Each hidden layer is ``Linear -> [norm] -> activation``. ``depth=0`` gives a linear (softmax
    regression) model. The survey's pilot MLP 40-512-512-10 is ``width=512, depth=2``.

    Args:
        input_shape: shape of one example; it is flattened.
        num_classes: number of outputs.
        width: hidden units per layer.
        depth: number of hidden layers (>= 0).
        activation: one of ``relu, tanh, gelu, sigmoid, identity``.
        norm: ``None``, ``"bn"`` (BatchNorm1d) or ``"ln"`` (LayerNorm).

    Returns:
        The network (children ``flatten, fc0, [norm0], act0, ..., head``).
    """
    _int("width", width, 1)
    _int("depth", depth, 0)
    _check_common(activation, norm)
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    fan_in = math.prod(input_shape)
    for i in range(depth):
        layers.append((f"fc{i}", nn.Linear(fan_in, width, bias=norm != "bn")))
        if norm is not None:
            layers.append((f"norm{i}", nn.BatchNorm1d(width) if norm == "bn" else nn.LayerNorm(width)))
        layers.append((f"act{i}", _activation(activation)))
        fan_in = width
    layers.append(("head", _head(fan_in, num_classes)))
    return _sequential(layers)


def _sequential(layers: list[tuple[str, nn.Module]]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(layers))


# ----------------------------------------------------------------------------------------------- CNNs
def _convnet(
    name: str,
    dim: int,
    input_shape: tuple[int, ...],
    num_classes: int,
    channels: int,
    depth: int,
    kernel_size: int,
    stride: int,
    activation: str,
    norm: str | None,
    pool: str,
) -> nn.Sequential:
    _int("channels", channels, 1)
    _int("depth", depth, 1)
    _int("kernel_size", kernel_size, 1)
    _int("stride", stride, 1)
    _check_common(activation, norm)
    _choice("pool", pool, POOLS)
    layers, cin, spatial = _conv_input(name, input_shape, dim, lenient=True)
    for i in range(depth):
        layers += _conv_layer(i, dim, cin, channels, kernel_size, stride, activation, norm)
        spatial = [_out_size(n, kernel_size, stride) for n in spatial]
        cin = channels
    return _sequential(layers + _pooled_head(dim, pool, channels, spatial, num_classes))


@register("cnn1d")
def cnn1d(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    channels: int = 32,
    depth: int = 3,
    kernel_size: int = 5,
    stride: int = 2,
    activation: str = "relu",
    norm: str | None = None,
    pool: str = "flatten",
) -> nn.Sequential:
    """1-D CNN (for MNIST-1D): ``depth`` conv layers of ``channels`` filters, then a linear head.

    Each layer is ``Conv1d(kernel_size, stride, padding=kernel_size // 2) -> [norm] -> activation``.
    With the defaults a length-40 signal becomes 32 x 20 -> 32 x 10 -> 32 x 5, flattened to 160
    features (about 12k parameters for 10 classes).

    Args:
        input_shape: ``(L,)`` (a channel of size 1 is added), ``(C, L)``, or ``(C, *spatial)`` (spatial
            dims flattened into one sequence, e.g. an 8x8 image read as a length-64 signal).
        num_classes: number of outputs.
        channels: filters per conv layer.
        depth: number of conv layers (>= 1).
        kernel_size: conv kernel size.
        stride: conv stride (every layer).
        activation: one of ``relu, tanh, gelu, sigmoid, identity``.
        norm: ``None``, ``"bn"`` (BatchNorm1d) or ``"ln"`` (GroupNorm(1, C)).
        pool: ``"flatten"`` (keep positions) or ``"avg"`` (global average pooling).

    Returns:
        The network (children ``[reshape], conv0, [norm0], act0, ..., [pool], flatten, head``).
    """
    return _convnet("cnn1d", 1, input_shape, num_classes, channels, depth, kernel_size, stride,
                    activation, norm, pool)


@register("cnn2d")
def cnn2d(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    channels: int = 32,
    depth: int = 2,
    kernel_size: int = 3,
    stride: int = 1,
    activation: str = "relu",
    norm: str | None = None,
    pool: str = "flatten",
) -> nn.Sequential:
    """Small 2-D CNN (for 8x8 digits): ``depth`` conv layers of ``channels`` filters, then a linear head.

    Each layer is ``Conv2d(kernel_size, stride, padding=kernel_size // 2) -> [norm] -> activation``.
    With the defaults an 1x8x8 image keeps its resolution (32 x 8 x 8 = 2048 features; about 30k
    parameters for 10 classes).

    Args and return value are as for :func:`cnn1d`, in two dimensions: ``input_shape`` is ``(H, W)`` (a
    channel of size 1 is added), ``(C, H, W)``, or ``(L,)`` (read as a 1 x 1 x L image), and ``norm="bn"``
    is BatchNorm2d.
    """
    return _convnet("cnn2d", 2, input_shape, num_classes, channels, depth, kernel_size, stride,
                    activation, norm, pool)


# --------------------------------------------------------------------------------------------- ResNet
class ResidualBlock(nn.Module):
    """Basic residual block: two convs, with or without the shortcut add.

    ``skip=False`` keeps every submodule (so the parameter set is the same as with ``skip=True``) and only
    drops the ``+ shortcut(x)`` term; a projection shortcut is then unused (its gradient is zero).

    Attributes:
        skip: whether the shortcut is added.
    """

    def __init__(self, dim: int, cin: int, cout: int, *, kernel_size: int, stride: int, activation: str,
                 norm: str | None, skip: bool) -> None:
        super().__init__()
        self.skip = skip
        bias = norm != "bn"
        self.conv1 = _conv(dim, cin, cout, kernel_size, stride, bias)
        self.norm1 = _conv_norm(dim, norm, cout) if norm is not None else nn.Identity()
        self.act1 = _activation(activation)
        self.conv2 = _conv(dim, cout, cout, kernel_size, 1, bias)
        self.norm2 = _conv_norm(dim, norm, cout) if norm is not None else nn.Identity()
        if stride != 1 or cin != cout:
            proj: list[tuple[str, nn.Module]] = [("conv", _conv(dim, cin, cout, 1, stride, bias))]
            if norm is not None:
                proj.append(("norm", _conv_norm(dim, norm, cout)))
            self.shortcut: nn.Module = _sequential(proj)
        else:
            self.shortcut = nn.Identity()
        self.act2 = _activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        out = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        if self.skip:
            out = out + self.shortcut(x)
        return self.act2(out)

    def extra_repr(self) -> str:
        return f"skip={self.skip}"


@register("resnet")
def resnet(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    width: int = 16,
    depth: int = 4,
    stages: int = 1,
    kernel_size: int = 3,
    activation: str = "relu",
    norm: str | None = "bn",
    skip: bool = True,
    pool: str = "avg",
) -> nn.Sequential:
    """Small ResNet for 1-D or 2-D inputs (Li et al. 2018's skip / no-skip comparison).

    A stem ``conv0 -> [norm0] -> act0`` maps the input to ``width`` channels, followed by ``depth``
    residual blocks split into ``stages`` stages as evenly as possible (earlier stages get the extra
    blocks); stage ``s`` has ``width * 2**s`` channels and its first block (for ``s >= 1``) halves the
    resolution with stride 2 and a projection shortcut. Then global pooling and a linear head.
    ``skip=False`` builds exactly the same modules and parameters but drops the shortcut add in every
    block, so the two variants are directly comparable. With the default ``stages=1`` every shortcut
    is the identity and every parameter is used in both variants.

    Conv1d is used for ``input_shape`` ``(L,)`` (one channel added) and ``(C, L)``; Conv2d for
    ``(C, H, W)``.

    Args:
        input_shape: ``(L,)``, ``(C, L)`` or ``(C, H, W)``.
        num_classes: number of outputs.
        width: channels of the stem and the first stage.
        depth: number of residual blocks (>= 1), two convs each.
        stages: number of resolution stages (1 <= stages <= depth).
        kernel_size: kernel size (odd) of the block convs and the stem.
        activation: one of ``relu, tanh, gelu, sigmoid, identity``.
        norm: ``"bn"`` (default, BatchNorm as in He et al. and Li et al.), ``"ln"`` (GroupNorm(1, C))
            or ``None``.
        skip: add the shortcuts (``True``) or not.
        pool: ``"avg"`` (global average pooling) or ``"flatten"``.

    Returns:
        The network (children ``[reshape], conv0, [norm0], act0, block0, ..., [pool], flatten, head``).
    """
    _int("width", width, 1)
    _int("depth", depth, 1)
    _int("stages", stages, 1)
    _int("kernel_size", kernel_size, 1)
    if kernel_size % 2 == 0:
        raise LosslabError(f"resnet needs an odd kernel_size (so shortcuts keep the shape), got {kernel_size}")
    if stages > depth:
        raise LosslabError(f"stages ({stages}) cannot exceed depth ({depth})")
    _check_common(activation, norm)
    _choice("pool", pool, POOLS)
    if not isinstance(skip, bool):
        raise LosslabError(f"skip must be True or False, got {skip!r}")
    if len(input_shape) in (1, 2):
        dim = 1
    elif len(input_shape) == 3:
        dim = 2
    else:
        raise LosslabError(f"resnet expects input_shape (L,), (C, L) or (C, H, W), got {input_shape}")
    layers, cin, spatial = _conv_input("resnet", input_shape, dim)
    layers += _conv_layer(0, dim, cin, width, kernel_size, 1, activation, norm)
    per_stage = [depth // stages + (1 if s < depth % stages else 0) for s in range(stages)]
    cin, j = width, 0
    for s, n_blocks in enumerate(per_stage):
        cout = width * 2**s
        for b in range(n_blocks):
            stride = 2 if (s > 0 and b == 0) else 1
            layers.append((f"block{j}", ResidualBlock(dim, cin, cout, kernel_size=kernel_size, stride=stride,
                                                      activation=activation, norm=norm, skip=skip)))
            spatial = [_out_size(n, kernel_size, stride) for n in spatial]
            cin, j = cout, j + 1
    return _sequential(layers + _pooled_head(dim, pool, cin, spatial, num_classes))
