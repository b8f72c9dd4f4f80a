"""The uncertainty of an adaptive-precision plane (:mod:`losslab.precision`): estimate and error bars side by side."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import LosslabError
from ._common import DisplayMixin, label, metric_values, require_kind, transform

__all__ = ["UncertaintyDisplay"]


class UncertaintyDisplay(DisplayMixin):
    """An adaptive-precision plane and its error bars: two panels side by side.

    Left, the estimated metric (filled contours) with the points that were interpolated rather
    than evaluated marked ``x`` and the exactly evaluated ones marked ``o``; right, the
    uncertainty :math:`z \\cdot \\mathrm{SE}` of each point (heatmap), :math:`z` the
    precision's quantile (``meta["precision"]["z"]``, 1.96 when absent).

    Args:
        x, y: grid coordinates; z, half_width: ``(ny, nx)`` estimate and ``z * stderr``;
        exact, interpolated: ``(ny, nx)`` flags; metric: the metric's name.

    Attributes (after ``plot``):
        figure_: the figure; ax_: array of the two axes; mappables_: their mappables.

    Example:
        >>> import numpy as np
        >>> from types import SimpleNamespace
        >>> import matplotlib; matplotlib.use("Agg")
        >>> x = y = np.linspace(-1, 1, 5)
        >>> z = x[None, :] ** 2 + y[:, None] ** 2
        >>> flags = np.zeros(z.shape, bool)
        >>> r = SimpleNamespace(kind="plane", x=x, y=y, metrics={"loss": z}, done=~flags, meta={},
        ...                     arrays={"stderr__loss": 0.01 * z, "exact": flags, "interpolated": flags})
        >>> UncertaintyDisplay.from_result(r).ax_.shape
        (2,)
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, half_width: np.ndarray, *,
                 exact: np.ndarray, interpolated: np.ndarray, metric: str = "loss") -> None:
        self.x, self.y, self.z, self.half_width = x, y, z, half_width
        self.exact, self.interpolated, self.metric = exact, interpolated, metric

    @classmethod
    def from_result(cls, result: Any, *, metric: str = "loss", ax: Any = None, **kwargs: Any) -> "UncertaintyDisplay":
        """Plot an adaptive plane (``result.arrays`` has ``stderr__<metric>``); kwargs go to :meth:`plot`."""
        require_kind(result, "plane", "UncertaintyDisplay")
        arrays = getattr(result, "arrays", {}) or {}
        if f"stderr__{metric}" not in arrays:
            raise LosslabError(f"the result has no standard errors of {metric!r} (not an adaptive-precision surface)")
        meta = getattr(result, "meta", {}) or {}
        z = float((meta.get("precision") or {}).get("z") or 1.96)
        shape = np.asarray(result.metrics[metric]).shape
        flag = lambda k: np.asarray(arrays.get(k, np.zeros(shape, bool)), dtype=bool)  # noqa: E731
        disp = cls(np.asarray(result.x, float), np.asarray(result.y, float), metric_values(result, metric),
                   z * np.asarray(arrays[f"stderr__{metric}"], float), exact=flag("exact"),
                   interpolated=flag("interpolated"), metric=metric)
        return disp.plot(ax=ax, **kwargs)

    def plot(self, ax: Any = None, *, log: bool = False, levels: int = 20, cmap: Any = "viridis") -> "UncertaintyDisplay":
        """Draw the two panels (``ax``: two axes, or None for a new figure)."""
        from ._displays import _draw_plane

        if ax is None:
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        ax = np.asarray(ax).reshape(-1)
        if ax.size != 2:
            raise LosslabError(f"UncertaintyDisplay draws two panels; got {ax.size} axes")
        self.figure_, self.ax_ = ax[0].figure, ax
        gy, gx = np.meshgrid(self.y, self.x, indexing="ij")
        m1, _ = _draw_plane(ax[0], self.x, self.y, transform(self.z, log), kind="contourf", levels=levels, vmin=None,
                            vmax=None, cmap=cmap, colorbar=True, colorbar_label=label(self.metric, log), clabel=False)
        ax[0].scatter(gx[self.interpolated], gy[self.interpolated], marker="x", s=6, color="white", linewidths=0.5)
        ax[0].scatter(gx[self.exact], gy[self.exact], marker="o", s=8, facecolors="none", edgecolors="red",
                      linewidths=0.6)
        ax[0].set_title(f"{self.metric}: o exact, x interpolated")
        hw = np.where(np.isfinite(self.half_width), self.half_width, np.nan)
        m2, _ = _draw_plane(ax[1], self.x, self.y, hw, kind="imshow", levels=None, vmin=0.0, vmax=None,
                            cmap="magma", colorbar=True, colorbar_label="z * stderr", clabel=False)
        ax[1].set_title("uncertainty (z * stderr)")
        for a in ax:
            a.set_xlabel("α")
            a.set_ylabel("β")
        self.mappables_ = [m1, m2]
        return self
