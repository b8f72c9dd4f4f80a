"""The principal directions of an optimization trajectory."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..results import Result
from .. import params
from ..errors import LosslabError
from ..params import Point
from ._core import Direction, PointLike, _as_point, _is_float, _load_bundle, _save_bundle


# --------------------------------------------------------------------------------------------
# PCA of a trajectory
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PCAResult(Result):
    """Principal directions of an optimization trajectory and its projection on them.

    Attributes:
        directions: ``n_components`` unit-norm, mutually orthogonal :class:`Direction` s.
        explained_variance_ratio: (n_components,) ``s_j² / Σ s²``, the share of the (uncentered
            unless ``mean_center``) sum of squared distances to the center each component holds.
        coords: (n_points, n_components) ``c_ij = <θ_i − center, e_j>``; the plot coordinates.
        residual: (n_points,) ``||θ_i − center − Σ_j c_ij e_j||``, the distance of each
            checkpoint from the plotted plane (what the plot hides).
        center: the origin of the plane (default the last checkpoint).
        singular_values: (n_components,) ``s_j``.
        meta: description (n_points, mean_center, ...).
    """

    directions: list[Direction]
    explained_variance_ratio: np.ndarray
    coords: np.ndarray
    residual: np.ndarray
    center: dict[str, Tensor]
    singular_values: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        return len(self.directions)

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.npz`` (members ``center/<key>``, ``direction<j>/<key>``, ``arrays/<name>``)
        and ``<path>.json`` (index, direction metas, ``meta``), atomically. Returns the JSON path."""
        groups: dict[str, Mapping[str, Tensor]] = {"center": self.center}
        for j, d in enumerate(self.directions):
            groups[f"direction{j}"] = d.vector
        arrays = {
            "explained_variance_ratio": np.asarray(self.explained_variance_ratio),
            "coords": np.asarray(self.coords),
            "residual": np.asarray(self.residual),
            "singular_values": np.asarray(self.singular_values),
        }
        meta = {"result": dict(self.meta), "directions": [dict(d.meta) for d in self.directions]}
        return _save_bundle(path, "PCAResult", groups, arrays, meta)

    @classmethod
    def load(cls, path: str | Path, *, device: torch.device | str | None = None) -> "PCAResult":
        groups, arrays, meta = _load_bundle(path, "PCAResult", device)
        dirs = [Direction(groups[f"direction{j}"], m) for j, m in enumerate(meta["directions"])]
        return cls(
            directions=dirs,
            explained_variance_ratio=arrays["explained_variance_ratio"],
            coords=arrays["coords"],
            residual=arrays["residual"],
            center=groups["center"],
            singular_values=arrays["singular_values"],
            meta=meta["result"],
        )


def pca_directions(
    trajectory: Sequence[PointLike],
    *,
    center: PointLike | None = None,
    n_components: int = 2,
    mean_center: bool = False,
) -> PCAResult:
    """PCA directions of a trajectory (Li et al. 2018, sec. 7), with projections and residuals.

    Builds (implicitly) the matrix ``M`` whose rows are ``θ_i − center`` (center: the last
    checkpoint by default) and takes its top right singular vectors ``e_j`` as directions. The
    plane passes through ``center``, so the trajectory plot is ``c_ij = <θ_i − center, e_j>``.

    By default ``M`` is *not* mean-centered: the components then maximize the captured squared
    distance to ``center``, exactly what the plot shows, and ``explained_variance_ratio`` and
    ``residual`` agree (``Σ_i residual_i² = (1 − Σ_j ratio_j) · ||M||_F²``). ``mean_center=True``
    subtracts the row mean first, as scikit-learn's ``PCA`` used by the reference code does;
    coordinates are still projections of ``θ_i − center``.

    Computed with the Gram-matrix trick, memory ``O(n² + n·max tensor size)``: ``G = M Mᵀ`` is
    accumulated tensor by tensor in float64, ``G = U S² Uᵀ``, and ``e_j = Mᵀ u_j / s_j``. Signs
    follow scikit-learn's ``svd_flip``: the largest-|.| entry of each ``u_j`` is positive.

    Args:
        trajectory: checkpoints (points or modules), in training order.
        center: origin of the plane (default ``trajectory[-1]``).
        n_components: number of directions (default 2).
        mean_center: subtract the mean of ``θ_i − center`` before the decomposition.

    Returns:
        A :class:`PCAResult`.

    Raises:
        LosslabError: if the trajectory spans fewer than ``n_components`` dimensions.

    Example:
        >>> import torch
        >>> traj = [{"w": torch.tensor([float(t), float(t) ** 2, 0.0], dtype=torch.float64)} for t in range(5)]
        >>> r = pca_directions(traj)
        >>> round(float(r.explained_variance_ratio.sum()), 12), float(r.residual.max()) < 1e-12
        (1.0, True)
    """
    pts = [_as_point(p, f"trajectory[{i}]") for i, p in enumerate(trajectory)]
    n = len(pts)
    if n < 2:
        raise LosslabError(f"PCA needs at least 2 checkpoints, got {n}")
    if not isinstance(n_components, int) or n_components < 1:
        raise LosslabError(f"n_components must be a positive integer, got {n_components!r}")
    c = _as_point(center, "center") if center is not None else pts[-1]
    for i, p in enumerate(pts):
        params.check_compatible(c, p, f"center and trajectory[{i}]")
    keys = [k for k, v in c.items() if _is_float(v)]
    if not keys:
        raise LosslabError("the points have no floating-point tensors")

    def block(k: str) -> Tensor:
        ck = c[k].detach().to(torch.float64).reshape(-1)
        return torch.stack([p[k].detach().to(device=ck.device, dtype=torch.float64).reshape(-1) - ck for p in pts])

    gram = torch.zeros(n, n, dtype=torch.float64)
    means: dict[str, Tensor] = {}
    for k in keys:
        x = block(k)
        if mean_center:
            means[k] = x.mean(dim=0)
            x = x - means[k]
        gram += (x @ x.T).cpu()
    evals, evecs = torch.linalg.eigh(gram)
    evals, evecs = evals.flip(0), evecs.flip(1)
    evals = evals.clamp(min=0)
    total = float(evals.sum())
    if total == 0:
        raise LosslabError("all checkpoints coincide with the center: nothing to analyse")
    tol = max(n, 1) * torch.finfo(torch.float64).eps * float(evals[0]) * 10
    rank = int((evals > tol).sum())
    if rank < n_components:
        raise LosslabError(f"the trajectory spans {rank} dimension(s); cannot extract {n_components} components")
    u = evecs[:, :n_components].clone()
    flip = torch.sign(u.gather(0, u.abs().argmax(dim=0, keepdim=True)))[0]
    u = u * flip
    s = evals[:n_components].sqrt()

    dirs64: list[Point] = [{} for _ in range(n_components)]
    for k in keys:
        x = block(k)
        if mean_center:
            x = x - means[k]
        e = (u.to(x.device).T @ x) / s.to(x.device)[:, None]  # (n_components, m_k)
        for j in range(n_components):
            dirs64[j][k] = e[j]
    # renormalize to unit norm exactly (rounding) and project the (uncentered) offsets
    for j in range(n_components):
        nj = math.sqrt(sum(float((dirs64[j][k] ** 2).sum()) for k in keys))
        for k in keys:
            dirs64[j][k] = dirs64[j][k] / nj
    coords = torch.zeros(n, n_components, dtype=torch.float64)
    for k in keys:
        x = block(k)
        coords += (x @ torch.stack([dirs64[j][k] for j in range(n_components)]).T).cpu()
    resid_sq = torch.zeros(n, dtype=torch.float64)
    for k in keys:
        x = block(k)
        e = torch.stack([dirs64[j][k] for j in range(n_components)])
        resid_sq += ((x - coords.to(x.device) @ e) ** 2).sum(dim=1).cpu()

    directions = []
    ratio = (evals[:n_components] / total).numpy()
    for j in range(n_components):
        vec = {
            k: (dirs64[j][k].reshape(v.shape).to(v.dtype) if k in dirs64[j] else torch.zeros_like(v))
            for k, v in c.items()
        }
        directions.append(
            Direction(
                vec,
                {
                    "kind": "pca",
                    "component": j,
                    "normalization": "unit",
                    "ignore_1d": False,
                    "explained_variance_ratio": float(ratio[j]),
                    "singular_value": float(s[j]),
                    "n_points": n,
                    "mean_center": bool(mean_center),
                },
            )
        )
    meta = {
        "kind": "pca",
        "n_points": n,
        "n_components": n_components,
        "mean_center": bool(mean_center),
        "center": "last" if center is None else "given",
        "total_sq_distance": total,
    }
    return PCAResult(
        directions=directions,
        explained_variance_ratio=ratio,
        coords=coords.numpy(),
        residual=resid_sq.clamp(min=0).sqrt().numpy(),
        center=params.clone(c),
        singular_values=s.numpy(),
        meta=meta,
    )


