"""Directions: the :class:`Direction` type, its npz + JSON files, and the helpers the other parts share."""
from __future__ import annotations

import json
import math
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Union

import numpy as np
import torch
from torch import Tensor, nn

from .. import params
from .._io import atomic_savez, atomic_write_json
from ..errors import DamagedFile, LosslabError
from ..results import read_npz, read_sealed_json, seal
from ..params import Point


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
    atomic_write_json(json_path, seal(header))  # with its content hash, checked on load
    return json_path


def _strict_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating, np.ndarray, Path)):
        return None
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _load_bundle(
    path: str | Path, kind: str, device: torch.device | str | None
) -> tuple[dict[str, Point], dict[str, np.ndarray], dict[str, Any]]:
    npz_path, json_path = _bundle_paths(path)
    header = read_sealed_json(json_path) if json_path.exists() else {}  # a damaged file: DamagedFile
    if header.get("format") == "losslab.DirectionRecipe":
        raise LosslabError(f"{json_path} is a direction recipe, not vectors: read it with "
                           "losslab.directions.load_direction(path, weights=...)")
    if not json_path.exists() or not npz_path.exists():
        raise LosslabError(f"no saved {kind} at {npz_path.with_suffix('')} (expected .npz and .json)")
    if header.get("format") != f"losslab.{kind}":
        raise LosslabError(f"{json_path} holds {header.get('format')!r}, not losslab.{kind}")
    if header.get("format_version", 0) > _FORMAT_VERSION:
        raise LosslabError(f"{json_path} has format_version {header['format_version']}, newer than this losslab")
    groups: dict[str, Point] = {}
    arrays: dict[str, np.ndarray] = {}
    z = read_npz(npz_path)  # every member read whole (CRC-32s checked): a damaged file is a DamagedFile
    listed = {e["member"] for es in header["tensors"].values() for e in es} | set(header["arrays"].values())
    missing = sorted(listed - set(z))
    if missing:
        raise DamagedFile(npz_path, f"members {missing[:3]} listed in {json_path.name} are missing")
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


