"""The in-memory dataset types every losslab measurement consumes.

Small datasets are kept resident as tensors (``Split``); evaluation and training index them directly,
with no DataLoader in the hot path.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from torch import Tensor

from ..errors import LosslabError


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset: inputs ``x`` (N, ...) and integer labels ``y`` (N,) — or float targets.

    Attributes:
        x: inputs, first dimension indexes examples.
        y: targets; ``int64`` class labels for classification, floating for regression.
        clean_y: the original labels when ``y`` was corrupted or poisoned (else ``None``).
        meta: free-form description (provenance, corruption mask, ...), JSON-serialisable values.
    """

    x: Tensor
    y: Tensor
    clean_y: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise LosslabError(f"x has {self.x.shape[0]} examples but y has {self.y.shape[0]}")
        if self.clean_y is not None and self.clean_y.shape != self.y.shape:
            raise LosslabError(f"clean_y shape {tuple(self.clean_y.shape)} != y shape {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, *args, **kwargs) -> "Split":
        """Move inputs (and targets) with ``Tensor.to``; labels keep their integer dtype."""
        x = self.x.to(*args, **kwargs)
        dev = x.device
        y = self.y.to(dev) if not self.y.is_floating_point() else self.y.to(dev, dtype=x.dtype)
        cy = None if self.clean_y is None else self.clean_y.to(dev)
        return replace(self, x=x, y=y, clean_y=cy)

    def subset(self, index: Tensor) -> "Split":
        cy = None if self.clean_y is None else self.clean_y[index]
        return replace(self, x=self.x[index], y=self.y[index], clean_y=cy)


@dataclass(frozen=True, eq=False)
class Bundle:
    """A named dataset: train and test splits plus what a model needs to know about them.

    Attributes:
        name: registry name (or ``"user"``).
        train, test: the splits (test may be empty for user data).
        num_classes: number of classes (``0`` for regression targets).
        input_shape: shape of one input, without the batch dimension.
        meta: description (arguments, seeds, wrappers applied), JSON-serialisable.
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_train": len(self.train),
            "n_test": len(self.test),
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            **self.meta,
        }
