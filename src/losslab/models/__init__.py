"""Model zoo, registry, deterministic initialisation and checkpoint loading.

Built-in models (see :mod:`losslab.models._zoo` for the exact layer order):

* ``"mlp"`` — flatten, ``depth`` x (Linear -> [norm] -> activation), linear head.
  Defaults: ``width=256, depth=2, activation="relu", norm=None``.
* ``"cnn1d"`` — 1-D CNN for MNIST-1D, input ``(L,)``, ``(C, L)`` or ``(C, H, W)`` (read as ``(C, H*W)``).
  Defaults: ``channels=32, depth=3, kernel_size=5, stride=2, norm=None, pool="flatten"``.
* ``"cnn2d"`` — 2-D CNN for 8x8 digits, input ``(H, W)``, ``(C, H, W)`` or ``(L,)`` (read as ``1 x 1 x L``).
  Defaults: ``channels=32, depth=2, kernel_size=3, stride=1, norm=None, pool="flatten"``.
* ``"resnet"`` — residual net, Conv1d for ``(L,)``/``(C, L)``, Conv2d for ``(C, H, W)``; ``skip=False``
  keeps the same parameters and drops the shortcut add (Li et al. 2018).
  Defaults: ``width=16, depth=4 blocks, stages=1, kernel_size=3, norm="bn", skip=True, pool="avg"``.

``norm`` is ``None``, ``"bn"`` (BatchNorm) or ``"ln"`` (LayerNorm for MLPs, GroupNorm(1, C) for convs);
``activation`` is one of ``relu, tanh, gelu, sigmoid, identity``.

Example:
    >>> import torch
    >>> from losslab import models
    >>> net = models.build("resnet", input_shape=(1, 8, 8), num_classes=10, seed=0, skip=False)
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    >>> a = models.build("mlp", input_shape=(40,), num_classes=10, seed=1)
    >>> b = models.build("mlp", input_shape=(40,), num_classes=10, seed=1)
    >>> all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    True
"""
from __future__ import annotations

from ._checkpoint import (KEY_PREFIXES, WRAPPER_KEYS, count_parameters, load_checkpoint, load_state_dict_checked,
                          match_state_dict, unwrap_model)
from ._init import init_parameters
from ._registry import available, build, defaults, load_factory, register
from ._zoo import ACTIVATIONS, NORMS, ResidualBlock, cnn1d, cnn2d, mlp, resnet

__all__ = [
    "build",
    "available",
    "register",
    "defaults",
    "load_factory",
    "init_parameters",
    "load_state_dict_checked",
    "load_checkpoint",
    "match_state_dict",
    "unwrap_model",
    "KEY_PREFIXES",
    "WRAPPER_KEYS",
    "count_parameters",
    "mlp",
    "cnn1d",
    "cnn2d",
    "resnet",
    "ResidualBlock",
    "ACTIVATIONS",
    "NORMS",
]
