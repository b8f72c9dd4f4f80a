"""The result and verdict types of ``losslab reproduce`` and their JSON form.

An experiment (one module per SURVEY row, see :mod:`losslab.experiments`) returns an
:class:`ExperimentResult`: what was run (config, seeds, data, timings), the measured numbers,
a comparison text, the figures, and a :class:`Verdict` computed by the module's ``judge`` from the
measured numbers alone. Results are saved as one JSON file (atomically), readable without losslab.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..results import Result
from .._io import atomic_write_json
from ..results import digest, json_default, read_sealed_json, seal
from ..errors import DamagedFile, LosslabError
from .criteria import format_number
from ._verdict import (INCONCLUSIVE, NOT_REPRODUCED, PARTLY_REPRODUCED, REPRODUCED, VERDICTS, Check, Verdict,
                       jsonable, verdict_from_checks)

__all__ = [
    "REPRODUCED", "PARTLY_REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE", "VERDICTS",
    "Check", "Verdict", "FigureRef", "ExperimentResult", "Progress",
    "verdict_from_checks", "config_dict", "result_key", "jsonable",
]

RESULT_FORMAT = "losslab.experiment-result"
RESULT_FORMAT_VERSION = 2

Progress = Callable[[str], None]
"""``progress(message)``: one line of progress (the runner prefixes the row id and elapsed time)."""


@dataclass(frozen=True)
class FigureRef:
    """A PNG written by an experiment: ``path`` relative to the result's directory, and a caption."""

    path: str
    caption: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "caption": self.caption}


@dataclass
class ExperimentResult(Result):
    """Everything the report shows about one finding.

    Attributes:
        id: survey row id (``"A1"``).
        title, claim, reference, check: from the survey row (see :mod:`losslab.experiments._survey`).
        config: the experiment config as a plain dict; ``config_hash`` keys the saved result.
        profile: ``"quick"``, ``"full"`` or ``"custom"``.
        seeds: the seeds used, by purpose.
        data: one-line description of the data.
        timings: seconds per phase; ``"total"`` is filled by the runner.
        measurements: the numbers the verdict is computed from (JSON-able; small arrays as lists).
        key_numbers: the few numbers shown in the overview table, already formatted.
        comparison: what was compared and what came out, in words.
        verdict: ``judge(measurements)``; ``None`` for a failed run.
        figures: PNGs in the result's directory.
        status: ``"ok"`` or ``"failed"`` (then ``error`` holds the message).
        env: versions, threads, host (filled by the runner).
        created: ISO time (filled by the runner).
        notes: caveats shown under the verdict.
        criteria: the row's pre-registered criteria as text lines (printed verbatim in the report).
        control: the negative control: ``{"setting", "verdict", "fired", "reason", "checks"}``.
    """

    id: str
    title: str = ""
    claim: str = ""
    reference: str = ""
    check: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    profile: str = "custom"
    seeds: dict[str, Any] = field(default_factory=dict)
    data: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    measurements: dict[str, Any] = field(default_factory=dict)
    key_numbers: dict[str, str] = field(default_factory=dict)
    comparison: str = ""
    verdict: Verdict | None = None
    figures: list[FigureRef] = field(default_factory=list)
    status: str = "ok"
    error: str | None = None
    env: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    notes: list[str] = field(default_factory=list)
    criteria: list[str] = field(default_factory=list)
    control: dict[str, Any] | None = None

    # ---- construction helpers ---------------------------------------------------------------
    @classmethod
    def create(
        cls,
        id: str,
        config: Any,
        *,
        measurements: Mapping[str, Any],
        verdict: Verdict | None,
        comparison: str = "",
        key_numbers: Mapping[str, Any] | None = None,
        figures: Sequence[FigureRef] = (),
        seeds: Mapping[str, Any] | None = None,
        data: str = "",
        timings: Mapping[str, float] | None = None,
        notes: Sequence[str] = (),
        criteria: Any = None,
        control: Any = None,
    ) -> "ExperimentResult":
        """A result with the row's title/claim/reference filled in from the survey table.

        ``criteria`` (a :class:`~losslab.experiments.criteria.Criteria`) is stored as its text lines;
        ``control`` (a :class:`~losslab.experiments.criteria.Control`) is stored, and the verdict is
        passed through :func:`~losslab.experiments.criteria.apply_control` (a control that passes the
        row's checks makes the row inconclusive and flagged).
        """
        from ._survey import ROWS
        from .criteria import apply_control

        row = ROWS.get(id)
        if control is not None and verdict is not None:
            verdict = apply_control(verdict, control)
        return cls(
            id=id,
            title=row.title if row else id,
            claim=row.claim if row else "",
            reference=row.reference if row else "",
            check=row.check if row else "",
            config=config_dict(config),
            measurements=jsonable(dict(measurements)),
            key_numbers={k: _fmt(v) for k, v in (key_numbers or {}).items()},
            comparison=comparison,
            verdict=verdict,
            figures=list(figures),
            seeds=jsonable(dict(seeds or {})),
            data=data,
            timings={k: round(float(v), 3) for k, v in (timings or {}).items()},
            notes=list(notes),
            criteria=[] if criteria is None else list(criteria.lines()),
            control=None if control is None else jsonable(control.to_dict()),
        )

    @property
    def verdict_status(self) -> str:
        """The verdict's status, or ``"failed"`` for a run that raised."""
        if self.status != "ok" or self.verdict is None:
            return "failed"
        return self.verdict.status

    def rejudge(self, judge: Callable[[Mapping[str, Any]], Verdict]) -> Verdict:
        """The verdict recomputed from the saved numbers: ``judge(measurements)``, then the saved
        negative control applied (:func:`~losslab.experiments.criteria.apply_control`). Equal to
        :attr:`verdict` for a result whose verdict is a function of its measurements."""
        import copy

        from .criteria import Control, apply_control

        ctrl = None if self.control is None else Control.from_dict(self.control)
        return apply_control(judge(copy.deepcopy(self.measurements)), ctrl)

    def summary(self) -> dict[str, Any]:
        """The row in the machine-readable form of ``losslab reproduce --json``: ``verdict``, ``seeds``,
        ``checks: [{name, decisive, precondition, value, ci, threshold, op, seeds, passed}]``,
        ``control: {setting, verdict}``, ``criteria``."""
        checks = [] if self.verdict is None else [
            {k: c.to_dict()[k] for k in ("name", "decisive", "precondition", "value", "ci", "interval", "threshold",
                                          "op", "seeds", "per_seed", "passed")} for c in self.verdict.checks]
        ctrl = None if self.control is None else {k: self.control.get(k) for k in ("setting", "verdict", "fired", "reason")}
        from ..results import jsonable as strict_json  # NaN/inf -> null: strict JSON for other tools

        return strict_json({"id": self.id, "verdict": self.verdict_status,
                         "flagged": bool(self.verdict is not None and self.verdict.flagged),
                         "reason": None if self.verdict is None else self.verdict.reason, "seeds": self.seeds,
                         "checks": checks, "control": ctrl, "criteria": self.criteria})

    # ---- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["verdict"] = None if self.verdict is None else self.verdict.to_dict()
        d["figures"] = [f.to_dict() for f in self.figures]
        d["key_numbers"] = [[k, v] for k, v in self.key_numbers.items()]  # a list keeps the order in sorted JSON
        d["format"] = RESULT_FORMAT
        d["format_version"] = RESULT_FORMAT_VERSION
        return jsonable(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ExperimentResult":
        if d.get("format") != RESULT_FORMAT:
            raise LosslabError(f"not a losslab experiment result (format {d.get('format')!r})")
        kw = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        kw["verdict"] = None if d.get("verdict") is None else Verdict.from_dict(d["verdict"])
        kw["figures"] = [FigureRef(**f) for f in d.get("figures", [])]
        kn = d.get("key_numbers", {})
        kw["key_numbers"] = {str(k): str(v) for k, v in (kn.items() if isinstance(kn, Mapping) else kn)}
        return cls(**kw)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result as JSON atomically (temp file + rename)."""
        return atomic_write_json(path, seal(self.to_dict()))  # with its content hash, checked by load

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ExperimentResult":
        try:
            return cls.from_dict(read_sealed_json(path))
        except DamagedFile:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LosslabError(f"cannot read experiment result {path}: {type(exc).__name__}: {exc}") from None


# ---- config helpers -------------------------------------------------------------------------------


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass (possibly nesting others, e.g. ``TrainConfig``) as a plain JSON dict."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        from ..config import to_keyed_dict  # asdict, less settings added later while at their defaults

        return json.loads(json.dumps(to_keyed_dict(config), sort_keys=True, default=json_default))
    if isinstance(config, Mapping):
        return jsonable(dict(config))
    raise LosslabError(f"an experiment config must be a dataclass or a mapping, got {type(config).__name__}")


def result_key(id: str, config: Any, version: int | str = 1) -> str:
    """``<ID>-<12 hex digits>``: sha256 of the canonical JSON of (id, module version, full config).

    Any change of a config value (or of the module's ``VERSION``) gives a new key, so a saved result
    is reused only for exactly the settings that produced it.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class C:
        ...     n: int = 3
        >>> result_key("A1", C()) == result_key("A1", C()) != result_key("A1", C(n=4))
        True
    """
    return f"{id}-{digest({'id': id, 'version': version, 'config': config_dict(config)}, 12)}"


def _fmt(v: Any) -> str:
    return format_number(v) if isinstance(v, float) else str(v)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
