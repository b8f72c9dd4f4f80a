"""Training in a random subspace of parameter space (Li et al. 2018; Fort & Jastrzebski 2019).

Only :math:`\\theta_d \\in \\mathbb{R}^d` is trained; the network is evaluated at

.. math::

    \\theta = \\theta_0 + P\\theta_d \\quad(\\text{affine subspace through } \\theta_0,\\ \\theta_d(0) = 0)

or, with ``origin=True``, in a *linear* subspace that contains the origin (Fort & Jastrzebski's
comparison):

.. math::

    \\theta = P\\theta_d, \\qquad P = [\\,\\theta_0/\\lVert\\theta_0\\rVert \\mid P'\\,],\\quad
    \\theta_d(0) = (\\lVert\\theta_0\\rVert, 0, \\dots, 0),

where :math:`P'` is a random ``(D, d-1)`` projection, so training still starts at :math:`\\theta_0`
but the radial direction is one of the ``d`` trainable directions.

``D`` counts the model's parameters with ``requires_grad`` (in ``named_parameters()`` order, flattened
as :func:`losslab.params.flatten`); the others stay fixed. The model is evaluated with
``torch.func.functional_call`` on a private structural copy whose tensors live on the ``meta`` device,
so the user's module (weights, buffers, ``training`` flag) is never touched. Training runs the copy in
train mode (dropout on, BatchNorm using batch statistics and updating a private copy of the running
statistics); the final train/test numbers come from :class:`losslab.evaluate.Evaluator` (eval mode,
BatchNorm statistics recomputed at the final point when the model has BatchNorm).

Mini-batches: epoch ``e`` visits ``torch.randperm(N, generator=g)`` in slices of ``batch_size`` (the
last one may be smaller), with one CPU generator ``g = torch.Generator().manual_seed(order_seed)``
drawn from once per epoch; ``batch_size=None`` or ``0`` is full-batch gradient descent.

Example:
    >>> import torch
    >>> from losslab import data, models
    >>> b = data.load("blobs")
    >>> net = models.build("mlp", input_shape=b.input_shape, num_classes=b.num_classes, seed=0, width=16)
    >>> r = train_subspace(net, b, d=8, seed=0, epochs=2, lr=0.05)
    >>> (r.d, r.D == sum(p.numel() for p in net.parameters()), 0.0 <= r.test_accuracy <= 1.0)
    (8, True, True)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..results import Result
from .. import params as PR
from ..errors import LosslabError
from .._functional import LossLike, as_xy, make_shell, model_then_data, resolve_loss
from ..evaluate import Evaluator
from ..optim import OptimizerLike, build as build_optimizer
from .projections import AugmentedProjection, Projection, make_projection

__all__ = ["SubspaceResult", "train_subspace", "train_full", "radial_profile", "LossLike"]

OPTIMIZERS = ("adam", "sgd", "rmsprop")


@dataclass(frozen=True, eq=False)
class SubspaceResult(Result):
    """Outcome of one (subspace or full-space) training run.

    Attributes:
        d: subspace dimension (``D`` for full-space training).
        D: number of trained parameters of the model.
        seed: projection seed (``None`` for full-space training or a user projection).
        train_loss, train_accuracy, test_loss, test_accuracy: final metrics on the full splits
            (eval mode; NaN when a split is empty or, for accuracy, for regression targets).
        history: one dict per epoch: ``epoch``, ``loss`` and ``accuracy`` (means over that epoch's
            mini-batches, train mode), ``lr``; with ``eval_every`` also ``train_loss``,
            ``train_accuracy``, ``test_loss``, ``test_accuracy`` from full evaluations.
        theta_d: final coordinates (``(d,)`` float64 array; the full flat parameters for full-space
            training).
        point: the final point :math:`\\theta` (dict of tensors keyed like ``named_parameters()``).
        diverged: the training loss became non-finite (training stopped there).
        steps: optimizer steps taken.
        seconds: wall time of the training loop plus final evaluation.
        meta: projection description, origin flag, optimizer settings, seeds, data description.
    """

    d: int
    D: int
    seed: int | None
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    history: list[dict[str, float]]
    theta_d: np.ndarray
    point: dict[str, Tensor] = field(repr=False)
    diverged: bool = False
    steps: int = 0
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """The four final metrics as a dict."""
        return {"train_loss": self.train_loss, "train_accuracy": self.train_accuracy,
                "test_loss": self.test_loss, "test_accuracy": self.test_accuracy}


# ---- shared machinery --------------------------------------------------------------------------------


class _Functional:
    """The model as a function of a flat parameter vector (never touching the user's module)."""

    def __init__(self, model: nn.Module, device: torch.device | str | None, dtype: torch.dtype | None) -> None:
        if not isinstance(model, nn.Module):
            raise LosslabError(f"model must be an nn.Module, got {type(model).__name__}")
        named = [(k, v) for k, v in model.named_parameters()]
        self.names = [k for k, v in named if v.requires_grad]
        if not self.names:
            raise LosslabError("the model has no trainable parameters")
        ref = dict(named)[self.names[0]]
        self.device = torch.device(device) if device is not None else ref.device
        self.dtype = dtype if dtype is not None else ref.dtype
        if not self.dtype.is_floating_point:
            raise LosslabError(f"trainable parameters must be floating point, got {self.dtype}")
        self.like: PR.Point = {k: v.detach().to(device=self.device, dtype=self.dtype) for k, v in named
                               if v.requires_grad}
        self.frozen: PR.Point = {k: self._cast(v.detach()) for k, v in named if not v.requires_grad}
        self.buffers: PR.Point = {k: self._cast(v.detach()).clone() for k, v in model.named_buffers()}
        self.theta0 = PR.flatten(self.like).clone()
        self.D = int(self.theta0.numel())
        self.shell = make_shell(model)
        self.model = model

    def _cast(self, t: Tensor) -> Tensor:
        return t.to(device=self.device, dtype=self.dtype) if t.is_floating_point() else t.to(self.device)

    def flat(self, point: Mapping[str, Tensor] | nn.Module | Tensor, what: str) -> Tensor:
        """A flat ``(D,)`` vector from a point, a module with the same parameters, or a flat tensor."""
        if isinstance(point, nn.Module):
            point = {k: v.detach() for k, v in point.named_parameters()}
        if isinstance(point, Tensor):
            if point.numel() != self.D:
                raise LosslabError(f"{what} has {point.numel()} entries, the model has {self.D} trainable parameters")
            return point.detach().reshape(-1).to(device=self.device, dtype=self.dtype)
        if not isinstance(point, Mapping):
            raise LosslabError(f"{what} must be a point (dict of tensors), a module or a flat tensor")
        missing = [k for k in self.names if k not in point]
        if missing:
            raise LosslabError(f"{what} lacks parameters {missing[:5]}")
        sub = {k: point[k] for k in self.names}
        PR.check_compatible(self.like, sub, what)
        return PR.flatten({k: v.detach().to(device=self.device, dtype=self.dtype) for k, v in sub.items()})

    def point(self, theta: Tensor) -> PR.Point:
        return PR.unflatten(theta, self.like)

    def forward(self, theta: Tensor, x: Tensor, buffers: Mapping[str, Tensor]) -> Tensor:
        tensors: dict[str, Tensor] = dict(self.frozen)
        tensors.update(buffers)
        tensors.update(self.point(theta))
        return torch.func.functional_call(self.shell, tensors, (x,), strict=False)


def _loss_fn(loss: LossLike) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss callable of a name or callable (:func:`losslab._functional.resolve_loss`; ``"mse"`` is
    written out so that forward-over-reverse AD works)."""
    if loss is None:
        raise LosslabError("unknown loss None; use 'cross_entropy', 'mse' or a callable")
    return resolve_loss(loss)


def _splits(data: Any) -> tuple[Any, Any]:
    """(train, test) from a Bundle, a (train, test) pair of splits, or one split / (x, y) (no test)."""
    if hasattr(data, "train") and hasattr(data, "test"):
        return data.train, data.test
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(hasattr(s, "x") for s in data):
        return data[0], data[1]
    if hasattr(data, "x") and hasattr(data, "y"):
        return data, None
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        return data, None
    raise LosslabError("data must be a Bundle, a Split, a (train, test) pair of Splits or an (x, y) tuple")


def _xy(split: Any) -> tuple[Tensor, Tensor]:
    """``(x, y)`` of a split or an ``(x, y)`` pair (:func:`losslab._functional.as_xy`; may be empty)."""
    return as_xy(split, None, what="split", allow_empty=True)


def _size(split: Any) -> int:
    return 0 if split is None else int(_xy(split)[0].shape[0])


def _make_optimizer(name: str, ps: list[Tensor], lr: float, momentum: float, weight_decay: float) -> OptimizerLike:
    """The optimizer of ``z``: :mod:`losslab.optim`'s on CPU (no ``torch._dynamo`` import), torch's elsewhere."""
    if name == "adam":
        return build_optimizer("adam", ps, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return build_optimizer("sgd", ps, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "rmsprop":
        return build_optimizer("rmsprop", ps, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise LosslabError(f"unknown optimizer {name!r}; choose {', '.join(OPTIMIZERS)}")


def _check_budget(epochs: int, lr: float, batch_size: int | None) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise LosslabError(f"epochs must be an int >= 0, got {epochs!r}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise LosslabError(f"learning rate must be > 0, got {lr!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 0):
        raise LosslabError(f"batch_size must be >= 0 (0 or None: full batch), got {batch_size!r}")


def _fit(
    fn: _Functional,
    theta_of: Callable[[Tensor], Tensor],
    z0: Tensor,
    train: Any,
    test: Any,
    *,
    loss: LossLike,
    epochs: int,
    lr: float,
    optimizer: str,
    batch_size: int | None,
    order_seed: int,
    momentum: float,
    weight_decay: float,
    eval_every: int,
    evaluators: tuple[Evaluator | None, Evaluator | None],
) -> tuple[Tensor, list[dict[str, float]], bool, int]:
    """Optimise ``z`` (starting at ``z0``) on ``loss(f(theta_of(z), x), y)``; returns (z, history, diverged, steps)."""
    _check_budget(epochs, lr, batch_size)
    lf = _loss_fn(loss)
    x, y = _xy(train)
    x = fn._cast(x.detach())
    y = fn._cast(y.detach())
    n = int(x.shape[0])
    if n == 0:
        raise LosslabError("the training split is empty")
    bs = n if not batch_size else min(int(batch_size), n)
    classify = not y.is_floating_point()
    z = z0.detach().clone().requires_grad_(True)
    opt = _make_optimizer(optimizer, [z], float(lr), float(momentum), float(weight_decay))
    g = torch.Generator().manual_seed(int(order_seed))
    buffers = {k: v.clone() for k, v in fn.buffers.items()}
    fn.shell.train()
    history: list[dict[str, float]] = []
    diverged = False
    steps = 0
    try:
        for epoch in range(1, epochs + 1):
            perm = torch.randperm(n, generator=g).to(fn.device)
            tot_loss, tot_acc = 0.0, 0.0
            for s in range(0, n, bs):
                idx = perm[s : s + bs]
                xb, yb = x[idx], y[idx]
                out = fn.forward(theta_of(z), xb, buffers)
                value = lf(out, yb)
                opt.zero_grad(set_to_none=True)
                value.backward()
                lv = float(value.detach())
                if not math.isfinite(lv):
                    diverged = True
                    break
                opt.step()
                steps += 1
                tot_loss += lv * len(idx)
                if classify:
                    tot_acc += float((out.detach().argmax(1) == yb).sum())
            if diverged:
                break
            rec: dict[str, float] = {"epoch": epoch, "loss": tot_loss / n, "lr": float(lr),
                                     "accuracy": tot_acc / n if classify else float("nan")}
            if eval_every and epoch % eval_every == 0 and epoch < epochs:
                rec.update(_final_metrics(fn, theta_of(z.detach()), evaluators))
            history.append(rec)
    finally:
        fn.shell.eval()
    return z.detach(), history, diverged, steps


def _evaluators(fn: _Functional, train: Any, test: Any, loss: LossLike, batch_size: int | None) -> tuple[Evaluator | None, Evaluator | None]:
    kw: dict[str, Any] = {"loss": loss, "device": fn.device, "dtype": fn.dtype, "strategy": "loop"}
    tr = Evaluator(fn.model, train, **kw) if _size(train) else None
    te = Evaluator(fn.model, test, bn_data=train, **kw) if _size(test) else None
    return tr, te


def _final_metrics(fn: _Functional, theta: Tensor, evaluators: tuple[Evaluator | None, Evaluator | None]) -> dict[str, float]:
    point = fn.point(theta.detach())
    out: dict[str, float] = {}
    for name, ev in zip(("train", "test"), evaluators):
        r = ev.evaluate(point) if ev is not None else {}
        out[f"{name}_loss"] = float(r.get("loss", float("nan")))
        out[f"{name}_accuracy"] = float(r.get("accuracy", float("nan")))
    return out


def _data_meta(data: Any) -> dict[str, Any]:
    desc = getattr(data, "describe", None)
    if callable(desc):
        try:
            return {k: v for k, v in desc().items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}
        except Exception:  # noqa: BLE001 - description only
            return {}
    return {}


# ---- public functions -------------------------------------------------------------------------------


@model_then_data
def train_subspace(
    model: nn.Module,
    data: Any,
    *,
    d: int,
    projection: str | Projection = "dense",
    seed: int = 0,
    epochs: int = 20,
    lr: float = 0.05,
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam",
    batch_size: int | None = 128,
    theta0: Mapping[str, Tensor] | nn.Module | Tensor | None = None,
    origin: bool = False,
    order_seed: int | None = None,
    loss: LossLike = "cross_entropy",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    eval_every: int = 0,
    projection_options: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SubspaceResult:
    """Train ``model`` in a random ``d``-dimensional subspace: :math:`\\theta = \\theta_0 + P\\theta_d`.

    Args:
        model: any ``nn.Module`` (a template: never modified).
        data: a :class:`~losslab.data.Bundle` (train on ``train``, report ``train`` and ``test``), a
            ``(train, test)`` pair of splits, or one split / ``(x, y)`` (then no test metrics).
        d: subspace dimension, ``1 <= d <= D``.
        projection: ``"dense"``, ``"sparse"``, ``"fastfood"`` or a :class:`Projection` instance of
            shape ``(D, d)`` (``(D, d-1)`` with ``origin=True``).
        seed: seed of the random projection.
        epochs, lr, optimizer, batch_size, momentum, weight_decay: the training budget (optimizer on
            :math:`\\theta_d` only; ``weight_decay`` acts on :math:`\\theta_d`).
        theta0: the anchor point :math:`\\theta_0` (point, module or flat tensor; default: the
            model's current parameters, i.e. its initialisation when freshly built).
        origin: train in the linear subspace through the origin spanned by :math:`\\theta_0` and
            ``d - 1`` random directions (see the module docstring) instead of the affine one.
        order_seed: seed of the mini-batch order (default: ``seed``).
        loss: ``"cross_entropy"``, ``"mse"`` or ``loss(output, target) -> scalar`` (batch mean).
        eval_every: also evaluate the full splits every this many epochs (0: only at the end).
        projection_options: options of a named projection (``density``, ``block_size``).
        device, dtype: where and in what precision to train (default: the model's).

    Returns:
        A :class:`SubspaceResult`.

    Raises:
        LosslabError: bad dimension, projection, optimizer or data.
    """
    fn = _Functional(model, device, dtype)
    D = fn.D
    if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= D:
        raise LosslabError(f"d must be an int in [1, D={D}], got {d!r}")
    train, test = _splits(data)
    base = fn.theta0 if theta0 is None else fn.flat(theta0, "theta0")
    opts = dict(projection_options or {})
    inner_d = d - 1 if origin else d
    if isinstance(projection, str):
        proj: Projection | None = (make_projection(projection, D, inner_d, seed=int(seed), dtype=fn.dtype,
                                                   device=fn.device, **opts) if inner_d > 0 else None)
        pseed: int | None = int(seed)
    else:
        if opts:
            raise LosslabError("projection_options apply to named projections only")
        if not hasattr(projection, "D") or not callable(projection):
            raise LosslabError(f"projection must be a name or a Projection, got {type(projection).__name__}")
        if (projection.D, projection.d) != (D, inner_d):
            raise LosslabError(f"projection maps {projection.d} -> {projection.D}, expected {inner_d} -> {D}")
        proj = projection.to(fn.device, fn.dtype)
        pseed = getattr(projection, "seed", None)
    if origin:
        full = AugmentedProjection(base, proj)
        z0 = torch.zeros(d, device=fn.device, dtype=fn.dtype)
        z0[0] = base.norm()
        theta_of: Callable[[Tensor], Tensor] = full
        pmeta = full.meta
    else:
        assert proj is not None
        z0 = torch.zeros(d, device=fn.device, dtype=fn.dtype)

        def theta_of(z: Tensor) -> Tensor:
            return base + proj(z)

        pmeta = proj.meta
    t0 = time.perf_counter()
    evs = _evaluators(fn, train, test, loss, batch_size)
    z, history, diverged, steps = _fit(
        fn, theta_of, z0, train, test, loss=loss, epochs=epochs, lr=lr, optimizer=optimizer,
        batch_size=batch_size, order_seed=int(seed if order_seed is None else order_seed), momentum=momentum,
        weight_decay=weight_decay, eval_every=eval_every, evaluators=evs,
    )
    with torch.no_grad():
        theta = theta_of(z)
    final = _final_metrics(fn, theta, evs)
    if history:
        history[-1].update(final)
    meta = {
        "projection": pmeta, "origin": bool(origin), "optimizer": optimizer, "lr": float(lr), "epochs": epochs,
        "batch_size": batch_size, "momentum": momentum, "weight_decay": weight_decay,
        "order_seed": int(seed if order_seed is None else order_seed), "theta0_norm": float(base.norm()),
        "final_norm": float(theta.norm()), "distance": float((theta - base).norm()), "data": _data_meta(data),
    }
    return _result(fn, z, theta, d=d, D=D, seed=pseed, history=history, diverged=diverged, steps=steps, t0=t0,
                   meta=meta, final=final)


def _result(fn: Any, z: Tensor, theta: Tensor, *, d: int, D: int, seed: Any, history: list, diverged: bool,
            steps: int, t0: float, meta: dict[str, Any], final: dict[str, Any]) -> SubspaceResult:
    """The :class:`SubspaceResult` of a run ending at coordinates ``z`` (full parameters ``theta``)."""
    return SubspaceResult(
        d=d, D=D, seed=seed, history=history, theta_d=z.double().cpu().numpy(),
        point={k: v.clone() for k, v in fn.point(theta).items()}, diverged=diverged, steps=steps,
        seconds=time.perf_counter() - t0, meta=meta, **final,
    )


@model_then_data
def train_full(
    model: nn.Module,
    data: Any,
    *,
    epochs: int = 20,
    lr: float = 0.001,
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam",
    batch_size: int | None = 128,
    theta0: Mapping[str, Tensor] | nn.Module | Tensor | None = None,
    order_seed: int = 0,
    loss: LossLike = "cross_entropy",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    eval_every: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SubspaceResult:
    """Plain full-space training with the same loop, batches and evaluation as :func:`train_subspace`
    (the baseline of :func:`~losslab.subspace.intrinsic_dimension`); ``d = D`` in the result.

    Example:
        >>> from losslab import data, models
        >>> b = data.load("blobs")
        >>> net = models.build("mlp", input_shape=b.input_shape, num_classes=b.num_classes, seed=0, width=8)
        >>> train_full(net, b, epochs=1).d == sum(p.numel() for p in net.parameters())
        True
    """
    fn = _Functional(model, device, dtype)
    train, test = _splits(data)
    base = fn.theta0 if theta0 is None else fn.flat(theta0, "theta0")
    t0 = time.perf_counter()
    evs = _evaluators(fn, train, test, loss, batch_size)
    z, history, diverged, steps = _fit(
        fn, lambda t: t, base, train, test, loss=loss, epochs=epochs, lr=lr, optimizer=optimizer,
        batch_size=batch_size, order_seed=int(order_seed), momentum=momentum, weight_decay=weight_decay,
        eval_every=eval_every, evaluators=evs,
    )
    final = _final_metrics(fn, z, evs)
    if history:
        history[-1].update(final)
    meta = {"projection": None, "origin": False, "optimizer": optimizer, "lr": float(lr), "epochs": epochs,
            "batch_size": batch_size, "order_seed": int(order_seed), "theta0_norm": float(base.norm()),
            "final_norm": float(z.norm()), "distance": float((z - base).norm()), "data": _data_meta(data)}
    return _result(fn, z, z, d=fn.D, D=fn.D, seed=None, history=history, diverged=diverged, steps=steps, t0=t0,
                   meta=meta, final=final)


@model_then_data
def radial_profile(
    model: nn.Module,
    data: Any,
    *,
    point: Mapping[str, Tensor] | nn.Module | Tensor | None = None,
    radii: Sequence[float] | np.ndarray | None = None,
    num: int = 41,
    max_factor: float = 3.0,
    progress: bool = False,
    **evaluator_kwargs: Any,
):
    """Loss and accuracy along the ray from the origin through ``point`` (Fort & Jastrzebski 2019).

    Evaluates :math:`\\theta(r) = r\\,\\hat\\theta` with :math:`\\hat\\theta = \\theta/\\lVert\\theta\\rVert`
    over the trainable parameters (other parameters and buffers are the model's), so ``r`` is the
    Euclidean norm of the evaluated point and ``r = ||point||`` is the point itself.

    Args:
        model: the network (template; never modified).
        data: a ``Split`` / ``(x, y)`` (a Bundle's ``train`` split is used for a Bundle).
        point: the point defining the ray (default: the model's parameters).
        radii: norms to evaluate at (default ``num`` values in ``[0, max_factor * ||point||]``).
        num, max_factor: the default grid.
        progress: show a progress bar.
        **evaluator_kwargs: passed to :class:`~losslab.evaluate.Evaluator`.

    Returns:
        A :class:`~losslab.surface.SurfaceResult` of kind ``"line"`` with ``x`` = the radii and
        ``meta["user"]["point_norm"]`` = :math:`\\lVert\\theta\\rVert`.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(3, 2)
        >>> xy = (torch.randn(16, 3), torch.randint(0, 2, (16,)))
        >>> r = radial_profile(net, xy, radii=[0.0, 1.0])
        >>> r.x.tolist(), bool(abs(r.metrics["loss"][0] - float(torch.log(torch.tensor(2.0)))) < 1e-6)
        ([0.0, 1.0], True)
    """
    from ..surface import line

    fn = _Functional(model, evaluator_kwargs.get("device"), evaluator_kwargs.get("dtype"))
    theta = fn.theta0 if point is None else fn.flat(point, "point")
    nrm = float(theta.norm())
    if nrm == 0.0:
        raise LosslabError("the ray through the origin needs a non-zero point")
    if radii is None:
        radii = np.linspace(0.0, max_factor * nrm, int(num))
    split = data.train if hasattr(data, "train") and hasattr(data, "test") else data
    unit = fn.point(theta / nrm)
    zero = {k: torch.zeros_like(v) for k, v in unit.items()}
    return line(model, split, direction=unit, origin=zero, alphas=np.asarray(radii, dtype=np.float64),
                progress=progress, meta={"point_norm": nrm, "kind": "radial_profile"}, **evaluator_kwargs)
