"""The verdict types of ``losslab reproduce``: the four statuses, :class:`Check` (one judged
sub-claim) and :class:`Verdict`, and :func:`verdict_from_checks`.

They sit below both :mod:`~losslab.experiments.criteria` (which judges checks) and
:mod:`~losslab.experiments._base` (which stores them in results), so neither imports the other's
internals in a circle.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import LosslabError
from ..results import jsonable as _results_jsonable

__all__ = ["REPRODUCED", "PARTLY_REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE", "VERDICTS", "Check", "Verdict",
           "verdict_from_checks", "jsonable"]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
PARTLY_REPRODUCED = "partly reproduced"
VERDICTS: tuple[str, ...] = (REPRODUCED, PARTLY_REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)


def jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays and tensors to numbers/lists, tuples to lists, NaN kept
    (:func:`losslab.results.jsonable` with ``unknown="raise"``)."""
    return _results_jsonable(obj, unknown="raise")



@dataclass(frozen=True)
class Check:
    """One sub-check of a verdict.

    Attributes:
        name: short name ("monotone", "p=1 fitted", ...).
        passed: ``True``/``False``, or ``None`` when it could not be decided (an interval straddles its
            threshold, a value is missing).
        detail: the numbers behind it, as text ("mean 0.02, 95% t-interval [0.01, 0.03] over 3 seeds").
        precondition: a failed precondition (runs not trained / not matched) makes the verdict
            ``inconclusive`` instead of ``not reproduced``.
        decisive: ``False`` for a check shown for context only (e.g. a contrast regime); it never
            changes the verdict.
        value: the decisive statistic (the mean over seeds; the worst seed for an "every seed" rule).
        ci: its interval ``[lo, hi]`` (``None`` when judged seed by seed).
        interval: how ``ci`` was computed (``"t95"``, ``"t90 (TOST)"``; empty when none).
        threshold: the threshold (or equivalence margin) it is compared with.
        op: the comparison (``">"``, ``"<"``, ``"equiv"``, ...).
        seeds: number of independent seeds behind ``value``.
        per_seed: the per-seed values.
        rule: ``"interval"`` or ``"all"`` (every seed).
    """

    name: str
    passed: bool | None
    detail: str = ""
    precondition: bool = False
    decisive: bool = True
    value: float | None = None
    ci: list[float] | None = None
    interval: str = ""
    threshold: float | None = None
    op: str = ""
    seeds: int = 0
    per_seed: list[float] = field(default_factory=list)
    rule: str = ""

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))

    def __eq__(self, other: object) -> bool:
        # NaN-aware: a check with an undecided (NaN) seed equals itself after a JSON round trip
        if not isinstance(other, Check):
            return NotImplemented
        return json.dumps(self.to_dict(), sort_keys=True) == json.dumps(other.to_dict(), sort_keys=True)

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Check":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Verdict:
    """The outcome of a finding's check.

    Attributes:
        status: ``"reproduced"`` (every decisive sub-claim holds), ``"partly reproduced"`` (some hold,
            some fail: the reason names them), ``"not reproduced"`` (a measurement contradicts the
            claim; ``reason`` says by how much) or ``"inconclusive"`` (a precondition failed, an
            interval straddles its threshold, or the negative control passed the same checks).
        reason: one or two sentences with the deciding numbers.
        checks: the sub-checks it was decided from.
        flagged: the negative control passed the row's checks (see
            :func:`losslab.experiments.criteria.apply_control`).
    """

    status: str
    reason: str
    checks: tuple[Check, ...] = ()
    flagged: bool = False

    def __post_init__(self) -> None:
        if self.status not in VERDICTS:
            raise LosslabError(f"verdict status must be one of {VERDICTS}, got {self.status!r}")
        object.__setattr__(self, "checks", tuple(self.checks))

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "flagged": self.flagged,
                "checks": [c.to_dict() for c in self.checks]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Verdict":
        return cls(d["status"], d.get("reason", ""), tuple(Check.from_dict(c) for c in d.get("checks", ())),
                   bool(d.get("flagged", False)))


def verdict_from_checks(checks: Sequence[Check], *, summary: str = "") -> Verdict:
    """Combine sub-checks into a verdict.

    * a failed or undecided precondition gives ``inconclusive``;
    * every decisive sub-claim passed: ``reproduced``;
    * some passed and some failed: ``partly reproduced`` (the reason names both);
    * none passed and at least one failed: ``not reproduced``;
    * otherwise (an undecided sub-claim, no failure): ``inconclusive``.

    The reason lists the deciding checks' details (or, when all pass, ``summary`` or every detail).

    Example:
        >>> v = verdict_from_checks([Check("trained", True, "loss 2.3 -> 0.5", precondition=True),
        ...                          Check("monotone", False, "3 of 50 steps rise")])
        >>> v.status, v.reason
        ('not reproduced', 'monotone: 3 of 50 steps rise')
        >>> verdict_from_checks([Check("a", True, "x"), Check("b", False, "y")]).status
        'partly reproduced'
    """
    checks = tuple(checks)
    shown = checks
    checks = tuple(c for c in checks if c.decisive)
    pre_bad = [c for c in checks if c.precondition and c.passed is not True]
    if pre_bad:
        return Verdict(INCONCLUSIVE, "; ".join(f"{c.name}: {c.detail}" for c in pre_bad), shown)
    claims = [c for c in checks if not c.precondition]
    undecided = [c for c in claims if c.passed is None]
    failed = [c for c in claims if c.passed is False]
    passed = [c for c in claims if c.passed is True]
    line = lambda cs: "; ".join(f"{c.name}: {c.detail}" for c in cs)  # noqa: E731
    if not claims:
        return Verdict(INCONCLUSIVE, "no decisive check was made", shown)
    if failed and passed:
        reason = f"holds: {', '.join(c.name for c in passed)}; fails: {line(failed)}"
        if undecided:
            reason += f"; undecided: {line(undecided)}"
        return Verdict(PARTLY_REPRODUCED, reason, shown)
    if failed:
        return Verdict(NOT_REPRODUCED, line(failed) + (f"; undecided: {line(undecided)}" if undecided else ""), shown)
    if undecided:
        return Verdict(INCONCLUSIVE, line(undecided), shown)
    reason = summary or line(claims)
    return Verdict(REPRODUCED, reason, shown)
