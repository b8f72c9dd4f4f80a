"""The functional core: a model evaluated as a pure function of a point in parameter space.

Everything losslab measures is ``f(θ; x)`` for a point ``θ`` (a ``dict[str, Tensor]`` keyed like
``model.named_parameters()``) and data ``(x, y)``. This module holds the pieces every part of the library
shares to do that, each defined once:

* :data:`Point` and :data:`LossFn`, the two types;
* :func:`make_shell`: the model copied once onto the ``meta`` device (structure only, no memory), run
  with ``torch.func.functional_call`` with every tensor supplied, so the user's module is never touched;
  :class:`Functional` wraps it with a snapshot of the model's parameters and buffers;
* :func:`ensure_forward_ad`: forward-mode AD made usable under strict warning settings;
* :func:`default_loss` / :func:`resolve_loss`: the library's losses (cross-entropy for integer labels,
  mean squared error for floating targets), the names of :data:`LOSS_CHOICES`, ``pkg.module:function``
  specs and ``output_key`` for models returning dicts (one resolver for every command);
* :func:`as_xy`: the one data normalizer (a ``Split``, a ``Bundle`` or an ``(x, y)`` pair to tensors);
* :func:`resolve_bn` / :func:`batchnorm_recompute`: the one BatchNorm policy (see :data:`BN_MODES`);
* :func:`model_then_data`: the public API's argument order ``(model, data, *, loss=..., point=...)``,
  enforced with a one-line error for a call in another order.

Example:
    >>> import torch
    >>> from losslab._functional import Functional, as_xy, default_loss
    >>> model = torch.nn.Linear(3, 2)
    >>> x, y = as_xy((torch.randn(4, 3), torch.tensor([0, 1, 1, 0])))
    >>> fn = Functional(model)
    >>> bool(torch.equal(fn(fn.point(None), x), model(x)))
    True
    >>> default_loss(y) is torch.nn.functional.cross_entropy
    True
"""
from __future__ import annotations

import copy
import functools
import inspect
import warnings
from typing import Any, Callable, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import LosslabError
from .models._checkpoint import unwrap_model  # noqa: F401  (part of the core's API)

__all__ = [
    "Point", "LossFn", "LossLike", "LOSS_NAMES", "make_shell", "unwrap_model", "Functional", "ensure_forward_ad",
    "default_loss", "mse", "nll", "token_cross_entropy", "LOSS_CHOICES", "resolve_loss", "as_xy", "model_then_data",
    "BN_MODES", "batchnorm_layers", "resolve_bn", "batchnorm_recompute", "with_recomputed_batchnorm",
]

Point = dict[str, Tensor]
"""A point in parameter space: tensors keyed like ``model.named_parameters()`` (optionally buffers too)."""
LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss(output, target) -> scalar``: the *mean* loss over the examples of the batch."""
LossLike = Union[str, LossFn]
"""A loss name (one of :data:`LOSS_NAMES`) or a :data:`LossFn`."""
LOSS_NAMES = ("cross_entropy", "mse")
"""The built-in loss names."""


# ---- the shell ---------------------------------------------------------------------------------------


def make_shell(model: nn.Module, *, keep_mode: bool = False) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are empty ``meta`` tensors.

    It keeps the module structure (and weight tying) without duplicating memory; it is only ever
    run through ``functional_call`` with every tensor supplied, and its flags are the caller's to toggle.
    It is in eval mode, or with ``keep_mode=True`` in the modes ``model``'s modules are in now.

    Raises:
        LosslabError: ``model`` is not a module, or its structure cannot be copied.
    """
    if not isinstance(model, nn.Module):
        raise LosslabError(f"expected a torch.nn.Module, got {type(model).__name__}")
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty(b.shape, dtype=b.dtype, device="meta")
    try:
        shell = copy.deepcopy(model, memo)
    except Exception as e:  # noqa: BLE001
        raise LosslabError(f"cannot copy the model's structure ({type(e).__name__}: {e})") from e
    if not keep_mode:
        shell.eval()
    return shell


class Functional:
    """A model turned into a pure function of (parameters, inputs), never touching the user's module.

    The model is copied once into a :func:`make_shell` shell (always in eval mode: dropout off,
    BatchNorm uses its stored running statistics). Tensors not given in a point come from a snapshot
    of the model's parameters and buffers taken at construction.

    Attributes:
        shell: the meta copy (evaluated only through ``functional_call``).
        base: detached parameters of the model (names as ``named_parameters``).
        buffers: detached buffers of the model.
    """

    def __init__(self, model: nn.Module) -> None:
        self.shell = make_shell(model)
        self.base: Point = {k: v.detach() for k, v in model.named_parameters()}
        self.buffers: Point = {k: v.detach() for k, v in model.named_buffers()}
        if not self.base:
            raise LosslabError("the model has no parameters")

    def point(self, point: Mapping[str, Tensor] | None) -> Point:
        """``point`` checked against the model's parameter names (``None``: the model's own parameters)."""
        if point is None:
            return dict(self.base)
        unknown = sorted(set(point) - set(self.base))
        if unknown:
            raise LosslabError(f"point has keys the model lacks: {unknown[:5]}{'...' if len(unknown) > 5 else ''}")
        out = dict(self.base)
        for k, v in point.items():
            if tuple(v.shape) != tuple(self.base[k].shape):
                raise LosslabError(f"point differs in shape at {k!r}: {tuple(v.shape)} vs {tuple(self.base[k].shape)}")
            out[k] = v.detach()
        return out

    def split(self, point: Mapping[str, Tensor], names: Sequence[str] | None) -> tuple[Point, Point]:
        """(differentiated, fixed) parts of a full point; ``names=None`` means every floating parameter."""
        if names is None:
            names = [k for k, v in point.items() if v.is_floating_point()]
        missing = sorted(set(names) - set(point))
        if missing:
            raise LosslabError(f"params names not in the model: {missing}")
        if not names:
            raise LosslabError("no parameters to differentiate")
        wrt = {k: point[k] for k in names}
        fixed = {k: v for k, v in point.items() if k not in wrt}
        return wrt, fixed

    def __call__(self, point: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """The model's output on ``x`` at ``point`` (keys it lacks: the snapshot's buffers)."""
        merged = dict(self.buffers)
        merged.update(point)
        return torch.func.functional_call(self.shell, merged, (x,), strict=False)


# ---- BatchNorm -----------------------------------------------------------------------------------------

BN_MODES = ("auto", "recompute", "eval")
"""How a measurement treats BatchNorm layers (dropout is always off: every module is in eval mode).

* ``"recompute"``: at the point measured, each BatchNorm layer normalizes with the mean and the biased
  variance of its inputs over the whole BatchNorm data (the measured training data): train-mode BatchNorm
  with that data as one batch, the stored running statistics ignored. The loss is then a function of the
  parameters alone, and the same one at every point of a surface, a path or a Hessian.
* ``"eval"``: the stored running statistics (those of the checkpoint, whatever the point).
* ``"auto"``: ``"recompute"`` when the model has BatchNorm layers tracking running statistics, else ``"eval"``
  (the two are the same function then).
"""


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers of ``model`` that track running statistics (those ``bn`` modes act on)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def resolve_bn(model: nn.Module, bn: str) -> str:
    """``"recompute"`` or ``"eval"`` for ``bn`` (one of :data:`BN_MODES`) on ``model``.

    Raises:
        LosslabError: ``bn`` is not one of :data:`BN_MODES`.
    """
    if bn not in BN_MODES:
        raise LosslabError(f"bn must be one of {', '.join(BN_MODES)}, got {bn!r}")
    if bn == "auto":
        return "recompute" if batchnorm_layers(model) else "eval"
    return bn


def batchnorm_recompute(shell: nn.Module) -> None:
    """Put a private (shell) copy in the ``"recompute"`` mode of :data:`BN_MODES`, in place: every module in
    eval mode except the BatchNorm layers, which normalize with their batch's statistics and update no
    running statistics (``track_running_stats=False``), so the whole data must be one batch."""
    layers = batchnorm_layers(shell)
    shell.eval()
    for m in layers:
        m.track_running_stats = False
        m.train()


def with_recomputed_batchnorm(model: nn.Module, x: Tensor) -> nn.Module:
    """A copy of ``model`` in eval mode whose BatchNorm running statistics are those ``"recompute"`` uses at its
    parameters: the mean and biased variance of each layer's inputs over ``x`` as one batch. For measurements
    that need fixed statistics (per-example gradients: stiffness, gradient noise); ``model`` is not modified.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return model
    twin = copy.deepcopy(model)
    values: dict[int, int] = {}

    def count(m: nn.Module, inputs: tuple[Any, ...]) -> None:
        values[id(m)] = int(inputs[0].numel() // inputs[0].shape[1])

    twin.eval()
    hooks, saved = [], []
    for m in batchnorm_layers(twin):
        m.reset_running_stats()
        saved.append((m, m.momentum))
        m.momentum = None  # cumulative average: one batch gives its statistics exactly
        m.train()
        hooks.append(m.register_forward_pre_hook(count))
    try:
        with torch.no_grad():
            twin(x)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for m, momentum in saved:
            n = values.get(id(m), 1)
            if n > 1:
                m.running_var.mul_((n - 1) / n)  # torch keeps the unbiased variance; recompute normalizes with the biased
            m.momentum = momentum
    return twin.eval()


# ---- forward-mode AD ---------------------------------------------------------------------------------

_FORWARD_AD_READY = False


def ensure_forward_ad() -> None:
    """Load torch's forward-mode-AD decompositions once, silencing their import-time deprecation warning.

    On first use of forward-mode AD (``torch.func.jvp``), torch 2.13 imports
    ``torch._decomp.decompositions_for_jvp``, which calls the deprecated ``torch.jit.script`` and warns;
    under ``-W error`` that import fails and every later ``jvp`` fails with it. Importing it here under a
    targeted filter makes forward mode usable under strict warning settings.
    """
    global _FORWARD_AD_READY
    if _FORWARD_AD_READY:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*TorchScript.*", category=DeprecationWarning)
        try:
            import torch._decomp.decompositions_for_jvp  # noqa: F401
        except ImportError:  # pragma: no cover - other torch versions
            pass
    _FORWARD_AD_READY = True


# ---- losses ------------------------------------------------------------------------------------------


def _mse_default(out: Tensor, t: Tensor) -> Tensor:
    return F.mse_loss(out.reshape(t.shape), t)


def mse(out: Tensor, y: Tensor) -> Tensor:
    """Mean squared error over all elements, written out rather than ``F.mse_loss``: the same mean, but
    torch 2.13's forward-over-reverse (jvp of grad) fails on ``mse_loss_backward`` ("ZeroTensors are
    immutable"). The loss of the name ``"mse"`` in :func:`resolve_loss`."""
    return ((out.reshape(y.shape) - y) ** 2).mean()


def default_loss(y: Tensor | None = None, *, num_classes: int | None = None) -> LossFn:
    """The library's default loss for a task: cross-entropy for classification, mean squared error
    (``F.mse_loss`` of the output reshaped like the target) for regression.

    The task comes from the targets ``y`` (integer labels: classification, floating: regression) or
    from ``num_classes`` (``> 0``: classification, ``0``: regression, as a dataset ``Bundle``'s).
    """
    if num_classes is not None:
        classification = int(num_classes) > 0
    elif y is not None:
        classification = not y.is_floating_point()
    else:
        raise LosslabError("default_loss needs the targets y or num_classes")
    return F.cross_entropy if classification else _mse_default


def nll(out: Tensor, y: Tensor) -> Tensor:
    """Negative log-likelihood of log-probability outputs (``F.nll_loss``, batch mean): the loss of the name
    ``"nll"`` in :func:`resolve_loss`."""
    return F.nll_loss(out, y)


def token_cross_entropy(out: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy over tokens: outputs ``(N, T, V)`` (logits over a vocabulary of ``V``) and targets
    ``(N, T)``, the mean over all ``N·T`` tokens (targets ``-100`` are ignored, as ``F.cross_entropy``
    does). The loss of the name ``"token_cross_entropy"`` in :func:`resolve_loss`."""
    if out.dim() != y.dim() + 1:
        raise LosslabError(f"token_cross_entropy takes outputs (N, T, V) and targets (N, T), got outputs "
                           f"{tuple(out.shape)} and targets {tuple(y.shape)}")
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


_NAMED_LOSSES: dict[str, LossFn] = {"cross_entropy": F.cross_entropy, "mse": mse, "nll": nll,
                                    "token_cross_entropy": token_cross_entropy}
LOSS_CHOICES = tuple(_NAMED_LOSSES)
"""The names :func:`resolve_loss` understands (``-`` may stand for ``_``: ``cross-entropy``)."""


class _OutputKey:
    """``loss(output[key], target)`` for models returning a dict (or an object with attribute ``key``)."""

    def __init__(self, loss: LossFn, key: str) -> None:
        self.loss, self.key = loss, key
        self.__name__ = f"{getattr(loss, '__name__', type(loss).__name__)}[{key}]"

    def __call__(self, out: Any, y: Tensor) -> Tensor:
        if isinstance(out, Mapping):
            if self.key not in out:
                raise LosslabError(f"the model's output has no key {self.key!r} (keys: {sorted(map(str, out))})")
            return self.loss(out[self.key], y)
        if hasattr(out, self.key):
            return self.loss(getattr(out, self.key), y)
        raise LosslabError(f"output key {self.key!r}: the model returned a {type(out).__name__}, not a dict")


def resolve_loss(loss: LossLike | None, y: Tensor | None = None, *, num_classes: int | None = None,
                 output_key: str | None = None) -> LossFn:
    """A loss callable from a name, a ``pkg.module:function`` spec, a callable, or ``None``.

    Args:
        loss: ``None`` (:func:`default_loss` of ``y`` or ``num_classes``), a name of :data:`LOSS_CHOICES`
            (``"cross_entropy"``: ``F.cross_entropy``; ``"mse"``: :func:`mse`; ``"nll"``: :func:`nll`;
            ``"token_cross_entropy"``: :func:`token_cross_entropy` for ``(N, T)`` targets), a
            ``"pkg.module:function"`` spec of a ``function(output, target) -> scalar`` batch mean (found
            from the working directory as ``python -m`` finds modules), or a callable.
        y, num_classes: the task, for ``loss=None``.
        output_key: the model returns a dict: the loss takes ``output[output_key]``.

    Raises:
        LosslabError: an unknown name, a spec that does not import, or a non-callable.

    Example:
        >>> import torch
        >>> out, y = torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long)
        >>> round(float(resolve_loss("token-cross-entropy")(out, y)), 4)    # log 5
        1.6094
        >>> float(resolve_loss("mse", output_key="logits")({"logits": torch.ones(2)}, torch.zeros(2)))
        1.0
    """
    if loss is None:
        fn = default_loss(y, num_classes=num_classes)
    elif callable(loss):
        fn = loss
    elif isinstance(loss, str) and loss.replace("-", "_") in _NAMED_LOSSES:
        fn = _NAMED_LOSSES[loss.replace("-", "_")]
    elif isinstance(loss, str) and ":" in loss:
        from ._imports import load_callable

        fn = load_callable(loss, "loss function")
    else:
        raise LosslabError(f"unknown loss {loss!r}; use one of {', '.join(LOSS_CHOICES)}, pkg.module:function "
                           "or a callable")
    return _OutputKey(fn, output_key) if output_key else fn


# ---- data --------------------------------------------------------------------------------------------


def as_xy(
    data: Any,
    split: str | None = "train",
    *,
    what: str = "data",
    allow_empty: bool = False,
    check_finite: bool = False,
) -> tuple[Tensor, Tensor]:
    """``(x, y)`` tensors from a ``Split`` (``.x``/``.y``), a ``Bundle`` or an ``(x, y)`` pair.

    Args:
        data: the data.
        split: which split of a ``Bundle`` (``"train"`` or ``"test"``); ``None`` refuses Bundles.
        what: the name used in error messages.
        allow_empty: accept zero examples.
        check_finite: refuse floating ``x`` or ``y`` holding NaN/inf, naming the first bad example.

    Raises:
        LosslabError: not data, not tensors, differing numbers of examples, empty or non-finite.
    """
    if split is not None and hasattr(data, "train") and hasattr(data, "test"):
        if split not in ("train", "test"):
            raise LosslabError(f"split must be 'train' or 'test', got {split!r}")
        data = getattr(data, split)
    if hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        kinds = "a Split, a Bundle or an (x, y) pair" if split is not None else "a Split or an (x, y) pair"
        raise LosslabError(f"{what} must be {kinds} of tensors, got {type(data).__name__}")
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise LosslabError(f"{what}: x and y must be tensors")
    if x.shape[0] != y.shape[0]:
        raise LosslabError(f"{what}: x has {x.shape[0]} examples but y has {y.shape[0]}")
    if x.shape[0] == 0 and not allow_empty:
        raise LosslabError(f"{what} is empty")
    if check_finite:
        for name, t in (("x", x), ("y", y)):
            if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                first = int((~torch.isfinite(t.reshape(t.shape[0], -1))).any(1).nonzero()[0])
                raise LosslabError(f"{what}: {name} holds {bad} non-finite value(s) (NaN/inf), the first in example "
                                   f"{first}: every loss would be NaN")
    return x, y


# ---- the argument order ------------------------------------------------------------------------------


def _looks_like_loss(obj: Any) -> bool:
    """A loss name, a loss module or another callable that is not a model: never data."""
    if isinstance(obj, nn.Module):
        return isinstance(obj, nn.modules.loss._Loss)
    return (isinstance(obj, str) and obj in LOSS_NAMES) or callable(obj)


def _looks_like_point(obj: Any) -> bool:
    """A non-empty mapping of tensors (a point in parameter space): never data."""
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, Tensor) for v in obj.values())


def _looks_like_data(obj: Any) -> bool:
    """Tensors, an ``(x, y)`` pair, a Split, a Bundle or a DataLoader: never a loss."""
    return (isinstance(obj, (Tensor, tuple, list)) or (hasattr(obj, "x") and hasattr(obj, "y"))
            or (hasattr(obj, "train") and hasattr(obj, "test"))
            or isinstance(obj, torch.utils.data.DataLoader))


def model_then_data(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Enforce the public API's argument order on ``fn`` (a function, or a class's ``__init__``).

    Every losslab function that measures a model on data takes ``(model, data, *, loss=..., point=...,
    ...)``: the model (or ``model_factory``) first, the data second (a Split, a Bundle, an ``(x, y)``
    pair; ``x`` for functions that read inputs only), everything else by keyword. A call in another
    order (more than two positional arguments, a loss or a point where the data goes, data where the
    loss goes) raises a one-line :class:`LosslabError` naming the order; nothing is swapped silently.
    The signature (``inspect.signature``) and docstring stay ``fn``'s; the wrapper's
    ``argument_order`` attribute holds the order as the error message writes it.

    Example:
        >>> import torch
        >>> @model_then_data
        ... def mean_output(model, data, *, loss="mse"):
        ...     return float(model(data[0]).mean())
        >>> mean_output(torch.nn.Linear(2, 1), torch.nn.functional.mse_loss)
        Traceback (most recent call last):
        ...
        losslab.errors.LosslabError: mean_output(model, data, *, loss=..., ...): data is a loss (mse_loss); pass it as loss=...
    """
    params = list(inspect.signature(fn).parameters.values())
    method = bool(params) and params[0].name == "self"
    params = params[1:] if method else params
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) != 2:
        raise TypeError(f"{fn.__qualname__}: model_then_data needs exactly two positional parameters, "
                        f"got {positional}")
    data_name = positional[1]
    shown = [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.name in ("loss", "point", "point_a", "point_b")]
    name = fn.__qualname__.removesuffix(".__init__")
    keywords = "".join(f"{k}=..., " for k in shown)
    order = f"{name}({', '.join(positional)}, *, {keywords}...)"

    def fail(why: str) -> LosslabError:
        return LosslabError(f"{order}: {why}")

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = args[1:] if method else args
        if len(given) > 2:
            raise fail(f"got {len(given)} positional arguments; only {' and '.join(positional)} are positional, "
                       "pass the rest by keyword")
        data = given[1] if len(given) > 1 else kwargs.get(data_name)
        if data is not None and _looks_like_loss(data):
            what = getattr(data, "__name__", None) or type(data).__name__
            raise fail(f"{data_name} is a loss ({what}); pass it as loss=...")
        if _looks_like_point(data):
            raise fail(f"{data_name} is a point (a dict of tensors); pass it as point=...")
        if _looks_like_data(kwargs.get("loss")):
            raise fail(f"loss is data ({type(kwargs['loss']).__name__}); pass the data as the second argument")
        return fn(*args, **kwargs)

    wrapper.argument_order = order  # type: ignore[attr-defined]
    return wrapper
