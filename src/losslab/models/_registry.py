"""The model registry: names -> factories, ``build`` with deterministic seeding, user factories."""
from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

import torch
from torch import nn

from ..errors import LosslabError
from ._init import draw_seed, init_parameters, seeded_global_rng

__all__ = ["register", "available", "build", "defaults", "load_factory"]

Factory = Callable[..., nn.Module]
F = TypeVar("F", bound=Factory)

_REGISTRY: dict[str, Factory] = {}
_RESERVED = ("input_shape", "num_classes")


def register(name: str, *, overwrite: bool = False) -> Callable[[F], F]:
    """Decorator registering a model factory under ``name``.

    The factory is called as ``factory(input_shape=..., num_classes=..., **options)`` and must return an
    ``nn.Module``; its other keyword parameters (with defaults) are the model's options.

    Args:
        name: registry name (no ``":"``, which marks ``"module:factory"`` specs).
        overwrite: replace an existing entry instead of raising.

    Returns:
        A decorator returning the factory unchanged.

    Raises:
        LosslabError: the name is taken (and ``overwrite`` is false) or invalid.

    Example:
        >>> import torch
        >>> @register("linear-example", overwrite=True)
        ... def linear(*, input_shape, num_classes, bias=True):
        ...     return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[0], num_classes, bias=bias))
        >>> build("linear-example", input_shape=(4,), num_classes=2, seed=0, bias=False)[1].bias is None
        True
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise LosslabError(f"model name must be a non-empty string without ':', got {name!r}")

    def deco(factory: F) -> F:
        if name in _REGISTRY and not overwrite and _REGISTRY[name] is not factory:
            raise LosslabError(f"model {name!r} is already registered (pass overwrite=True to replace it)")
        _REGISTRY[name] = factory
        return factory

    return deco


def available() -> list[str]:
    """Sorted names of the registered models."""
    return sorted(_REGISTRY)


def _factory(name: str) -> Factory:
    if not isinstance(name, str):
        raise LosslabError(f"model name must be a string, got {name!r}")
    if ":" in name:
        return load_factory(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise LosslabError(f"unknown model {name!r}; available: {', '.join(available())}") from None


def _options(factory: Factory) -> tuple[dict[str, inspect.Parameter], bool]:
    """The factory's option parameters (all but input_shape/num_classes) and whether it takes ``**kwargs``."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature: accept anything
        return {}, True
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    opts = {k: p for k, p in params.items() if p.kind in kinds and k not in _RESERVED}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return opts, var_kw


def defaults(name: str) -> dict[str, Any]:
    """The options of model ``name`` (registry name or ``"module:factory"``) and their default values.

    Options without a default are omitted.

    Example:
        >>> defaults("mlp")["width"]
        256
    """
    opts, _ = _options(_factory(name))
    return {k: p.default for k, p in opts.items() if p.default is not inspect.Parameter.empty}


def _check_shape(input_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None  # type: ignore[assignment]
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise LosslabError(f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}")
    return shape


def build(
    name: str,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build model ``name`` for inputs shaped ``(N, *input_shape)`` with ``num_classes`` outputs.

    The module is constructed with the global RNG forked (and seeded from the init generator), then
    re-initialised by :func:`init_parameters` from a generator seeded ``seed``: the same seed gives
    bit-identical weights in any process, and the global torch RNG state is unchanged afterwards.
    With neither ``seed`` nor ``generator`` a seed is drawn from the global torch RNG (so
    ``torch.manual_seed`` governs it, as for plain PyTorch modules).

    Args:
        name: a registered name (see :func:`available`) or a ``"pkg.module:factory"`` spec (see
            :func:`load_factory`; ``input_shape``/``num_classes`` are passed only if it accepts them).
        input_shape: shape of one example, e.g. ``(1, 8, 8)`` for digits or ``(40,)`` for MNIST-1D.
        num_classes: number of outputs (``0``: real-valued targets, for a ``"pkg.module:factory"`` only).
        seed: init seed.
        generator: CPU generator for the init (advanced); alternative to ``seed``.
        **kwargs: model options (see :func:`defaults`).

    Returns:
        The model, in training mode, on the CPU, in float32 (unless the factory says otherwise).

    Raises:
        LosslabError: unknown name or option, bad option value, both ``seed`` and ``generator`` given.

    Example:
        >>> import torch
        >>> model = build("mlp", input_shape=(40,), num_classes=10, seed=0, width=32)
        >>> model(torch.zeros(5, 40)).shape
        torch.Size([5, 10])
    """
    factory = _factory(name)
    shape = _check_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise LosslabError(f"num_classes must be a positive int, got {num_classes!r}")
    if num_classes == 0 and ":" not in name:  # regression targets: a user factory sizes its own outputs
        raise LosslabError(f"model {name!r} needs class labels (num_classes >= 1); for real-valued targets "
                           "give your own --model pkg.module:factory")
    opts, var_kw = _options(factory)
    unknown = sorted(set(kwargs) - set(opts))
    if unknown and not var_kw:
        raise LosslabError(
            f"unknown option(s) {', '.join(unknown)} for model {name!r}; allowed: {', '.join(opts) or 'none'}"
        )
    if seed is not None and generator is not None:
        raise LosslabError("pass either seed or generator to build, not both")
    if generator is None:
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()))
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise LosslabError(f"seed must be an int, got {seed!r}")
        generator = torch.Generator().manual_seed(seed)
    call_kwargs = dict(kwargs)
    try:
        params = inspect.signature(factory).parameters
        takes = {k for k in _RESERVED if k in params} if not var_kw else set(_RESERVED)
    except (TypeError, ValueError):
        takes = set(_RESERVED)
    if "input_shape" in takes:
        call_kwargs["input_shape"] = shape
    if "num_classes" in takes:
        call_kwargs["num_classes"] = num_classes
    with seeded_global_rng(draw_seed(generator)):
        model = factory(**call_kwargs)
    if not isinstance(model, nn.Module):
        raise LosslabError(f"model factory {name!r} returned {type(model).__name__}, not an nn.Module")
    init_parameters(model, generator=generator)
    return model


def load_factory(spec: str) -> Factory:
    """Import a user model factory from ``"pkg.module:attr"`` (``attr`` may be dotted, e.g. ``Cls.make``).

    Args:
        spec: ``"<importable module>:<attribute path>"``.

    Returns:
        The callable.

    Raises:
        LosslabError: bad spec, the import fails, the attribute is missing or not callable.

    Example:
        >>> load_factory("torch.nn:Linear") is torch.nn.Linear
        True
    """
    from .._imports import load_callable

    return load_callable(spec, "model factory")
