"""The README's library tour runs as written (a new user's first contact with the API)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_a_library_tour():
    blocks = python_blocks()
    assert len(blocks) >= 2
    tour = "\n".join(blocks)
    for api in ("surface.plane", "lanczos_eigs", "connect.linear_path", "intrinsic_dimension"):
        assert api in tour, api


@pytest.mark.slow
def test_readme_library_tour_runs(tmp_path):
    script = tmp_path / "tour.py"
    script.write_text("\n".join(python_blocks()), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "plane.npz").is_file() and (tmp_path / "plane.json").is_file()
    assert any((tmp_path / "runs").glob("train-*/run.json"))  # the two runs were trained where the README says
