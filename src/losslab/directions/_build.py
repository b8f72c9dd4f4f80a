"""Building the directions of a surface (:func:`build`), Hessian eigenvectors included."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import nn

from .. import params
from .._functional import model_then_data
from ..errors import LosslabError
from ..params import Point
from ._core import Direction, Normalization, PointLike, _as_point
from ._files import read_direction_file, save_direction
from ._random import normalize, random_direction, random_plane
from ._between import model_to_model
from ._pca import PCAResult, pca_directions


# --------------------------------------------------------------------------------------------
# building the directions of a surface
# --------------------------------------------------------------------------------------------

#: The kinds of directions :func:`build` makes.
DIRECTION_KINDS: tuple[str, ...] = ("random", "pca", "to", "hessian", "file")


@dataclass
class BuiltDirections:
    """What :func:`build` returns.

    Attributes:
        directions: ``dim`` directions (the x axis first).
        span: the default ``(xlo, xhi, ylo, yhi)`` plotting range for these directions.
        pca: the :class:`PCAResult` of the trajectory (``kind="pca"`` only, else None).
        weights: the centre the directions were made for (what their recipes are checked against).
    """

    directions: list[Direction]
    span: tuple[float, float, float, float]
    pca: PCAResult | None = None
    weights: Point | None = field(default=None, repr=False)

    def save(self, out: str | Path, *, vectors: bool = False) -> None:
        """Write ``out/direction<i>`` for every direction and, for PCA, ``out/pca``.

        A seeded random direction is written as a recipe that regenerates it bit-identically
        (:func:`~losslab.directions.save_direction`: a small JSON file, no tensors), unless ``vectors``;
        the others (PCA, Hessian, model to model, from a file) are written as vectors.
        """
        out = Path(out)
        if self.pca is not None:
            self.pca.save(out / "pca")
        for i, d in enumerate(self.directions):
            save_direction(d, out / f"direction{i}", weights=self.weights, vectors=vectors)


def build(
    kind: str,
    weights: PointLike,
    *,
    dim: int = 2,
    normalization: Normalization = "filter",
    ignore_1d: bool = True,
    orthogonalize: bool = False,
    seed: int = 0,
    other: PointLike | None = None,
    trajectory: Sequence[PointLike] | None = None,
    model: nn.Module | None = None,
    loss: Any = None,
    data: Any = None,
    file: str | Path | None = None,
) -> BuiltDirections:
    """The ``dim`` directions of a 1-D line or 2-D plane through ``weights``, and their default range.

    Deterministic given the arguments (seeded), so every rank of a distributed job builds the same ones.

    * ``"random"``: Gaussian directions, ``normalization``-normalized (:func:`random_direction`, or
      :func:`random_plane` for ``dim=2``, ``orthogonalize`` making dy orthogonal to dx); span ``[-1, 1]²``.
    * ``"to"``: :func:`model_to_model` towards ``other`` (plus a random direction for ``dim=2``);
      span ``[-0.5, 1.5] x [-1, 1]``.
    * ``"pca"``: :func:`pca_directions` of ``trajectory`` centred at ``weights``; span: the path's
      extent plus 25% margin per axis.
    * ``"hessian"``: the top-``dim`` Hessian eigenvectors (:func:`hessian_directions`, needs ``model``,
      ``data`` and ``loss``); unit vectors, so the span is ``±0.1·||weights||``.
    * ``"file"``: the one or two directions of ``file`` (:func:`~losslab.directions.read_direction_file`;
      their number must be ``dim``), normalized by ``normalization`` (``"none"``: used as they are);
      span ``[-1, 1]²``.

    Args:
        kind: one of :data:`DIRECTION_KINDS`.
        weights: the centre (a point or a model).
        dim: 1 or 2.
        normalization, ignore_1d, orthogonalize, seed: of random directions (``seed`` also seeds Lanczos).
        other: the endpoint of ``"to"``.
        trajectory: the points of ``"pca"``.
        model, data, loss: the Hessian's model, data and loss for ``"hessian"``.
        file: the ``.pt``/``.npz`` file of ``"file"``.

    Raises:
        LosslabError: an unknown kind, ``dim`` not 1 or 2, or a missing input of the kind.

    Example:
        >>> import torch
        >>> w = {"w": torch.ones(3, 2)}
        >>> b = build("random", w, dim=2, seed=0)
        >>> len(b.directions), b.span
        (2, (-1.0, 1.0, -1.0, 1.0))
    """
    if kind not in DIRECTION_KINDS:
        raise LosslabError(f"unknown direction kind {kind!r}; allowed: {', '.join(DIRECTION_KINDS)}")
    if dim not in (1, 2):
        raise LosslabError(f"dim must be 1 or 2, got {dim}")
    w = _as_point(weights)
    span: tuple[float, float, float, float] = (-1.0, 1.0, -1.0, 1.0)
    pca = None
    if kind == "random":
        if dim == 1:
            dirs = [random_direction(w, normalization=normalization, ignore_1d=ignore_1d, seed=seed)]
        else:
            dirs = list(random_plane(w, normalization=normalization, ignore_1d=ignore_1d, seed=seed,
                                     orthogonalize=orthogonalize))
    elif kind == "to":
        if other is None:
            raise LosslabError("directions 'to' need the other model (other=)")
        dirs = [model_to_model(w, _as_point(other, "other"))]
        if dim == 2:
            dirs.append(random_direction(w, normalization=normalization, ignore_1d=ignore_1d, seed=seed))
        span = (-0.5, 1.5, -1.0, 1.0)
    elif kind == "pca":
        if trajectory is None:
            raise LosslabError("directions 'pca' need the trajectory (trajectory=)")
        pca = pca_directions(list(trajectory), center=w, n_components=max(2, dim))
        dirs = list(pca.directions[:dim])
        c = np.asarray(pca.coords)
        lo, hi = c.min(axis=0), c.max(axis=0)
        pad = 0.25 * np.maximum(hi - lo, 1e-3)
        span = (float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]), float(hi[1] + pad[1]))
    elif kind == "file":
        dirs = _file_directions(file, w, dim, normalization, ignore_1d)
    else:
        if model is None or loss is None or data is None:
            raise LosslabError("directions 'hessian' need model=, data= and loss=")
        dirs = hessian_directions(model, data, loss=loss, k=dim, seed=seed)
        r = 0.1 * params.norm(w)
        span = (-r, r, -r, r)
    return BuiltDirections(dirs, span, pca, weights=w)


def _file_directions(file: str | Path | None, w: Point, dim: int, normalization: Normalization,
                     ignore_1d: bool) -> list[Direction]:
    """The directions of ``build("file", ...)``: read, counted against ``dim``, normalized."""
    if file is None:
        raise LosslabError("directions 'file' need the file (file=)")
    vecs = read_direction_file(file, w)
    if len(vecs) != dim:
        raise LosslabError(f"{file} holds {len(vecs)} direction(s) but dim is {dim} (1: a line, 2: a plane)")
    out = []
    for axis, v in zip("xy", vecs):
        meta = {"kind": "file", "source": str(file), "axis": axis, "normalization": normalization}
        if normalization != "none":
            v = normalize(v, w, normalization, ignore_1d)
            meta["ignore_1d"] = bool(ignore_1d)
        out.append(Direction(v, {**meta, "norm": params.norm(v)}))
    return out


@model_then_data
def hessian_directions(model: nn.Module, data: Any, *, loss: Any, k: int = 2, seed: int = 0,
                       batch_size: int | None = 4096, tol: float = 1e-4) -> list[Direction]:
    """The top-``k`` Hessian eigenvectors at the model's parameters as unit :class:`Direction` s.

    Lanczos (:func:`~losslab.curvature.lanczos_eigs`, ``which="LA"``) on the full-data Hessian of
    ``loss`` over ``data`` (trainable parameters only); the meta records rank, eigenvalue,
    convergence and seed.
    """
    from ..curvature.lanczos import lanczos_eigs
    from ..curvature.operators import HessianOperator

    op = HessianOperator(model, data, loss=loss, batch_size=batch_size)
    res = lanczos_eigs(op, k=k, which="LA", seed=seed, tol=tol)
    out = []
    for i in range(k):
        vec = {name: v.float() for name, v in op.unflatten(res.eigenvectors[:, i]).items()}
        out.append(Direction(vec, {"kind": "hessian", "rank": i, "eigenvalue": float(res.eigenvalues[i]),
                                   "converged": bool(res.converged), "seed": seed}))
    return out
