"""Directions in parameter space: random (filter-normalized), model-to-model, planes, PCA.

A :class:`Direction` is a point-shaped tensor dict (``{name: tensor}``, keyed like
``model.named_parameters()``) plus a JSON-able ``meta`` dict saying how it was made. Surfaces
evaluate ``L(θ* + α·d₁ + β·d₂)``; this module only produces the ``d``'s.

Definitions follow Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets"
(arXiv 1712.09913) and the public reference code ``tomgoldstein/loss-landscape``:

* **Filter normalization** (Li et al. eq. 1). For every tensor with ``dim > 1``, each slice
  along dimension 0 (a conv filter / output neuron) ``d_i`` of a Gaussian direction is rescaled
  to the norm of the same slice of the weights::

      d_i  <-  d_i / ||d_i|| * ||θ_i||

* Tensors with ``dim <= 1`` (biases, BatchNorm/LayerNorm affine, scalars) are set to zero by
  default (``ignore_1d=True``, the reference code's ``--xignore biasbn``). With
  ``ignore_1d=False`` see :func:`normalize` for the documented rule per method.
* Non-floating tensors (integer/bool/complex, e.g. ``num_batches_tracked`` when buffers are
  included) are always zero.

Random draws never touch the global RNG: each function builds its own ``torch.Generator``
from ``seed`` (or uses the ``generator`` passed), drawing float64 Gaussians on the CPU tensor
by tensor in key order, so a seed gives the same direction on any device and dtype. When
neither is given a fresh nondeterministic seed is drawn and recorded in ``meta["seed"]``.

Example:
    >>> import torch
    >>> from losslab import directions
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).double()
    >>> d = directions.random_direction(net, seed=0)
    >>> w = dict(net.named_parameters())
    >>> bool(torch.allclose(d.vector["0.weight"].norm(dim=1), w["0.weight"].norm(dim=1)))
    True
    >>> float(d.vector["0.bias"].abs().sum())   # 1-D tensors ignored by default
    0.0
    >>> dx, dy = directions.random_plane(net, seed=1, orthogonalize=True, renormalize=False)
    >>> abs(dy.meta["cosine"]) < 1e-12
    True
"""
from __future__ import annotations

import json
import math
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, NamedTuple, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from .results import Result
from . import params
from ._functional import model_then_data
from ._io import atomic_savez, atomic_write_json, read_json
from .errors import LosslabError
from .params import Point

__all__ = [
    "Direction",
    "PCAResult",
    "Plane",
    "NORMALIZATIONS",
    "normalize",
    "random_direction",
    "random_plane",
    "orthogonalize",
    "model_to_model",
    "plane_through",
    "pca_directions",
    "DIRECTION_KINDS",
    "BuiltDirections",
    "build",
    "hessian_directions",
]

Normalization = Literal["filter", "layer", "model", "none"]
NORMALIZATIONS: tuple[str, ...] = ("filter", "layer", "model", "none")

PointLike = Union[Mapping[str, Tensor], nn.Module]
VectorLike = Union["Direction", Mapping[str, Tensor]]

_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _as_point(x: PointLike | "Direction", what: str = "weights") -> Point:
    """A read-only view of ``x`` as a point: Modules give their (detached) named parameters."""
    if isinstance(x, Direction):
        return dict(x.vector)
    if isinstance(x, nn.Module):
        return {k: v.detach() for k, v in x.named_parameters()}
    if isinstance(x, Mapping):
        if not x:
            raise LosslabError(f"{what} is empty")
        for k, v in x.items():
            if not isinstance(v, Tensor):
                raise LosslabError(f"{what}[{k!r}] is a {type(v).__name__}, expected a torch.Tensor")
        return {k: (v.detach() if v.requires_grad else v) for k, v in x.items()}
    raise LosslabError(f"{what} must be a dict of tensors or an nn.Module, got {type(x).__name__}")


def _vector(x: VectorLike, what: str = "direction") -> Point:
    if isinstance(x, Direction):
        return dict(x.vector)
    return _as_point(x, what)


def _meta_of(x: VectorLike) -> dict[str, Any]:
    return dict(x.meta) if isinstance(x, Direction) else {}


def _check_method(method: str) -> None:
    if method not in NORMALIZATIONS:
        raise LosslabError(f"unknown normalization {method!r}; allowed: {', '.join(NORMALIZATIONS)}")


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**64:
        raise LosslabError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return int(seed)


def _make_generator(seed: int | None, generator: torch.Generator | None) -> tuple[torch.Generator, int | None]:
    """The generator to draw from and the seed to record (None when the caller's generator is used)."""
    if seed is not None and generator is not None:
        raise LosslabError("pass either seed or generator, not both")
    if generator is not None:
        if generator.device.type != "cpu":
            raise LosslabError("generator must be a CPU torch.Generator (draws are made on the CPU)")
        return generator, None
    g = torch.Generator()
    if seed is None:
        seed = int(g.seed())  # fresh OS entropy; the global RNG is not touched
    else:
        g.manual_seed(_check_seed(seed))
    return g, int(seed)


def _child_seeds(root: int, n: int) -> list[int]:
    """``n`` independent 63-bit seeds derived from ``root`` (``numpy.random.SeedSequence.spawn``)."""
    children = np.random.SeedSequence(_check_seed(root)).spawn(n)
    return [int(c.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)) for c in children]


def _is_float(t: Tensor) -> bool:
    """Real floating tensors take part in directions; integer, bool and complex ones are zero."""
    return t.is_floating_point()


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with 0 where ``den == 0``."""
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def _angle_deg(cos: float) -> float:
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


# --------------------------------------------------------------------------------------------
# save / load (shared by Direction and PCAResult)
# --------------------------------------------------------------------------------------------
def _bundle_paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    return p.parent / (p.name + ".npz"), p.parent / (p.name + ".json")


def _tensor_to_numpy(t: Tensor) -> tuple[np.ndarray, str]:
    t = t.detach().cpu().contiguous()
    dtype = str(t.dtype).removeprefix("torch.")
    try:
        return t.numpy(), dtype
    except TypeError:  # bfloat16, float8...: store the raw bits as a same-width integer
        ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
        return t.view(ints[t.element_size()]).numpy(), dtype


def _numpy_to_tensor(a: np.ndarray, dtype: str, device: torch.device | str | None) -> Tensor:
    target = getattr(torch, dtype, None)
    if not isinstance(target, torch.dtype):
        raise LosslabError(f"unknown stored dtype {dtype!r}")
    t = torch.from_numpy(np.array(a, copy=True))
    if t.dtype != target:
        t = t.view(target)
    return t.to(device) if device is not None else t


def _save_bundle(
    path: str | Path,
    kind: str,
    groups: Mapping[str, Mapping[str, Tensor]],
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any],
) -> Path:
    """Write ``<path>.npz`` (tensors and arrays) then ``<path>.json`` (index and meta), atomically."""
    npz_path, json_path = _bundle_paths(path)
    members: dict[str, np.ndarray] = {}
    index: dict[str, list[dict[str, str]]] = {}
    for group, tensors in groups.items():
        entries = []
        for key, t in tensors.items():
            member = f"{group}/{urllib.parse.quote(key, safe='')}"
            members[member], dtype = _tensor_to_numpy(t)
            entries.append({"key": key, "member": member, "dtype": dtype})
        index[group] = entries
    array_index = {}
    for name, a in arrays.items():
        member = f"arrays/{name}"
        members[member] = np.asarray(a)
        array_index[name] = member
    header = {
        "format": f"losslab.{kind}",
        "format_version": _FORMAT_VERSION,
        "tensors": index,
        "arrays": array_index,
        "meta": dict(meta),
    }
    try:
        json.dumps(header["meta"], default=_strict_default)
    except TypeError as e:
        raise LosslabError(f"{kind}.meta must be JSON-serializable: {e}") from None
    atomic_savez(npz_path, **members)
    atomic_write_json(json_path, header)
    return json_path


def _strict_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating, np.ndarray, Path)):
        return None
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _load_bundle(
    path: str | Path, kind: str, device: torch.device | str | None
) -> tuple[dict[str, Point], dict[str, np.ndarray], dict[str, Any]]:
    npz_path, json_path = _bundle_paths(path)
    if not json_path.exists() or not npz_path.exists():
        raise LosslabError(f"no saved {kind} at {npz_path.with_suffix('')} (expected .npz and .json)")
    header = read_json(json_path)
    if header.get("format") != f"losslab.{kind}":
        raise LosslabError(f"{json_path} holds {header.get('format')!r}, not losslab.{kind}")
    if header.get("format_version", 0) > _FORMAT_VERSION:
        raise LosslabError(f"{json_path} has format_version {header['format_version']}, newer than this losslab")
    groups: dict[str, Point] = {}
    arrays: dict[str, np.ndarray] = {}
    with np.load(npz_path, allow_pickle=False) as z:
        for group, entries in header["tensors"].items():
            groups[group] = {e["key"]: _numpy_to_tensor(z[e["member"]], e["dtype"], device) for e in entries}
        for name, member in header["arrays"].items():
            arrays[name] = np.array(z[member])
    return groups, arrays, header["meta"]


# --------------------------------------------------------------------------------------------
# Direction
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Direction:
    """A direction in parameter space: a point-shaped tensor dict plus a description.

    Attributes:
        vector: ``{name: tensor}`` shaped like the weights it was made for (same keys).
        meta: JSON-able description: ``kind`` ("random", "model_to_model", "plane", "pca"),
            ``normalization``, ``ignore_1d``, ``seed``, norms, angles, sources...

    ``save(path)`` writes ``path.npz`` (one array per tensor, member ``"vector/<key>"`` with the
    key percent-escaped, e.g. ``np.load("d.npz")["vector/0.weight"]``) and ``path.json`` (the
    key order, dtypes and ``meta``); both are plain numpy/JSON, readable without losslab, and
    written atomically. Dtypes numpy lacks (bfloat16...) are stored as their raw bits, so a
    round trip is bit-identical.

    Example:
        >>> import torch, tempfile, os
        >>> d = Direction({"w": torch.ones(2, 3)}, {"kind": "example"})
        >>> path = os.path.join(tempfile.mkdtemp(), "d")
        >>> _ = d.save(path)
        >>> e = Direction.load(path)
        >>> bool(torch.equal(e.vector["w"], d.vector["w"])), e.meta["kind"]
        (True, 'example')
    """

    vector: dict[str, Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.vector, Mapping) or not self.vector:
            raise LosslabError("Direction.vector must be a non-empty dict of tensors")
        for k, v in self.vector.items():
            if not isinstance(v, Tensor):
                raise LosslabError(f"Direction.vector[{k!r}] is a {type(v).__name__}, expected a torch.Tensor")
        object.__setattr__(self, "vector", dict(self.vector))
        object.__setattr__(self, "meta", dict(self.meta))

    def norm(self) -> float:
        """Euclidean norm over all tensors (float64 accumulation)."""
        return params.norm(self.vector)

    def keys(self) -> list[str]:
        return list(self.vector)

    def to(self, *args: Any, **kwargs: Any) -> "Direction":
        """``Tensor.to`` applied to every tensor (device/dtype); meta is kept."""
        return Direction(params.to(self.vector, *args, **kwargs), dict(self.meta))

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.npz`` and ``<path>.json`` (a ``.npz``/``.json`` suffix on ``path`` is dropped).

        Returns:
            The path of the JSON file.
        """
        return _save_bundle(path, "Direction", {"vector": self.vector}, {}, self.meta)

    @classmethod
    def load(cls, path: str | Path, *, device: torch.device | str | None = None) -> "Direction":
        """Read a direction written by :meth:`save` (tensors on CPU unless ``device`` is given)."""
        groups, _, meta = _load_bundle(path, "Direction", device)
        return cls(groups["vector"], meta)

    def __repr__(self) -> str:
        kind = self.meta.get("kind", "?")
        return f"Direction(kind={kind!r}, tensors={len(self.vector)}, numel={params.numel(self.vector)})"


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


# --------------------------------------------------------------------------------------------
# building the directions of a surface
# --------------------------------------------------------------------------------------------

#: The kinds of directions :func:`build` makes.
DIRECTION_KINDS: tuple[str, ...] = ("random", "pca", "to", "hessian")


@dataclass
class BuiltDirections:
    """What :func:`build` returns.

    Attributes:
        directions: ``dim`` directions (the x axis first).
        span: the default ``(xlo, xhi, ylo, yhi)`` plotting range for these directions.
        pca: the :class:`PCAResult` of the trajectory (``kind="pca"`` only, else None).
    """

    directions: list[Direction]
    span: tuple[float, float, float, float]
    pca: PCAResult | None = None

    def save(self, out: str | Path) -> None:
        """Write ``out/direction<i>`` for every direction and, for PCA, ``out/pca``."""
        out = Path(out)
        if self.pca is not None:
            self.pca.save(out / "pca")
        for i, d in enumerate(self.directions):
            d.save(out / f"direction{i}")


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

    Args:
        kind: one of :data:`DIRECTION_KINDS`.
        weights: the centre (a point or a model).
        dim: 1 or 2.
        normalization, ignore_1d, orthogonalize, seed: of random directions (``seed`` also seeds Lanczos).
        other: the endpoint of ``"to"``.
        trajectory: the points of ``"pca"``.
        model, data, loss: the Hessian's model, data and loss for ``"hessian"``.

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
    else:
        if model is None or loss is None or data is None:
            raise LosslabError("directions 'hessian' need model=, data= and loss=")
        dirs = hessian_directions(model, data, loss=loss, k=dim, seed=seed)
        r = 0.1 * params.norm(w)
        span = (-r, r, -r, r)
    return BuiltDirections(dirs, span, pca)


@model_then_data
def hessian_directions(model: nn.Module, data: Any, *, loss: Any, k: int = 2, seed: int = 0,
                       batch_size: int | None = 4096, tol: float = 1e-4) -> list[Direction]:
    """The top-``k`` Hessian eigenvectors at the model's parameters as unit :class:`Direction` s.

    Lanczos (:func:`~losslab.curvature.lanczos_eigs`, ``which="LA"``) on the full-data Hessian of
    ``loss`` over ``data`` (trainable parameters only); the meta records rank, eigenvalue,
    convergence and seed.
    """
    from .curvature.lanczos import lanczos_eigs
    from .curvature.operators import HessianOperator

    op = HessianOperator(model, data, loss=loss, batch_size=batch_size)
    res = lanczos_eigs(op, k=k, which="LA", seed=seed, tol=tol)
    out = []
    for i in range(k):
        vec = {name: v.float() for name, v in op.unflatten(res.eigenvectors[:, i]).items()}
        out.append(Direction(vec, {"kind": "hessian", "rank": i, "eigenvalue": float(res.eigenvalues[i]),
                                   "converged": bool(res.converged), "seed": seed}))
    return out
