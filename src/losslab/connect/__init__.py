"""Connecting solutions: permutation symmetry and weight matching (Git Re-Basin).

See :mod:`losslab.connect.permute` for the permutation-spec format and the math.

Mode connectivity: :mod:`losslab.connect.paths` (linear paths, barriers, :class:`PathResult`),
:mod:`losslab.connect.curves` (trained Bezier curves / polygonal chains, Garipov et al. 2018),
:mod:`losslab.connect.neb` (AutoNEB, Draxler et al. 2018) and :mod:`losslab.connect.instability`
(instability analysis, Frankle et al. 2020).
"""
from __future__ import annotations

from . import curves as _curves, instability as _instability, neb as _neb, paths as _paths, permute as _permute
from .curves import *  # noqa: F403
from .instability import *  # noqa: F403
from .neb import *  # noqa: F403
from .paths import *  # noqa: F403
from .permute import *  # noqa: F403

#: Every public name of the submodules (each module's ``__all__``).
__all__ = [*_permute.__all__, *_paths.__all__, *_curves.__all__, *_neb.__all__, *_instability.__all__]
