"""The results layer: one JSON conversion, one array file format, one hash, one progress bar, one
``Result`` contract.

Every saved result in losslab goes through these few functions:

* :func:`jsonable` -- a JSON-safe copy of metadata (options keep the differences callers rely on:
  NaN/inf kept or nulled, large arrays summarised, unknown objects stringified, kept or refused).
* :func:`save_arrays` / :func:`load_arrays` -- ``<path>.npz`` (no pickles) plus a ``<path>.json``
  sidecar naming the format, written atomically through :mod:`losslab._io`.
* :func:`canonical_json` / :func:`digest` -- the canonical-JSON + sha256 primitive behind every
  hash (run names, result keys, cache stems); :class:`Fingerprint` is its streaming form for
  tensors; :func:`seal` / :func:`check_seal` put a content hash into a saved JSON document and
  check it on reading, so that a changed byte is detected (:func:`load_arrays` checks both files).
* :func:`progress_bar` -- a tqdm bar on a terminal, nothing otherwise.
* :class:`Result` -- the contract of a result type: ``save(path)`` and ``classmethod load(path)``.
  Dataclass results inherit a generic implementation (arrays and tensors to the npz, everything
  else to the JSON sidecar); types with an established file format override both.

No heavy imports at module level besides numpy (torch and tqdm load lazily), so every layer can use it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Mapping

import numpy as np

from ._io import atomic_savez, atomic_write_json, atomic_write_text

__all__ = [
    "jsonable", "result_paths", "save_arrays", "load_arrays", "canonical_json", "digest", "Fingerprint",
    "progress_bar", "Result", "RESULT_FORMAT_PREFIX", "seal", "check_seal", "SEAL_KEY", "read_sealed_json", "read_npz",
]

# ------------------------------------------------------------------------------------------- JSON


def jsonable(obj: Any, *, keep_nonfinite: bool = False, max_array_size: int | None = None,
             unknown: Literal["str", "raise", "keep"] = "str") -> Any:
    """A JSON-safe copy of metadata: the one conversion every saved result uses.

    Mappings (keys to ``str``), lists/tuples, numpy and torch scalars and arrays, paths, dtypes,
    devices and dataclasses become plain JSON values.

    Args:
        obj: the value.
        keep_nonfinite: keep NaN/inf floats (Python's ``json`` writes and reads them as ``NaN``/
            ``Infinity``); by default they become ``None`` (strict JSON).
        max_array_size: arrays/tensors larger than this are replaced by ``{"array_shape": [...]}``
            (metadata should not carry bulk data); ``None``: no limit.
        unknown: what happens to a value with no JSON form. ``"str"`` (default): ``str(obj)``.
            ``"raise"``: exactly what a ``json.dumps``/``json.loads`` round trip gives (numpy values,
            tensors, paths and sets converted, NaN kept, dataclasses and other objects a
            :class:`TypeError`; ``keep_nonfinite``/``max_array_size`` are ignored). ``"keep"``: a
            light touch for loader arguments -- only paths, numpy scalars and containers are
            converted, anything else (arrays, NaN, objects) is returned as it is.
    """
    if unknown == "raise":
        return json.loads(json.dumps(obj, default=json_default))
    if unknown == "keep":
        return _light(obj)
    if unknown != "str":
        raise ValueError(f"unknown must be 'str', 'raise' or 'keep', got {unknown!r}")

    def conv(o: Any) -> Any:
        if isinstance(o, dict) or (hasattr(o, "items") and hasattr(o, "keys")):
            return {str(k): conv(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [conv(v) for v in o]
        if o is None or isinstance(o, str):
            return o
        if type(o).__module__ == "numpy" and hasattr(o, "item") and getattr(o, "ndim", 1) == 0:
            o = o.item()
        if isinstance(o, bool):
            return o
        if isinstance(o, int):
            return int(o)
        if isinstance(o, float):
            return o if keep_nonfinite or math.isfinite(o) else None
        if hasattr(o, "detach") and hasattr(o, "numel"):  # torch.Tensor
            if max_array_size is not None and o.numel() > max_array_size:
                return {"array_shape": list(o.shape)}
            return conv(o.detach().cpu().tolist())
        if hasattr(o, "tolist") and hasattr(o, "shape"):  # numpy.ndarray
            if max_array_size is not None and o.size > max_array_size:
                return {"array_shape": list(o.shape)}
            return conv(o.tolist())
        if isinstance(o, os.PathLike):
            return os.fspath(o)
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return conv(dataclasses.asdict(o))
        return str(o)

    return conv(obj)


def _light(value: Any) -> Any:
    """``unknown="keep"``: paths to strings, numpy scalars to Python, containers recursed."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_light(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _light(v) for k, v in value.items()}
    return value


def json_default(obj: Any) -> Any:
    """A ``json.dumps`` default: numpy scalars and arrays, tensors, paths and sets (sorted); anything
    else raises ``TypeError`` (what ``jsonable(unknown="raise")`` and the experiments' config keys use)."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "tolist"):  # torch tensors
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


# ------------------------------------------------------------------------------------------ arrays


def result_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(npz, json)`` for ``path`` given with or without a ``.npz``/``.json`` suffix."""
    p = Path(path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".npz"), p.with_name(p.name + ".json")


def save_arrays(path: str | os.PathLike, fmt: str, arrays: Mapping[str, Any], desc: Mapping[str, Any], *,
                keep_nonfinite: bool = False, format_version: int = 1) -> Path:
    """Write ``<path>.npz`` (no pickles) and ``<path>.json`` (``format``, ``format_version``, ``arrays``, ``desc``).

    Both files are written atomically. ``desc`` goes through :func:`jsonable` (NaN/inf to ``null``
    unless ``keep_nonfinite``). Returns the npz path.
    """
    npz, js = result_paths(path)
    atomic_savez(npz, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_json(js, seal({"format": fmt, "format_version": format_version, "arrays": sorted(arrays),
                                **jsonable(desc, keep_nonfinite=keep_nonfinite)}))
    return npz


def load_arrays(path: str | os.PathLike, fmt: str, *, what: str | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read what :func:`save_arrays` (or a result's own ``save`` in the same layout) wrote: ``(arrays, sidecar)``.

    Args:
        what: names the result in errors (``"no saved <what> at ..."``, ``"... is not a losslab <what>"``);
            by default it is ``result`` / ``a <fmt> result``.

    Raises:
        LosslabError: a file is missing, or the sidecar names another format.
        DamagedFile: a file is truncated or changed (the sidecar's content hash, the npz's CRC-32s).
    """
    from .errors import DamagedFile, LosslabError

    npz, js = result_paths(path)
    if not npz.exists() or not js.exists():
        raise LosslabError(f"no saved {what or 'result'} at {npz} / {js}")
    desc = read_sealed_json(js)
    if not isinstance(desc, dict) or desc.get("format") != fmt:
        kind = f"a losslab {what}" if what else f"a {fmt} result"
        got = desc.get("format") if isinstance(desc, dict) else type(desc).__name__
        raise LosslabError(f"{js} is not {kind} (format={got!r})")
    arrays = read_npz(npz)
    missing = sorted(set(desc.get("arrays", [])) - set(arrays)) if isinstance(desc.get("arrays"), list) else []
    if missing:
        raise DamagedFile(npz, f"arrays {missing} listed in {js.name} are missing")
    return arrays, desc


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (no pickles), read in full so that each member's zip CRC-32 is
    checked: a truncated or changed file is a one-line :class:`~losslab.errors.DamagedFile` naming it."""
    import errno

    from .errors import DamagedFile

    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:  # fh closed even when np.load fails
            return {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - a damaged zip or npy header raises many kinds of errors
        if isinstance(exc, OSError) and exc.errno in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR):
            raise  # unreadable (missing, permissions): not damage
        msg = (str(exc).strip().splitlines() or ["truncated"])[0][:160]
        raise DamagedFile(path, f"{type(exc).__name__}: {msg}") from None


# ------------------------------------------------------------------------------------------ hashes


def canonical_json(obj: Any, *, compact: bool = True, default: Callable[[Any], Any] | None = None) -> str:
    """The canonical JSON of ``obj``: sorted keys; ``compact`` drops the spaces after ``,`` and ``:``.

    ``default`` converts values ``json`` cannot (``str`` for settings that may hold any object).
    """
    seps = (",", ":") if compact else None
    return json.dumps(obj, sort_keys=True, separators=seps, default=default)


def digest(obj: Any, length: int | None = None, *, compact: bool = True,
           default: Callable[[Any], Any] | None = None) -> str:
    """sha256 hex digest of :func:`canonical_json` of ``obj`` (its first ``length`` digits if given).

    The one hash primitive of losslab: run names (:func:`losslab.config.config_hash`), result
    directories (``cli._common.settings_hash``), experiment keys (``experiments._base.result_key``)
    and Hessian cache stems all use it.

    Example:
        >>> digest({"b": 1, "a": [1, 2]}, 12)
        '94a786c3662b'
    """
    h = hashlib.sha256(canonical_json(obj, compact=compact, default=default).encode()).hexdigest()
    return h if length is None else h[:length]


SEAL_KEY = "sha256"
"""The key under which :func:`seal` stores a JSON document's content hash."""


def _plain(obj: Any) -> Any:
    """``obj`` as it reads back from a JSON file written by :mod:`losslab._io` (the form that is hashed)."""
    from ._io import _json_default

    return json.loads(json.dumps(obj, default=_json_default))


def seal(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with its content hash added under ``"sha256"`` (see :func:`check_seal`).

    The hash is :func:`digest` of the document without that key, taken on the JSON form of the
    values, so that it survives the write and read of the file unchanged; any change of a value
    (a truncated file, a flipped byte in a number) gives another hash.

    Example:
        >>> d = seal({"a": 1, "b": [0.5, None]})
        >>> check_seal(d, "x.json")
        >>> check_seal({**d, "a": 2}, "x.json")
        Traceback (most recent call last):
        ...
        losslab.errors.DamagedFile: x.json is damaged (its content hash does not match); delete it or rerun with --force to recompute
    """
    body = _plain({k: v for k, v in doc.items() if k != SEAL_KEY})
    return {**body, SEAL_KEY: digest(body)}


def check_seal(doc: Any, path: str | os.PathLike) -> None:
    """Raise a one-line :class:`~losslab.errors.DamagedFile` naming ``path`` when the sealed JSON
    document ``doc`` read from it does not match its hash; documents saved without one pass."""
    from .errors import DamagedFile

    if not isinstance(doc, dict) or SEAL_KEY not in doc:
        return
    body = {k: v for k, v in doc.items() if k != SEAL_KEY}
    try:
        ok = doc[SEAL_KEY] == digest(body)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DamagedFile(path, "its content hash does not match")


def read_sealed_json(path: str | os.PathLike) -> Any:
    """:func:`losslab._io.read_json` and :func:`check_seal`: a damaged file is a one-line error naming it."""
    from ._io import read_json

    doc = read_json(path)
    check_seal(doc, path)
    return doc


class Fingerprint:
    """A streaming sha256 over text and tensors: :func:`digest`'s form for data too big for JSON.

    ``text(s)`` adds ``s`` (UTF-8); ``tensor(tag, t)`` adds ``|tag:shape:dtype|`` and the raw bytes.
    """

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def text(self, s: str) -> "Fingerprint":
        """Add the UTF-8 bytes of ``s``."""
        self._h.update(s.encode())
        return self

    def tensor(self, tag: str, t: Any) -> "Fingerprint":
        """Add ``|tag:shape:dtype|`` and the bytes of the (detached, contiguous, CPU) tensor ``t``."""
        import torch

        t = t.detach().contiguous().cpu()
        self._h.update(f"|{tag}:{tuple(t.shape)}:{t.dtype}|".encode())
        self._h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return self

    def hexdigest(self, length: int | None = None) -> str:
        """The hex digest so far (its first ``length`` digits if given)."""
        h = self._h.hexdigest()
        return h if length is None else h[:length]


# ---------------------------------------------------------------------------------------- progress


def progress_bar(total: int, initial: int = 0, *, progress: bool | None, desc: str, unit: str = "it",
                 always_if_true: bool = False) -> Any:
    """A tqdm bar on stderr when it is a terminal, else ``None`` (callers skip updates on ``None``).

    Args:
        progress: falsy (``False``/``None``): no bar -- except that with ``always_if_true`` ``None``
            means "only on a terminal" and ``True`` means "always".
        always_if_true: the subspace convention (``None`` auto, ``True`` forced, ``False`` never);
            without it a truthy ``progress`` still shows a bar only on a terminal.
    """
    if always_if_true:
        if progress is False:
            return None
        if progress is None and not _stderr_is_tty():
            return None
    elif not progress or not _stderr_is_tty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False)


def _stderr_is_tty() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


# ------------------------------------------------------------------------------------------ Result

RESULT_FORMAT_PREFIX = "losslab.result."


class Result:
    """The contract of a losslab result: ``save(path) -> Path`` and ``classmethod load(path)``.

    Mix it into a dataclass to get a generic, lossless implementation: every field is written to
    ``<path>.json`` (format ``losslab.result.<ClassName>``), numpy arrays and tensors (with their
    dtype and shape) going to ``<path>.npz``. Nested dataclasses, dicts with any keys, tuples, sets,
    numpy scalars and NaN/inf survive the round trip exactly. Result types with an established file
    format override both methods.
    """

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<path>.npz`` + ``<path>.json``; returns the npz path."""
        if not (dataclasses.is_dataclass(self) and not isinstance(self, type)):
            raise TypeError(f"{type(self).__name__} must be a dataclass to use the generic Result.save")
        arrays: dict[str, np.ndarray] = {}
        tree = {f.name: _encode(getattr(self, f.name), arrays) for f in dataclasses.fields(self) if f.init}
        npz, js = result_paths(path)
        atomic_savez(npz, **arrays)
        doc = {"format": RESULT_FORMAT_PREFIX + type(self).__name__, "format_version": 1, "arrays": sorted(arrays),
               "fields": tree}
        doc[SEAL_KEY] = digest(doc)
        atomic_write_text(js, json.dumps(doc, indent=2) + "\n")  # not sorted: dict order is part of the value
        return npz

    @classmethod
    def load(cls, path: str | os.PathLike) -> Any:
        """Read what :meth:`save` wrote (a :class:`~losslab.errors.LosslabError` if absent or another type's)."""
        arrays, desc = load_arrays(path, RESULT_FORMAT_PREFIX + cls.__name__)
        return cls(**{k: _decode(v, arrays) for k, v in desc["fields"].items()})


@dataclasses.dataclass(frozen=True)
class ArraysFormat(Result):
    """A :class:`Result` in an established file format (named ``_FORMAT``): its positional fields are
    arrays, written to ``<path>.npz``; its keyword-only dict fields (``meta``, and ``summary`` in
    :class:`SummaryArraysFormat`) go to ``<path>.json``.
    """

    meta: dict[str, Any] = dataclasses.field(default_factory=dict, kw_only=True)

    _FORMAT: ClassVar[str] = ""

    @classmethod
    def _fields(cls) -> tuple[list[str], list[str]]:
        """The names of the array fields and of the (keyword-only) description fields."""
        fields = [f for f in dataclasses.fields(cls) if f.init]
        return [f.name for f in fields if not f.kw_only], [f.name for f in fields if f.kw_only]

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<path>.npz`` (arrays) and ``<path>.json`` (summary, meta); returns the npz path."""
        arrays, desc = self._fields()
        return save_arrays(path, self._FORMAT, {k: getattr(self, k) for k in arrays},
                           {k: getattr(self, k) for k in sorted(desc, reverse=True)})  # summary, then meta

    @classmethod
    def load(cls, path: str | os.PathLike) -> Any:
        """Read what :meth:`save` wrote."""
        arrays, desc = load_arrays(path, cls._FORMAT)
        names, kw_names = cls._fields()
        return cls(**{k: arrays[k] for k in names}, **{k: cls._read(k, desc.get(k, {})) for k in kw_names})

    @classmethod
    def _read(cls, name: str, value: dict[str, Any]) -> dict[str, Any]:
        return value


@dataclasses.dataclass(frozen=True)
class SummaryArraysFormat(ArraysFormat):
    """An :class:`ArraysFormat` with a ``summary`` dict; with ``_SUMMARY_NAN`` a summary value saved as
    null (NaN, inf) reads back as NaN."""

    summary: dict[str, Any] = dataclasses.field(default_factory=dict, kw_only=True)

    _SUMMARY_NAN: ClassVar[bool] = True

    @classmethod
    def _read(cls, name: str, value: dict[str, Any]) -> dict[str, Any]:
        if name == "summary" and cls._SUMMARY_NAN:
            return {k: (float("nan") if v is None else v) for k, v in value.items()}
        return value


def _encode(o: Any, arrays: dict[str, np.ndarray]) -> Any:
    """A JSON tree for ``o``; arrays and tensors go to ``arrays`` under generated keys."""
    if o is None or isinstance(o, (bool, str)):
        return o
    if isinstance(o, int) and type(o) is int:
        return o
    if isinstance(o, float) and type(o) is float:
        return o if math.isfinite(o) else {"__float__": repr(o)}
    if isinstance(o, np.generic):
        return {"__np__": o.dtype.str, "value": _encode(o.item(), arrays)}
    if isinstance(o, np.ndarray):
        if o.dtype == object:
            raise TypeError("object arrays cannot be saved")
        key = f"a{len(arrays)}"
        arrays[key] = o
        return {"__ndarray__": key}
    if type(o).__module__.startswith("torch") and hasattr(o, "detach"):
        import torch

        t = o.detach().cpu()
        key = f"a{len(arrays)}"
        arrays[key] = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
        return {"__tensor__": key, "dtype": str(t.dtype).removeprefix("torch.")}
    if isinstance(o, Path):
        return {"__path__": str(o)}
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return {"__dataclass__": f"{type(o).__module__}:{type(o).__qualname__}",
                "fields": {f.name: _encode(getattr(o, f.name), arrays) for f in dataclasses.fields(o) if f.init}}
    if isinstance(o, Mapping):
        if all(type(k) is str for k in o) and not any(k.startswith("__") for k in o):
            return {k: _encode(v, arrays) for k, v in o.items()}
        return {"__items__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in o.items()]}
    if isinstance(o, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in o]}
    if isinstance(o, list):
        return [_encode(v, arrays) for v in o]
    if isinstance(o, (set, frozenset)):
        tag = "__frozenset__" if isinstance(o, frozenset) else "__set__"
        return {tag: [_encode(v, arrays) for v in sorted(o, key=repr)]}
    raise TypeError(f"cannot save a {type(o).__name__} in a result")


def _decode(o: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """Inverse of :func:`_encode`."""
    if isinstance(o, list):
        return [_decode(v, arrays) for v in o]
    if not isinstance(o, dict):
        return o
    if "__float__" in o:
        return float(o["__float__"])
    if "__np__" in o:
        return np.dtype(o["__np__"]).type(_decode(o["value"], arrays))
    if "__ndarray__" in o:
        return arrays[o["__ndarray__"]]
    if "__tensor__" in o:
        import torch

        return torch.from_numpy(np.array(arrays[o["__tensor__"]])).to(getattr(torch, o["dtype"]))
    if "__path__" in o:
        return Path(o["__path__"])
    if "__dataclass__" in o:
        module, _, qualname = o["__dataclass__"].partition(":")
        if not module.startswith("losslab."):
            raise TypeError(f"refusing to rebuild {o['__dataclass__']} (not a losslab type)")
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        return cls(**{k: _decode(v, arrays) for k, v in o["fields"].items()})
    if "__items__" in o:
        return {_decode(k, arrays): _decode(v, arrays) for k, v in o["__items__"]}
    if "__tuple__" in o:
        return tuple(_decode(v, arrays) for v in o["__tuple__"])
    if "__frozenset__" in o:
        return frozenset(_decode(v, arrays) for v in o["__frozenset__"])
    if "__set__" in o:
        return {_decode(v, arrays) for v in o["__set__"]}
    return {k: _decode(v, arrays) for k, v in o.items()}
