"""Import a user's callable from ``"pkg.module:attr"``, resolving modules from the working directory.

``losslab --model mynets:make`` and ``--data mydata:load`` should find ``./mynets.py`` the way
``python -m`` finds it, without ``PYTHONPATH=.``: when the module is not importable as the path
stands, the current working directory is put first on ``sys.path`` (as ``python -m`` does) and the
import is retried.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Callable

from .errors import LosslabError

__all__ = ["load_callable"]


def _import(mod_name: str) -> Any:
    try:
        return importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        top = mod_name.split(".")[0]
        cwd = os.getcwd()
        if exc.name != top or cwd in sys.path or "" in sys.path:
            raise
        sys.path.insert(0, cwd)  # as `python -m` does; kept so the module's own imports resolve later too
        return importlib.import_module(mod_name)


def load_callable(spec: str, what: str) -> Callable[..., Any]:
    """The callable named by ``"pkg.module:attr"`` (``attr`` may be dotted, e.g. ``Cls.make``).

    Args:
        spec: ``"<module>:<attribute path>"``; the module is imported from ``sys.path`` or, failing that,
            from the current working directory.
        what: what the callable is for, used in error messages ("model factory", "data function").

    Raises:
        LosslabError: a malformed spec, a failing import, a missing or non-callable attribute; one line
            naming the spec.

    Example:
        >>> load_callable("torch.nn:Linear", "model factory").__name__
        'Linear'
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise LosslabError(f"{what} spec must look like 'pkg.module:{what.split()[-1]}', got {spec!r}")
    mod_name, attr = spec.split(":")
    try:
        obj: Any = _import(mod_name)
    except Exception as exc:  # noqa: BLE001 - any import-time failure is the user's module's
        msg = str(exc).splitlines()[0] if str(exc) else ""
        raise LosslabError(f"cannot import {mod_name!r} for {what} {spec!r}: {type(exc).__name__}: {msg}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LosslabError(f"{what} {spec!r}: {mod_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise LosslabError(f"{what} {spec!r} is a {type(obj).__name__}, not callable")
    return obj
