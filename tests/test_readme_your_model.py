"""The README's "Your model and your data" section: its worked example runs as written."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Your model and your data")
    end = text.index("\n## ", start + 10)
    return text[start:end]


def test_the_section_covers_the_ways_in_the_loss_and_batchnorm():
    s = section()
    for needle in ("pkg.module:factory", "--data pkg.module:function", ".npz", "--loss", "token-cross-entropy",
                   "--output-key", "--bn recompute", "--bn eval", "Dropout is off", "safetensors", "state_dict",
                   "mynets:resnet", "mynets:lm"):
        assert needle in s, needle


@pytest.mark.slow
def test_the_worked_example_runs(tmp_path):
    s = section()
    for block in re.findall(r"```py\n(.*?)```", s, re.S):
        name = block.splitlines()[0].removeprefix("# ").strip()
        (tmp_path / name).write_text(block, encoding="utf-8")
    (commands,) = re.findall(r"```bash\n(.*?)```", s, re.S)
    script = (f'set -euo pipefail\npython() {{ "{sys.executable}" "$@"; }}\nlosslab() {{ python -m losslab "$@"; }}\n'
              + commands)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert out.count("BatchNorm recompute") >= 3 and "BatchNorm eval" in out
    assert "loss token-cross-entropy" in out
