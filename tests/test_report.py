"""The offline HTML report: structure (parses, one verdict per survey row, no external URLs, images
embedded), the Markdown summary, and the page as headless Chromium renders it."""
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from losslab.experiments import ROWS, Check, ExperimentResult, common, verdict_from_checks
from losslab.report import render
from losslab.report.browser import check_report, find_chromium

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- a synthetic set of results


def _result(tmp_path, row, checks, *, figures=1, failed=False):
    d = tmp_path / "results" / f"{row}-0000"
    d.mkdir(parents=True, exist_ok=True)
    refs = []
    for i in range(figures):
        fig, ax = common.new_figure(width=3, height=2)
        ax.plot([0, 1, 2], [2, 1, 1.5 + i])
        refs.append(common.save_figure(fig, d, f"fig{i}", f"caption {i} of {row} <b>&"))
    r = ExperimentResult.create(row, {"n": 1}, measurements={"x": [1.0, 2.0], "nested": {"y": 3}},
                                verdict=None if failed else verdict_from_checks(checks), figures=refs,
                                key_numbers={"barrier": 0.0123, "steps": "0/50"}, comparison="compared A with B",
                                seeds={"init": 0}, data="digits: 1347 train", timings={"train": 1.5, "total": 2.0},
                                notes=["a caveat"])
    if failed:
        r.status, r.error, r.notes = "failed", "RuntimeError: boom", ["Traceback ..."]
    r.profile, r.config_hash, r.env = "quick", "0000", {"losslab": "0.1.0", "torch": "x", "python": "3", "threads": 1}
    r.save(d / "result.json")
    return r, d


@pytest.fixture()
def report(tmp_path):
    ok = Check("claim", True, "0 of 50 steps rise")
    results, dirs = {}, {}
    specs = {
        "A1": [ok],
        "A2": [Check("claim", False, "train error 0.08 > 0.01")],
        "A3": [Check("trained", False, "loss did not fall", precondition=True), ok],
        "B1": [ok, Check("context", False, "no bump", decisive=False)],
    }
    for row, checks in specs.items():
        results[row], dirs[row] = _result(tmp_path, row, checks, figures=2 if row == "B1" else 1)
    results["A4"], dirs["A4"] = _result(tmp_path, "A4", [], figures=0, failed=True)
    # a claim with markup must be escaped, never executed
    results["A1"].claim = "Loss falls <script>window.__pwned = 1</script> monotonically"
    paths = render(tmp_path, results, result_dirs=dirs, profile="quick", implemented=["A1", "A2", "A3", "A4", "B1", "C4"],
                   broken={"D1": "cannot import d1_intrinsic: SyntaxError"}, meta={"jobs": 2})
    return paths, results


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.stack, self.cells, self._cell = [], [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag not in ("img", "meta", "br", "link", "input"):
            self.stack.append(tag)
        if tag == "td" and "verdict" in a.get("class", "").split():
            self._cell = [a, ""]

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> after {self.stack[-3:]}"
        self.stack.pop()
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data


def test_html_structure_verdicts_and_no_external_urls(report):
    paths, results = report
    text = paths["html"].read_text()
    p = _Collect()
    p.feed(text)
    p.close()
    assert p.stack == [], p.stack
    cells = {a["data-verdict"]: None for a, _ in p.cells}
    assert len(p.cells) == len(ROWS)  # one verdict cell per survey row, implemented or not
    by_row = {}
    for tag, a in p.tags:
        if tag == "tr" and "data-row" in a:
            by_row[a["data-row"]] = None
    assert list(by_row) == sorted(ROWS, key=lambda r: (r[0], int(r[1:])))
    verdicts = [t.strip() for _, t in p.cells]
    expect = {"A1": "reproduced", "A2": "not reproduced", "A3": "inconclusive", "A4": "failed", "B1": "reproduced",
              "C4": "not run", "D1": "failed", "A5": "not yet implemented", "D2": "not yet implemented"}
    for row, status in expect.items():
        assert verdicts[list(by_row).index(row)] == status, row
    assert set(cells) <= {"reproduced", "not reproduced", "inconclusive", "failed", "not run", "not yet implemented"}
    # offline: every src/href is a data URI or an in-page anchor
    for tag, a in p.tags:
        for attr in ("src", "href"):
            if attr in a:
                v = a[attr]
                assert v.startswith("data:image/png;base64,") or v.startswith("#"), (tag, v[:60])
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text)
    assert "@import" not in text and "url(" not in text
    imgs = [a for t, a in p.tags if t == "img"]
    assert len(imgs) == 1 + 1 + 1 + 2  # A1, A2, A3 one each, B1 two; the failed A4 none
    assert not any(t == "script" for t, _ in p.tags)
    assert "&lt;script&gt;window.__pwned" in text
    assert "caption 0 of A1 &lt;b&gt;&amp;" in text
    # the reasons of non-reproduced / inconclusive rows are shown
    assert "train error 0.08 &gt; 0.01" in text and "loss did not fall" in text
    assert "RuntimeError: boom" in text and "cannot import d1_intrinsic" in text
    assert oct(paths["html"].stat().st_mode & 0o777) == oct(0o644)


def test_markdown_summary(report, tmp_path):
    paths, _ = report
    md = paths["md"].read_text()
    overview = md.split("\n## ", 1)[0]
    lines = [ln for ln in overview.splitlines() if ln.startswith("| ")]
    assert len(lines) == 1 + len(ROWS)  # header + one per row
    assert "| A2 | Zero training error | **not reproduced** | – |" in md
    assert "| A5 | Saddles, not local minima | _not yet implemented_ |" in md
    for m in re.finditer(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert not m.group(1).startswith(("http", "/", "data:")), m.group(1)
        assert (tmp_path / m.group(1)).is_file()
    assert "- claim: train error 0.08 > 0.01" in md  # not HTML-escaped
    assert "| claim | FAIL |" in md


def test_criteria_checks_and_control_are_shown(tmp_path):
    from losslab.experiments import Control, Criteria, Criterion

    crit = Criteria(claims=(Criterion("falls", "barrier after / before", "<", 0.25, "Ainsworth et al. 2023"),),
                    preconditions=(Criterion("trained", "train error", "<=", 0.01, precondition=True),),
                    control="a random permutation instead of weight matching", registered="2026-12-04")
    checks = [crit["trained"].judge([0.0, 0.0, 0.01]), crit["falls"].judge([0.1, 0.12, 0.11])]
    ctrl = Control(crit.control, verdict_from_checks([crit["falls"].judge([0.1, 0.11, 0.12])]))
    d = tmp_path / "results" / "C4-0000"
    d.mkdir(parents=True)
    r = ExperimentResult.create("C4", {"n": 1}, measurements={"x": float("nan"), "y": [1.0, float("inf")]},
                                verdict=verdict_from_checks(checks), criteria=crit, control=ctrl)
    r.profile, r.config_hash = "quick", "0000"
    r.save(d / "result.json")
    paths = render(tmp_path, {"C4": r}, result_dirs={"C4": d}, profile="quick", implemented=["C4"])
    html = paths["html"].read_text()
    md = paths["md"].read_text()
    # the criteria verbatim, the control's verdict beside the row, and the row flagged (control passed)
    for line in crit.lines():
        assert line.replace("<", "&lt;").replace(">", "&gt;") in html and line in md
    assert 'data-control="reproduced"' in html and "(flagged)" in html and "(flagged)" in md
    assert r.verdict.status == "inconclusive" and r.verdict.flagged
    assert "every seed" in html and "t95" in html
    # strict JSON in the embedded measurements: NaN/inf written as null
    assert "NaN" not in html and "Infinity" not in html


def test_render_refuses_missing_figures(tmp_path):
    from losslab.errors import LosslabError

    r, d = _result(tmp_path, "A1", [Check("c", True, "")])
    (d / "fig0.png").unlink()
    with pytest.raises(LosslabError, match="missing"):
        render(tmp_path, {"A1": r}, result_dirs={"A1": d})


# ---------------------------------------------------------------- headless Chromium


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium: installed here when missing and we are root (apt-get update first)."""
    exe = find_chromium()
    if exe is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["sh", str(REPO / "scripts" / "install-chromium.sh")], check=False, timeout=900,
                       capture_output=True)
        exe = find_chromium()
    if exe is None:
        pytest.skip("chromium is not installed (run scripts/install-chromium.sh as root)")
    return exe


@pytest.mark.slow
def test_report_in_headless_chromium(report, chromium, tmp_path):
    paths, _ = report
    shot = tmp_path / "artifacts" / "report.png"
    c = check_report(paths["html"], screenshot=shot, chromium=chromium)
    assert c.loaded, c.stderr[-2000:]
    assert c.errors == [] and c.console_errors == [], c.problems()
    assert c.images == 5 and c.broken_images == 0
    assert c.verdict_cells == len(ROWS) == c.rows
    assert "window.__pwned" in c.dom and "__pwned = 1" not in re.sub(r"&lt;script&gt;.*?&lt;/script&gt;", "", c.dom)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


@pytest.mark.slow
def test_browser_probe_detects_broken_images_and_script_errors(chromium, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><head><title>x</title></head><body>"
                    "<table><tr><td class='verdict'>reproduced</td></tr></table>"
                    "<img src='data:image/png;base64,AAAA'><img src='missing.png'>"
                    "<script>undefinedFunction();</script></body></html>")
    c = check_report(page, chromium=chromium)
    assert c.loaded and c.images == 2 and c.broken_images == 2 and c.verdict_cells == 1
    assert any("undefinedFunction" in e for e in c.errors)
    assert any("missing.png" in e for e in c.errors)
    assert not c.ok
