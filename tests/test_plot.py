"""Tests for losslab.plot: displays on fake (duck-typed) results with NaNs, exports, orientation."""
from __future__ import annotations

import doctest
import re
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import losslab.plot as plot_pkg  # noqa: E402
import losslab.plot._displays as displays_module  # noqa: E402
from losslab.directions import pca_directions  # noqa: E402
from losslab.errors import LosslabError  # noqa: E402
from losslab.plot import (  # noqa: E402
    ContourDisplay,
    LineDisplay,
    SurfaceDisplay,
    TrajectoryDisplay,
    export_vtp,
    plotly_surface_html,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def line_result():
    x = np.linspace(-1.0, 2.0, 31)
    loss = (x - 0.5) ** 2 + 0.05
    acc = 1.0 - 0.3 * (x - 0.5) ** 2
    loss[3] = np.nan
    loss[5] = np.inf
    acc[7] = -np.inf
    done = np.ones(31, bool)
    done[-4:] = False
    loss[-4:] = 0.0  # values that are not done must not be drawn, whatever they are
    return SimpleNamespace(kind="line", x=x, y=None, metrics={"loss": loss, "accuracy": acc}, done=done,
                           meta={"title": "interpolation", "xlabel": "a"})


def plane_result(nx: int = 7, ny: int = 4):
    x = np.linspace(-1.0, 1.0, nx)
    y = np.linspace(-0.5, 0.7, ny)
    z = 0.1 + x[None, :] ** 2 + 2.0 * y[:, None] ** 2
    acc = 1.0 - z / z.max()
    z[1, 2] = np.nan
    done = np.ones_like(z, dtype=bool)
    done[-1, -1] = False
    return SimpleNamespace(kind="plane", x=x, y=y, metrics={"loss": z, "accuracy": acc}, done=done,
                           meta={"title": "random plane"})


# ---------------------------------------------------------------- LineDisplay
def test_line_display(tmp_path):
    r = line_result()
    disp = LineDisplay.from_result(r)
    assert disp.ax2_ is not None and disp.ax2_.get_ylabel() == "accuracy"
    assert disp.ax_.get_xlim() == (r.x.min(), r.x.max())
    assert disp.ax_.get_title() == "interpolation" and disp.ax_.get_xlabel() == "a"
    y = disp.lines_["loss"].get_ydata()
    assert np.isnan(y[[3, 5]]).all() and np.isnan(y[-4:]).all()
    assert np.isfinite(y[:3]).all()
    assert np.isnan(disp.lines_["accuracy"].get_ydata()[7])
    path = disp.savefig(tmp_path / "line.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_line_display_log_and_existing_axes():
    r = line_result()
    r.metrics["loss"][10] = -1.0  # masked on a log scale
    fig, ax = plt.subplots()
    disp = LineDisplay.from_result(r, ax=ax, log=True, secondary=None)
    assert disp.ax_ is ax and disp.figure_ is fig and disp.ax2_ is None
    assert ax.get_yscale() == "log"
    assert np.isnan(disp.lines_["loss"].get_ydata()[10])
    fig.canvas.draw()


def test_line_display_constructor_stores_args_verbatim():
    x = np.arange(5.0)
    metrics = {"loss": x + 1}
    disp = LineDisplay(x, metrics, xlabel="t")
    assert disp.x is x and disp.metrics is metrics and disp.xlabel == "t"
    assert disp.plot(secondary="auto") is disp and disp.ax2_ is None
    with pytest.raises(LosslabError, match="no metric 'accuracy'"):
        disp.plot(secondary="accuracy")


def test_line_display_errors():
    with pytest.raises(LosslabError, match="'line' result"):
        LineDisplay.from_result(plane_result())
    r = line_result()
    r.metrics["loss"][:] = np.nan
    with pytest.raises(LosslabError, match="nothing to plot"):
        LineDisplay.from_result(r)
    with pytest.raises(LosslabError, match="no metric 'err'"):
        LineDisplay.from_result(line_result(), metric="err")


# ---------------------------------------------------------------- ContourDisplay
@pytest.mark.parametrize("kind", ["contour", "contourf", "imshow"])
def test_contour_kinds(kind, tmp_path):
    r = plane_result()
    disp = ContourDisplay.from_result(r, kind=kind, levels=8)
    x, y = r.x, r.y
    if kind == "imshow":
        hx, hy = (x[1] - x[0]) / 2, (y[1] - y[0]) / 2
        np.testing.assert_allclose(disp.ax_.get_xlim(), (x[0] - hx, x[-1] + hx))
        np.testing.assert_allclose(disp.ax_.get_ylim(), (y[0] - hy, y[-1] + hy))
    else:
        assert disp.ax_.get_xlim() == (x.min(), x.max())
        assert disp.ax_.get_ylim() == (y.min(), y.max())
    assert disp.colorbar_ is not None and disp.ax_.get_title() == "random plane"
    assert disp.savefig(tmp_path / f"{kind}.png").read_bytes()[:8] == PNG_MAGIC


def test_contour_options():
    r = plane_result()
    disp = ContourDisplay.from_result(r, log=True, levels=[-1.0, -0.5, 0.0, 0.2], clabel=True, colorbar=False,
                                      points={"A": (0.0, 0.0), "B": (0.5, 0.2)})
    assert disp.colorbar_ is None and len(disp.points_) == 4
    np.testing.assert_allclose(disp.mappable_.levels, [-1.0, -0.5, 0.0, 0.2])
    disp = ContourDisplay.from_result(r, metric="accuracy", kind="contourf", vmin=0.2, vmax=0.8)
    assert disp.colorbar_.ax.get_ylabel() == "accuracy"
    with pytest.raises(LosslabError, match="unknown kind"):
        ContourDisplay.from_result(r, kind="wire")
    with pytest.raises(LosslabError, match="'plane' result"):
        ContourDisplay.from_result(line_result())


def test_heatmap_orientation_non_square():
    nx, ny = 6, 3
    x = np.linspace(0.0, 5.0, nx)
    y = np.linspace(10.0, 12.0, ny)
    z = x[None, :] + 100.0 * y[:, None]  # row j = y_j, column i = x_i
    r = SimpleNamespace(kind="plane", x=x, y=y, metrics={"loss": z}, done=np.ones(z.shape, bool), meta={})
    disp = ContourDisplay.from_result(r, kind="imshow", colorbar=False)
    img = disp.mappable_
    assert img.get_array().shape == (ny, nx)
    np.testing.assert_array_equal(img.get_array(), z)
    assert img.origin == "lower"
    np.testing.assert_allclose(img.get_extent(), (-0.5, 5.5, 9.5, 12.5))
    # rendered pixels: the colour at data point (x_i, y_j) is the colour of z[j, i]
    fig, ax = disp.figure_, disp.ax_
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    height = rgba.shape[0]
    for j, i in [(0, 0), (0, nx - 1), (ny - 1, 0), (ny - 1, nx - 2), (1, 3)]:
        px, py = ax.transData.transform((x[i], y[j]))
        got = rgba[int(round(height - py)), int(round(px)), :3] / 255.0
        want = np.asarray(img.cmap(img.norm(z[j, i])))[:3]
        np.testing.assert_allclose(got, want, atol=2 / 255)


def test_heatmap_nonuniform_grid_uses_pcolormesh():
    x = np.array([0.0, 0.1, 0.5, 2.0])
    y = np.array([-1.0, 0.0, 3.0])
    z = x[None, :] + y[:, None]
    r = SimpleNamespace(kind="plane", x=x, y=y, metrics={"loss": z}, done=np.ones(z.shape, bool), meta={})
    disp = ContourDisplay.from_result(r, kind="imshow")
    assert type(disp.mappable_).__name__ == "QuadMesh"
    np.testing.assert_allclose(disp.ax_.get_xlim(), (-0.05, 2.75))


# ---------------------------------------------------------------- SurfaceDisplay
def test_surface_display(tmp_path):
    r = plane_result()
    disp = SurfaceDisplay.from_result(r, log=True, zmax=0.0, colorbar=True, elev=30, azim=-60)
    assert disp.ax_.name == "3d"
    np.testing.assert_allclose(disp.ax_.get_xlim(), (r.x.min(), r.x.max()))
    np.testing.assert_allclose(disp.ax_.get_ylim(), (r.y.min(), r.y.max()))
    assert disp.ax_.get_zlabel() == "log10(loss)"
    assert disp.savefig(tmp_path / "surface.png").read_bytes()[:8] == PNG_MAGIC
    _, ax = plt.subplots()
    with pytest.raises(LosslabError, match="3-D axes"):
        SurfaceDisplay.from_result(r, ax=ax)


# ---------------------------------------------------------------- TrajectoryDisplay
def test_trajectory_display_with_pca_and_plane(tmp_path):
    g = torch.Generator().manual_seed(0)
    e = torch.randn(2, 50, generator=g, dtype=torch.float64)
    t = torch.linspace(0, 1, 15, dtype=torch.float64)
    traj = [{"w": (1 - s) * (2.0 * e[0] * torch.cos(3 * s) + 0.7 * e[1] * torch.sin(3 * s))} for s in t]
    pca = pca_directions(traj)
    c = pca.coords
    x = np.linspace(-1.0, 1.0, 9)
    y = np.linspace(-0.5, 0.5, 5)  # smaller than the path on purpose
    z = 0.1 + x[None, :] ** 2 + y[:, None] ** 2
    z[2, 2] = np.nan
    surf = SimpleNamespace(kind="plane", x=x, y=y, metrics={"loss": z}, done=np.ones(z.shape, bool), meta={})
    disp = TrajectoryDisplay.from_result(pca, surf, labels=[str(i) for i in range(len(traj))])
    evr = pca.explained_variance_ratio
    assert disp.ax_.get_xlabel() == f"PC1 ({100 * evr[0]:.2f}%)"
    assert disp.ax_.get_ylabel() == f"PC2 ({100 * evr[1]:.2f}%)"
    np.testing.assert_allclose(disp.path_.get_xydata(), c)
    lo_x, hi_x = disp.ax_.get_xlim()
    lo_y, hi_y = disp.ax_.get_ylim()
    np.testing.assert_allclose((lo_x, hi_x), (min(c[:, 0].min(), -1.0), max(c[:, 0].max(), 1.0)))
    np.testing.assert_allclose((lo_y, hi_y), (min(c[:, 1].min(), -0.5), max(c[:, 1].max(), 0.5)))
    assert disp.mappable_ is not None
    assert disp.savefig(tmp_path / "traj.pdf").read_bytes()[:4] == b"%PDF"


def test_trajectory_display_draws_the_plane_as_contour_display_does():
    """The plane under a path is ContourDisplay's drawing: the same keywords give the same mappable, colour
    range and (for a heatmap, whose cells extend half a step beyond the grid) the same extent."""
    x = np.linspace(-1.0, 1.0, 5)
    y = np.linspace(-0.5, 0.5, 3)
    z = 0.1 + x[None, :] ** 2 + y[:, None] ** 2
    coords = np.array([[0.0, 0.0], [0.2, 0.1]])  # inside the plane: the limits are the plane's
    kw = {"kind": "imshow", "log": True, "vmin": -1.0, "cmap": "magma", "colorbar": False}
    traj = TrajectoryDisplay(coords, x=x, y=y, z=z).plot(**kw)
    ref = ContourDisplay(x, y, z).plot(**kw)
    assert type(traj.mappable_) is type(ref.mappable_) and traj.colorbar_ is None
    assert traj.mappable_.get_clim() == ref.mappable_.get_clim()
    assert traj.mappable_.get_cmap().name == "magma"
    np.testing.assert_allclose(traj.ax_.get_xlim(), ref.ax_.get_xlim())
    np.testing.assert_allclose(traj.ax_.get_ylim(), ref.ax_.get_ylim())
    np.testing.assert_allclose(traj.ax_.get_xlim(), (-1.25, 1.25))


def test_trajectory_display_path_only():
    coords = np.array([[3.0, 1.0], [1.0, 0.5], [0.2, -0.1], [0.0, 0.0]])
    disp = TrajectoryDisplay(coords).plot()
    assert disp.coords is coords and disp.mappable_ is None
    lo_x, hi_x = disp.ax_.get_xlim()
    assert lo_x < 0.0 and hi_x > 3.0
    assert disp.ax_.get_xlabel() == "PC1"
    with pytest.raises(LosslabError, match="coords"):
        TrajectoryDisplay(np.zeros(3)).plot()


# ---------------------------------------------------------------- exports
def test_plotly_html_offline(tmp_path):
    plotly_offline = pytest.importorskip("plotly.offline")
    r = plane_result()
    path = plotly_surface_html(r, tmp_path / "s.html")
    text = path.read_text(encoding="utf-8")
    bundle = plotly_offline.get_plotlyjs()
    assert bundle in text  # plotly.js embedded inline
    assert "<title>random plane</title>" in text
    # no external script or stylesheet at all
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=", text, re.I)
    # the page itself (outside plotly.js, whose source lists map-tile/topojson URLs it never
    # fetches for a surface) references no CDN
    page = text.replace(bundle, "")
    assert "cdn" not in page.lower()
    assert '"type":"surface"' in page and "null" in page  # NaN / not-done cells are holes
    assert not list(tmp_path.glob("*.tmp"))


def _vtp(path):
    root = ET.parse(path).getroot()
    piece = root.find("./PolyData/Piece")
    arrays = {a.get("Name"): a for a in root.iter("DataArray")}
    return root, piece, arrays


def test_export_vtp_full_grid(tmp_path):
    nx, ny = 7, 4
    r = plane_result(nx, ny)
    r.metrics["loss"] = np.nan_to_num(r.metrics["loss"], nan=1.0)
    r.done[:] = True
    path = export_vtp(r, tmp_path / "s.vtp")
    root, piece, arrays = _vtp(path)
    assert root.get("type") == "PolyData"
    assert int(piece.get("NumberOfPoints")) == nx * ny
    assert int(piece.get("NumberOfPolys")) == (nx - 1) * (ny - 1)
    pts = np.array(arrays["Points"].text.split(), dtype=float).reshape(-1, 3)
    assert pts.shape == (nx * ny, 3)
    X, Y = np.meshgrid(r.x, r.y)
    np.testing.assert_array_equal(pts[:, 0], X.ravel())
    np.testing.assert_array_equal(pts[:, 1], Y.ravel())
    np.testing.assert_array_equal(pts[:, 2], r.metrics["loss"].ravel())
    np.testing.assert_array_equal(np.array(arrays["loss"].text.split(), dtype=float), r.metrics["loss"].ravel())
    conn = np.array(arrays["connectivity"].text.split(), dtype=int).reshape(-1, 4)
    offsets = np.array(arrays["offsets"].text.split(), dtype=int)
    assert conn.shape == ((nx - 1) * (ny - 1), 4) and offsets[-1] == conn.size
    assert conn.min() == 0 and conn.max() == nx * ny - 1
    assert conn[0].tolist() == [0, 1, nx + 1, nx]


def test_export_vtp_missing_values_and_log(tmp_path):
    nx, ny = 7, 4
    r = plane_result(nx, ny)  # one NaN at (1, 2) and one not-done corner (3, 6)
    path = export_vtp(r, tmp_path / "s.vtp", log=True)
    _, piece, arrays = _vtp(path)
    assert int(piece.get("NumberOfPoints")) == nx * ny
    assert int(piece.get("NumberOfPolys")) == (nx - 1) * (ny - 1) - 4 - 1
    valid = np.array(arrays["valid"].text.split(), dtype=int).reshape(ny, nx)
    assert valid[1, 2] == 0 and valid[-1, -1] == 0 and valid.sum() == nx * ny - 2
    assert "log10(loss)" in arrays
    with pytest.raises(LosslabError, match="'plane' result"):
        export_vtp(line_result(), tmp_path / "l.vtp")


def test_doctests():
    for module in (plot_pkg, displays_module):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0
