"""Checkpoint loading with one-line errors, and parameter counting."""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..errors import LosslabError

__all__ = ["load_checkpoint", "load_state_dict_checked", "count_parameters", "match_state_dict", "unwrap_model",
           "WRAPPER_KEYS", "KEY_PREFIXES"]

_SHOW = 8

#: Entries under which trainers save the model's state dict (Lightning: ``state_dict``; common scripts: ``model``,
#: ``model_state_dict``). :func:`load_checkpoint` looks in them, in this order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")

#: Key prefixes that wrappers add: ``module.`` (``nn.DataParallel``/DDP), ``_orig_mod.`` (``torch.compile``),
#: ``model.`` (a Lightning module holding the network as ``self.model``). :func:`match_state_dict` strips them
#: (up to three, in any order) when that makes the keys match the model's.
KEY_PREFIXES = ("module.", "_orig_mod.", "model.")


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
    not_float = [
        f"{k} {str(v.dtype).replace('torch.', '')}"
        for k, v in state_dict.items()
        if k in own and isinstance(v, Tensor) and own[k].is_floating_point() and not v.is_floating_point()
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_names(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches {_names(shapes)}")
    if not_tensors:
        problems.append(f"non-tensor values {_names(not_tensors)}")
    if not_float:
        problems.append(f"non-floating-point weights {_names(not_float)} where the model has floating-point ones")
    if problems:
        hint = ""
        prefixed = [p for p in KEY_PREFIXES if unexpected and all(k.startswith(p) for k in state_dict)]
        if prefixed:
            origin = {"module.": "DataParallel/DDP", "_orig_mod.": "torch.compile", "model.": "Lightning"}[prefixed[0]]
            hint = (f" (every key starts with '{prefixed[0]}', the prefix of a {origin} wrapper: it is stripped "
                    f"when the rest fits, and here it does not)")
        raise LosslabError(f"state dict does not fit {type(model).__name__}: {'; '.join(problems)}{hint}")
    try:
        model.load_state_dict(dict(state_dict))
    except RuntimeError as exc:  # e.g. dtype/device issues not caught above
        raise LosslabError(f"cannot load state dict into {type(model).__name__}: {str(exc).splitlines()[0]}") from exc
    return model


def _read_safetensors(path: str | os.PathLike) -> dict[str, Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise LosslabError(f"{os.fspath(path)} is a safetensors file: install the safetensors package "
                           "(pip install safetensors) to read it") from None
    try:
        return load_file(os.fspath(path), device="cpu")
    except FileNotFoundError:
        raise LosslabError(f"checkpoint not found: {os.fspath(path)}") from None
    except Exception as exc:  # noqa: BLE001 - a damaged header or truncated file means "unusable file"
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "empty or truncated file"
        raise LosslabError(f"cannot read checkpoint {os.fspath(path)}: {type(exc).__name__}: {first}") from exc


def load_checkpoint(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict as people save them, safely, onto the CPU.

    * ``.safetensors`` files (needs the ``safetensors`` package);
    * anything else with ``torch.load(..., weights_only=True)`` (no code runs while unpickling): a plain
      state dict, or a dict holding it under one of :data:`WRAPPER_KEYS` (``state_dict`` as Lightning
      saves it, ``model_state_dict``, ``model``); other entries (optimizer state, epoch) are ignored.

    Keys are returned as saved: wrapper prefixes (``module.``, ``_orig_mod.``, ``model.``) are stripped
    by :func:`match_state_dict`, which knows the model.

    Args:
        path: checkpoint file.

    Returns:
        The state dict, name -> tensor.

    Raises:
        LosslabError: the file is missing, unreadable, corrupt, needs unsafe unpickling, or holds no
            state dict; the message names the path.
    """
    if os.fspath(path).endswith(".safetensors"):
        obj: Any = _read_safetensors(path)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise LosslabError(f"checkpoint not found: {os.fspath(path)}") from None
        except Exception as exc:  # noqa: BLE001 - pickle/zip/permission errors all mean "unusable file"
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "empty or truncated file"
            raise LosslabError(f"cannot read checkpoint {os.fspath(path)}: {type(exc).__name__}: {first}") from exc
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise LosslabError(
            f"checkpoint {os.fspath(path)} holds no state dict (a non-empty mapping of names to tensors, "
            f"possibly under {', '.join(repr(k) for k in WRAPPER_KEYS)}); found {type(obj).__name__}"
        )
    return dict(obj)


def match_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str | None]:
    """Strip wrapper prefixes from ``state_dict``'s keys when that makes them fit ``model``.

    Keys that already equal ``model.state_dict()``'s are returned unchanged. Otherwise every sequence of
    up to three :data:`KEY_PREFIXES` (``module.``, ``_orig_mod.``, ``model.``) is tried, shortest first:
    the keys under the prefix, with it removed, must be exactly the model's. Keys outside the prefix (a
    Lightning module's loss weights, say) are then dropped, and the note says how many.

    Args:
        model: the module the state dict is meant for (not modified).
        state_dict: name -> tensor, as read by :func:`load_checkpoint`.

    Returns:
        ``(state_dict, note)``: the matching state dict and a one-line note of what was stripped, or the
        input unchanged and ``None`` when no stripping makes it fit (then
        :func:`load_state_dict_checked` reports the mismatch).

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(2, 1)
        >>> sd, note = match_state_dict(m, {f"_orig_mod.{k}": v for k, v in m.state_dict().items()})
        >>> sorted(sd), note
        (['bias', 'weight'], "stripped the prefix '_orig_mod.' from the checkpoint's keys")
    """
    own = set(model.state_dict())
    if set(state_dict) == own:
        return dict(state_dict), None
    frontier: list[tuple[str, dict[str, Tensor]]] = [("", dict(state_dict))]
    for _ in range(3):
        nxt = []
        for stripped, cur in frontier:
            for p in KEY_PREFIXES:
                sub = {k[len(p):]: v for k, v in cur.items() if k.startswith(p)}
                if not sub:
                    continue
                name = stripped + p
                if set(sub) == own:
                    dropped = len(state_dict) - len(sub)
                    more = f" and ignored {dropped} keys outside it" if dropped else ""
                    return sub, f"stripped the prefix '{name}' from the checkpoint's keys{more}"
                nxt.append((name, sub))
        frontier = nxt
    return dict(state_dict), None


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


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside ``nn.DataParallel``, DistributedDataParallel and ``torch.compile`` wrappers.

    The wrapped module shares its parameters with the wrapper, so measuring it measures the user's
    model; losslab's functional calls need the plain module (a compiled module's donated buffers and a
    DataParallel's replicas break them).

    Example:
        >>> import torch
        >>> inner = torch.nn.Linear(2, 1)
        >>> unwrap_model(torch.nn.DataParallel(inner)) is inner
        True
    """
    for _ in range(8):  # wrappers of wrappers (DDP of a compiled module), never a cycle
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            break
    return model
