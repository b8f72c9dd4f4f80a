"""Stiffness (Fort, Nowak, Jastrzebski & Narayanan 2019, arXiv 1901.09491): do gradient steps on one
example lower the loss of another?

With per-example gradients :math:`g_i = \\nabla_\\theta \\ell_i(\\theta)` (:func:`per_example_grads`):

.. math::

    S^{\\cos}_{ij} = \\frac{g_i \\cdot g_j}{\\lVert g_i \\rVert \\, \\lVert g_j \\rVert}, \\qquad
    S^{\\mathrm{sign}}_{ij} = \\operatorname{sign}(g_i \\cdot g_j).

A first-order step :math:`-\\eta g_i` changes :math:`\\ell_j` by :math:`-\\eta\\, g_i \\cdot g_j`, so a positive
entry means "learning i helps j". Aggregates:

* class stiffness: :math:`C_{ab}` = mean of :math:`S_{ij}` over pairs :math:`i \\ne j` with
  :math:`y_i = a, y_j = b` (a :math:`C \\times C` matrix);
* within-class = mean over all pairs :math:`i \\ne j` with :math:`y_i = y_j`; between-class = mean over
  pairs with :math:`y_i \\ne y_j` (pairs weighted equally, not classes);
* stiffness vs input distance: pairs :math:`i < j` binned by :math:`\\lVert x_i - x_j \\rVert_2` into
  equal-width bins, mean :math:`S` per bin. ``zero_crossing_distance`` is the centre of the first bin
  whose mean cosine stiffness is :math:`\\le 0` (Fort et al.'s "stiffness length" scale; NaN when it stays
  positive).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from losslab.probes import stiffness
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(60, 4, generator=g), torch.arange(60) % 3
    >>> r = stiffness(nn.Linear(4, 3), (x, y), n_per_class=5, seed=0)
    >>> r.cos.shape, r.class_cos.shape
    ((15, 15), (3, 3))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..results import SummaryArraysFormat
from .._functional import model_then_data
from ..errors import LosslabError
from ._common import LossFn, as_xy, to_numpy
from .pergrad import DEFAULT_CHUNK, per_example_grads

__all__ = [
    "StiffnessResult", "stiffness", "stiffness_matrices", "class_stiffness", "within_between",
    "stiffness_by_distance", "sample_per_class",
]

FORMAT = "losslab.stiffness"


def stiffness_matrices(G: Tensor, eps: float = 0.0) -> tuple[Tensor, Tensor]:
    """Cosine and sign stiffness matrices of the rows of ``G`` (``(N, D)`` per-example gradients).

    Rows with zero norm get cosine 0 with everything (and sign 0).

    Returns:
        ``(cos, sign)``, both ``(N, N)`` in ``G``'s dtype.
    """
    if G.dim() != 2:
        raise LosslabError(f"G must be (N, D), got shape {tuple(G.shape)}")
    gram = G @ G.T
    nrm = G.norm(dim=1)
    denom = torch.outer(nrm, nrm)
    cos = torch.where(denom > eps, gram / denom.clamp_min(torch.finfo(G.dtype).tiny), torch.zeros_like(gram))
    return cos.clamp(-1.0, 1.0), torch.sign(gram)


def _pair_mask(n: int) -> np.ndarray:
    return ~np.eye(n, dtype=bool)


def class_stiffness(S: np.ndarray | Tensor, labels: np.ndarray | Tensor, classes: Sequence[int] | None = None) -> np.ndarray:
    """Mean of ``S[i, j]`` over pairs ``i != j`` with ``labels[i] = a``, ``labels[j] = b``: a ``(C, C)`` matrix.

    ``classes`` fixes the order (default: sorted unique labels); a diagonal entry of a class with one
    example is NaN.
    """
    S = to_numpy(S).astype(np.float64)
    lab = to_numpy(labels).astype(np.int64)
    cls = np.unique(lab) if classes is None else np.asarray(classes)
    out = np.full((len(cls), len(cls)), np.nan)
    off = _pair_mask(len(lab))
    for a, ca in enumerate(cls):
        ia = lab == ca
        for b, cb in enumerate(cls):
            m = np.outer(ia, lab == cb) & off
            if m.any():
                out[a, b] = S[m].mean()
    return out


def within_between(S: np.ndarray | Tensor, labels: np.ndarray | Tensor) -> tuple[float, float]:
    """(mean over same-class pairs ``i != j``, mean over different-class pairs) of ``S``."""
    S = to_numpy(S).astype(np.float64)
    lab = to_numpy(labels)
    same = (lab[:, None] == lab[None, :]) & _pair_mask(len(lab))
    diff = lab[:, None] != lab[None, :]
    w = float(S[same].mean()) if same.any() else float("nan")
    b = float(S[diff].mean()) if diff.any() else float("nan")
    return w, b


def stiffness_by_distance(
    S: np.ndarray | Tensor, x: np.ndarray | Tensor, *, n_bins: int = 10, edges: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of ``S`` over pairs ``i < j`` binned by the Euclidean distance of the flattened inputs.

    Returns:
        ``(edges (n_bins + 1,), mean (n_bins,), count (n_bins,))``; empty bins have NaN mean.
    """
    S = to_numpy(S).astype(np.float64)
    xf = to_numpy(x).reshape(len(S), -1).astype(np.float64)
    sq = (xf**2).sum(1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * xf @ xf.T, 0.0))
    iu = np.triu_indices(len(S), k=1)
    dv, sv = d[iu], S[iu]
    if edges is None:
        if n_bins < 1:
            raise LosslabError(f"n_bins must be >= 1, got {n_bins}")
        hi = float(dv.max()) if dv.size else 1.0
        edges = np.linspace(0.0, hi if hi > 0 else 1.0, n_bins + 1)
    edges = np.asarray(edges, dtype=np.float64)
    idx = np.clip(np.searchsorted(edges, dv, side="right") - 1, 0, len(edges) - 2)
    count = np.bincount(idx, minlength=len(edges) - 1).astype(np.int64)
    total = np.bincount(idx, weights=sv, minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return edges, mean, count


def sample_per_class(y: Tensor, n_per_class: int, *, seed: int = 0) -> Tensor:
    """Indices of up to ``n_per_class`` random examples of each class, grouped by class (sorted labels)."""
    if y.is_floating_point():
        raise LosslabError("stiffness by class needs integer class labels")
    if n_per_class < 1:
        raise LosslabError(f"n_per_class must be >= 1, got {n_per_class}")
    g = torch.Generator().manual_seed(int(seed))
    yc = y.cpu()
    out = []
    for c in torch.unique(yc).tolist():
        idx = torch.nonzero(yc == c).flatten()
        perm = torch.randperm(len(idx), generator=g)[:n_per_class]
        out.append(torch.sort(idx[perm]).values)
    return torch.cat(out)


@dataclass(frozen=True)
class StiffnessResult(SummaryArraysFormat):
    """Stiffness of a sample of examples at one point.

    Attributes:
        indices: indices of the sampled examples in the data, ``(N,)``, grouped by class.
        labels: their labels ``(N,)``.
        classes: class ids in matrix order ``(C,)``.
        cos, sign: ``(N, N)`` cosine / sign stiffness matrices.
        class_cos, class_sign: ``(C, C)`` class-pair means (pairs ``i != j``).
        distance_edges: ``(B + 1,)`` bin edges of input distance; ``distance_cos``, ``distance_sign``
            ``(B,)`` binned means; ``distance_count`` ``(B,)`` pairs per bin.
        summary: ``within_cos``, ``between_cos``, ``within_sign``, ``between_sign``, ``gap_cos``
            (within - between), ``zero_crossing_distance``, ``mean_grad_norm``.
        meta: description (point, data, seed, loss, step...).
    """

    indices: np.ndarray
    labels: np.ndarray
    classes: np.ndarray
    cos: np.ndarray
    sign: np.ndarray
    class_cos: np.ndarray
    class_sign: np.ndarray
    distance_edges: np.ndarray
    distance_cos: np.ndarray
    distance_sign: np.ndarray
    distance_count: np.ndarray

    _FORMAT = FORMAT

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """Plot this result: ``StiffnessDisplay.from_result(self, ax=ax, **kwargs)``, returning the
        :class:`~losslab.probes.display.StiffnessDisplay`."""
        from .display import StiffnessDisplay

        return StiffnessDisplay.from_result(self, ax=ax, **kwargs)


@model_then_data
def stiffness(
    model: nn.Module,
    data: Any,
    *,
    point: Mapping[str, Tensor] | None = None,
    n_per_class: int = 20,
    seed: int = 0,
    split: str = "train",
    loss: LossFn | None = None,
    chunk_size: int | None = DEFAULT_CHUNK,
    params: Sequence[str] | None = None,
    n_bins: int = 10,
    distance_edges: np.ndarray | None = None,
    meta: Mapping[str, Any] | None = None,
) -> StiffnessResult:
    """Cosine and sign stiffness between per-example gradients, by class pair and by input distance.

    Args:
        model: the network (never modified).
        data: ``Split``, ``Bundle`` (its ``split``) or ``(x, y)`` with integer labels.
        point: parameters (``None``: the model's own).
        n_per_class: examples drawn per class (fewer if a class is smaller).
        seed: seed of the example sample.
        split: which split of a ``Bundle``.
        loss: per-batch mean loss (default cross-entropy).
        chunk_size: examples per ``vmap`` call of the per-example gradients.
        params: parameter names to differentiate (default all).
        n_bins: input-distance bins (equal width from 0 to the largest pair distance).
        distance_edges: explicit bin edges (to compare results on a common axis).
        meta: extra description stored with the result.

    Returns:
        A :class:`StiffnessResult`.
    """
    x, y = as_xy(data, split)
    idx = sample_per_class(y, n_per_class, seed=seed)
    xs, ys = x[idx.to(x.device)], y[idx.to(y.device)]
    G = per_example_grads(model, (xs, ys), point=point, loss=loss, chunk_size=chunk_size, params=params)
    cos, sign = stiffness_matrices(G)
    labels = to_numpy(ys).astype(np.int64)
    classes = np.unique(labels)
    cos_np, sign_np = to_numpy(cos).astype(np.float64), to_numpy(sign).astype(np.float64)
    wc, bc = within_between(cos_np, labels)
    ws, bs = within_between(sign_np, labels)
    edges, dcos, count = stiffness_by_distance(cos_np, xs, n_bins=n_bins, edges=distance_edges)
    _, dsign, _ = stiffness_by_distance(sign_np, xs, edges=edges)
    centers = 0.5 * (edges[1:] + edges[:-1])
    nonpos = np.nonzero((count > 0) & (dcos <= 0))[0]
    summary = {
        "within_cos": wc, "between_cos": bc, "within_sign": ws, "between_sign": bs, "gap_cos": wc - bc,
        "gap_sign": ws - bs, "zero_crossing_distance": float(centers[nonpos[0]]) if len(nonpos) else float("nan"),
        "mean_grad_norm": float(G.norm(dim=1).mean()), "n_examples": int(len(labels)), "n_classes": int(len(classes)),
    }
    info = {"n_per_class": n_per_class, "seed": seed, "split": split, "n_params": int(G.shape[1]),
            "loss": getattr(loss, "__name__", None) if loss is not None else "default"}
    info.update(meta or {})
    return StiffnessResult(
        indices=to_numpy(idx).astype(np.int64), labels=labels, classes=classes, cos=cos_np, sign=sign_np,
        class_cos=class_stiffness(cos_np, labels, classes), class_sign=class_stiffness(sign_np, labels, classes),
        distance_edges=edges, distance_cos=dcos, distance_sign=dsign, distance_count=count,
        summary=summary, meta=info,
    )
