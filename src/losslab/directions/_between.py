"""Directions between models: model to model, and the plane through three models."""
from __future__ import annotations

import math
from typing import Any, Literal, Mapping, NamedTuple

import numpy as np
import torch

from .. import params
from ..errors import LosslabError
from ..params import Point
from ._core import Direction, PointLike, _as_point, _is_float


# --------------------------------------------------------------------------------------------
# directions between models
# --------------------------------------------------------------------------------------------
def _diff(b: Point, a: Point, dtype: torch.dtype | None = None) -> Point:
    """``b − a`` key by key (in ``dtype`` when given, else b's dtype); zero on non-floating tensors."""
    params.check_compatible(a, b, "models")
    out: Point = {}
    for k in a:
        if _is_float(b[k]):
            dt = dtype or b[k].dtype
            out[k] = b[k].detach().to(dtype=dt) - a[k].detach().to(device=b[k].device, dtype=dt)
        else:
            out[k] = torch.zeros_like(b[k])
    return out


def model_to_model(a: PointLike, b: PointLike, *, meta: Mapping[str, Any] | None = None) -> Direction:
    """The direction from model A to model B: ``d = θ_B − θ_A``, so ``θ_A + 1·d = θ_B``.

    Used for linear interpolation plots ``L((1−α)θ_A + αθ_B) = L(θ_A + α d)`` (Goodfellow et al.
    2015; Keskar et al. 2017). Not normalized; ``meta["distance"] = ||θ_B − θ_A||``.

    Args:
        a, b: points or modules with the same keys and shapes.
        meta: extra entries for ``meta`` (e.g. ``{"source": ["sgd.pt", "adam.pt"]}``).

    Example:
        >>> import torch
        >>> a = {"w": torch.zeros(2, dtype=torch.float64)}; b = {"w": torch.tensor([3.0, 4.0], dtype=torch.float64)}
        >>> d = model_to_model(a, b)
        >>> d.meta["distance"], d.vector["w"].tolist()
        (5.0, [3.0, 4.0])
    """
    pa, pb = _as_point(a, "a"), _as_point(b, "b")
    vec = _diff(pb, pa)
    m: dict[str, Any] = {"kind": "model_to_model", "normalization": "none", "ignore_1d": False}
    m["distance"] = params.norm(vec)
    if meta:
        m.update(meta)
    return Direction(vec, m)


class Plane(NamedTuple):
    """A 2-D plane in parameter space: ``θ(x, y) = origin + x·dx + y·dy``.

    ``coords`` is a (3, 2) array: the plane coordinates of the three defining models.
    """

    origin: Point
    dx: Direction
    dy: Direction
    coords: np.ndarray


def plane_through(
    a: PointLike,
    b: PointLike,
    c: PointLike,
    *,
    scale: Literal["unit", "raw"] = "unit",
) -> Plane:
    """The plane through three models (Garipov et al. 2018, fig. 1 style).

    With ``u = θ_B − θ_A`` and ``v = θ_C − θ_A``: origin ``θ_A``, ``dx ∝ u`` and ``dy ∝ v_⊥``, the
    component of ``v`` orthogonal to ``u``::

        v_⊥ = v − <v, u>/<u, u> · u

    * ``scale="unit"`` (default): ``dx = u/||u||``, ``dy = v_⊥/||v_⊥||`` — an orthonormal frame,
      so plot axes are Euclidean parameter distances and an equal aspect ratio is faithful.
      Coordinates: A = (0, 0), B = (||u||, 0), C = (<v, u>/||u||, ||v_⊥||).
    * ``scale="raw"``: ``dx = u``, ``dy = v_⊥``. Coordinates: A = (0, 0), B = (1, 0),
      C = (<v, u>/<u, u>, 1).

    In both cases ``origin + coords[i, 0]·dx + coords[i, 1]·dy`` reproduces model ``i``
    (to rounding).

    Raises:
        LosslabError: if A = B or the three models are collinear.

    Example:
        >>> import torch
        >>> f = lambda *x: {"w": torch.tensor(x, dtype=torch.float64)}
        >>> p = plane_through(f(0.0, 0.0, 1.0), f(2.0, 0.0, 1.0), f(1.0, 3.0, 1.0))
        >>> p.coords.tolist()
        [[0.0, 0.0], [2.0, 0.0], [1.0, 3.0]]
    """
    if scale not in ("unit", "raw"):
        raise LosslabError(f"unknown scale {scale!r}; allowed: unit, raw")
    pa, pb, pc = _as_point(a, "a"), _as_point(b, "b"), _as_point(c, "c")
    params.check_compatible(pa, pb, "models a and b")
    params.check_compatible(pa, pc, "models a and c")
    u = _diff(pb, pa, torch.float64)
    v = _diff(pc, pa, torch.float64)
    uu = params.dot(u, u)
    if uu == 0:
        raise LosslabError("models a and b are identical: no plane")
    t = params.dot(v, u) / uu
    v_perp = {k: (v[k] - t * u[k]) if _is_float(v[k]) else v[k] for k in v}
    nu, nv = math.sqrt(uu), params.norm(v_perp)
    if nv <= 1e-12 * max(nu, params.norm(v)):
        raise LosslabError("models a, b and c are collinear: no plane")
    if scale == "unit":
        sx, sy = 1.0 / nu, 1.0 / nv
        coords = np.array([[0.0, 0.0], [nu, 0.0], [t * nu, nv]])
    else:
        sx = sy = 1.0
        coords = np.array([[0.0, 0.0], [1.0, 0.0], [t, 1.0]])
    dtypes = {k: pa[k].dtype for k in pa}
    dx_vec = {k: (u[k] * sx).to(dtypes[k]) if _is_float(u[k]) else u[k] for k in u}
    dy_vec = {k: (v_perp[k] * sy).to(dtypes[k]) if _is_float(v_perp[k]) else v_perp[k] for k in v_perp}
    common = {"kind": "plane", "scale": scale, "normalization": "unit" if scale == "unit" else "none", "ignore_1d": False}
    dx = Direction(dx_vec, {**common, "axis": "x", "norm_u": nu})
    dy = Direction(dy_vec, {**common, "axis": "y", "norm_v_perp": nv, "cosine_ca_ba": params.dot(v, u) / (nu * params.norm(v))})
    return Plane(params.clone(pa), dx, dy, coords)


