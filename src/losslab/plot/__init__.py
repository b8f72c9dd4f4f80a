"""Plots and exports of loss-landscape results.

Matplotlib displays in the scikit-learn style (``XDisplay.from_result(result, ...)`` or
``XDisplay(...).plot(ax=None, ...)``, both returning the display with ``figure_``/``ax_`` set;
``display.savefig(path)`` writes the figure atomically):

* :class:`LineDisplay`: 1-D loss (and accuracy on a twin axis), log option.
* :class:`ContourDisplay`: contour / filled contour / heatmap of a plane.
* :class:`SurfaceDisplay`: 3-D surface of a plane.
* :class:`TrajectoryDisplay`: a projected optimization path over a plane's contours.
* :class:`UncertaintyDisplay`: an adaptive-precision plane beside its error bars (``z * stderr``).
* :class:`SpectralDensityDisplay`: a Hessian's SLQ spectral density.
* :class:`PathsDisplay`, :class:`InterpolationDisplay`, :class:`InstabilityDisplay`,
  :class:`NoiseScaleDisplay`, :class:`SharpnessTrajectoryDisplay`: the curves of ``losslab connect``,
  ``interpolate``, ``instability``, ``noise`` and of curvature tracking.

Every display class of losslab (these, :mod:`losslab.probes.display`, :mod:`losslab.subspace.display`,
:class:`losslab.subspace.goldilocks.GoldilocksDisplay`) follows this contract: ``from_result(result, ax=None, ...)``
plots; ``plot(ax=None)`` returns the display; ``figure_`` and ``ax_`` are set (``ax_`` an array of
axes for multi-panel displays, whose ``ax`` takes as many axes).

Exports: :func:`plotly_surface_html` (standalone, offline interactive HTML) and
:func:`export_vtp` (ParaView PolyData).

Results are duck-typed: ``kind`` ("line"/"plane"), ``x``, ``y`` (or None), ``metrics``
(``{name: (nx,) or (ny, nx)}``, rows = y), ``done`` (bool mask) and ``meta``. Nothing here
recomputes anything: plots re-render from saved results.

Example:
    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> import matplotlib; matplotlib.use("Agg")
    >>> from losslab.plot import ContourDisplay
    >>> x, y = np.linspace(-1, 1, 21), np.linspace(-1, 1, 11)
    >>> z = np.log1p(x[None, :] ** 2 + 3 * y[:, None] ** 2)
    >>> r = SimpleNamespace(kind="plane", x=x, y=y, metrics={"loss": z}, done=np.ones(z.shape, bool), meta={})
    >>> disp = ContourDisplay.from_result(r, kind="contourf", levels=15)
    >>> [float(v) for v in disp.ax_.get_xlim()]
    [-1.0, 1.0]
"""
from __future__ import annotations

from ._curves import (
    InstabilityDisplay,
    InterpolationDisplay,
    NoiseScaleDisplay,
    PathsDisplay,
    SharpnessTrajectoryDisplay,
)
from ._displays import ContourDisplay, LineDisplay, SurfaceDisplay, TrajectoryDisplay
from ._export import export_vtp, plotly_surface_html
from ._uncertainty import UncertaintyDisplay
from ._spectral import SpectralDensityDisplay

__all__ = [
    "LineDisplay",
    "ContourDisplay",
    "SurfaceDisplay",
    "TrajectoryDisplay",
    "SpectralDensityDisplay",
    "PathsDisplay",
    "InterpolationDisplay",
    "InstabilityDisplay",
    "NoiseScaleDisplay",
    "SharpnessTrajectoryDisplay",
    "plotly_surface_html",
    "export_vtp",
    "UncertaintyDisplay",
]
