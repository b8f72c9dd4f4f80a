"""The dataset registry: ``load(name)``, ``register``, fresh same-distribution samples, seed helpers.

A registered loader is a function returning a :class:`~losslab.data.Bundle`; its keyword parameters
are the arguments :func:`load` accepts (anything else is an error listing them). A loader whose data
come from a generator may also register a *sampler* that draws fresh examples of the same
distribution; :func:`fresh_samples` (and therefore :func:`~losslab.data.poison`) needs one.
"""
from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, TypeVar

import numpy as np
import torch
from torch import Tensor

from ..errors import LosslabError
from ._base import Bundle, Split

__all__ = ["load", "available", "register", "fresh_samples"]

F = TypeVar("F", bound=Callable[..., Bundle])

#: A sampler draws ``n`` fresh examples ``(x, y)`` for a (derived) integer ``seed``; it receives the
#: loader's resolved keyword arguments as well.
Sampler = Callable[..., "tuple[np.ndarray | Tensor, np.ndarray | Tensor]"]

# Stream tags: every random draw in losslab.data comes from SeedSequence([..., tag]) with its own tag,
# so streams for train data, test data, fresh samples, corruption, poisoning never coincide.
TAG_TRAIN = 0x7472
TAG_TEST = 0x7465
TAG_FRESH = 0x6672
TAG_CENTERS = 0x6365
TAG_CORRUPT = 0x636F
TAG_POISON = 0x706F
TAG_SUBSAMPLE = 0x7375


@dataclass(frozen=True)
class _Entry:
    name: str
    loader: Callable[..., Bundle]
    params: dict[str, inspect.Parameter]
    takes_seed: bool
    var_kw: bool
    sampler: Sampler | None


_REGISTRY: dict[str, _Entry] = {}


# ----------------------------------------------------------------------------------------------- seeds
def check_seed(seed: Any, what: str = "seed") -> int:
    """Validate a seed: a non-negative ``int`` (``bool`` rejected)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise LosslabError(f"{what} must be a non-negative int, got {seed!r}")
    return int(seed)


def rng(*keys: int) -> np.random.Generator:
    """A private ``numpy`` generator for the stream named by ``keys`` (never the global one)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def random_state(*keys: int) -> np.random.RandomState:
    """A private legacy ``RandomState`` (for scikit-learn's ``random_state=``) for the stream ``keys``."""
    return np.random.RandomState(np.random.MT19937(np.random.SeedSequence([int(k) for k in keys])))


def derive_seed(*keys: int) -> int:
    """A 32-bit integer seed derived from ``keys`` (valid for ``np.random.seed``-style APIs)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint32)[0])


# ---------------------------------------------------------------------------------------- validation
def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise LosslabError(f"{name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise LosslabError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise LosslabError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise LosslabError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise LosslabError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise LosslabError(f"{name} must be <= {maximum}, got {value}")
    return value


def jsonable(value: Any) -> Any:
    """Convert a loader argument to a JSON-serialisable value (paths to strings, numpy scalars to Python):
    :func:`losslab.results.jsonable` with ``unknown="keep"``."""
    from ..results import jsonable as _jsonable

    return _jsonable(value, unknown="keep")


def source_meta(dataset: str, seed: int, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The ``meta["source"]`` record that lets :func:`fresh_samples` find a bundle's generator again."""
    return {"dataset": dataset, "seed": int(seed), "kwargs": {k: jsonable(v) for k, v in sorted(kwargs.items())}}


# ---------------------------------------------------------------------------------------- conversion
def make_split(x: np.ndarray | Tensor, y: np.ndarray | Tensor, *, x_dtype: torch.dtype = torch.float32) -> Split:
    """A classification ``Split`` with ``x`` cast to ``x_dtype`` and ``y`` to ``int64`` (copies numpy data)."""
    return Split(_tensor(x).to(x_dtype), _tensor(y).to(torch.int64))


def _tensor(a: np.ndarray | Tensor) -> Tensor:
    if isinstance(a, np.ndarray):
        a = np.ascontiguousarray(a)
        return torch.from_numpy(a if a.flags.writeable else a.copy())
    return torch.as_tensor(a)


# ------------------------------------------------------------------------------------------ registry
def register(name: str, *, sampler: Sampler | None = None, overwrite: bool = False) -> Callable[[F], F]:
    """Register a dataset loader under ``name`` (a decorator).

    The loader's keyword parameters become the arguments :func:`load` accepts; a ``seed`` parameter, if
    present, receives :func:`load`'s ``seed``. The loader must return a :class:`Bundle`.

    Args:
        name: registry name, e.g. ``"moons"``.
        sampler: optional ``sampler(n, *, seed, **loader_kwargs) -> (x, y)`` drawing ``n`` fresh examples
            of the same distribution, independent of the loader's own draws for any seed. Needed by
            :func:`fresh_samples` and :func:`~losslab.data.poison`.
        overwrite: allow replacing an existing registration.

    Returns:
        The decorator, which returns the loader unchanged.

    Example:
        >>> import torch
        >>> from losslab.data import register, load, from_tensors
        >>> @register("ones", overwrite=True)
        ... def ones(*, n: int = 4) -> "Bundle":
        ...     return from_tensors(torch.ones(n, 2), torch.zeros(n, dtype=torch.long), name="ones")
        >>> len(load("ones", n=3).train)
        3
    """
    if not isinstance(name, str) or not name:
        raise LosslabError(f"dataset name must be a non-empty string, got {name!r}")

    def decorator(fn: F) -> F:
        if name in _REGISTRY and not overwrite:
            raise LosslabError(f"dataset {name!r} is already registered (pass overwrite=True to replace it)")
        sig = inspect.signature(fn)
        params: dict[str, inspect.Parameter] = {}
        takes_seed = var_kw = False
        for p in sig.parameters.values():
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                var_kw = True
            elif p.kind is inspect.Parameter.VAR_POSITIONAL:
                continue
            elif p.name == "seed":
                takes_seed = True
            else:
                params[p.name] = p
        _REGISTRY[name] = _Entry(name, fn, params, takes_seed, var_kw, sampler)
        return fn

    return decorator


def available() -> list[str]:
    """Names of the registered datasets, sorted.

    Example:
        >>> from losslab.data import available
        >>> {"digits", "mnist1d", "moons"} <= set(available())
        True
    """
    return sorted(_REGISTRY)


def _entry(name: Any) -> _Entry:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise LosslabError(f"unknown dataset {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def load(name: str, *, seed: int = 0, **kwargs: Any) -> Bundle:
    """Load a registered dataset by name.

    Args:
        name: one of :func:`available` (``"digits"``, ``"mnist1d"``, ``"moons"``, ...).
        seed: data seed (for generated datasets: which sample is drawn; fixed datasets ignore it).
        **kwargs: the dataset's own arguments (e.g. ``n_train`` for ``"moons"``, ``root`` for ``"mnist"``).

    Returns:
        The dataset as a :class:`Bundle`; ``meta["source"]`` records ``name``, ``seed`` and the resolved
        arguments.

    Raises:
        LosslabError: unknown name (lists the available ones), unknown or missing arguments (lists the
            allowed ones), or invalid values.

    Example:
        >>> from losslab.data import load
        >>> b = load("moons", seed=1, n_train=100, n_test=50)
        >>> (len(b.train), len(b.test), b.num_classes, b.input_shape)
        (100, 50, 2, (2,))
    """
    entry = _entry(name)
    seed = check_seed(seed)
    if not entry.var_kw:
        unknown = sorted(set(kwargs) - set(entry.params))
        if unknown:
            allowed = ", ".join(sorted(entry.params)) or "none"
            raise LosslabError(
                f"dataset {name!r} got unknown argument(s) {', '.join(unknown)}; allowed: {allowed} (and seed)"
            )
    missing = sorted(
        k for k, p in entry.params.items() if p.default is inspect.Parameter.empty and k not in kwargs
    )
    if missing:
        raise LosslabError(f"dataset {name!r} needs argument(s) {', '.join(missing)} (e.g. load({name!r}, {missing[0]}=...))")
    call_kwargs = dict(kwargs)
    if entry.takes_seed:
        call_kwargs["seed"] = seed
    bundle = entry.loader(**call_kwargs)
    if not isinstance(bundle, Bundle):
        raise LosslabError(f"loader for dataset {name!r} returned {type(bundle).__name__}, not a Bundle")
    meta = dict(bundle.meta)
    src = meta.get("source")
    if not (isinstance(src, dict) and src.get("dataset") == name):
        resolved = {k: p.default for k, p in entry.params.items() if p.default is not inspect.Parameter.empty}
        resolved.update(kwargs)
        meta["source"] = source_meta(name, seed, resolved)
        bundle = replace(bundle, meta=meta)
    return bundle


def fresh_samples(bundle: Bundle, n: int, *, seed: int) -> Split:
    """Draw ``n`` fresh examples from the distribution that generated ``bundle`` (true labels).

    Works for bundles loaded from a dataset registered with a sampler (``"mnist1d"``, ``"moons"``,
    ``"spirals"``, ``"blobs"``); the draw is seeded by ``seed`` and the bundle's own data seed, and is
    independent of the bundle's training and test draws.

    Args:
        bundle: a bundle from :func:`load` (or a wrapper of one).
        n: number of examples (``>= 0``).
        seed: seed of this draw.

    Returns:
        A ``Split`` with the fresh inputs (dtype of ``bundle.train.x``) and their true labels.

    Raises:
        LosslabError: the dataset cannot draw fresh samples (e.g. ``"digits"``, user data).

    Example:
        >>> from losslab.data import load, fresh_samples
        >>> extra = fresh_samples(load("moons", n_train=10, n_test=10), 5, seed=0)
        >>> tuple(extra.x.shape)
        (5, 2)
    """
    n = check_int("n", n, minimum=0)
    seed = check_seed(seed)
    src = bundle.meta.get("source") if isinstance(bundle.meta, dict) else None
    dataset = src.get("dataset") if isinstance(src, dict) else None
    entry = _REGISTRY.get(dataset) if isinstance(dataset, str) else None
    if entry is None or entry.sampler is None:
        can = sorted(k for k, e in _REGISTRY.items() if e.sampler is not None)
        raise LosslabError(
            f"dataset {bundle.name!r} cannot draw fresh samples of its distribution "
            f"(datasets that can: {', '.join(can)})"
        )
    derived = derive_seed(check_seed(src.get("seed", 0), "source seed"), seed, TAG_FRESH)
    x, y = entry.sampler(n, seed=derived, **dict(src.get("kwargs", {})))
    ref = bundle.train.x
    split = make_split(x, y, x_dtype=ref.dtype if ref.is_floating_point() else torch.float32)
    if len(split) != n or tuple(split.x.shape[1:]) != tuple(bundle.input_shape):
        raise LosslabError(
            f"sampler of {dataset!r} returned x of shape {tuple(split.x.shape)}, expected ({n}, "
            f"{', '.join(map(str, bundle.input_shape))})"
        )
    return Split(split.x.to(ref.device), split.y.to(bundle.train.y.device), meta={"fresh": {"seed": seed, "n": n}})


def dumps_key(obj: Any) -> str:
    """Canonical JSON of ``obj`` (sorted keys, no whitespace) used for cache keys."""
    return json.dumps(jsonable(obj), sort_keys=True, separators=(",", ":"))
