"""What is measured: datasets as resident tensors (:class:`Split`, :class:`Bundle`).

* :func:`load` a registered dataset by name (:func:`available` lists them; :func:`register` adds one):
  ``digits`` (scikit-learn, fixed split), ``mnist1d`` (generated offline, cached), ``moons``,
  ``spirals``, ``blobs`` (synthetic), ``mnist`` and ``cifar10`` (local files, ``root=``; never downloaded).
* Wrappers for the survey's experiments: :func:`corrupt_labels` (random labels, Zhang et al. 2016),
  :func:`poison` (wrongly labelled fresh samples, Huang et al. 2020), :func:`subsample`;
  :func:`fresh_samples` draws new examples of a generated dataset's distribution; :func:`row_mask`
  reads the rows a wrapper flagged.
* Adapters for user data: :func:`from_tensors`, :func:`from_dataset` (any ``(x, y)`` Dataset, including
  torchvision's), :func:`from_loader`.

Every random draw uses a private generator seeded by an explicit ``seed``; global RNG states are never
seeded or consumed (``mnist1d``'s generator, which reseeds them, is wrapped and the states restored).

Example:
    >>> from losslab.data import load, corrupt_labels
    >>> b = corrupt_labels(load("digits"), 0.5, seed=0)
    >>> (b.num_classes, b.input_shape, int(b.meta["wrappers"][0]["n_chosen"]))
    (10, (1, 8, 8), 674)
"""
from __future__ import annotations

from ._base import Bundle, Split
from ._registry import available, fresh_samples, load, register
from ._sources import resolve
from .adapters import from_dataset, from_loader, from_tensors
from .builtin import blobs, digits, mnist1d, moons, spirals
from .vision import cifar10, mnist
from .wrappers import corrupt_labels, poison, row_mask, subsample

__all__ = [
    "Split", "Bundle",
    "load", "resolve", "available", "register", "fresh_samples",
    "digits", "mnist1d", "moons", "spirals", "blobs", "mnist", "cifar10",
    "corrupt_labels", "poison", "subsample", "row_mask",
    "from_tensors", "from_dataset", "from_loader",
]
