"""`losslab reproduce` end to end: two quick rows that share trained runs (A1 and C4 both use the
seed-0 MNIST-1D MLP), run in two processes; the report opens in headless Chromium; a rerun with
nothing changed only re-renders the report.

Set LOSSLAB_UPDATE_SCREENSHOT=1 to copy the screenshot to docs/report-screenshot.png.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from losslab.experiments import VERDICTS, ROWS
from losslab.report.browser import check_report, find_chromium

REPO = Path(__file__).resolve().parents[1]


def cli(*args, timeout=600):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LOSSLAB_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "losslab", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def chromium():
    exe = find_chromium()
    if exe is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["sh", str(REPO / "scripts" / "install-chromium.sh")], check=False, timeout=900,
                       capture_output=True)
        exe = find_chromium()
    if exe is None:
        pytest.skip("chromium is not installed (run scripts/install-chromium.sh as root)")
    return exe


def test_reproduce_bad_input_is_one_line_error(tmp_path, capsys, monkeypatch):
    from losslab.cli.main import main
    from losslab.experiments import EXPERIMENTS

    assert main(["reproduce", "Z9", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("losslab: error: unknown survey row") and err.count("\n") == 1
    monkeypatch.delitem(EXPERIMENTS, "A5")  # a survey row whose module is missing
    assert main(["reproduce", "A5", "--out", str(tmp_path / "o")]) == 2
    assert "not yet implemented" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(["reproduce", "A1", "--jobs", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--jobs must be >= 1" in capsys.readouterr().err
    assert main(["reproduce", "--list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert len(rows) == len(ROWS) and [r["id"] for r in rows if r["status"] == "implemented"][:2] == ["A1", "A2"]
    assert not (tmp_path / "o" / "results").exists()


@pytest.mark.slow
def test_reproduce_quick_subset_resumes_and_renders(tmp_path, chromium):
    out = tmp_path / "out"
    t = time.perf_counter()
    r = cli("reproduce", "A1", "C4", "--quick", "--jobs", "2", "--out", str(out), "--json")
    first = time.perf_counter() - t
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout)
    assert [x["id"] for x in s["rows"]] == ["A1", "C4"]
    assert all(x["verdict"] in VERDICTS and not x["cached"] for x in s["rows"]), s["rows"]
    assert "[ A1" in r.stderr and "[ C4" in r.stderr  # progress on stderr
    # the seed 0-4 MLPs are trained once and shared between the two processes
    runs = sorted(p.name for p in (out / "cache" / "runs").glob("train-*"))
    assert len(runs) == 15, runs  # seeds 0-4 (shared), seeds 5-9 (C4's pairs), 5 large-LR controls (A1)
    assert r.stderr.count("training train-") == 15
    for x in s["rows"]:  # every row is judged on >= 5 seeds and carries its control and criteria
        decisive = [c for c in x["checks"] if c["decisive"] and not c["precondition"]]
        assert decisive and all(c["seeds"] >= 5 for c in decisive), x["checks"]
        assert x["control"]["setting"] and x["control"]["verdict"] in (*VERDICTS, "none")
        assert x["criteria"] and any(line.startswith("negative control:") for line in x["criteria"])
    html = Path(s["report"])
    assert html == out / "report.html" and (out / "report.md").is_file()

    # rerun: nothing recomputed, the report re-rendered from the saved results
    t = time.perf_counter()
    r2 = cli("reproduce", "A1", "C4", "--quick", "--out", str(out))
    rerun = time.perf_counter() - t
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert "reusing saved result" in r2.stderr and "training" not in r2.stderr
    assert "A1" in r2.stdout and "saved" in r2.stdout and "report:" in r2.stdout
    assert rerun < min(30.0, first), (rerun, first)

    shot = tmp_path / "artifacts" / "report-screenshot.png"
    c = check_report(html, screenshot=shot, chromium=chromium)
    assert c.loaded and c.ok, c.problems()
    assert c.verdict_cells == len(ROWS) and c.images >= 2 and c.broken_images == 0
    assert shot.stat().st_size > 10_000
    if os.environ.get("LOSSLAB_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, REPO / "docs" / "report-screenshot.png")
