"""Files for other tools: a standalone Plotly HTML surface and a ParaView ``.vtp`` surface."""
from __future__ import annotations

import html as _html
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_text
from ..errors import LosslabError
from ._common import label, meta_str, metric_values, require_kind, require_some, transform

__all__ = ["plotly_surface_html", "export_vtp"]


def _plane_values(result: Any, metric: str, log: bool, zmax: float | None, who: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    require_kind(result, "plane", who)
    x = np.asarray(result.x, dtype=float)
    y = np.asarray(result.y, dtype=float)
    z = transform(metric_values(result, metric), log)
    if zmax is not None:
        z = np.where(np.isnan(z), np.nan, np.minimum(z, zmax))
    require_some(z, metric)
    return x, y, z


def plotly_surface_html(
    result: Any,
    path: str | os.PathLike,
    metric: str = "loss",
    *,
    log: bool = False,
    zmax: float | None = None,
    title: str | None = None,
) -> Path:
    """Write an interactive 3-D Plotly surface of a plane result as one standalone HTML file.

    The plotly.js bundle is embedded inline (``include_plotlyjs=True``, ~4.8 MB): the file opens
    offline and references no CDN or other external script. Missing/non-finite values are
    ``null`` (holes in the surface). Requires the ``plotly`` package (``losslab[report]``).

    Args:
        result: a ``kind == "plane"`` result (see :mod:`losslab.plot`).
        path: the ``.html`` file to write (atomically).
        metric: which metric to draw.
        log: draw ``log10`` of the metric (non-positive values become holes).
        zmax: clip values above ``zmax`` (log10 units when ``log``).
        title: figure title (default ``result.meta["title"]``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    try:
        import plotly.graph_objects as go
    except ImportError as e:  # pragma: no cover - plotly is a test dependency
        raise LosslabError("plotly_surface_html needs plotly: pip install 'losslab[report]'") from e
    x, y, z = _plane_values(result, metric, log, zmax, "plotly_surface_html")
    zl = [[None if np.isnan(v) else float(v) for v in row] for row in z]
    name = label(metric, log)
    title = title if title is not None else (meta_str(result, "title") or f"{metric} surface")
    fig = go.Figure(
        go.Surface(x=x.tolist(), y=y.tolist(), z=zl, colorscale="Viridis", colorbar={"title": {"text": name}})
    )
    fig.update_layout(
        title={"text": title},
        scene={
            "xaxis": {"title": {"text": meta_str(result, "xlabel") or "α"}},
            "yaxis": {"title": {"text": meta_str(result, "ylabel") or "β"}},
            "zaxis": {"title": {"text": name}},
        },
    )
    text = fig.to_html(include_plotlyjs=True, full_html=True, include_mathjax=False, div_id="losslab-surface")
    text = text.replace("<head>", f"<head>\n    <title>{_html.escape(title)}</title>", 1)
    return atomic_write_text(path, text)


def _fmt(values: np.ndarray) -> str:
    return " ".join(repr(float(v)) for v in values.ravel())


def export_vtp(
    result: Any,
    path: str | os.PathLike,
    metric: str = "loss",
    *,
    log: bool = False,
    zmax: float | None = None,
) -> Path:
    """Write a plane result as a ParaView PolyData surface (VTK XML ``.vtp``, ASCII).

    Like the reference code's ``h52vtp``: one point per grid node ``(x_i, y_j, z_ij)`` with
    ``z`` = the metric (``log10`` when ``log``, clipped at ``zmax``), one quad per grid cell, and
    the metric as point data. Point ``j·nx + i`` is grid node ``(x_i, y_j)``; the quad of cell
    ``(j, i)`` is ``[p(j,i), p(j,i+1), p(j+1,i+1), p(j+1,i)]``.

    Missing values: every node is written (``nx·ny`` points), those without a finite value get
    ``z`` = the minimum finite value and ``valid = 0`` in a second point array; quads touching
    such a node are left out, so a fully evaluated grid has ``(nx−1)(ny−1)`` cells.

    Args:
        result: a ``kind == "plane"`` result.
        path: the ``.vtp`` file to write (atomically).
        metric: which metric is the height.
        log: use ``log10`` of the metric (non-positive values count as missing).
        zmax: clip heights above ``zmax``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    x, y, z = _plane_values(result, metric, log, zmax, "export_vtp")
    nx, ny = x.size, y.size
    if nx < 2 or ny < 2:
        raise LosslabError(f"a surface needs at least a 2x2 grid, got {ny}x{nx}")
    valid = np.isfinite(z)
    height = np.where(valid, z, float(np.nanmin(z)))
    X, Y = np.meshgrid(x, y)  # (ny, nx), row j = y_j
    pts = np.stack([X.ravel(), Y.ravel(), height.ravel()], axis=1)
    ids = np.arange(nx * ny).reshape(ny, nx)
    quads = np.stack([ids[:-1, :-1], ids[:-1, 1:], ids[1:, 1:], ids[1:, :-1]], axis=-1).reshape(-1, 4)
    cell_ok = (valid[:-1, :-1] & valid[:-1, 1:] & valid[1:, 1:] & valid[1:, :-1]).ravel()
    quads = quads[cell_ok]
    offsets = 4 * np.arange(1, len(quads) + 1)
    name = _html.escape(label(metric, log), quote=True)
    lines = [
        '<?xml version="1.0"?>',
        '<VTKFile type="PolyData" version="0.1" byte_order="LittleEndian">',
        "  <PolyData>",
        f'    <Piece NumberOfPoints="{nx * ny}" NumberOfVerts="0" NumberOfLines="0" '
        f'NumberOfStrips="0" NumberOfPolys="{len(quads)}">',
        f'      <PointData Scalars="{name}">',
        f'        <DataArray type="Float64" Name="{name}" NumberOfComponents="1" format="ascii">',
        f"          {_fmt(height)}",
        "        </DataArray>",
        '        <DataArray type="UInt8" Name="valid" NumberOfComponents="1" format="ascii">',
        "          " + " ".join("1" if v else "0" for v in valid.ravel()),
        "        </DataArray>",
        "      </PointData>",
        "      <Points>",
        '        <DataArray type="Float64" Name="Points" NumberOfComponents="3" format="ascii">',
        f"          {_fmt(pts)}",
        "        </DataArray>",
        "      </Points>",
        "      <Polys>",
        '        <DataArray type="Int64" Name="connectivity" format="ascii">',
        "          " + " ".join(str(int(i)) for i in quads.ravel()),
        "        </DataArray>",
        '        <DataArray type="Int64" Name="offsets" format="ascii">',
        "          " + " ".join(str(int(i)) for i in offsets),
        "        </DataArray>",
        "      </Polys>",
        "    </Piece>",
        "  </PolyData>",
        "</VTKFile>",
        "",
    ]
    return atomic_write_text(path, "\n".join(lines))
