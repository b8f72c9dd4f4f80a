"""Connecting solutions: permutation symmetry and weight matching (Git Re-Basin).

See :mod:`losslab.connect.permute` for the permutation-spec format and the math.
"""
from __future__ import annotations

from .permute import (
    AlignResult,
    PermutationSpec,
    WeightMatchingInfo,
    align,
    apply_permutation,
    cnn_spec,
    invert_permutation,
    mlp_spec,
    random_permutation,
    resnet_spec,
    spec_for,
    weight_matching,
)

__all__ = [
    "PermutationSpec",
    "WeightMatchingInfo",
    "AlignResult",
    "mlp_spec",
    "cnn_spec",
    "resnet_spec",
    "spec_for",
    "apply_permutation",
    "random_permutation",
    "invert_permutation",
    "weight_matching",
    "align",
]
