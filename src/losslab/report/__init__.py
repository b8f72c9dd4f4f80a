"""The offline report of ``losslab reproduce``: one self-contained HTML file and a Markdown summary.

:func:`render` turns saved :class:`~losslab.experiments.ExperimentResult` objects into

* ``report.html`` — an overview table (finding, verdict, key numbers, time) followed by one
  section per finding: claim and reference, what was run (profile, config, seeds, data, time), the
  figures, the numbers behind the verdict and, for ``not reproduced`` / ``inconclusive``, why.
  Images are embedded as base64 ``data:`` URIs; there are no scripts, fonts or links to fetch, so
  the file opens offline anywhere (Jinja2 template ``templates/report.html.j2``);
* ``report.md`` — the overview table and each verdict with its reason, linking the PNGs by
  relative path.

Every survey row appears: rows without an experiment module are listed as "not yet
implemented" (not a verdict), rows implemented but without a saved result as "not run".
Both files are written atomically. :mod:`losslab.report.browser` opens a report in headless
Chromium and checks it (used by the tests).
"""
from __future__ import annotations

import base64
import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .._io import atomic_write_text
from ..errors import LosslabError

__all__ = ["RowView", "build_rows", "render", "render_html", "render_markdown", "STATUS_CLASSES"]

NOT_IMPLEMENTED = "not yet implemented"
NOT_RUN = "not run"
FAILED = "failed"

STATUS_CLASSES = {
    "reproduced": "ok",
    "partly reproduced": "part",
    "not reproduced": "bad",
    "inconclusive": "warn",
    FAILED: "fail",
    NOT_IMPLEMENTED: "nyi",
    NOT_RUN: "nyi",
}


@dataclass
class RowView:
    """One survey row as the templates see it."""

    id: str
    section: str
    title: str
    claim: str
    reference: str
    check: str
    status: str
    css: str
    result: Any = None
    result_dir: Path | None = None
    images: list[dict[str, str]] = field(default_factory=list)
    config_json: str = ""
    measurements_json: str = ""
    error: str | None = None

    @property
    def has_result(self) -> bool:
        return self.result is not None


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def build_rows(
    results: Mapping[str, Any],
    *,
    result_dirs: Mapping[str, Path] | None = None,
    implemented: Sequence[str] = (),
    broken: Mapping[str, str] | None = None,
    embed: bool = True,
) -> list[RowView]:
    """The report's rows: every survey row, with its result where there is one.

    Args:
        results: ``{row id: ExperimentResult}``.
        result_dirs: ``{row id: directory holding result.json and the PNGs}``.
        implemented: ids with an experiment module (others without a result are "not yet implemented").
        broken: ``{row id: message}`` for modules that failed to import.
        embed: read the PNGs and embed them as data URIs (the HTML report); else keep relative paths.
    """
    from ..experiments._registry import row_order
    from ..experiments._survey import ROWS, SECTIONS

    result_dirs = dict(result_dirs or {})
    broken = dict(broken or {})
    ids = sorted(set(ROWS) | set(results), key=row_order)
    rows = []
    for rid in ids:
        sr = ROWS.get(rid)
        res = results.get(rid)
        if res is not None:
            status = res.verdict_status
            error = res.error
        elif rid in broken:
            status, error = FAILED, broken[rid]
        elif rid in implemented:
            status, error = NOT_RUN, None
        else:
            status, error = NOT_IMPLEMENTED, None
        view = RowView(
            id=rid,
            section=SECTIONS.get(rid[:1], ""),
            title=(res.title if res is not None and res.title else (sr.title if sr else rid)),
            claim=(res.claim if res is not None and res.claim else (sr.claim if sr else "")),
            reference=(res.reference if res is not None and res.reference else (sr.reference if sr else "")),
            check=(res.check if res is not None and res.check else (sr.check if sr else "")),
            status=status,
            css=STATUS_CLASSES.get(status, "nyi"),
            result=res,
            result_dir=result_dirs.get(rid),
            error=error,
        )
        if res is not None:
            view.config_json = json.dumps(res.config, indent=2, sort_keys=True)
            view.measurements_json = _compact_json(res.measurements)
            for fig in res.figures:
                d = result_dirs.get(rid)
                p = (d / fig.path) if d is not None else Path(fig.path)
                if embed:
                    if not p.is_file():
                        raise LosslabError(f"figure {p} of {rid} is missing; rerun with --force {rid}")
                    src = _data_uri(p)
                else:
                    src = fig.path if d is None else str(p)
                view.images.append({"src": src, "caption": fig.caption, "name": Path(fig.path).name})
        rows.append(view)
    return rows


def _compact_json(obj: Any) -> str:
    """Indented strict JSON (NaN/inf written as null) with short numeric lists on one line."""
    from ..results import jsonable

    text = json.dumps(jsonable(obj), indent=1, sort_keys=True, default=str, allow_nan=False)
    out, buf = [], []
    for line in text.splitlines():
        s = line.strip()
        if buf:
            buf.append(s)
            if s.startswith("]"):
                out.append(buf[0] + " ".join(buf[1:]))
                buf = []
            continue
        if s.endswith("[") and not s.startswith("{"):
            buf = [line]
            continue
        out.append(line)
    out.extend(buf)
    return "\n".join(out)


def _env() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("losslab.report", "templates"),
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["seconds"] = _seconds
    env.filters["num"] = _num
    return env


def _num(v: Any) -> str:
    """A number for a table cell: 3-4 significant digits, '–' for none, '±inf' spelled out."""
    from ..experiments.criteria import format_number

    if v is None:
        return "–"
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    return format_number(x)


def _seconds(v: Any) -> str:
    try:
        s = float(v)
    except (TypeError, ValueError):
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    return f"{int(s // 60)} min {s % 60:.0f} s"


def _counts(rows: Sequence[RowView]) -> dict[str, int]:
    c: dict[str, int] = {}
    for r in rows:
        c[r.status] = c.get(r.status, 0) + 1
    return c


def render_html(rows: Sequence[RowView], *, profile: str, title: str = "losslab reproduce", meta: Mapping[str, Any] | None = None) -> str:
    """The HTML text of the report."""
    from ..experiments._survey import SECTIONS

    tpl = _env().get_template("report.html.j2")
    return tpl.render(rows=rows, profile=profile, title=title, counts=_counts(rows), sections=SECTIONS,
                      meta=dict(meta or {}), generated=_now())


def render_markdown(rows: Sequence[RowView], *, profile: str, title: str = "losslab reproduce", meta: Mapping[str, Any] | None = None) -> str:
    """The Markdown summary (figures linked by path relative to the report)."""
    tpl = _env().get_template("report.md.j2")
    return tpl.render(rows=rows, profile=profile, title=title, counts=_counts(rows), meta=dict(meta or {}),
                      generated=_now())


def render(
    out: str | os.PathLike,
    results: Mapping[str, Any],
    *,
    result_dirs: Mapping[str, Path] | None = None,
    profile: str = "quick",
    implemented: Sequence[str] = (),
    broken: Mapping[str, str] | None = None,
    title: str = "losslab reproduce",
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``out/report.html`` and ``out/report.md`` atomically; return their paths.

    Args:
        out: the output directory (figures are looked up in ``result_dirs``, embedded in the HTML and
            linked relative to ``out`` in the Markdown).
        results: ``{row id: ExperimentResult}``.
        result_dirs: ``{row id: result directory}``.
        profile: shown in the header.
        implemented: row ids with an experiment module.
        broken: ``{row id: import error}``.
        title: page title.
        meta: extra header facts (``{"jobs": 2, "wall time": "..."}``).
    """
    out = Path(out)
    rows = build_rows(results, result_dirs=result_dirs, implemented=implemented, broken=broken, embed=True)
    html = render_html(rows, profile=profile, title=title, meta=meta)
    md_rows = build_rows(results, result_dirs={k: Path(os.path.relpath(v, out)) for k, v in (result_dirs or {}).items()},
                         implemented=implemented, broken=broken, embed=False)
    md = render_markdown(md_rows, profile=profile, title=title, meta=meta)
    paths = {"html": atomic_write_text(out / "report.html", html), "md": atomic_write_text(out / "report.md", md)}
    return paths


def _now() -> str:
    return _dt.datetime.now().astimezone().replace(microsecond=0).isoformat(sep=" ")
