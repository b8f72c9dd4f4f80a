"""SGD, Adam and RMSprop for CPU training: torch's arithmetic, without importing ``torch._dynamo``.

torch's optimizers import ``torch._dynamo`` (about a second of start-up, a third of
``losslab train --dataset digits`` on a quiet machine) the first time one is built or stepped:
``Optimizer.add_param_group``, ``zero_grad``, ``state_dict`` and ``load_state_dict`` are wrapped in
``torch._disable_dynamo``, and every ``step()`` runs under ``_use_grad_for_differentiable``, which
imports it; no setting avoids that. The classes here never import it.

**Bit-identical to torch on CPU.** Each ``step()`` does the tensor operations of torch's
single-tensor ("for-loop") implementation, in the same order and with the same Python scalars
(``_single_tensor_sgd``, ``_single_tensor_adam``, ``_single_tensor_rmsprop`` of torch 2.x with
``differentiable=False``, ``capturable=False``): the implementation torch itself picks for CPU
parameters, since its foreach and fused kernels are for accelerators. So a run trained with these
classes ends with the same bits as one trained with ``torch.optim``; ``tests/test_optim.py`` checks
parameters and state against torch step by step. Supported options: SGD ``lr, momentum, dampening,
weight_decay, nesterov, maximize``; Adam ``lr, betas, eps, weight_decay, amsgrad, maximize,
decoupled_weight_decay``; RMSprop ``lr, alpha, eps, weight_decay, momentum, centered, maximize``.

**Compatible state dicts.** ``state_dict()`` has torch's format and content: ``{"state": {index:
{...}}, "param_groups": [{<hyper-parameters>, "params": [index, ...]}]}`` with torch's keys
(``foreach``, ``fused``, ``differentiable``, ... included, at their defaults), the same per-parameter
state (``momentum_buffer``; Adam's ``step``, ``exp_avg``, ``exp_avg_sq``; RMSprop's ``step``,
``square_avg``, ...; ``step`` a 0-d float32 tensor, float64 under a float64 default dtype, as
torch's) and only plain tensors, numbers, tuples, lists and dicts (it loads with
``torch.load(weights_only=True)``). A torch optimizer's state dict loads into these classes and theirs
into torch's, and training continues bit-identically either way; ``load_state_dict`` casts the state
as torch does (to each parameter's dtype and device, ``step`` kept as is).

**Only for CPU parameters.** :func:`build` returns these classes when every parameter is on the CPU
and ``torch.optim``'s otherwise: on accelerators torch's foreach/fused kernels are faster and
start-up does not matter. Both expose what losslab uses: ``step(closure=None)``,
``zero_grad(set_to_none=True)``, ``state_dict()``, ``load_state_dict()``, ``state``, ``defaults`` and
``param_groups`` (a list of dicts with ``"params"`` and the hyper-parameters: setting
``group["lr"]`` changes the next step's learning rate). Not supported (a ``ValueError`` that says to
use ``torch.optim``): tensor-valued hyper-parameters, complex parameters, ``foreach``, ``fused``,
``differentiable`` or ``capturable`` set to ``True``; there are no hooks, and torch's
``lr_scheduler`` classes, which require a ``torch.optim.Optimizer``, do not accept these.

Example:
    >>> import torch
    >>> from losslab import optim
    >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    >>> opt = optim.SGD([w], lr=0.1, momentum=0.9)
    >>> (w ** 2).sum().backward()
    >>> opt.step()
    >>> w.detach().tolist()
    [0.800000011920929, -1.600000023841858]
    >>> sd = opt.state_dict()  # torch.optim.SGD's format: it loads there too
    >>> sorted(sd["state"][0]), sd["param_groups"][0]["params"]
    (['momentum_buffer'], [0])
    >>> type(optim.build("adam", [w], lr=1e-3))
    <class 'losslab.optim.Adam'>
"""
from __future__ import annotations

import warnings
from collections import defaultdict
from copy import deepcopy
from itertools import chain
from typing import Any, Callable, Iterable, Union

import torch
from torch import Tensor

from .errors import LosslabError

__all__ = ["Optimizer", "SGD", "Adam", "RMSprop", "OptimizerLike", "NAMES", "build"]

NAMES = ("sgd", "adam", "rmsprop")
"""The optimizers :func:`build` knows."""

_UNSUPPORTED_FLAGS = ("foreach", "fused", "differentiable", "capturable")


def _scalar_dtype() -> torch.dtype:
    """The dtype of Adam's and RMSprop's ``step`` tensor (torch's ``_get_scalar_dtype()``, not fused)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _cast(param: Tensor, value: Any, key: Any = None) -> Any:
    """A loaded state value for ``param``, as torch's ``Optimizer.load_state_dict`` makes it: tensors
    to the parameter's device (and dtype, for a floating parameter), except ``step``, kept as is."""
    if isinstance(value, Tensor):
        if key == "step":
            return value
        if param.is_floating_point():
            return value.to(dtype=param.dtype, device=param.device)
        return value.to(device=param.device)
    if isinstance(value, dict):
        return {k: _cast(param, v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(param, v) for v in value)
    return value


class Optimizer:
    """Parameter groups and per-parameter state, as :class:`torch.optim.Optimizer` keeps them.

    Subclasses set their defaults (in torch's order, so that state dicts match key for key) and
    implement ``_update(group)``, one group's step under ``torch.no_grad()``.

    Args:
        params: tensors, ``(name, tensor)`` pairs, or dicts of parameter groups (``"params"`` and
            hyper-parameters that override ``defaults``).
        defaults: the hyper-parameters of a group that does not give them.

    Raises:
        TypeError, ValueError: as torch's optimizers for bad parameters; ``ValueError`` for an
            option these classes do not support.
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            "but got " + torch.typename(params))
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def __repr__(self) -> str:
        out = self.__class__.__name__ + " ("
        for i, group in enumerate(self.param_groups):
            out += f"\nParameter Group {i}\n"
            for key in sorted(group):
                if key != "params":
                    out += f"    {key}: {group[key]}\n"
        return out + ")"

    # ------------------------------------------------------------ groups

    def _check_group(self, group: dict[str, Any]) -> None:
        """Refuse what torch's single-tensor, non-differentiable CPU path does not cover."""
        name = type(self).__name__
        for flag in _UNSUPPORTED_FLAGS:
            if group.get(flag):
                raise ValueError(f"losslab.optim.{name} does not support {flag}=True; use torch.optim.{name}")
        for k, v in group.items():
            if k in ("params", "param_names"):
                continue
            if isinstance(v, Tensor) or (isinstance(v, (tuple, list)) and any(isinstance(x, Tensor) for x in v)):
                raise ValueError(f"losslab.optim.{name}: {k} must be a number, not a tensor; use torch.optim.{name}")
        for p in group["params"]:
            if torch.is_complex(p):
                raise ValueError(f"losslab.optim.{name} does not support complex parameters; use torch.optim.{name}")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (a dict with ``"params"``; missing hyper-parameters come from ``defaults``),
        with torch's checks: ordered tensors only, leaves, no parameter in two groups."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the ordering of "
                            "tensors in sets will change between runs. Please use a list instead.")
        params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        tensors = [p[1] if isinstance(p, tuple) else p for p in params]
        param_group["params"] = tensors
        if names:
            if len(names) != len(tensors):
                raise ValueError("all optimizer params should be with/without names. Some param names are missing")
            param_group["param_names"] = names
        for p in tensors:
            if not isinstance(p, Tensor):
                raise TypeError("optimizer can only optimize Tensors, but one of the params is " + torch.typename(p))
            if not (p.is_leaf or p.retains_grad):
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            param_group.setdefault(name, default)
        if len(tensors) != len(set(tensors)):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; in future, this will "
                          "cause an error; see github.com/pytorch/pytorch/issues/40967 for more information",
                          stacklevel=3)
        seen: set[Tensor] = set()
        for g in self.param_groups:
            seen.update(g["params"])
            if ("param_names" in param_group) != ("param_names" in g):
                txt = "with names" if "param_names" in param_group else "without names"
                raise ValueError("all optimizer param groups should be with/without names. "
                                 f"cannot add param group {txt} to the optimizer")
        if not seen.isdisjoint(tensors):
            raise ValueError("some parameters appear in more than one parameter group")
        self._check_group(param_group)
        self.param_groups.append(param_group)

    # ------------------------------------------------------------ stepping

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients: ``None`` (default) or, with ``set_to_none=False``, detached zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        if p.grad.grad_fn is not None:
                            p.grad.detach_()
                        else:
                            p.grad.requires_grad_(False)
                        p.grad.zero_()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimization step over every group (parameters without a gradient are skipped).

        Args:
            closure: optional; re-evaluates the model (with gradients enabled) and returns the loss.

        Returns:
            The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            for group in self.param_groups:
                self._update(group)
        return loss

    def _update(self, group: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------ state dicts

    def state_dict(self) -> dict[str, Any]:
        """The state in torch's format: ``{"state": {index: {...}}, "param_groups": [...]}``, parameters
        numbered in group order; the state's tensors are the optimizer's own (not copies), as torch's."""
        mapping: dict[int, int] = {}
        start = 0

        def pack(group: dict[str, Any]) -> dict[str, Any]:
            nonlocal start
            packed = {k: v for k, v in group.items() if k != "params"}
            mapping.update({id(p): i for i, p in enumerate(group["params"], start) if id(p) not in mapping})
            packed["params"] = [mapping[id(p)] for p in group["params"]]
            start += len(packed["params"])
            return packed

        groups = [pack(g) for g in self.param_groups]
        state = {(mapping[id(k)] if isinstance(k, Tensor) else k): v for k, v in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict of this class or of torch's class of the same name (as torch does: the
        saved hyper-parameters replace the groups', the state is cast to each parameter's dtype and
        device, tensors that need no cast are shared with ``state_dict``).

        Raises:
            ValueError: a different number of groups or of parameters in a group, or an option these
                classes do not support.
        """
        groups = self.param_groups
        saved = deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                             "optimizer's group")
        id_map = dict(zip(chain.from_iterable(g["params"] for g in saved),
                          chain.from_iterable(g["params"] for g in groups)))
        new_groups = []
        for g, s in zip(groups, saved):
            s["params"] = g["params"]
            if "param_names" in g and "param_names" not in s:
                s["param_names"] = g["param_names"]
            for k, v in self.defaults.items():  # a state dict of an older torch may lack newer options
                s.setdefault(k, v)
            self._check_group(s)
            new_groups.append(s)
        state: defaultdict[Any, dict[str, Any]] = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k in id_map:
                state[id_map[k]] = _cast(id_map[k], v)
            else:
                state[k] = v
        self.state, self.param_groups = state, new_groups
        self._after_load()

    def _after_load(self) -> None:
        """Adam and RMSprop: a ``step`` saved as a number becomes a tensor (torch's ``__setstate__``)."""


class SGD(Optimizer):
    """Stochastic gradient descent (with momentum, Nesterov, weight decay), as :class:`torch.optim.SGD`.

    Args:
        params: tensors or parameter groups.
        lr: learning rate.
        momentum: momentum factor (0: plain SGD, no state).
        dampening: dampening of the momentum.
        weight_decay: L2 penalty added to the gradient.
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        maximize: ascend instead of descend.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize,
                                  "foreach": None, "differentiable": False, "fused": None})

    def _update(self, group: dict[str, Any]) -> None:
        momentum = group["momentum"]
        params, grads, bufs = [], [], []
        for p in group["params"]:
            if p.grad is not None:
                params.append(p)
                grads.append(p.grad)
                if momentum != 0:
                    bufs.append(self.state[p].get("momentum_buffer"))
        weight_decay, lr, dampening = group["weight_decay"], group["lr"], group["dampening"]
        nesterov, maximize = group["nesterov"], group["maximize"]
        for i, param in enumerate(params):  # torch's _single_tensor_sgd
            grad = grads[i] if not maximize else -grads[i]
            if weight_decay != 0:
                grad = grad.add(param, alpha=weight_decay)
            if momentum != 0:
                buf = bufs[i]
                if buf is None:
                    buf = grad.detach().clone()
                    bufs[i] = buf
                else:
                    buf.mul_(momentum).add_(grad, alpha=1 - dampening)
                grad = grad.add(buf, alpha=momentum) if nesterov else buf
            param.add_(grad, alpha=-lr)
        if momentum != 0:
            for p, buf in zip(params, bufs):
                self.state[p]["momentum_buffer"] = buf


class _StepCounting(Optimizer):
    """Adam and RMSprop keep a ``step`` tensor per parameter."""

    def _after_load(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                if st and not torch.is_tensor(st["step"]):
                    st["step"] = torch.tensor(float(st["step"]), dtype=_scalar_dtype())


class Adam(_StepCounting):
    """Adam (Kingma & Ba), with L2 or decoupled (AdamW) weight decay and AMSGrad, as :class:`torch.optim.Adam`.

    Args:
        params: tensors or parameter groups.
        lr: learning rate.
        betas: decay rates of the first and second moment averages.
        eps: added to the denominator.
        weight_decay: L2 penalty added to the gradient (or, with ``decoupled_weight_decay``, a decay
            of the parameters by ``lr * weight_decay`` per step).
        amsgrad: normalize by the running maximum of the second moment.
        maximize: ascend instead of descend.
        decoupled_weight_decay: AdamW's weight decay.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                                  "amsgrad": amsgrad, "maximize": maximize, "foreach": None, "capturable": False,
                                  "differentiable": False, "fused": None,
                                  "decoupled_weight_decay": decoupled_weight_decay})

    def _update(self, group: dict[str, Any]) -> None:
        amsgrad = group["amsgrad"]
        params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps = [], [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            params.append(p)
            if p.grad.is_sparse:
                raise RuntimeError("Adam does not support sparse gradients, please consider SparseAdam instead")
            grads.append(p.grad)
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.tensor(0.0, dtype=_scalar_dtype(), device="cpu")
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if amsgrad:
                    state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            if amsgrad:
                max_sqs.append(state["max_exp_avg_sq"])
            steps.append(state["step"])
        beta1, beta2 = group["betas"]
        lr, weight_decay, eps, maximize = group["lr"], group["weight_decay"], group["eps"], group["maximize"]
        decoupled = group["decoupled_weight_decay"]
        for i, param in enumerate(params):  # torch's _single_tensor_adam (capturable=differentiable=False)
            grad = grads[i] if not maximize else -grads[i]
            exp_avg, exp_avg_sq, step_t = exp_avgs[i], exp_avg_sqs[i], steps[i]
            step_t += 1
            if weight_decay != 0:
                if decoupled:
                    param.mul_(1 - lr * weight_decay)
                else:
                    grad = grad.add(param, alpha=weight_decay)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step = step_t.item()
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            step_size = lr / bias_correction1
            bias_correction2_sqrt = bias_correction2**0.5
            if amsgrad:
                torch.maximum(max_sqs[i], exp_avg_sq, out=max_sqs[i])
                denom = (max_sqs[i].sqrt() / bias_correction2_sqrt).add_(eps)
            else:
                denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
            param.addcdiv_(exp_avg, denom, value=-step_size)


class RMSprop(_StepCounting):
    """RMSprop (Hinton), optionally centered and with momentum, as :class:`torch.optim.RMSprop`.

    Args:
        params: tensors or parameter groups.
        lr: learning rate.
        alpha: smoothing constant of the squared-gradient average.
        eps: added to the denominator.
        weight_decay: L2 penalty added to the gradient.
        momentum: momentum factor (0: none).
        centered: normalize by an estimate of the gradient's variance.
        maximize: ascend instead of descend.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False, *,
                 maximize: bool = False) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps, "centered": centered,
                                  "weight_decay": weight_decay, "capturable": False, "foreach": None,
                                  "maximize": maximize, "differentiable": False})

    def _update(self, group: dict[str, Any]) -> None:
        momentum, centered = group["momentum"], group["centered"]
        params, grads, square_avgs, bufs, grad_avgs, steps = [], [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            params.append(p)
            if p.grad.is_sparse:
                raise RuntimeError("RMSprop does not support sparse gradients")
            grads.append(p.grad)
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.zeros((), dtype=_scalar_dtype())
                state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if momentum > 0:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if centered:
                    state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            square_avgs.append(state["square_avg"])
            steps.append(state["step"])
            if momentum > 0:
                bufs.append(state["momentum_buffer"])
            if centered:
                grad_avgs.append(state["grad_avg"])
        lr, alpha, eps, weight_decay, maximize = (group["lr"], group["alpha"], group["eps"], group["weight_decay"],
                                                  group["maximize"])
        for i, param in enumerate(params):  # torch's _single_tensor_rmsprop (capturable=differentiable=False)
            grad = grads[i] if not maximize else -grads[i]
            square_avg = square_avgs[i]
            steps[i] += 1
            if weight_decay != 0:
                grad = grad.add(param, alpha=weight_decay)
            square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
            if centered:
                grad_avg = grad_avgs[i]
                grad_avg.lerp_(grad, 1 - alpha)
                avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
            else:
                avg = square_avg.sqrt()
            avg = avg.add_(eps)
            if momentum > 0:
                buf = bufs[i]
                buf.mul_(momentum).addcdiv_(grad, avg)
                param.add_(buf, alpha=-lr)
            else:
                param.addcdiv_(grad, avg, value=-lr)


OptimizerLike = Union[Optimizer, torch.optim.Optimizer]
"""What :func:`build` returns: one of the classes here (CPU) or a ``torch.optim`` optimizer."""

_OURS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "rmsprop": RMSprop}
_TORCH = {"sgd": "SGD", "adam": "Adam", "rmsprop": "RMSprop"}


def build(name: str, params: Iterable[Any], **options: Any) -> OptimizerLike:
    """An optimizer by name: this module's class when every parameter is on the CPU, ``torch.optim``'s otherwise.

    Args:
        name: ``"sgd"``, ``"adam"`` or ``"rmsprop"``.
        params: tensors, ``(name, tensor)`` pairs, or parameter groups (dicts with ``"params"``).
        **options: the hyper-parameters, as the classes (and torch's) take them.

    Returns:
        The optimizer; both kinds have ``step``, ``zero_grad``, ``state_dict``, ``load_state_dict`` and
        ``param_groups``, with the same state dict format.

    Raises:
        LosslabError: an unknown name.
    """
    if name not in _OURS:
        raise LosslabError(f"unknown optimizer {name!r}; choose {', '.join(NAMES)}")
    items: list[Any] = []
    tensors: list[Any] = []
    for item in params:
        if isinstance(item, dict):
            ps = item["params"]
            ps = [ps] if isinstance(ps, Tensor) else list(ps)
            item = {**item, "params": ps}
            tensors.extend(ps)
        else:
            tensors.append(item)
        items.append(item)
    on_cpu = all((t[1] if isinstance(t, tuple) else t).device.type == "cpu" for t in tensors
                 if isinstance(t, (Tensor, tuple)))
    if on_cpu:
        return _OURS[name](items, **options)
    return getattr(torch.optim, _TORCH[name])(items, **options)
