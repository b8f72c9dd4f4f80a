"""Checkpoint loading with one-line errors, and parameter counting."""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..errors import LosslabError

__all__ = ["load_checkpoint", "load_state_dict_checked", "count_parameters"]

_SHOW = 8


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return f"[{shown}{f', ... ({len(keys) - _SHOW} more)' if len(keys) > _SHOW else ''}]"


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, Any]) -> nn.Module:
    """``model.load_state_dict(state_dict)`` (strict), with mismatches reported as one line.

    Args:
        model: the module to load into (modified in place).
        state_dict: tensors keyed like ``model.state_dict()``.

    Returns:
        ``model``, for chaining.

    Raises:
        LosslabError: listing missing keys, unexpected keys and shape mismatches (at most 8 names each).

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(2, 1)
        >>> load_state_dict_checked(m, {"weight": torch.zeros(1, 2)})
        Traceback (most recent call last):
        ...
        losslab.errors.LosslabError: state dict does not fit Linear: missing keys [bias]
    """
    if not isinstance(state_dict, Mapping):
        raise LosslabError(f"state dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and isinstance(v, Tensor) and v.shape != own[k].shape
    ]
    not_tensors = [k for k, v in state_dict.items() if k in own and not isinstance(v, Tensor)]
    problems = []
    if missing:
        problems.append(f"missing keys {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_names(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches {_names(shapes)}")
    if not_tensors:
        problems.append(f"non-tensor values {_names(not_tensors)}")
    if problems:
        hint = ""
        if unexpected and all(k.startswith("module.") for k in state_dict):
            hint = " (keys start with 'module.': saved from a DataParallel/DDP wrapper; strip the prefix)"
        raise LosslabError(f"state dict does not fit {type(model).__name__}: {'; '.join(problems)}{hint}")
    try:
        model.load_state_dict(dict(state_dict))
    except RuntimeError as exc:  # e.g. dtype/device issues not caught above
        raise LosslabError(f"cannot load state dict into {type(model).__name__}: {str(exc).splitlines()[0]}") from exc
    return model


def load_checkpoint(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict saved with ``torch.save`` (safely: ``weights_only=True``, onto the CPU).

    A file holding a dict with a ``"model"`` or ``"state_dict"`` entry (as trainers often save) yields
    that entry.

    Args:
        path: checkpoint file.

    Returns:
        The state dict, name -> tensor.

    Raises:
        LosslabError: the file is missing, unreadable, corrupt, needs unsafe unpickling, or holds no
            state dict; the message names the path.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise LosslabError(f"checkpoint not found: {os.fspath(path)}") from None
    except Exception as exc:  # noqa: BLE001 - pickle/zip/permission errors all mean "unusable file"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise LosslabError(f"cannot read checkpoint {os.fspath(path)}: {type(exc).__name__}: {first}") from exc
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise LosslabError(
            f"checkpoint {os.fspath(path)} holds no state dict (a non-empty mapping of names to tensors, "
            f"possibly under 'model' or 'state_dict'); found {type(obj).__name__}"
        )
    return dict(obj)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (shared parameters counted once).

    Args:
        model: the module.
        trainable_only: count only parameters with ``requires_grad``.

    Example:
        >>> import torch
        >>> count_parameters(torch.nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
