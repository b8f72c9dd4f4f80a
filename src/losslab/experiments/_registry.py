"""Discovery of experiment modules: one module per survey row, named ``<row>_<slug>.py``.

A module ``a1_monotonic.py`` in this package is registered under its ``ID`` (``"A1"``) when it
defines the experiment protocol (see :mod:`losslab.experiments`):

* ``ID: str`` — the survey row; ``VERSION: int`` — bump it when ``run`` changes what it measures
  (saved results of the old version are then recomputed);
* ``Config`` — a frozen dataclass with classmethods ``quick()`` and ``full()``;
* ``run(config, *, cache_dir, work_dir, progress) -> ExperimentResult``;
* ``judge(measurements) -> Verdict``;
* optionally ``COST = {"quick": seconds, "full": seconds}`` (scheduling: longest first).

A module that fails to import, or lacks part of the protocol, is listed in :data:`BROKEN` with the
reason (the report shows it as failed), never silently dropped.
"""
from __future__ import annotations

import importlib
import pkgutil
import re
import traceback
from pathlib import Path
from types import ModuleType

from ..errors import LosslabError
from ._survey import ROWS

__all__ = ["EXPERIMENTS", "BROKEN", "discover", "get", "implemented", "row_order"]

_MODULE_RE = re.compile(r"^([a-d])(\d+)_[a-z0-9_]+$")
_REQUIRED = ("ID", "Config", "run", "judge")


def row_order(row_id: str) -> tuple[int, int, str]:
    """Sort key: section letter, then row number (A2 < A10)."""
    m = re.match(r"^([A-Za-z])(\d+)$", row_id)
    if not m:
        return (99, 0, row_id)
    return (ord(m.group(1).upper()) - ord("A"), int(m.group(2)), row_id)


def discover() -> tuple[dict[str, ModuleType], dict[str, str]]:
    """Import every ``<row>_<slug>`` module of this package; return (registry, broken)."""
    found: dict[str, ModuleType] = {}
    broken: dict[str, str] = {}
    here = [str(Path(__file__).parent)]
    for info in sorted(pkgutil.iter_modules(here), key=lambda i: i.name):
        m = _MODULE_RE.match(info.name)
        if not m:
            continue
        row_id = f"{m.group(1).upper()}{m.group(2)}"
        try:
            module = importlib.import_module(f"{__package__}.{info.name}")
        except Exception as exc:  # noqa: BLE001 - another row's bug must not stop the others
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            broken[row_id] = f"cannot import {info.name}: {last}"
            continue
        missing = [a for a in _REQUIRED if not hasattr(module, a)]
        if missing:
            broken[row_id] = f"{info.name} lacks {', '.join(missing)}"
            continue
        if getattr(module, "ID") != row_id:
            broken[row_id] = f"{info.name} declares ID {module.ID!r}, expected {row_id!r} from its file name"
            continue
        for prof in ("quick", "full"):
            if not callable(getattr(module.Config, prof, None)):
                broken[row_id] = f"{info.name}: Config has no {prof}() profile"
                break
        else:
            if row_id in found:
                broken[row_id] = f"two modules for {row_id}: {found[row_id].__name__} and {info.name}"
                continue
            found[row_id] = module
    order = sorted(found, key=row_order)
    return {k: found[k] for k in order}, broken


EXPERIMENTS, BROKEN = discover()


def implemented() -> list[str]:
    """Ids of the rows with a working experiment module, in survey order."""
    return list(EXPERIMENTS)


def get(row_id: str) -> ModuleType:
    """The experiment module of a row (case-insensitive id); a one-line error for unknown rows."""
    key = row_id.strip().upper()
    if key in EXPERIMENTS:
        return EXPERIMENTS[key]
    if key in BROKEN:
        raise LosslabError(f"experiment {key} is broken: {BROKEN[key]}")
    if key in ROWS:
        raise LosslabError(f"experiment {key} ({ROWS[key].title}) is not yet implemented; implemented: "
                           f"{', '.join(EXPERIMENTS) or 'none'}")
    raise LosslabError(f"unknown survey row {row_id!r}; rows: {', '.join(sorted(ROWS, key=row_order))}")
