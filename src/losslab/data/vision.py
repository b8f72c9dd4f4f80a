"""MNIST and CIFAR-10 from local files in torchvision's layout; nothing is ever downloaded.

No torchvision needed. Files expected under ``root``:

* MNIST: ``root/MNIST/raw/{train,t10k}-images-idx3-ubyte`` and ``...-labels-idx1-ubyte`` (each may be
  ``.gz``-compressed); ``root`` may also be the ``raw`` folder itself.
* CIFAR-10: ``root/cifar-10-batches-py/{data_batch_1..5,test_batch}`` (the Python pickles, read with a
  restricted unpickler that only reconstructs numpy arrays and plain containers) or
  ``root/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin``; ``root`` may also be either folder.

Pixels are scaled to ``[0, 1]`` (``float32``), shaped ``(N, C, H, W)``; labels are ``int64``.
"""
from __future__ import annotations

import codecs
import gzip
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LosslabError
from ._base import Bundle, Split
from ._registry import make_split, register, source_meta

__all__ = ["mnist", "cifar10"]

_NO_DOWNLOAD = "losslab never downloads data; place the files there (e.g. with torchvision's download=True once)"


# --------------------------------------------------------------------------------------------- MNIST
def _find(dirs: list[Path], name: str) -> Path | None:
    for d in dirs:
        for cand in (d / name, d / f"{name}.gz"):
            if cand.is_file():
                return cand
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:
        raise LosslabError(f"cannot read {path}: {e}") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``uint8`` payload, as MNIST's) into an array; ``.gz`` files are decompressed."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise LosslabError(f"{path} is not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise LosslabError(f"{path}: only unsigned-byte IDX data is supported, type code {raw[2]:#04x}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise LosslabError(f"{path} is truncated (header)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != count:
        raise LosslabError(f"{path}: header says {count} bytes of data for shape {shape}, found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


@register("mnist")
def mnist(root: str | os.PathLike) -> Bundle:
    """MNIST from the IDX files torchvision keeps in ``root/MNIST/raw`` (plain or ``.gz``); no download.

    Args:
        root: the folder holding ``MNIST/raw`` (as torchvision's ``root``), or the ``raw`` folder itself.

    Returns:
        The ``Bundle``: ``x`` ``(N, 1, 28, 28)`` in ``[0, 1]``, 10 classes (60000/10000 for the full set).

    Raises:
        LosslabError: missing files (the message names the path), malformed files.

    Example:
        >>> from losslab.data import mnist
        >>> b = mnist("~/data")  # doctest: +SKIP
        >>> b.input_shape  # doctest: +SKIP
        (1, 28, 28)
    """
    root = Path(os.fspath(root)).expanduser()
    dirs = [root / "MNIST" / "raw", root]
    splits: list[Split] = []
    for prefix in ("train", "t10k"):
        arrays = []
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{prefix}-{kind}-ubyte"
            path = _find(dirs, name)
            if path is None:
                raise LosslabError(f"MNIST file not found: {dirs[0] / name}[.gz]; {_NO_DOWNLOAD}")
            arrays.append((path, read_idx(path)))
        (ipath, images), (lpath, labels) = arrays
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise LosslabError(f"{ipath} {images.shape} and {lpath} {labels.shape} do not form an image/label pair")
        if labels.size and labels.max() > 9:
            raise LosslabError(f"{lpath} has labels above 9")
        splits.append(make_split(images[:, None].astype(np.float32) / 255.0, labels.astype(np.int64)))
    h, w = splits[0].x.shape[2:]
    return Bundle("mnist", splits[0], splits[1], 10, (1, int(h), int(w)),
                  meta={"source": source_meta("mnist", 0, {"root": str(root)}), "pixel_range": [0.0, 1.0]})


# ------------------------------------------------------------------------------------------ CIFAR-10
_CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR_TEST = "test_batch"


def _numpy_globals() -> dict[tuple[str, str], Any]:
    a = np.zeros(1, dtype=np.uint8)
    reconstruct = a.__reduce__()[0]
    frombuffer = a.__reduce_ex__(5)[0]
    scalar = np.float64(0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocol <= 2 pickles store bytes
    }
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = scalar
        allowed[(f"{mod}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; any other global is refused."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        obj = self._allowed.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return obj


def _get(d: dict, key: str) -> Any:
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    raise KeyError(key)


def _read_cifar_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            d = _RestrictedUnpickler(io.BytesIO(fh.read()), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise LosslabError(f"{path}: not a plain CIFAR-10 batch ({e})") from None
    except (OSError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise LosslabError(f"{path}: cannot read a CIFAR-10 batch ({type(e).__name__}: {e})") from None
    try:
        if not isinstance(d, dict):
            raise TypeError(f"expected a dict, got {type(d).__name__}")
        data = np.asarray(_get(d, "data"))
        labels = np.asarray(_get(d, "labels"))
        if data.dtype != np.uint8:
            raise TypeError(f"data dtype {data.dtype}, expected uint8")
        data = data.reshape(len(data), 3, 32, 32)
    except (KeyError, TypeError, ValueError) as e:
        raise LosslabError(f"{path}: not a CIFAR-10 batch ({e})") from None
    return data, labels


def _read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = _read_bytes(path)
    rec = 1 + 3 * 32 * 32
    if len(raw) % rec:
        raise LosslabError(f"{path}: size {len(raw)} is not a multiple of a CIFAR-10 record ({rec} bytes)")
    arr = np.frombuffer(raw, dtype=np.uint8).reshape(-1, rec)
    return arr[:, 1:].reshape(-1, 3, 32, 32), arr[:, 0]


@register("cifar10")
def cifar10(root: str | os.PathLike) -> Bundle:
    """CIFAR-10 from torchvision's ``cifar-10-batches-py`` (or the binary ``cifar-10-batches-bin``).

    The Python batches are unpickled with a restricted unpickler (numpy arrays and plain containers
    only: a file naming any other class is refused). Nothing is downloaded.

    Args:
        root: the folder holding ``cifar-10-batches-py`` or ``cifar-10-batches-bin``, or one of them.

    Returns:
        The ``Bundle``: ``x`` ``(N, 3, 32, 32)`` in ``[0, 1]``, 10 classes (50000/10000 for the full set).

    Raises:
        LosslabError: missing files (the message names the path), malformed or unsafe files.

    Example:
        >>> from losslab.data import cifar10
        >>> cifar10("~/data").input_shape  # doctest: +SKIP
        (3, 32, 32)
    """
    root = Path(os.fspath(root)).expanduser()
    layouts = []
    for d in (root / "cifar-10-batches-py", root):
        layouts.append((d, "py", [d / n for n in [*_CIFAR_BATCHES, _CIFAR_TEST]]))
    for d in (root / "cifar-10-batches-bin", root):
        layouts.append((d, "bin", [d / f"{n}.bin" for n in [*_CIFAR_BATCHES, _CIFAR_TEST]]))
    chosen = next(((d, fmt, files) for d, fmt, files in layouts if all(f.is_file() for f in files)), None)
    if chosen is None:
        missing = next(f for f in layouts[0][2] if not f.is_file())
        raise LosslabError(
            f"CIFAR-10 files not found: {missing} (nor {root / 'cifar-10-batches-bin'}/*.bin); {_NO_DOWNLOAD}"
        )
    folder, fmt, files = chosen
    reader = _read_cifar_pickle if fmt == "py" else _read_cifar_bin
    parts = [reader(f) for f in files]
    splits = []
    for group in (parts[:-1], parts[-1:]):
        x = np.concatenate([p[0] for p in group])
        y = np.concatenate([np.asarray(p[1]).reshape(-1) for p in group])
        if len(x) != len(y):
            raise LosslabError(f"CIFAR-10 batches in {folder} have {len(x)} images but {len(y)} labels")
        if y.size and (y.min() < 0 or y.max() > 9):
            raise LosslabError(f"CIFAR-10 labels in {folder} outside 0..9")
        splits.append(make_split(x.astype(np.float32) / 255.0, y.astype(np.int64)))
    return Bundle("cifar10", splits[0], splits[1], 10, (3, 32, 32),
                  meta={"source": source_meta("cifar10", 0, {"root": str(root)}), "format": fmt,
                        "pixel_range": [0.0, 1.0]})
