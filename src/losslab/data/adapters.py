"""Adapters that turn user data into a :class:`~losslab.data.Bundle`: tensors, Datasets, DataLoaders.

Data are materialised in memory (losslab measurements index resident tensors). Integer labels mean
classification (``num_classes`` inferred as ``max label + 1`` unless given); floating targets mean
regression (``num_classes == 0``).

torchvision datasets work through :func:`from_dataset` without losslab depending on torchvision, e.g.
``from_dataset(torchvision.datasets.MNIST(root, train=True, download=False),
torchvision.datasets.MNIST(root, train=False, download=False))``: PIL images are converted like
``ToTensor`` (``HWC`` to ``CHW``, ``uint8 / 255``). losslab's own :func:`~losslab.data.mnist` and
:func:`~losslab.data.cifar10` read the same files without torchvision.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ..errors import LosslabError
from ._base import Bundle, Split

__all__ = ["from_tensors", "from_dataset", "from_loader"]


def _as_tensor(a: Any, what: str) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach()
    if isinstance(a, np.ndarray):
        if a.dtype == object:
            raise LosslabError(f"{what} is a numpy object array; pass numeric arrays")
        a = np.ascontiguousarray(a)
        return torch.from_numpy(a if a.flags.writeable else a.copy())
    try:
        return torch.as_tensor(a)
    except (TypeError, ValueError, RuntimeError) as e:
        raise LosslabError(f"{what} cannot be converted to a tensor ({type(a).__name__}): {e}") from None


def _check_x_dtype(x_dtype: Any) -> None:
    if not (x_dtype is None or x_dtype == "auto" or isinstance(x_dtype, torch.dtype)):
        raise LosslabError(f"x_dtype must be 'auto', None or a torch.dtype, got {x_dtype!r}")


def _check_x(x: Tensor, what: str, x_dtype: Any = "auto") -> Tensor:
    if x.ndim == 0:
        raise LosslabError(f"{what} must have a leading example dimension, got a scalar")
    if x.is_complex():
        raise LosslabError(f"{what} is complex ({x.dtype}); losslab needs real inputs")
    if isinstance(x_dtype, torch.dtype):
        x = x.to(x_dtype)
    elif x_dtype == "auto" and not x.is_floating_point():
        x = x.to(torch.float32)
    if not x.is_floating_point():
        return x  # integer inputs kept as given (x_dtype=None): token ids, indices
    if x.numel() and not bool(torch.isfinite(x).all()):
        bad = "NaN" if bool(torch.isnan(x).any()) else "infinite"
        raise LosslabError(f"{what} contains {bad} values")
    return x


def _check_pair(x: Tensor, y: Tensor, what: str) -> None:
    if y.ndim == 0:
        raise LosslabError(f"{what} targets must have a leading example dimension, got a scalar")
    if x.shape[0] != y.shape[0]:
        raise LosslabError(f"{what} has {x.shape[0]} inputs but {y.shape[0]} targets")
    if y.is_complex():
        raise LosslabError(f"{what} targets are complex ({y.dtype})")
    if y.is_floating_point() and y.numel() and not bool(torch.isfinite(y).all()):
        raise LosslabError(f"{what} targets contain NaN or infinite values")


def _labels(y: Tensor, what: str) -> Tensor:
    """Integer class labels (int64, >= 0) from integer, bool or integral float targets.

    ``(N,)`` labels one class per example; ``(N, T)`` (or more dimensions) labels one class per position,
    as a language model's next-token targets do.
    """
    if y.ndim < 1:
        raise LosslabError(f"{what} class labels must be (N,) or (N, T), got shape {tuple(y.shape)}")
    if y.is_floating_point():
        if y.numel() and not bool((y == torch.round(y)).all()):
            raise LosslabError(f"{what} labels are non-integer floats; pass num_classes=0 for regression")
    y = y.to(torch.int64)
    if y.numel() and int(y.min()) < 0:
        raise LosslabError(f"{what} labels must be >= 0, found {int(y.min())}")
    return y


def from_tensors(
    x: Tensor | np.ndarray,
    y: Tensor | np.ndarray,
    *,
    x_test: Tensor | np.ndarray | None = None,
    y_test: Tensor | np.ndarray | None = None,
    num_classes: int | None = None,
    name: str = "user",
    x_dtype: torch.dtype | str | None = "auto",
) -> Bundle:
    """Wrap in-memory arrays as a :class:`Bundle`.

    With ``x_dtype="auto"`` (default) inputs that are not floating point are cast to ``float32`` (no
    rescaling) and floating inputs keep their dtype; ``x_dtype=None`` keeps every input dtype (integer
    token ids for an ``nn.Embedding``); a ``torch.dtype`` casts to it. Integer (or bool) targets are
    class labels: ``num_classes`` defaults to the largest label + 1 over train and test. Floating
    targets are regression targets (``num_classes == 0``) unless ``num_classes > 0`` is given and they
    are integral. ``num_classes=0`` forces regression.

    Args:
        x, y: training inputs ``(N, ...)`` and targets: integer class labels ``(N,)``, or ``(N, T)`` token
            targets (one class per position), or floating ``(N,)``/``(N, k)`` regression targets.
        x_test, y_test: optional test split (both or neither).
        num_classes: number of classes; ``None`` infers it, ``0`` means regression.
        name: the bundle's name.
        x_dtype: ``"auto"``, ``None`` (keep) or a ``torch.dtype``, see above.

    Returns:
        The ``Bundle``; without a test split, ``test`` is empty.

    Raises:
        LosslabError: empty data, mismatched lengths or shapes, NaN/inf values, invalid labels.

    Example:
        >>> import torch
        >>> from losslab.data import from_tensors
        >>> b = from_tensors(torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 1]))
        >>> (b.num_classes, b.input_shape, len(b.test))
        (3, (3,), 0)
    """
    if (x_test is None) != (y_test is None):
        raise LosslabError("pass both x_test and y_test, or neither")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer))
                                    or num_classes < 0):
        raise LosslabError(f"num_classes must be a non-negative int or None, got {num_classes!r}")
    _check_x_dtype(x_dtype)
    x_t = _check_x(_as_tensor(x, "x"), "x", x_dtype)
    y_t = _as_tensor(y, "y")
    _check_pair(x_t, y_t, "training data")
    if x_t.shape[0] == 0:
        raise LosslabError("training data is empty (0 examples)")
    if x_test is not None:
        xte = _check_x(_as_tensor(x_test, "x_test"), "x_test", x_dtype)
        yte = _as_tensor(y_test, "y_test")
        _check_pair(xte, yte, "test data")
        if xte.shape[1:] != x_t.shape[1:]:
            raise LosslabError(f"x_test examples have shape {tuple(xte.shape[1:])}, x has {tuple(x_t.shape[1:])}")
        xte = xte.to(x_t.dtype)
    else:
        xte = x_t.new_zeros((0, *x_t.shape[1:]))
        yte = y_t.new_zeros((0, *y_t.shape[1:]))

    integral = not (y_t.is_floating_point() or yte.is_floating_point())
    regression = num_classes == 0 or (num_classes is None and not integral)
    if regression:
        if yte.shape[1:] != y_t.shape[1:]:
            raise LosslabError(f"y_test targets have shape {tuple(yte.shape[1:])}, y has {tuple(y_t.shape[1:])}")
        ydt = x_t.dtype if x_t.is_floating_point() else torch.float32
        y_t, yte, C = y_t.to(ydt), yte.to(ydt), 0
    else:
        y_t, yte = _labels(y_t, "training"), _labels(yte, "test")
        if x_test is not None and yte.shape[1:] != y_t.shape[1:]:
            raise LosslabError(f"y_test labels have shape {tuple(yte.shape[1:])} per example, y has "
                               f"{tuple(y_t.shape[1:])}")
        top = max(int(y_t.max()), int(yte.max()) if len(yte) else -1)
        C = top + 1 if num_classes is None else int(num_classes)
        if top >= C:
            raise LosslabError(f"labels go up to {top} but num_classes={C}")
    meta = {"source": {"adapter": "from_tensors"}, "task": "regression" if regression else "classification"}
    return Bundle(str(name), Split(x_t, y_t), Split(xte, yte), C, tuple(int(s) for s in x_t.shape[1:]), meta=meta)


def _item_x(obj: Any) -> Tensor:
    mod = type(obj).__module__ or ""
    if mod.startswith("PIL.") and hasattr(obj, "getbands"):  # a PIL image: convert like ToTensor
        arr = np.array(obj)  # a writable copy
        if arr.ndim == 2:
            arr = arr[None]
        elif arr.ndim == 3:
            arr = arr.transpose(2, 0, 1)
        t = torch.from_numpy(np.ascontiguousarray(arr))
        return t.to(torch.float32) / 255.0 if t.dtype == torch.uint8 else t.to(torch.float32)
    return _as_tensor(obj, "dataset input")


def _collect(pairs: Iterable[Any], what: str, *, batched: bool) -> tuple[Tensor, Tensor]:
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    for item in pairs:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            got = f"a {len(item)}-tuple" if isinstance(item, (tuple, list)) else type(item).__name__
            raise LosslabError(f"{what} must yield (x, y) pairs, got {got}")
        x, y = (_as_tensor(item[0], f"{what} input"), _as_tensor(item[1], f"{what} target")) if batched \
            else (_item_x(item[0]), _as_tensor(item[1], f"{what} target"))
        if xs and (x.shape[1:] if batched else x.shape) != (xs[0].shape[1:] if batched else xs[0].shape):
            raise LosslabError(
                f"{what} yields inputs of different shapes: {tuple(xs[0].shape)} and {tuple(x.shape)}"
            )
        if batched and (x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]):
            raise LosslabError(f"{what} batch has inputs {tuple(x.shape)} but targets {tuple(y.shape)}")
        xs.append(x)
        ys.append(y)
    if not xs:
        raise LosslabError(f"{what} is empty (0 examples)")
    if batched:
        return torch.cat(xs), torch.cat(ys)
    try:
        return torch.stack(xs), torch.stack(ys)
    except RuntimeError as e:
        raise LosslabError(f"{what} targets cannot be stacked: {e}") from None


def _iter_dataset(ds: Any) -> Iterable[Any]:
    if isinstance(ds, IterableDataset) or not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")):
        return iter(ds)
    return (ds[i] for i in range(len(ds)))


def from_dataset(
    train_ds: Dataset | Any,
    test_ds: Dataset | Any | None = None,
    *,
    num_classes: int | None = None,
    name: str | None = None,
    x_dtype: torch.dtype | str | None = "auto",
) -> Bundle:
    """Materialise any dataset yielding ``(x, y)`` pairs (map-style or iterable) as a :class:`Bundle`.

    Inputs may be tensors, numpy arrays, numbers or PIL images (converted like torchvision's
    ``ToTensor``: ``CHW``, ``uint8 / 255``); targets ints, floats or tensors. Works with torchvision
    datasets without losslab importing torchvision, e.g.
    ``from_dataset(MNIST(root, download=False), MNIST(root, train=False, download=False))``.

    Args:
        train_ds: training dataset.
        test_ds: optional test dataset.
        num_classes: as in :func:`from_tensors`.
        name: the bundle's name (default: the dataset's class name, lower-cased).
        x_dtype: as in :func:`from_tensors` (``None`` keeps integer token ids).

    Returns:
        The ``Bundle``.

    Raises:
        LosslabError: empty dataset, items that are not pairs, inputs of different shapes, NaN inputs.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from losslab.data import from_dataset
        >>> ds = TensorDataset(torch.randn(5, 2), torch.tensor([0, 1, 0, 1, 1]))
        >>> b = from_dataset(ds)
        >>> (b.name, len(b.train), b.num_classes)
        ('tensordataset', 5, 2)
    """
    x, y = _collect(_iter_dataset(train_ds), "training dataset", batched=False)
    kw: dict[str, Any] = {}
    if test_ds is not None:
        kw["x_test"], kw["y_test"] = _collect(_iter_dataset(test_ds), "test dataset", batched=False)
    b = from_tensors(x, y, num_classes=num_classes, name=name or type(train_ds).__name__.lower(), x_dtype=x_dtype,
                     **kw)
    return _with_source(b, "from_dataset")


def from_loader(
    loader: DataLoader | Iterable[Any],
    test_loader: DataLoader | Iterable[Any] | None = None,
    *,
    num_classes: int | None = None,
    name: str = "user",
    x_dtype: torch.dtype | str | None = "auto",
) -> Bundle:
    """Materialise a ``DataLoader`` (any iterable of ``(x, y)`` batches) as a :class:`Bundle`.

    One pass over each loader is concatenated. The global torch RNG is forked around the pass, so a
    shuffling loader without its own ``generator`` leaves the caller's global RNG state untouched.

    Args:
        loader: training batches.
        test_loader: optional test batches.
        num_classes: as in :func:`from_tensors`.
        name: the bundle's name.
        x_dtype: as in :func:`from_tensors` (``None`` keeps integer token ids).

    Returns:
        The ``Bundle``.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from losslab.data import from_loader
        >>> dl = DataLoader(TensorDataset(torch.randn(10, 4), torch.arange(10) % 3), batch_size=4)
        >>> b = from_loader(dl)
        >>> (len(b.train), b.num_classes)
        (10, 3)
    """
    with torch.random.fork_rng(devices=[]):
        x, y = _collect(loader, "loader", batched=True)
        kw: dict[str, Any] = {}
        if test_loader is not None:
            kw["x_test"], kw["y_test"] = _collect(test_loader, "test loader", batched=True)
    return _with_source(from_tensors(x, y, num_classes=num_classes, name=name, x_dtype=x_dtype, **kw), "from_loader")


def _with_source(b: Bundle, adapter: str) -> Bundle:
    from dataclasses import replace

    return replace(b, meta={**b.meta, "source": {"adapter": adapter}})
