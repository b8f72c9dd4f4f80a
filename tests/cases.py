"""Small models and data shared by the tests: exact float64 references need them tiny.

Every builder is deterministic: data come from their own seeded ``torch.Generator``; the zoo builds
(:func:`zoo_mlp`, :func:`tiny_cnn`) seed their own initialisation; :func:`seq_net` seeds the global RNG
before it builds (test code may, library code never does).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from losslab import models

F64 = torch.float64


def tiny_data(n: int, d: int, c: int, seed: int = 0, dtype: torch.dtype = F64) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` Gaussian inputs of dimension ``d`` and random labels in ``[0, c)``, from one generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randint(0, c, (n,), generator=g)


def zoo_mlp(seed: int, *, input_dim: int, num_classes: int, width: int, depth: int, norm: str | None = None,
            dtype: torch.dtype = F64) -> nn.Module:
    """The zoo's ``mlp`` (``norm="bn"``: with BatchNorm), cast to ``dtype``."""
    return models.build("mlp", input_shape=(input_dim,), num_classes=num_classes, seed=seed, width=width,
                        depth=depth, norm=norm).to(dtype)


def tiny_cnn(seed: int = 0, *, norm: str | None = None, dtype: torch.dtype = F64) -> nn.Module:
    """The zoo's ``cnn2d`` on 1x6x6 images, 5 channels, 2 conv layers, 3 classes."""
    return models.build("cnn2d", input_shape=(1, 6, 6), num_classes=3, seed=seed, channels=5, depth=2,
                        norm=norm).to(dtype)


def seq_net(d_in: int, hidden: int, d_out: int, *, seed: int = 0, bn: bool = False) -> nn.Sequential:
    """``Linear(d_in, hidden) [BatchNorm1d] Tanh Linear(hidden, d_out)`` in float64, initialised after
    ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    layers = [nn.Linear(d_in, hidden)] + ([nn.BatchNorm1d(hidden)] if bn else []) + [nn.Tanh(), nn.Linear(hidden, d_out)]
    return nn.Sequential(*layers).double()


def train_digits(out: Path, epochs: int) -> Path:
    """``losslab train --dataset digits --epochs N --out out`` (the default model); the run's directory."""
    from losslab.cli.main import main

    assert main(["train", "--dataset", "digits", "--epochs", str(epochs), "--out", str(out), "--no-progress"]) == 0
    (run,) = Path(out).glob("train-*")
    return run
