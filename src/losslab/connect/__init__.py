"""Connecting solutions: permutation symmetry and weight matching (Git Re-Basin).

See :mod:`losslab.connect.permute` for the permutation-spec format and the math.

Mode connectivity: :mod:`losslab.connect.paths` (linear paths, barriers, :class:`PathResult`),
:mod:`losslab.connect.curves` (trained Bezier curves / polygonal chains, Garipov et al. 2018),
:mod:`losslab.connect.neb` (AutoNEB, Draxler et al. 2018) and :mod:`losslab.connect.instability`
(instability analysis, Frankle et al. 2020).
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
from .curves import CurveResult, bezier_coefficients, curve_coefficients, polychain_coefficients, train_curve
from .instability import InstabilityConfig, InstabilityResult, instability
from .neb import (
    ConnectionGraph,
    FunctionEnergy,
    ModelEnergy,
    NEBCycle,
    NEBResult,
    auto_neb,
    connect_minima,
    default_cycles,
    neb_path,
)
from .paths import PathResult, barriers, evaluate_path, linear_path

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
    # mode connectivity
    "PathResult",
    "barriers",
    "linear_path",
    "evaluate_path",
    "CurveResult",
    "bezier_coefficients",
    "polychain_coefficients",
    "curve_coefficients",
    "train_curve",
    "FunctionEnergy",
    "ModelEnergy",
    "NEBCycle",
    "NEBResult",
    "ConnectionGraph",
    "default_cycles",
    "auto_neb",
    "neb_path",
    "connect_minima",
    "InstabilityConfig",
    "InstabilityResult",
    "instability",
]
