"""SIGKILL `losslab surface` at several points: the rerun finishes bit-identical to an uninterrupted run (issue 16)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cases import train_digits


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_digits(tmp_path_factory.mktemp("runs"), epochs=2)


def _surface(run, out):
    return [sys.executable, "-m", "losslab", "surface", str(run), "--grid", "41", "--out", str(out), "--no-progress"]


def _n_done(out):
    try:
        return json.loads((out / "surface.json").read_text())["n_done"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_killed_surface_resumes_bit_identical(run_dir, tmp_path):
    whole = tmp_path / "whole"
    assert subprocess.run(_surface(run_dir, whole), capture_output=True).returncode == 0
    killed = tmp_path / "killed"
    seen = []
    for at_least in (1, 700):  # killed twice: after the first saved block, and past the middle
        proc = subprocess.Popen(_surface(run_dir, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and _n_done(killed) < at_least and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen.append(_n_done(killed))
    assert 0 < seen[0] < seen[1] < 41 * 41, seen  # both kills landed mid-surface
    r = subprocess.run(_surface(run_dir, killed), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = np.load(whole / "surface.npz"), np.load(killed / "surface.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        assert np.array_equal(a[k], b[k], equal_nan=True), k
    left = [p for p in os.listdir(killed) if p.endswith(".tmp") or ".tmp" in p]
    assert not left, left  # no temporary files survive the kills
