"""The Hessian's spectral density (SLQ) as a display."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._common import DisplayMixin

__all__ = ["SpectralDensityDisplay"]


class SpectralDensityDisplay(DisplayMixin):
    """The smoothed SLQ spectral density of a Hessian on a log scale, top-k eigenvalues marked.

    Args:
        grid: (G,) eigenvalue grid.
        density: (G,) density on ``grid`` (:func:`~losslab.curvature.density_curve`).
        top: eigenvalues to mark with dashed lines (e.g. Lanczos top-k), or None.
        title: axes title.

    Attributes (after ``plot``):
        figure_, ax_: the figure and axes.

    Example:
        >>> import numpy as np
        >>> import matplotlib; matplotlib.use("Agg")
        >>> g = np.linspace(-1, 3, 50)
        >>> disp = SpectralDensityDisplay(g, np.exp(-g ** 2), top=[2.5]).plot()
        >>> disp.ax_.get_yscale()
        'log'
    """

    def __init__(self, grid: np.ndarray, density: np.ndarray, *, top: Sequence[float] | None = None,
                 title: str | None = None) -> None:
        self.grid = np.asarray(grid, dtype=float)
        self.density = np.asarray(density, dtype=float)
        self.top = list(top or [])
        self.title = title

    @classmethod
    def from_result(cls, result: Any, *, ax: Any = None, sigma: float | None = None,
                    top: Sequence[float] | None = None, points: int = 2000) -> "SpectralDensityDisplay":
        """Plot an :class:`~losslab.curvature.SLQResult`: its density smoothed by ``sigma`` (default 1%
        of the spectrum's range) on ``points`` grid points spanning the used nodes ± 5%."""
        from ..curvature.density import density_curve

        used = result.weights > 0
        lo, hi = float(result.nodes[used].min()), float(result.nodes[used].max())
        pad = 0.05 * max(hi - lo, 1e-12)
        grid = np.linspace(lo - pad, hi + pad, points)
        dens = density_curve(result, grid, sigma)
        title = f"Hessian spectral density (SLQ: {result.num_probes} probes × {result.lanczos_steps} steps)"
        return cls(grid, dens, top=top, title=title).plot(ax=ax)

    def plot(self, ax: Any = None) -> "SpectralDensityDisplay":
        """Draw the density (log y) and the ``top`` eigenvalues; returns self."""
        if ax is None:
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(6, 4))
        else:
            fig = ax.figure
        self.figure_, self.ax_ = fig, ax
        dens = self.density
        ax.semilogy(self.grid, np.maximum(dens, 1e-12))
        ax.set_ylim(bottom=max(1e-8, float(dens[dens > 0].min()) if (dens > 0).any() else 1e-8))
        for i, v in enumerate(self.top):
            ax.axvline(v, color="C3", lw=0.6, ls="--", label="top-k (Lanczos)" if i == 0 else None)
        ax.set_xlabel("eigenvalue")
        ax.set_ylabel("density (log)")
        if self.title:
            ax.set_title(self.title, fontsize=9)
        if self.top:
            ax.legend(fontsize=8)
        return self
