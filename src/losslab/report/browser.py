"""Open a report in headless Chromium and check it: no script/console errors, images decoded, one
verdict cell per row; optionally keep a screenshot.

The report itself has no scripts. :func:`check_report` copies it to a temporary directory with a
small probe script injected at the top of ``<head>``; the probe records ``error`` events (script
errors and resources that fail to load, captured on ``window``) and ``console.error`` calls, and on
``load`` writes into the DOM the number of images, of broken ones (``naturalWidth == 0``) and of
verdict cells. Chromium runs with ``--dump-dom`` (and ``--screenshot`` when asked), offline flags
and a throw-away profile; its stderr (``--enable-logging=stderr``) is scanned for console errors too.

Example (needs Chromium)::

    from losslab.report.browser import check_report
    c = check_report("reproduce-out/report.html", screenshot="shot.png")
    assert c.ok, c.problems()
"""
from __future__ import annotations

import html as _html
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import LosslabError

__all__ = ["find_chromium", "check_report", "BrowserCheck", "CHROMIUM_FLAGS"]

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--enable-logging=stderr", "--v=0",
)

_PROBE = """<script>
(function () {
  var errs = [];
  window.addEventListener('error', function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) { errs.push('resource failed: ' + String(t.src || t.href).slice(0, 120)); }
    else { errs.push('script error: ' + String(e.message)); }
  }, true);
  var ce = console.error;
  console.error = function () { errs.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); ce.apply(console, arguments); };
  window.addEventListener('load', function () {
    var imgs = document.images, broken = 0;
    for (var i = 0; i < imgs.length; i++) { if (!imgs[i].complete || imgs[i].naturalWidth === 0) { broken++; } }
    var d = document.createElement('div');
    d.id = '__losslab_check';
    d.setAttribute('data-images', String(imgs.length));
    d.setAttribute('data-broken', String(broken));
    d.setAttribute('data-verdicts', String(document.querySelectorAll('td.verdict').length));
    d.setAttribute('data-rows', String(document.querySelectorAll('#overview-table tbody tr').length));
    d.setAttribute('data-errors', JSON.stringify(errs));
    document.body.appendChild(d);
  });
})();
</script>"""

_CHECK_RE = re.compile(r'<div id="__losslab_check"([^>]*)>')
_ATTR_RE = re.compile(r'data-([a-z]+)="([^"]*)"')


@dataclass
class BrowserCheck:
    """What Chromium saw.

    Attributes:
        loaded: the probe ran (the page loaded and its ``load`` event fired).
        images: ``<img>`` elements; broken_images: of them, not decoded (``naturalWidth == 0``).
        verdict_cells: ``td.verdict`` cells; rows: overview table rows.
        errors: script errors, failed resources and ``console.error`` calls seen by the probe.
        console_errors: error-level console lines in Chromium's log.
        screenshot: the PNG written, if asked.
        dom: the serialized DOM after load.
        stderr: Chromium's log.
    """

    loaded: bool
    images: int = 0
    broken_images: int = 0
    verdict_cells: int = 0
    rows: int = 0
    errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    dom: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.loaded and self.broken_images == 0 and not self.errors and not self.console_errors

    def problems(self) -> list[str]:
        out = [] if self.loaded else ["the page did not load (no probe output in the DOM)"]
        if self.broken_images:
            out.append(f"{self.broken_images} of {self.images} images broken")
        out += self.errors + self.console_errors
        return out


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable (``LOSSLAB_CHROMIUM`` first), or None."""
    env = os.environ.get("LOSSLAB_CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def _inject(text: str) -> str:
    m = re.search(r"<head[^>]*>", text, flags=re.I)
    if not m:
        return _PROBE + text
    return text[: m.end()] + _PROBE + text[m.end():]


def _console_errors(stderr: str) -> list[str]:
    out = []
    for line in stderr.splitlines():
        if "CONSOLE" in line and (":ERROR:" in line or "Uncaught" in line):
            out.append(line.strip()[:300])
        elif "Uncaught" in line:
            out.append(line.strip()[:300])
    return out


def _run(cmd: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise LosslabError(f"chromium did not finish within {timeout:g}s: {' '.join(cmd[:3])} ...") from exc


def check_report(
    html_path: str | os.PathLike,
    *,
    screenshot: str | os.PathLike | None = None,
    chromium: str | None = None,
    window: tuple[int, int] = (1280, 2200),
    timeout: float = 90.0,
) -> BrowserCheck:
    """Load ``html_path`` in headless Chromium and report what it saw (see :class:`BrowserCheck`).

    Args:
        html_path: the report.
        screenshot: write a PNG of the top ``window`` of the page here.
        chromium: the executable (default :func:`find_chromium`).
        window: viewport ``(width, height)`` in CSS pixels.
        timeout: seconds per Chromium invocation.

    Raises:
        LosslabError: no Chromium found, or it timed out.
    """
    exe = chromium or find_chromium()
    if exe is None:
        raise LosslabError("no chromium executable found (install Debian's chromium or set LOSSLAB_CHROMIUM)")
    src = Path(html_path)
    if not src.is_file():
        raise LosslabError(f"report {src} does not exist")
    with tempfile.TemporaryDirectory(prefix="losslab-browser-") as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(_inject(src.read_text(encoding="utf-8")), encoding="utf-8")
        url = page.resolve().as_uri()
        base = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}",
                f"--window-size={window[0]},{window[1]}", "--virtual-time-budget=10000"]
        proc = _run([*base, "--dump-dom", url], timeout)
        dom, stderr = proc.stdout, proc.stderr
        shot = None
        if screenshot is not None:
            shot = Path(screenshot)
            shot.parent.mkdir(parents=True, exist_ok=True)
            tmp_png = Path(tmp) / "shot.png"
            proc2 = _run([*base, f"--screenshot={tmp_png}", url], timeout)
            stderr += proc2.stderr
            if not tmp_png.is_file():
                raise LosslabError(f"chromium wrote no screenshot (exit {proc2.returncode}): {proc2.stderr[-300:]}")
            shutil.copyfile(tmp_png, shot)
    m = _CHECK_RE.search(dom)
    if not m:
        return BrowserCheck(False, dom=dom, stderr=stderr, console_errors=_console_errors(stderr), screenshot=shot)
    attrs = {k: _html.unescape(v) for k, v in _ATTR_RE.findall(m.group(1))}
    try:
        errors = [str(e) for e in json.loads(attrs.get("errors", "[]"))]
    except ValueError:
        errors = [f"unreadable probe errors: {attrs.get('errors')!r}"]
    return BrowserCheck(
        loaded=True,
        images=int(attrs.get("images", 0)),
        broken_images=int(attrs.get("broken", 0)),
        verdict_cells=int(attrs.get("verdicts", 0)),
        rows=int(attrs.get("rows", 0)),
        errors=errors,
        console_errors=_console_errors(stderr),
        screenshot=shot,
        dom=dom,
        stderr=stderr,
    )
