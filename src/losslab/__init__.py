"""losslab: a laboratory for neural-network loss landscapes.

Everything losslab measures is a function of *points in parameter space* (dicts of tensors shaped
like a model's parameters); the user's model is evaluated functionally and never modified.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import params
from .errors import LosslabError
from .settings import set_threads

__all__ = ["__version__", "params", "LosslabError", "set_threads"]
