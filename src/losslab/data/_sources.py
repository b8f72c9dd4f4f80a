"""One way in for data: a built-in name, a file, an image folder, or ``pkg.module:function``.

:func:`resolve` is what ``--data`` on the command line calls:

* a registered name (``digits``, ``mnist1d``, ... see :func:`~losslab.data.available`), with its kwargs;
* an ``.npz`` file, or a ``.pt``/``.safetensors`` file of tensors, holding ``x`` and ``y`` and optionally
  ``x_test`` and ``y_test`` (read safely: ``allow_pickle=False`` / ``weights_only=True``);
* a folder of images, one sub-folder per class (torchvision's ``ImageFolder``; needs torchvision); with
  ``train/`` and ``test/`` (or ``val/``) sub-folders, those are the two splits;
* ``pkg.module:function`` returning a :class:`~losslab.data.Bundle`, a ``Dataset``, a ``DataLoader``,
  an ``(x, y)`` or ``(x, y, x_test, y_test)`` tuple, a ``(train_dataset, test_dataset)`` pair, or a dict
  with the keys above. ``pkg.module`` is found from the working directory as ``python -m`` finds it.

Keyword arguments: for a function, they are passed to it (except the ones below); for files, folders and
functions alike ``num_classes``, ``x_dtype`` (``"keep"`` keeps integer token ids), ``name`` and the
normalization ``mean``/``std`` (a number or one per channel, applied to every input as
``(x - mean) / std``) are understood.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from ..errors import LosslabError
from ._base import Bundle, Split

__all__ = ["resolve", "FILE_KEYS"]

#: The arrays a data file holds: ``x`` and ``y`` are required, the test split is optional.
FILE_KEYS = ("x", "y", "x_test", "y_test")
_COMMON = ("num_classes", "x_dtype", "name", "mean", "std")


def _x_dtype(value: Any) -> Any:
    if value in (None, "keep"):
        return None
    if value in ("auto",):
        return "auto"
    if isinstance(value, torch.dtype):
        return value
    dt = getattr(torch, str(value), None)
    if not isinstance(dt, torch.dtype):
        raise LosslabError(f"x_dtype must be 'auto', 'keep' or a torch dtype name like float64, got {value!r}")
    return dt


def _normalize(b: Bundle, mean: Any, std: Any) -> Bundle:
    if mean is None and std is None:
        return b
    x = b.train.x
    if not x.is_floating_point():
        raise LosslabError("mean/std normalization needs floating-point inputs, got integer inputs")

    def stat(v: Any, default: float, what: str) -> Tensor:
        t = torch.as_tensor(default if v is None else v, dtype=x.dtype)
        if t.ndim > 1:
            raise LosslabError(f"{what} must be a number or one number per channel, got shape {tuple(t.shape)}")
        if t.ndim == 1:
            if x.ndim < 2 or x.shape[1] != t.numel():
                raise LosslabError(f"{what} has {t.numel()} values but inputs have {x.shape[1] if x.ndim > 1 else 0} "
                                   "channels (dimension 1)")
            t = t.view(1, -1, *([1] * (x.ndim - 2)))
        return t

    m, s = stat(mean, 0.0, "mean"), stat(std, 1.0, "std")
    if bool((s == 0).any()):
        raise LosslabError("std must be non-zero")

    def norm(split: Split) -> Split:
        return replace(split, x=(split.x - m) / s)

    meta = {**b.meta, "normalization": {"mean": torch.as_tensor(mean if mean is not None else 0.0).tolist(),
                                        "std": torch.as_tensor(std if std is not None else 1.0).tolist()}}
    return replace(b, train=norm(b.train), test=norm(b.test), meta=meta)


def _from_mapping(obj: Mapping[str, Any], where: str, **kw: Any) -> Bundle:
    from .adapters import from_tensors

    missing = [k for k in ("x", "y") if k not in obj]
    if missing:
        raise LosslabError(f"{where} has no {' and '.join(repr(k) for k in missing)} (found keys "
                           f"{sorted(map(str, obj))}; expected {', '.join(FILE_KEYS)})")
    if ("x_test" in obj) != ("y_test" in obj):
        raise LosslabError(f"{where} has only one of 'x_test' and 'y_test'")
    extra = {k: obj[k] for k in ("x_test", "y_test") if k in obj}
    return from_tensors(obj["x"], obj["y"], **extra, **kw)


def _read_file(path: Path) -> Mapping[str, Any]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if suffix == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ImportError:
                raise LosslabError(f"{path} is a safetensors file: install the safetensors package") from None
            return load_file(os.fspath(path), device="cpu")
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except LosslabError:
        raise
    except Exception as exc:  # noqa: BLE001 - damaged, truncated, pickled objects: all "cannot read"
        first = (str(exc).strip().splitlines() or ["empty or truncated file"])[0][:200]
        raise LosslabError(f"cannot read data file {path}: {type(exc).__name__}: {first}") from exc
    if not isinstance(obj, Mapping):
        raise LosslabError(f"data file {path} holds a {type(obj).__name__}; expected a dict of tensors with keys "
                           f"{', '.join(FILE_KEYS)}")
    return obj


def _image_folder(path: Path, **kw: Any) -> Bundle:
    try:
        from torchvision.datasets import ImageFolder
        from torchvision.transforms import ToTensor
    except ImportError:
        raise LosslabError(f"{path} is a folder: reading it as an image folder needs torchvision "
                           "(pip install 'losslab[vision]'), or save the arrays to an .npz file") from None
    from .adapters import from_dataset

    subs = {p.name for p in path.iterdir() if p.is_dir()}
    test_name = "test" if "test" in subs else "val" if "val" in subs else None
    try:
        if "train" in subs and test_name:
            train = ImageFolder(os.fspath(path / "train"), transform=ToTensor())
            test = ImageFolder(os.fspath(path / test_name), transform=ToTensor())
            if train.classes != test.classes:
                raise LosslabError(f"{path}: train classes {train.classes} differ from {test_name} classes "
                                   f"{test.classes}")
        else:
            train, test = ImageFolder(os.fspath(path), transform=ToTensor()), None
    except (FileNotFoundError, RuntimeError) as exc:
        raise LosslabError(f"cannot read image folder {path}: {str(exc).splitlines()[0][:200]}") from None
    return from_dataset(train, test, **kw)


def _from_object(obj: Any, spec: str, **kw: Any) -> Bundle:
    from torch.utils.data import DataLoader, Dataset

    from .adapters import from_dataset, from_loader, from_tensors

    if isinstance(obj, Bundle):
        return obj
    if isinstance(obj, Mapping):
        return _from_mapping(obj, f"the dict returned by {spec}", **kw)
    if isinstance(obj, DataLoader):
        return from_loader(obj, **kw)
    if isinstance(obj, Dataset):
        return from_dataset(obj, **kw)
    if isinstance(obj, (tuple, list)):
        if len(obj) == 2 and all(isinstance(o, Dataset) for o in obj):
            return from_dataset(obj[0], obj[1], **kw)
        if len(obj) == 2 and all(isinstance(o, DataLoader) for o in obj):
            return from_loader(obj[0], obj[1], **kw)
        if len(obj) in (2, 4):
            names = FILE_KEYS[:len(obj)]
            return from_tensors(**dict(zip(names, obj)), **kw)
    raise LosslabError(f"data function {spec} returned {type(obj).__name__}; expected a Bundle, a Dataset, a "
                       "DataLoader, (x, y), (x, y, x_test, y_test), (train_dataset, test_dataset) or a dict with "
                       f"keys {', '.join(FILE_KEYS)}")


def resolve(spec: str, **kwargs: Any) -> Bundle:
    """Load the data named by ``spec``: a built-in name, a file, an image folder or ``pkg.module:function``.

    Args:
        spec: see the module docstring.
        **kwargs: the dataset's or function's arguments; ``num_classes``, ``x_dtype`` (``"auto"``, ``"keep"``
            or a dtype name), ``name``, ``mean``/``std`` are understood for files, folders and functions.

    Returns:
        The :class:`~losslab.data.Bundle`; its ``meta["source"]`` names the spec.

    Raises:
        LosslabError: one line naming the spec and the problem (unknown name, unreadable file, missing
            keys, a function that raised or returned something else).

    Example:
        >>> import numpy as np, tempfile, os
        >>> from losslab.data import resolve
        >>> d = tempfile.mkdtemp(); f = os.path.join(d, "toy.npz")
        >>> np.savez(f, x=np.ones((4, 3), np.float32), y=np.array([0, 1, 1, 0]))
        >>> b = resolve(f)
        >>> (len(b.train), b.num_classes, b.input_shape)
        (4, 2, (3,))
    """
    from ._registry import available, load

    if not isinstance(spec, str) or not spec:
        raise LosslabError(f"data must be a name, a file, a folder or pkg.module:function, got {spec!r}")
    if spec in available():
        return load(spec, **kwargs)
    common = {k: kwargs.pop(k) for k in _COMMON if k in kwargs}
    mean, std = common.pop("mean", None), common.pop("std", None)
    if "x_dtype" in common:
        common["x_dtype"] = _x_dtype(common["x_dtype"])
    path = Path(spec)
    if path.exists():
        if kwargs:
            raise LosslabError(f"unknown arguments for data {spec}: {sorted(kwargs)} (files and folders take "
                               f"{', '.join(_COMMON)})")
        common.setdefault("name", path.stem if path.is_file() else path.name)
        if path.is_dir():
            b = _image_folder(path, **common)
        else:
            b = _from_mapping(_read_file(path), f"data file {path}", **common)
        source = {"path": os.fspath(path.resolve())}
    elif ":" in spec and not spec.startswith((".", "/")):
        from .._imports import load_callable

        fn = load_callable(spec, "data function")
        try:
            obj = fn(**kwargs)
        except LosslabError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's code: name it and its error in one line
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise LosslabError(f"data function {spec} raised {type(exc).__name__}: {first}") from None
        common.setdefault("name", spec.split(":")[1])
        if isinstance(obj, Bundle) and common.keys() - {"name"}:
            raise LosslabError(f"data function {spec} returned a Bundle: {sorted(common.keys() - {'name'})} do not "
                               "apply to it")
        b = _from_object(obj, spec, **common)
        source = {"function": spec, "kwargs": {k: v for k, v in kwargs.items()}}
    else:
        known = ", ".join(available())
        raise LosslabError(f"unknown data {spec!r}: not a built-in dataset ({known}), not an existing file or "
                           "folder, and not pkg.module:function")
    b = _normalize(b, mean, std)
    return replace(b, meta={**b.meta, "source": {**b.meta.get("source", {}), **source}})
