"""Benchmark: start-up of ``losslab train --dataset digits`` (wall and CPU against its training seconds).

Each measurement is a fresh ``python -m losslab train --dataset digits --json --out <new dir>`` (a new
run directory, so it trains every time) with one shared ``LOSSLAB_CACHE``: the first call fills the
caches (digits arrays, byte code), the next ``--repeats`` are the "second run onward" the target is
about. Reported per call: wall seconds, CPU seconds of the child (user + system, from
``RUSAGE_CHILDREN``), and the training seconds (wall) the command itself reports; the overhead is wall
minus training. The floor is ``python -c "import torch"`` measured the same way, same run; on a loaded
machine compare CPU seconds (``cpu_over_import_torch_s``: the call's CPU beyond importing torch).

``python -X importtime`` of one more train call gives the slowest imports (cumulative microseconds),
top-level entries and the ones the target is about (``torch``, ``torch._dynamo``, ``sklearn``,
``scipy``).

``--compare-src DIR`` runs every measurement a second time with ``PYTHONPATH=DIR`` (another checkout's
``src``, e.g. before a change), in the same run and interleaved, so the two see the same load.

Usage::

    .venv/bin/python bench/startup.py                       # ~1-2 min
    .venv/bin/python bench/startup.py --repeats 5 --compare-src ../other-checkout/src --out startup.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
WATCH = ("torch", "torch._dynamo", "sklearn", "scipy", "losslab", "losslab.train")


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Wall and child CPU seconds of ``cmd``, its stdout and stderr."""
    c0, t0 = _child_cpu(), time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _child_cpu() - c0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return {"wall_s": wall, "cpu_s": cpu, "stdout": p.stdout, "stderr": p.stderr}


def train_call(src: Path, cache: Path, work: Path, importtime: bool = False) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src), "LOSSLAB_CACHE": str(cache)}
    out = Path(tempfile.mkdtemp(dir=work))
    flags = ["-X", "importtime"] if importtime else []
    r = run([sys.executable, *flags, "-m", "losslab", "train", "--dataset", "digits", "--json", "--out", str(out)], env)
    summary = json.loads(r["stdout"])
    r["train_s"] = float(summary["seconds"])
    r["reused"] = bool(summary.get("reused"))
    return r


def import_torch(src: Path) -> dict[str, Any]:
    return run([sys.executable, "-c", "import torch"], {**os.environ, "PYTHONPATH": str(src)})


def parse_importtime(stderr: str, top: int) -> dict[str, Any]:
    """Cumulative import microseconds: the ``top`` slowest top-level imports and the watched modules."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cum_us, name = line[len("import time:"):].split("|", 2)
        name = name[1:]  # one space after the bar, then two per nesting level
        depth = (len(name) - len(name.lstrip(" "))) // 2
        rows.append((name.strip(), int(self_us), int(cum_us), depth))
    top_level = sorted((r for r in rows if r[3] == 0), key=lambda r: -r[2])[:top]
    watched = {name: None for name in WATCH}
    for name, _, cum, _ in rows:
        if name in watched and watched[name] is None:
            watched[name] = cum / 1e6
    return {"top_level_s": {name: cum / 1e6 for name, _, cum, _ in top_level}, "watched_s": watched,
            "total_top_level_s": sum(r[2] for r in rows if r[3] == 0) / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="train calls after the first (cache-filling) one")
    ap.add_argument("--top", type=int, default=12, help="how many top-level imports to list")
    ap.add_argument("--compare-src", default=None, help="another checkout's src directory, measured alike")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args()
    t0 = time.perf_counter()
    sources = {"this": SRC}
    if a.compare_src:
        sources["compare"] = Path(a.compare_src).resolve()
    result: dict[str, Any] = {"benchmark": "startup", "machine": C.machine_info(),
                              "sources": {k: str(v) for k, v in sources.items()}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        caches = {k: work / f"cache-{k}" for k in sources}
        calls: dict[str, list[dict[str, Any]]] = {k: [] for k in sources}
        floors: dict[str, list[dict[str, Any]]] = {k: [] for k in sources}
        for k, src in sources.items():
            C.log(f"{k}: first call (fills the caches)")
            first = train_call(src, caches[k], work)
            result.setdefault("first_call", {})[k] = {key: first[key] for key in ("wall_s", "cpu_s", "train_s")}
        for i in range(a.repeats):
            for k, src in sources.items():  # interleaved: the sources see the same load
                C.log(f"{k}: call {i + 2}")
                calls[k].append(train_call(src, caches[k], work))
                floors[k].append(import_torch(src))
        for k, src in sources.items():
            C.log(f"{k}: -X importtime")
            imp = train_call(src, caches[k], work, importtime=True)
            wall = C.median([c["wall_s"] for c in calls[k]])
            cpu = C.median([c["cpu_s"] for c in calls[k]])
            train = C.median([c["train_s"] for c in calls[k]])
            torch_cpu = C.median([f["cpu_s"] for f in floors[k]])
            result[k] = {
                "second_run_onward": {
                    "wall_s": [round(c["wall_s"], 3) for c in calls[k]],
                    "cpu_s": [round(c["cpu_s"], 3) for c in calls[k]],
                    "train_s": [c["train_s"] for c in calls[k]],
                    "median_wall_s": wall, "median_cpu_s": cpu, "median_train_s": train,
                    "overhead_wall_s": wall - train,
                    "cpu_over_import_torch_s": cpu - torch_cpu,
                },
                "import_torch": {"median_wall_s": C.median([f["wall_s"] for f in floors[k]]),
                                 "median_cpu_s": torch_cpu},
                "importtime": parse_importtime(imp["stderr"], a.top),
                "targets": {"wall_le_train_plus_2s": wall <= train + 2.0},
            }
    result["machine"]["load_average_end"] = C.load_average()
    result["seconds"] = time.perf_counter() - t0
    C.emit(C.rounded(result), a.out)


if __name__ == "__main__":
    main()
