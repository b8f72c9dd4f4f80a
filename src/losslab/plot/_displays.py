"""Matplotlib Display objects for loss-landscape results (scikit-learn style).

Each display stores its constructor arguments verbatim; ``from_result(result, ...)`` builds one
from a result and calls ``plot``; ``plot(ax=None, ...)`` draws (on a new figure when ``ax`` is
None), stores ``figure_``/``ax_`` and the artists, and returns ``self``.

The result contract (duck-typed; losslab's surface results satisfy it)::

    result.kind     "line" | "plane"
    result.x        (nx,) coordinates along the first direction
    result.y        (ny,) along the second (plane) or None
    result.metrics  {"loss": array, "accuracy": array, ...}: (nx,) or (ny, nx), rows = y
    result.done     bool array like each metric (False = not evaluated)
    result.meta     dict (``title``, ``xlabel``, ``ylabel`` are used when present)

Values not done or not finite are masked (gaps in lines, holes in contours and surfaces).
"""
from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

import numpy as np

from ..errors import LosslabError
from ._common import (
    DisplayMixin,
    finite,
    label,
    meta_str,
    metric_names,
    metric_values,
    require_kind,
    require_some,
    transform,
)

__all__ = ["LineDisplay", "ContourDisplay", "SurfaceDisplay", "TrajectoryDisplay"]

PlaneKind = Literal["contour", "contourf", "imshow"]
_PLANE_KINDS = ("contour", "contourf", "imshow")


def _new_axes(ax: Any, projection: str | None = None) -> tuple[Any, Any]:
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    fig = plt.figure()
    ax = fig.add_subplot(projection=projection) if projection else fig.add_subplot()
    return fig, ax


def _secondary_name(names: Sequence[str], primary: str, secondary: str | None) -> str | None:
    if secondary != "auto":
        return secondary
    for cand in ("accuracy", "error"):
        if cand in names and cand != primary:
            return cand
    return None


def _is_uniform(v: np.ndarray) -> bool:
    if v.size < 3:
        return True
    step = np.diff(v)
    return bool(np.allclose(step, step[0], rtol=1e-6, atol=1e-12 * max(1.0, float(np.abs(v).max()))))


def _half_step(v: np.ndarray) -> float:
    return 0.5 * float(v[1] - v[0]) if v.size > 1 else 0.5


def _plane_extent(x: np.ndarray, y: np.ndarray, kind: str) -> tuple[float, float, float, float]:
    """Data limits of a drawn plane: the grid's range, plus half a cell on each side for heatmaps."""
    xs, ys = np.sort(x), np.sort(y)
    if kind != "imshow":
        return float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1])
    hx0 = _half_step(xs)
    hx1 = 0.5 * float(xs[-1] - xs[-2]) if xs.size > 1 else 0.5
    hy0 = _half_step(ys)
    hy1 = 0.5 * float(ys[-1] - ys[-2]) if ys.size > 1 else 0.5
    return float(xs[0] - hx0), float(xs[-1] + hx1), float(ys[0] - hy0), float(ys[-1] + hy1)


def _grid(x: Any, y: Any, z: Any, log: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x``, ``y`` as float arrays and ``z`` (log10 when ``log``), checked to be shaped ``(ny, nx)``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    z = transform(z, log)
    if z.shape != (y.size, x.size):
        raise LosslabError(f"z has shape {z.shape}, expected (ny, nx) = {(y.size, x.size)}")
    return x, y, z


def _draw_plane(
    ax: Any,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    *,
    kind: str,
    levels: int | Sequence[float] | None,
    vmin: float | None,
    vmax: float | None,
    cmap: Any,
    colorbar: bool,
    colorbar_label: str,
    clabel: bool,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """Draw ``z`` (ny, nx; NaN = missing) as contour / contourf / heatmap. Returns (mappable, colorbar)."""
    if kind not in _PLANE_KINDS:
        raise LosslabError(f"unknown kind {kind!r}; allowed: {', '.join(_PLANE_KINDS)}")
    require_some(z, "the metric")
    lo = float(np.nanmin(z)) if vmin is None else float(vmin)
    hi = float(np.nanmax(z)) if vmax is None else float(vmax)
    masked = np.ma.masked_invalid(z)
    if kind == "imshow":
        order_x, order_y = np.argsort(x), np.argsort(y)
        xs, ys, zs = x[order_x], y[order_y], masked[np.ix_(order_y, order_x)]
        if _is_uniform(xs) and _is_uniform(ys):
            hx, hy = _half_step(xs), _half_step(ys)
            mappable = ax.imshow(
                zs,
                origin="lower",
                extent=(xs[0] - hx, xs[-1] + hx, ys[0] - hy, ys[-1] + hy),
                aspect="auto",
                interpolation="nearest",
                cmap=cmap,
                vmin=lo,
                vmax=hi,
                **kwargs,
            )
        else:  # non-uniform grid: cells centred on the coordinates
            mappable = ax.pcolormesh(xs, ys, zs, shading="nearest", cmap=cmap, vmin=lo, vmax=hi, **kwargs)
    else:
        if x.size < 2 or y.size < 2:
            raise LosslabError(f"{kind} needs at least a 2x2 grid, got {y.size}x{x.size}")
        if levels is None:
            levels = 20
        if isinstance(levels, (int, np.integer)):
            levels = np.linspace(lo, hi, int(levels)) if hi > lo else [lo]
        levels = np.asarray(levels, dtype=float)
        if kind == "contourf" and levels.size < 2:
            levels = np.array([lo - 0.5, lo + 0.5])
        draw = ax.contourf if kind == "contourf" else ax.contour
        extend = {} if kind == "contour" else {"extend": "both" if (vmin is not None or vmax is not None) else "neither"}
        mappable = draw(x, y, masked, levels=levels, cmap=cmap, **extend, **kwargs)
        if clabel and kind == "contour":
            ax.clabel(mappable, inline=True, fontsize=8)
    cbar = None
    if colorbar:
        cbar = ax.figure.colorbar(mappable, ax=ax)
        cbar.set_label(colorbar_label)
    return mappable, cbar


def _draw_points(ax: Any, points: Mapping[str, Sequence[float]] | None) -> list[Any]:
    artists = []
    for name, (px, py) in (points or {}).items():
        artists.append(ax.scatter([px], [py], marker="o", color="white", edgecolors="black", zorder=5))
        artists.append(ax.annotate(str(name), (px, py), textcoords="offset points", xytext=(5, 5)))
    return artists


# --------------------------------------------------------------------------------------------
class LineDisplay(DisplayMixin):
    """1-D landscape: a metric along a line (left axis) and optionally a second one (twin axis).

    Args:
        x: (nx,) coordinates along the direction.
        metrics: ``{name: (nx,) array}``; NaN/inf are gaps.
        xlabel: x-axis label (default "α").
        title: axes title.

    Attributes (after ``plot``):
        figure_, ax_: the figure and the left axes.
        ax2_: the twin axes of the secondary metric (or None).
        lines_: ``{name: Line2D}``.

    Example:
        >>> import numpy as np
        >>> from types import SimpleNamespace
        >>> import matplotlib; matplotlib.use("Agg")
        >>> x = np.linspace(-1, 1, 11)
        >>> r = SimpleNamespace(kind="line", x=x, y=None, metrics={"loss": x**2 + 0.1, "accuracy": 1 - x**2},
        ...                     done=np.ones(11, bool), meta={})
        >>> disp = LineDisplay.from_result(r, log=True)
        >>> disp.ax_.get_yscale(), disp.ax2_.get_ylabel()
        ('log', 'accuracy')
    """

    def __init__(
        self,
        x: np.ndarray,
        metrics: Mapping[str, np.ndarray],
        *,
        xlabel: str | None = None,
        title: str | None = None,
    ) -> None:
        self.x = x
        self.metrics = metrics
        self.xlabel = xlabel
        self.title = title

    @classmethod
    def from_result(
        cls,
        result: Any,
        *,
        metric: str = "loss",
        secondary: str | None = "auto",
        ax: Any = None,
        log: bool = False,
        **kwargs: Any,
    ) -> "LineDisplay":
        """Plot a ``kind == "line"`` result; ``secondary="auto"`` adds "accuracy" (or "error") if present."""
        require_kind(result, "line", "LineDisplay")
        names = metric_names(result)
        metrics = {n: metric_values(result, n) for n in names}
        disp = cls(np.asarray(result.x, dtype=float), metrics, xlabel=meta_str(result, "xlabel"), title=meta_str(result, "title"))
        return disp.plot(ax=ax, metric=metric, secondary=secondary, log=log, **kwargs)

    def plot(
        self,
        ax: Any = None,
        *,
        metric: str = "loss",
        secondary: str | None = "auto",
        log: bool = False,
        secondary_log: bool = False,
        line_kw: Mapping[str, Any] | None = None,
        secondary_kw: Mapping[str, Any] | None = None,
    ) -> "LineDisplay":
        """Draw ``metric`` on the left axis and ``secondary`` (twin axis) on the right.

        Args:
            ax: axes to draw on (a new figure when None).
            metric: the primary metric.
            secondary: a second metric, None for none, "auto" for "accuracy"/"error" if present.
            log: log-scale y for the primary metric (non-positive values masked).
            secondary_log: log-scale y for the secondary metric.
            line_kw, secondary_kw: passed to ``Axes.plot``.
        """
        x = np.asarray(self.x, dtype=float)
        if metric not in self.metrics:
            raise LosslabError(f"no metric {metric!r}; available: {', '.join(self.metrics)}")
        sec = _secondary_name(list(self.metrics), metric, secondary)
        if sec is not None and sec not in self.metrics:
            raise LosslabError(f"no metric {sec!r}; available: {', '.join(self.metrics)}")
        y1 = finite(self.metrics[metric])
        if log:
            y1[~(y1 > 0)] = np.nan
        require_some(y1, metric)
        fig, ax = _new_axes(ax)
        self.figure_, self.ax_, self.ax2_ = fig, ax, None
        self.lines_ = {}
        (self.lines_[metric],) = ax.plot(x, y1, **{"color": "C0", "label": metric, **dict(line_kw or {})})
        ax.set_ylabel(metric)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel(self.xlabel or "α")
        if x.size > 1 and x.min() < x.max():
            ax.set_xlim(float(x.min()), float(x.max()))
        if sec is not None:
            y2 = finite(self.metrics[sec])
            if secondary_log:
                y2[~(y2 > 0)] = np.nan
            if np.isfinite(y2).any():
                ax2 = ax.twinx()
                self.ax2_ = ax2
                (self.lines_[sec],) = ax2.plot(x, y2, **{"color": "C1", "linestyle": "--", "label": sec, **dict(secondary_kw or {})})
                ax2.set_ylabel(sec)
                if secondary_log:
                    ax2.set_yscale("log")
                ax.yaxis.label.set_color(self.lines_[metric].get_color())
                ax2.yaxis.label.set_color(self.lines_[sec].get_color())
        if self.title:
            ax.set_title(self.title)
        return self


# --------------------------------------------------------------------------------------------
class _PlaneDisplay(DisplayMixin):
    """What the displays of a plane share: the grid, its metric and labels, and :meth:`_of_plane`."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        z: np.ndarray,
        *,
        metric: str = "loss",
        xlabel: str | None = None,
        ylabel: str | None = None,
        title: str | None = None,
    ) -> None:
        self.x = x
        self.y = y
        self.z = z
        self.metric = metric
        self.xlabel = xlabel
        self.ylabel = ylabel
        self.title = title

    @classmethod
    def _of_plane(cls, result: Any, metric: str) -> Any:
        """The display of a ``kind == "plane"`` result's ``metric`` (not drawn yet)."""
        require_kind(result, "plane", cls.__name__)
        return cls(
            np.asarray(result.x, dtype=float),
            np.asarray(result.y, dtype=float),
            metric_values(result, metric),
            metric=metric,
            xlabel=meta_str(result, "xlabel"),
            ylabel=meta_str(result, "ylabel"),
            title=meta_str(result, "title"),
        )


# --------------------------------------------------------------------------------------------
class ContourDisplay(_PlaneDisplay):
    """2-D landscape as contour lines, filled contours or a heatmap.

    Args:
        x: (nx,) coordinates along the first direction (columns of ``z``).
        y: (ny,) coordinates along the second direction (rows of ``z``).
        z: (ny, nx) metric values; NaN/inf masked.
        metric: the metric's name (colorbar label).
        xlabel, ylabel, title: axis labels (default "α", "β") and title.

    Attributes (after ``plot``):
        figure_, ax_: figure and axes.
        mappable_: the ``QuadContourSet`` / ``AxesImage`` / ``QuadMesh``.
        colorbar_: the colorbar (or None).

    Example:
        >>> import numpy as np
        >>> from types import SimpleNamespace
        >>> import matplotlib; matplotlib.use("Agg")
        >>> x, y = np.linspace(-1, 1, 7), np.linspace(-1, 1, 5)
        >>> z = x[None, :] ** 2 + y[:, None] ** 2
        >>> r = SimpleNamespace(kind="plane", x=x, y=y, metrics={"loss": z}, done=np.ones(z.shape, bool), meta={})
        >>> disp = ContourDisplay.from_result(r, kind="imshow")
        >>> disp.mappable_.get_array().shape
        (5, 7)
    """

    @classmethod
    def from_result(
        cls,
        result: Any,
        *,
        metric: str = "loss",
        ax: Any = None,
        kind: PlaneKind = "contour",
        **kwargs: Any,
    ) -> "ContourDisplay":
        """Plot a ``kind == "plane"`` result; keyword arguments go to :meth:`plot`."""
        return cls._of_plane(result, metric).plot(ax=ax, kind=kind, **kwargs)

    def plot(
        self,
        ax: Any = None,
        *,
        kind: PlaneKind = "contour",
        levels: int | Sequence[float] | None = None,
        log: bool = False,
        vmin: float | None = None,
        vmax: float | None = None,
        cmap: Any = "viridis",
        colorbar: bool = True,
        clabel: bool = False,
        points: Mapping[str, Sequence[float]] | None = None,
        **kwargs: Any,
    ) -> "ContourDisplay":
        """Draw the plane.

        Args:
            ax: axes to draw on (new figure when None).
            kind: ``"contour"``, ``"contourf"`` or ``"imshow"`` (heatmap: ``x`` along columns,
                ``y`` along rows, origin lower-left, one cell per grid point; a non-uniform grid is
                drawn with ``pcolormesh``).
            levels: number of contour levels (default 20, spread over [vmin, vmax]) or their values.
            log: plot ``log10`` of the metric (non-positive values masked).
            vmin, vmax: color/level range (in log10 units when ``log``); default the data range.
            cmap: colormap.
            colorbar: add a colorbar.
            clabel: label contour lines (``kind="contour"``).
            points: ``{label: (x, y)}`` markers, e.g. the models of :func:`~losslab.directions.plane_through`.
            **kwargs: passed to ``contour``/``contourf``/``imshow``.
        """
        x, y, z = _grid(self.x, self.y, self.z, log)
        fig, ax = _new_axes(ax)
        self.figure_, self.ax_ = fig, ax
        self.mappable_, self.colorbar_ = _draw_plane(
            ax, x, y, z, kind=kind, levels=levels, vmin=vmin, vmax=vmax, cmap=cmap, colorbar=colorbar,
            colorbar_label=label(self.metric, log), clabel=clabel, **kwargs,
        )
        self.points_ = _draw_points(ax, points)
        ax.set_xlabel(self.xlabel or "α")
        ax.set_ylabel(self.ylabel or "β")
        x0, x1, y0, y1 = _plane_extent(x, y, kind)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        if self.title:
            ax.set_title(self.title)
        return self


# --------------------------------------------------------------------------------------------
class SurfaceDisplay(_PlaneDisplay):
    """2-D landscape as a 3-D matplotlib surface ``z = metric(x, y)``.

    Args:
        x, y, z: as :class:`ContourDisplay` (z is (ny, nx)).
        metric, xlabel, ylabel, title: labels.

    Attributes (after ``plot``):
        figure_, ax_ (a 3-D axes), surface_ (the ``Poly3DCollection``), colorbar_.

    Example:
        >>> import numpy as np
        >>> from types import SimpleNamespace
        >>> import matplotlib; matplotlib.use("Agg")
        >>> x, y = np.linspace(-1, 1, 6), np.linspace(-2, 2, 4)
        >>> z = x[None, :] ** 2 + y[:, None] ** 2
        >>> r = SimpleNamespace(kind="plane", x=x, y=y, metrics={"loss": z}, done=np.ones(z.shape, bool), meta={})
        >>> SurfaceDisplay.from_result(r).ax_.name
        '3d'
    """

    @classmethod
    def from_result(cls, result: Any, *, metric: str = "loss", ax: Any = None, **kwargs: Any) -> "SurfaceDisplay":
        """Plot a ``kind == "plane"`` result; keyword arguments go to :meth:`plot`."""
        return cls._of_plane(result, metric).plot(ax=ax, **kwargs)

    def plot(
        self,
        ax: Any = None,
        *,
        log: bool = False,
        zmax: float | None = None,
        cmap: Any = "viridis",
        colorbar: bool = False,
        elev: float | None = None,
        azim: float | None = None,
        **kwargs: Any,
    ) -> "SurfaceDisplay":
        """Draw the surface.

        Args:
            ax: a 3-D axes (``projection="3d"``) or None for a new figure.
            log: plot ``log10`` of the metric (non-positive values masked).
            zmax: clip values above ``zmax`` (in log10 units when ``log``), as the reference
                code's ``--zmax``.
            cmap: colormap.
            colorbar: add a colorbar.
            elev, azim: view angles.
            **kwargs: passed to ``plot_surface``.
        """
        x, y, z = _grid(self.x, self.y, self.z, log)
        if x.size < 2 or y.size < 2:
            raise LosslabError(f"a surface needs at least a 2x2 grid, got {y.size}x{x.size}")
        if zmax is not None:
            z = np.where(np.isnan(z), np.nan, np.minimum(z, zmax))
        require_some(z, self.metric)
        if ax is not None and getattr(ax, "name", None) != "3d":
            raise LosslabError("SurfaceDisplay needs a 3-D axes: fig.add_subplot(projection='3d')")
        fig, ax = _new_axes(ax, projection="3d")
        self.figure_, self.ax_ = fig, ax
        X, Y = np.meshgrid(x, y)
        lo, hi = float(np.nanmin(z)), float(np.nanmax(z))
        self.surface_ = ax.plot_surface(
            X, Y, z, cmap=cmap, vmin=lo, vmax=hi, rstride=1, cstride=1, linewidth=0, antialiased=True, **kwargs
        )
        ax.set_xlabel(self.xlabel or "α")
        ax.set_ylabel(self.ylabel or "β")
        ax.set_zlabel(label(self.metric, log))
        ax.set_xlim(float(x.min()), float(x.max()))
        ax.set_ylim(float(y.min()), float(y.max()))
        if elev is not None or azim is not None:
            ax.view_init(elev=elev, azim=azim)
        self.colorbar_ = None
        if colorbar:
            self.colorbar_ = fig.colorbar(self.surface_, ax=ax, shrink=0.6)
            self.colorbar_.set_label(label(self.metric, log))
        if self.title:
            ax.set_title(self.title)
        return self


# --------------------------------------------------------------------------------------------
class TrajectoryDisplay(DisplayMixin):
    """An optimization path projected on a plane, over the plane's contours (Li et al. 2018, fig. 9).

    Args:
        coords: (n, 2) plane coordinates of the checkpoints, in training order (e.g.
            ``PCAResult.coords``; extra columns are ignored).
        explained_variance_ratio: share of variance per axis; axes read "PC1 (87.30%)".
        x, y, z: optional plane (as :class:`ContourDisplay`) drawn under the path; it must be in
            the same frame as ``coords`` (a surface along the PCA directions centered at the
            PCA center).
        metric: the plane's metric name.
        labels: optional names of the checkpoints (annotated).
        title: axes title.

    Attributes (after ``plot``):
        figure_, ax_, path_ (the Line2D), mappable_, colorbar_ (None without a plane).

    Example:
        >>> import numpy as np
        >>> from types import SimpleNamespace
        >>> import matplotlib; matplotlib.use("Agg")
        >>> pca = SimpleNamespace(coords=np.array([[3.0, 1.0], [1.0, 0.5], [0.0, 0.0]]),
        ...                       explained_variance_ratio=np.array([0.9, 0.08]))
        >>> TrajectoryDisplay.from_result(pca).ax_.get_xlabel()
        'PC1 (90.00%)'
    """

    def __init__(
        self,
        coords: np.ndarray,
        *,
        explained_variance_ratio: Sequence[float] | None = None,
        x: np.ndarray | None = None,
        y: np.ndarray | None = None,
        z: np.ndarray | None = None,
        metric: str = "loss",
        labels: Sequence[str] | None = None,
        title: str | None = None,
    ) -> None:
        self.coords = coords
        self.explained_variance_ratio = explained_variance_ratio
        self.x = x
        self.y = y
        self.z = z
        self.metric = metric
        self.labels = labels
        self.title = title

    @classmethod
    def from_result(
        cls,
        pca: Any,
        surface: Any = None,
        *,
        metric: str = "loss",
        ax: Any = None,
        labels: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> "TrajectoryDisplay":
        """From a PCA-like result (``.coords``, ``.explained_variance_ratio``) and an optional plane result."""
        coords = getattr(pca, "coords", None)
        if coords is None:
            raise LosslabError("TrajectoryDisplay needs an object with .coords (n, 2)")
        x = y = z = None
        title = None
        if surface is not None:
            require_kind(surface, "plane", "TrajectoryDisplay")
            x = np.asarray(surface.x, dtype=float)
            y = np.asarray(surface.y, dtype=float)
            z = metric_values(surface, metric)
            title = meta_str(surface, "title")
        disp = cls(
            np.asarray(coords, dtype=float),
            explained_variance_ratio=getattr(pca, "explained_variance_ratio", None),
            x=x,
            y=y,
            z=z,
            metric=metric,
            labels=labels,
            title=title,
        )
        return disp.plot(ax=ax, **kwargs)

    def plot(
        self,
        ax: Any = None,
        *,
        path_kw: Mapping[str, Any] | None = None,
        **plane_kw: Any,
    ) -> "TrajectoryDisplay":
        """Draw the plane (if any) then the path, start marked "o" and end "*".

        The axes limits cover both the plane's extent and every checkpoint.

        Args:
            ax: axes to draw on (new figure when None).
            path_kw: line properties of the path (default: colour ``C3``, ``.`` markers).
            **plane_kw: how the plane is drawn, as for :meth:`ContourDisplay.plot` (``kind``, ``levels``,
                ``log``, ``vmin``/``vmax``, ``cmap``, ``colorbar``, ``clabel``, ...); unused without a plane.
        """
        c = np.asarray(self.coords, dtype=float)
        if c.ndim != 2 or c.shape[1] < 2 or c.shape[0] < 1:
            raise LosslabError(f"coords must have shape (n, 2), got {c.shape}")
        c = c[:, :2]
        if not np.isfinite(c).all():
            raise LosslabError("coords contain non-finite values")
        fig, ax = _new_axes(ax)
        self.figure_, self.ax_ = fig, ax
        self.mappable_ = self.colorbar_ = None
        lo_x, hi_x = float(c[:, 0].min()), float(c[:, 0].max())
        lo_y, hi_y = float(c[:, 1].min()), float(c[:, 1].max())
        if self.z is not None:
            if self.x is None or self.y is None:
                raise LosslabError("a plane needs x, y and z")
            plane = ContourDisplay(self.x, self.y, self.z, metric=self.metric).plot(ax=ax, **plane_kw)
            self.mappable_, self.colorbar_ = plane.mappable_, plane.colorbar_
            (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()  # the plane's extent
            lo_x, hi_x, lo_y, hi_y = min(lo_x, x0), max(hi_x, x1), min(lo_y, y0), max(hi_y, y1)
        kw = {"color": "C3", "marker": ".", "linewidth": 1.5, "label": "trajectory", **dict(path_kw or {})}
        (self.path_,) = ax.plot(c[:, 0], c[:, 1], **kw)
        ax.plot(c[:1, 0], c[:1, 1], "o", color=kw["color"], markersize=7)
        ax.plot(c[-1:, 0], c[-1:, 1], "*", color=kw["color"], markersize=12)
        for name, (px, py) in zip(self.labels or [], c):
            ax.annotate(str(name), (px, py), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if self.z is None:  # pad a path-only plot a little
            pad_x = 0.05 * (hi_x - lo_x) or 0.5
            pad_y = 0.05 * (hi_y - lo_y) or 0.5
            lo_x, hi_x, lo_y, hi_y = lo_x - pad_x, hi_x + pad_x, lo_y - pad_y, hi_y + pad_y
        ax.set_xlim(lo_x, hi_x)
        ax.set_ylim(lo_y, hi_y)
        evr = self.explained_variance_ratio
        names = ["PC1", "PC2"]
        if evr is not None and len(evr) >= 2:
            names = [f"PC{i + 1} ({100 * float(evr[i]):.2f}%)" for i in range(2)]
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        if self.title:
            ax.set_title(self.title)
        return self
