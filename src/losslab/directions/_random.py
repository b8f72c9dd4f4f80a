"""Normalization (Li et al. 2018) and random directions and planes."""
from __future__ import annotations

import math

import torch

from .. import params
from ..errors import LosslabError
from ..params import Point
from ._core import (
    Direction, Normalization, PointLike, VectorLike, _angle_deg, _as_point, _check_method, _check_seed,
    _child_seeds, _is_float, _make_generator, _meta_of, _safe_ratio, _vector,
)


# --------------------------------------------------------------------------------------------
# normalization and random directions
# --------------------------------------------------------------------------------------------
def normalize(
    direction: VectorLike,
    weights: PointLike,
    method: Normalization = "filter",
    ignore_1d: bool = True,
) -> Point:
    """Rescale a direction relative to the weights (Li et al. 2018), returning a new point.

    Let ``d_k`` and ``θ_k`` be the direction's and the weights' tensor ``k``.

    * ``"filter"``: for ``dim(θ_k) > 1`` each slice along dim 0 (output filter / neuron, also
      for ``ConvTranspose`` whose dim 0 is the input channel, as in the reference code) is set
      to ``d_ki / ||d_ki|| * ||θ_ki||``.
    * ``"layer"``: for ``dim(θ_k) > 1``, ``d_k <- d_k / ||d_k|| * ||θ_k||``.
    * ``"model"``: the whole direction is rescaled to ``||θ||``, the norm of the weights over
      the tensors the direction covers (so with ``ignore_1d=True`` biases don't count).
    * ``"none"``: no rescaling.

    Tensors with ``dim <= 1`` (biases, norm-layer affine, scalars):

    * ``ignore_1d=True`` (default, the reference code's ``--xignore biasbn``): zero.
    * ``ignore_1d=False``: under ``"filter"``, ``d_k = θ_k`` exactly as the reference code does
      ("keep directions for weights/bias that are only 1 per node"): each scalar is its own
      filter, so ``|d_ki| = |θ_ki|`` keeps the per-filter invariant; the sign is the weight's.
      This part is deterministic and shared by every filter-normalized direction, which makes
      two such directions correlated on these coordinates. Under ``"layer"`` the 1-D tensor is
      rescaled as a whole to ``||θ_k||`` (random, unlike the reference code which copies θ_k
      here too; both satisfy ``||d_k|| = ||θ_k||``); under ``"model"``/``"none"`` it is treated
      like any other tensor.

    Slices whose weights are zero get a zero direction; a zero direction slice stays zero.
    Non-floating tensors are always zero. Arithmetic is done in float64 and cast back to the
    direction's dtype.

    Args:
        direction: a :class:`Direction` or point with the same keys and shapes as ``weights``.
        weights: the point (or ``nn.Module``) the direction is normalized against.
        method: one of ``"filter"``, ``"layer"``, ``"model"``, ``"none"``.
        ignore_1d: zero the ``dim <= 1`` tensors.

    Returns:
        A new point (the input is not modified).

    Example:
        >>> import torch
        >>> w = {"weight": torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=torch.float64), "bias": torch.ones(2, dtype=torch.float64)}
        >>> d = {"weight": torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64), "bias": torch.ones(2, dtype=torch.float64)}
        >>> n = normalize(d, w, "filter")
        >>> n["weight"].norm(dim=1).tolist(), n["bias"].tolist()
        ([5.0, 1.0], [0.0, 0.0])
        >>> normalize(d, w, "filter", ignore_1d=False)["bias"].tolist()
        [1.0, 1.0]
    """
    _check_method(method)
    d = _vector(direction)
    w = _as_point(weights)
    params.check_compatible(w, d, "weights and direction")
    out: Point = {}
    covered: list[str] = []
    for k, dk in d.items():
        wk = w[k]
        if not (_is_float(dk) and _is_float(wk)):
            out[k] = torch.zeros_like(dk)
            continue
        if dk.dim() <= 1 and ignore_1d:
            out[k] = torch.zeros_like(dk)
            continue
        covered.append(k)
        d64 = dk.detach().to(torch.float64)
        w64 = wk.detach().to(device=dk.device, dtype=torch.float64)
        if method == "filter":
            if dk.dim() <= 1:
                r = w64.clone()
            else:
                d2 = d64.reshape(d64.shape[0], -1)
                w2 = w64.reshape(w64.shape[0], -1)
                factor = _safe_ratio(w2.norm(dim=1), d2.norm(dim=1))
                r = (d2 * factor[:, None]).reshape(d64.shape)
        elif method == "layer":
            r = d64 * _safe_ratio(w64.norm(), d64.norm())
        else:
            r = d64
        out[k] = r.to(dk.dtype)
    if method == "model" and covered:
        w_norm = math.sqrt(sum(float((w[k].detach().double() ** 2).sum()) for k in covered))
        d_norm = math.sqrt(sum(float((out[k].double() ** 2).sum()) for k in covered))
        s = w_norm / d_norm if d_norm > 0 else 0.0
        for k in covered:
            out[k] = (out[k].to(torch.float64) * s).to(out[k].dtype)
    return out


def random_direction(
    weights: PointLike,
    *,
    normalization: Normalization = "filter",
    ignore_1d: bool = True,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Direction:
    """A Gaussian random direction, normalized against ``weights`` (Li et al. 2018).

    Every tensor (ignored ones included, so a seed gives the same values on the tensors kept
    whatever ``ignore_1d`` is) is drawn from ``N(0, 1)`` in float64 on the CPU, in key order,
    then :func:`normalize` is applied and the result cast to the weights' dtype and device.

    Args:
        weights: the point (or ``nn.Module``, whose ``named_parameters`` are used) at which the
            landscape is centered.
        normalization: ``"filter"`` (default), ``"layer"``, ``"model"`` or ``"none"``; see
            :func:`normalize`.
        ignore_1d: zero biases and norm-layer affine tensors (``dim <= 1``).
        seed: builds a private ``torch.Generator``; the global RNG is never used.
        generator: a CPU generator to draw from instead (exclusive with ``seed``).

    Returns:
        A :class:`Direction` with ``meta`` = kind, normalization, ignore_1d, seed, norm.

    Example:
        >>> import torch
        >>> w = {"fc.weight": torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)}
        >>> d = random_direction(w, normalization="layer", seed=3)
        >>> round(d.norm(), 12) == round(float(w["fc.weight"].norm()), 12)
        True
    """
    _check_method(normalization)
    w = _as_point(weights)
    g, used_seed = _make_generator(seed, generator)
    raw = {k: torch.randn(v.shape, generator=g, dtype=torch.float64).to(v.device) for k, v in w.items()}
    # normalize the float64 draw in float64, then cast: exact even for low-precision weights
    vec64 = normalize(raw, w, normalization, ignore_1d)
    vec = {k: vec64[k].to(w[k].dtype) for k in w}
    meta = {
        "kind": "random",
        "distribution": "gaussian",
        "normalization": normalization,
        "ignore_1d": bool(ignore_1d),
        "seed": used_seed,
        "norm": params.norm(vec),
        "weights_norm": params.norm({k: v for k, v in w.items() if _is_float(v)}),
    }
    return Direction(vec, meta)


def orthogonalize(
    d2: VectorLike,
    d1: VectorLike,
    weights: PointLike | None = None,
    *,
    renormalize: bool | Normalization = False,
    ignore_1d: bool | None = None,
) -> Direction:
    """Gram-Schmidt: the component of ``d2`` orthogonal to ``d1``, optionally renormalized.

    The projection is taken on the flat vectors (all tensors together)::

        d2'  =  d2 - <d2, d1> / <d1, d1> * d1,      so  <d2', d1> = 0.

    Orthogonalizing breaks the per-filter norms of a filter-normalized ``d2``. Two choices:

    * ``renormalize=False`` (default): return ``d2'`` as is: exactly orthogonal to ``d1``
      (cosine 0 to rounding), filter norms no longer equal the weights'.
    * ``renormalize=True`` (re-apply ``d2``'s own ``meta["normalization"]``/``["ignore_1d"]``) or a
      method name: ``d2'' = normalize(d2', weights, method)``. Per-filter norms hold again but
      the angle moves slightly off 90°; it is measured and reported.

    ``meta`` of the result records ``cosine_before``, ``cosine`` and ``angle_deg`` (between the
    returned direction and ``d1``), and ``renormalized`` (the method or ``None``). For random
    Gaussian directions in ``D`` dimensions the angle before is already ``90° ± O(1/√D)``.

    Args:
        d2: the direction to orthogonalize (a :class:`Direction` or point).
        d1: the direction to orthogonalize against.
        weights: needed only when renormalizing.
        renormalize: ``False``, ``True`` or a normalization name (see :func:`normalize`).
        ignore_1d: the 1-D policy when renormalizing (default: ``d2.meta["ignore_1d"]``, else True).

    Example:
        >>> import torch
        >>> a = Direction({"w": torch.tensor([1.0, 0.0], dtype=torch.float64)})
        >>> b = Direction({"w": torch.tensor([1.0, 1.0], dtype=torch.float64)})
        >>> o = orthogonalize(b, a)
        >>> o.vector["w"].tolist(), round(o.meta["angle_deg"], 6)
        ([0.0, 1.0], 90.0)
    """
    v2, v1 = _vector(d2, "d2"), _vector(d1, "d1")
    params.check_compatible(v1, v2, "directions")
    n1 = params.dot(v1, v1)
    if n1 == 0:
        raise LosslabError("cannot orthogonalize against a zero direction")
    meta = _meta_of(d2)
    cos_before = params.cosine(v2, v1)
    c = params.dot(v2, v1) / n1
    out: Point = {}
    for k, t in v2.items():
        if _is_float(t):
            out[k] = (t.detach().to(torch.float64) - c * v1[k].detach().to(device=t.device, dtype=torch.float64)).to(t.dtype)
        else:
            out[k] = torch.zeros_like(t)
    method: str | None = None
    if renormalize is not False and renormalize is not None:
        if renormalize is True:
            method = meta.get("normalization")
            if method is None:
                raise LosslabError("renormalize=True needs d2.meta['normalization']; pass the method name instead")
        else:
            method = str(renormalize)
        _check_method(method)
        if weights is None:
            raise LosslabError("renormalizing needs the weights")
        ign = ignore_1d if ignore_1d is not None else bool(meta.get("ignore_1d", True))
        out = normalize(out, weights, method, ign)  # type: ignore[arg-type]
        meta["ignore_1d"] = ign
    if params.norm(out) == 0:
        raise LosslabError("d2 is parallel to d1: nothing is left after orthogonalization")
    cos_after = params.cosine(out, v1)
    meta.update(
        orthogonalized=True,
        renormalized=method,
        cosine_before=cos_before,
        cosine=cos_after,
        angle_deg=_angle_deg(cos_after),
        norm=params.norm(out),
    )
    if method is not None:
        meta["normalization"] = method
    return Direction(out, meta)


def random_plane(
    weights: PointLike,
    *,
    normalization: Normalization = "filter",
    ignore_1d: bool = True,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    orthogonalize: bool = False,
    renormalize: bool = True,
) -> tuple[Direction, Direction]:
    """Two independent random directions for a 2-D slice ``θ + α·dx + β·dy``.

    The two directions come from independent streams: a root seed (``seed``, or one drawn from
    ``generator``, or fresh entropy) is split with ``numpy.random.SeedSequence(root).spawn(2)``;
    each direction records its own seed in ``meta["seed"]`` (so
    ``random_direction(w, seed=dx.meta["seed"])`` reproduces ``dx``) and the root in
    ``meta["plane_seed"]``.

    Args:
        weights: point or ``nn.Module``.
        normalization, ignore_1d: see :func:`random_direction`.
        seed: non-negative root seed.
        generator: CPU generator to draw the root seed from (exclusive with ``seed``).
        orthogonalize: make ``dy`` orthogonal to ``dx`` with :func:`orthogonalize`.
        renormalize: when orthogonalizing, re-apply the normalization to ``dy`` (per-filter norms
            hold; the angle, reported in ``dy.meta["angle_deg"]``, is then ≈ but not exactly 90°).

    Returns:
        ``(dx, dy)``.
    """
    if seed is not None and generator is not None:
        raise LosslabError("pass either seed or generator, not both")
    if generator is not None:
        root = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    elif seed is not None:
        root = _check_seed(seed)
    else:
        root = int(torch.Generator().seed())
    sx, sy = _child_seeds(root, 2)
    dx = random_direction(weights, normalization=normalization, ignore_1d=ignore_1d, seed=sx)
    dy = random_direction(weights, normalization=normalization, ignore_1d=ignore_1d, seed=sy)
    dx.meta.update(plane_seed=root, axis="x")
    dy.meta.update(plane_seed=root, axis="y")
    if orthogonalize:
        dy = _orthogonalize(dy, dx, weights, renormalize=renormalize, ignore_1d=ignore_1d)
    else:
        cos = params.cosine(dx.vector, dy.vector) if dx.norm() > 0 and dy.norm() > 0 else float("nan")
        dy.meta.update(cosine=cos, angle_deg=_angle_deg(cos) if cos == cos else float("nan"))
    return dx, dy


_orthogonalize = orthogonalize

