"""losslab: a laboratory for neural-network loss landscapes.

Everything losslab measures is a function of *points in parameter space* (dicts of tensors shaped
like a model's parameters); the user's model is evaluated functionally and never modified.

Submodules (imported on first use, so ``import losslab`` stays light):

* ``losslab.data``, ``losslab.models``: built-in offline data, a model zoo, adapters for your own.
* ``losslab.train``, ``losslab.runs``, ``losslab.config``: a recording trainer and hash-named runs.
* ``losslab.params``, ``losslab.directions``: points and directions (filter-normalized, PCA, ...).
* ``losslab.evaluate``, ``losslab.surface``, ``losslab.plot``: batched evaluation, 1-D/2-D surfaces, plots.
* ``losslab.curvature``: Hessian operators, Lanczos, trace, spectral density, sharpness.
* ``losslab.connect``: linear paths, trained curves, AutoNEB, instability, permutation alignment.
* ``losslab.subspace``, ``losslab.probes``: intrinsic dimension, stiffness, NTK, function space.
* ``losslab.experiments``, ``losslab.report``: the survey's findings, re-measured, as an HTML report.
* ``losslab.results``: the results layer (JSON conversion, npz + JSON files, hashes, the ``Result`` contract).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from .errors import LosslabError
from .settings import set_threads

_SUBMODULES = {
    "params", "data", "models", "config", "train", "runs", "directions", "evaluate", "surface", "plot",
    "curvature", "connect", "subspace", "probes", "interpolation", "experiments", "report", "distributed",
    "settings", "results",
}

__all__ = ["__version__", "LosslabError", "set_threads", *sorted(_SUBMODULES)]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'losslab' has no attribute {name!r}")
