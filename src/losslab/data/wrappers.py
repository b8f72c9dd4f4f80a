"""Dataset wrappers: label corruption (Zhang et al. 2016), poisoning (Huang et al. 2020), subsampling.

Each wrapper returns a new :class:`~losslab.data.Bundle` and never mutates its input; the test split is
left untouched. What was done is appended to ``bundle.meta["wrappers"]``. Rows that were chosen for
corruption or appended as poison are recorded in ``train.meta`` (index lists, JSON-serialisable);
:func:`row_mask` turns them into boolean masks. The original labels are kept in ``train.clean_y``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import LosslabError
from ._base import Bundle, Split
from ._registry import (
    TAG_CORRUPT,
    TAG_POISON,
    TAG_SUBSAMPLE,
    check_float,
    check_int,
    check_seed,
    fresh_samples,
    rng,
)

__all__ = ["corrupt_labels", "poison", "subsample", "row_mask"]

#: Row flags recorded in ``Split.meta``: name -> list of row indices; ``meta["n_rows"]`` guards staleness.
ROW_FLAGS = ("corrupted", "poisoned")


def _require_labels(bundle: Bundle, op: str, *, min_classes: int = 1) -> None:
    if not isinstance(bundle, Bundle):
        raise LosslabError(f"{op} expects a losslab.data.Bundle, got {type(bundle).__name__}")
    y = bundle.train.y
    if bundle.num_classes <= 0 or y.is_floating_point() or y.is_complex() or y.ndim != 1:
        raise LosslabError(
            f"{op} needs integer class labels, but dataset {bundle.name!r} has regression targets "
            f"(num_classes={bundle.num_classes}, y dtype {y.dtype}, shape {tuple(y.shape)})"
        )
    if bundle.num_classes < min_classes:
        raise LosslabError(f"{op} needs at least {min_classes} classes, dataset {bundle.name!r} has {bundle.num_classes}")


def _flags(split: Split) -> dict[str, np.ndarray]:
    """Row flags of ``split`` as sorted index arrays (validated against its length)."""
    meta = split.meta or {}
    out = {}
    present = [k for k in ROW_FLAGS if k in meta]
    if present and meta.get("n_rows") != len(split):
        raise LosslabError(
            f"row flags {present} were recorded for {meta.get('n_rows')} rows but the split has {len(split)}: "
            "it was re-indexed after wrapping (use losslab.data.subsample, which keeps them aligned)"
        )
    for k in ROW_FLAGS:
        out[k] = np.asarray(meta.get(k, []), dtype=np.int64)
    return out


def _with_flags(split: Split, flags: dict[str, np.ndarray], **meta: Any) -> dict[str, Any]:
    out = {k: v for k, v in (split.meta or {}).items() if k not in ROW_FLAGS and k != "n_rows"}
    out.update(meta)
    kept = {k: np.unique(v).tolist() for k, v in flags.items() if len(v)}
    if kept:
        out.update(kept)
        out["n_rows"] = len(split)
    return out


def _record(bundle: Bundle, train: Split, op: dict[str, Any]) -> Bundle:
    meta = dict(bundle.meta)
    meta["wrappers"] = [*meta.get("wrappers", []), op]
    return replace(bundle, train=train, meta=meta)


def row_mask(split: Split, kind: Literal["corrupted", "poisoned"]) -> Tensor:
    """Boolean mask of the rows of ``split`` flagged ``kind`` by :func:`corrupt_labels` or :func:`poison`.

    Args:
        split: usually ``bundle.train`` of a wrapped bundle.
        kind: ``"corrupted"`` (rows chosen for label corruption) or ``"poisoned"`` (appended poison rows).

    Returns:
        A ``bool`` tensor of length ``len(split)`` (all ``False`` when nothing was flagged).

    Example:
        >>> from losslab.data import load, corrupt_labels, row_mask
        >>> b = corrupt_labels(load("moons", n_train=100, n_test=10), 0.3, seed=0)
        >>> int(row_mask(b.train, "corrupted").sum())
        30
    """
    if kind not in ROW_FLAGS:
        raise LosslabError(f"kind must be one of {', '.join(ROW_FLAGS)}, got {kind!r}")
    mask = torch.zeros(len(split), dtype=torch.bool)
    idx = _flags(split)[kind]
    if len(idx) and (idx.min() < 0 or idx.max() >= len(split)):
        raise LosslabError(f"row flag {kind!r} has indices outside a split of {len(split)} rows")
    mask[torch.as_tensor(idx, dtype=torch.long)] = True
    return mask


def corrupt_labels(bundle: Bundle, p: float, *, seed: int, mode: Literal["uniform", "other"] = "uniform") -> Bundle:
    """Corrupt a fraction ``p`` of the training labels, fixed once (Zhang et al. 2016).

    Exactly ``round(p * N_train)`` training rows are chosen (Python rounding) with a generator seeded by
    ``seed``. ``mode="uniform"`` gives each a label uniform over all classes (it may equal the true
    one, as in Zhang et al.); ``mode="other"`` a label uniform over the *other* classes (always wrong).
    The test split is unchanged. The true labels are kept in ``train.clean_y`` (the original clean
    labels if the bundle was already corrupted or poisoned), the chosen rows in ``train.meta["corrupted"]``
    (see :func:`row_mask`).

    Args:
        bundle: a classification bundle.
        p: fraction in ``[0, 1]``.
        seed: seed of the choice of rows and of the new labels.
        mode: ``"uniform"`` or ``"other"``.

    Returns:
        The corrupted bundle.

    Raises:
        LosslabError: ``p`` outside ``[0, 1]``, unknown mode, regression targets.

    Example:
        >>> from losslab.data import load, corrupt_labels
        >>> b = load("moons", n_train=100, n_test=10)
        >>> c = corrupt_labels(b, 0.2, seed=0, mode="other")
        >>> int((c.train.y != b.train.y).sum()), c.test is b.test
        (20, True)
    """
    _require_labels(bundle, "corrupt_labels")
    p = check_float("p", p)
    if not 0.0 <= p <= 1.0:
        raise LosslabError(f"corruption fraction p must be in [0, 1], got {p}")
    seed = check_seed(seed)
    if mode not in ("uniform", "other"):
        raise LosslabError(f"mode must be 'uniform' or 'other', got {mode!r}")
    C = int(bundle.num_classes)
    if mode == "other" and C < 2:
        raise LosslabError(f"mode='other' needs at least 2 classes, dataset {bundle.name!r} has {C}")
    tr = bundle.train
    n = len(tr)
    k = int(round(p * n))
    g = rng(seed, TAG_CORRUPT)
    idx = np.sort(g.choice(n, size=k, replace=False)) if k else np.zeros(0, dtype=np.int64)
    clean = tr.clean_y if tr.clean_y is not None else tr.y
    true = clean[torch.as_tensor(idx, dtype=torch.long)].cpu().numpy()
    if mode == "uniform":
        new = g.integers(0, C, size=k)
    else:
        new = (true + g.integers(1, C, size=k)) % C
    y = tr.y.clone()
    y[torch.as_tensor(idx, dtype=torch.long)] = torch.as_tensor(new, dtype=y.dtype).to(y.device)
    flags = _flags(tr)
    flags["corrupted"] = np.concatenate([flags["corrupted"], idx])
    train = Split(tr.x, y, clean_y=clean, meta=_with_flags(tr, flags))
    n_changed = int((y != tr.y).sum())
    return _record(bundle, train, {
        "op": "corrupt_labels", "p": p, "seed": seed, "mode": mode, "n_chosen": k, "n_changed": n_changed,
    })


def poison(bundle: Bundle, n_extra: int, *, seed: int) -> Bundle:
    """Append ``n_extra`` fresh, wrongly labelled examples of the same distribution (Huang et al. 2020).

    The extra inputs come from :func:`~losslab.data.fresh_samples` (so the dataset must be able to draw
    fresh samples: ``mnist1d``, ``moons``, ``spirals``, ``blobs``); each gets a label uniform over the
    classes other than its true one. The poison rows are the last ``n_extra`` rows of the training set,
    flagged in ``train.meta["poisoned"]`` (see :func:`row_mask`); their true labels are in
    ``train.clean_y``. The test split is unchanged.

    Args:
        bundle: a classification bundle from :func:`~losslab.data.load` (possibly wrapped).
        n_extra: number of poison examples (``>= 0``).
        seed: seed of the fresh draw and of the wrong labels.

    Returns:
        The poisoned bundle with ``len(train) + n_extra`` training rows.

    Raises:
        LosslabError: the dataset cannot draw fresh samples (named in the message), regression targets.

    Example:
        >>> from losslab.data import load, poison, row_mask
        >>> b = poison(load("spirals", n_train=40, n_test=10), 10, seed=0)
        >>> m = row_mask(b.train, "poisoned")
        >>> len(b.train), bool((b.train.y[m] != b.train.clean_y[m]).all())
        (50, True)
    """
    _require_labels(bundle, "poison", min_classes=2)
    n_extra = check_int("n_extra", n_extra, minimum=0)
    seed = check_seed(seed)
    fresh = fresh_samples(bundle, n_extra, seed=seed)
    C = int(bundle.num_classes)
    true = fresh.y.cpu().numpy()
    if len(true) and (true.min() < 0 or true.max() >= C):
        raise LosslabError(f"fresh samples of {bundle.name!r} have labels outside [0, {C})")
    wrong = (true + rng(seed, TAG_POISON).integers(1, C, size=n_extra)) % C
    tr = bundle.train
    n = len(tr)
    x = torch.cat([tr.x, fresh.x.to(device=tr.x.device, dtype=tr.x.dtype)])
    y = torch.cat([tr.y, torch.as_tensor(wrong, dtype=tr.y.dtype).to(tr.y.device)])
    clean_prev = tr.clean_y if tr.clean_y is not None else tr.y
    clean = torch.cat([clean_prev, fresh.y.to(device=clean_prev.device, dtype=clean_prev.dtype)])
    flags = _flags(tr)
    flags["poisoned"] = np.concatenate([flags["poisoned"], np.arange(n, n + n_extra)])
    train = Split(x, y, clean_y=clean, meta=dict(tr.meta or {}))
    train = replace(train, meta=_with_flags(train, flags))
    return _record(bundle, train, {"op": "poison", "n_extra": n_extra, "seed": seed})


def subsample(bundle: Bundle, n: int, *, seed: int, stratified: bool = True) -> Bundle:
    """Keep ``n`` training rows chosen at random (class proportions kept when ``stratified``).

    Stratified allocation gives each class ``floor(n * n_c / N)`` rows plus one for the classes with
    the largest remainders; rows within a class are chosen uniformly. Kept rows stay in their original
    order; corruption/poison flags are re-indexed. The test split is unchanged.

    Args:
        bundle: the bundle.
        n: rows to keep, ``1 <= n <= len(bundle.train)``.
        seed: seed of the choice.
        stratified: keep class proportions (needs class labels; use ``False`` for regression targets).

    Returns:
        The subsampled bundle.

    Example:
        >>> from losslab.data import digits, subsample
        >>> s = subsample(digits(), 100, seed=0)
        >>> len(s.train), int(s.train.y.bincount().min())
        (100, 10)
    """
    if not isinstance(bundle, Bundle):
        raise LosslabError(f"subsample expects a losslab.data.Bundle, got {type(bundle).__name__}")
    tr = bundle.train
    N = len(tr)
    n = check_int("n", n, minimum=1)
    if n > N:
        raise LosslabError(f"cannot subsample {n} rows from a training set of {N}")
    seed = check_seed(seed)
    if not isinstance(stratified, (bool, np.bool_)):
        raise LosslabError(f"stratified must be a bool, got {stratified!r}")
    g = rng(seed, TAG_SUBSAMPLE)
    if stratified:
        if bundle.num_classes <= 0 or tr.y.is_floating_point() or tr.y.ndim != 1:
            raise LosslabError(
                f"stratified subsampling needs class labels, but dataset {bundle.name!r} has regression "
                "targets; pass stratified=False"
            )
        y = tr.y.cpu().numpy()
        classes, counts = np.unique(y, return_counts=True)
        take, remainder = np.divmod(n * counts.astype(np.int64), N)  # exact integer quotas
        order = np.lexsort((classes, -remainder))  # largest remainder first, ties by class
        take[order[: n - int(take.sum())]] += 1
        idx = np.concatenate([
            g.choice(np.flatnonzero(y == c), size=int(t), replace=False) for c, t in zip(classes, take)
        ])
    else:
        idx = g.choice(N, size=n, replace=False)
    idx = np.sort(idx)
    flags = _flags(tr)
    new_flags = {k: np.flatnonzero(np.isin(idx, v)) for k, v in flags.items()}
    sub = tr.subset(torch.as_tensor(idx, dtype=torch.long))
    train = replace(sub, meta=_with_flags(sub, new_flags))
    return _record(bundle, train, {"op": "subsample", "n": n, "seed": seed, "stratified": bool(stratified)})
