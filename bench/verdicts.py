"""Verdict stability: `losslab reproduce` under two master seeds, and how many row verdicts agree.

Runs ``losslab reproduce --quick --jobs J --seed S`` for each master seed (into ``OUT/seed-S``; saved
results are reused, so a rerun only re-reads them), then prints one JSON object: per row the verdict
and control verdict for each seed, whether they agree, the counts, the wall time of each invocation
and the number of rows whose control is not ``reproduced``. Issue 14's target: the two seeds agree on
at least 20 of 21 rows.

    .venv/bin/python bench/verdicts.py --seeds 0 1 --jobs 2 --out /tmp/verdicts > verdicts.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, log, machine_info  # noqa: E402


def reproduce(seed: int, out: Path, jobs: int, profile: str, ids: list[str]) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "losslab", "reproduce", *ids, f"--{profile}", "--jobs", str(jobs), "--seed",
           str(seed), "--out", str(out), "--json"]
    log(f"running: {' '.join(cmd[2:])}")
    t = time.perf_counter()
    env = {**os.environ, "LOSSLAB_THREADS": os.environ.get("LOSSLAB_THREADS", "1")}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if r.returncode not in (0, 1):
        raise SystemExit(f"reproduce --seed {seed} exited {r.returncode}: {r.stderr[-2000:]}")
    return json.loads(r.stdout), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs=2, default=[0, 1], help="the two master seeds")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--profile", choices=("quick", "full"), default="quick")
    ap.add_argument("--out", default="verdicts-out", help="parent of the two output directories")
    ap.add_argument("ids", nargs="*", help="rows (default: all)")
    ap.add_argument("--json-out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    runs = {}
    for s in args.seeds:
        summary, wall = reproduce(s, Path(args.out) / f"seed-{s}", args.jobs, args.profile, args.ids)
        runs[s] = {"summary": summary, "wall_s": round(wall, 1)}
    a, b = args.seeds
    rows_a = {r["id"]: r for r in runs[a]["summary"]["rows"]}
    rows_b = {r["id"]: r for r in runs[b]["summary"]["rows"]}
    table = []
    for rid in rows_a:
        ra, rb = rows_a[rid], rows_b.get(rid, {})
        table.append({"id": rid, f"seed{a}": ra["verdict"], f"seed{b}": rb.get("verdict"),
                      f"control_seed{a}": (ra.get("control") or {}).get("verdict"),
                      f"control_seed{b}": (rb.get("control") or {}).get("verdict"),
                      "agree": ra["verdict"] == rb.get("verdict"),
                      f"cpu_s_seed{a}": ra.get("seconds"), f"cpu_s_seed{b}": rb.get("seconds")})
    counts = {s: runs[s]["summary"].get("counts", {}) for s in args.seeds}
    controls_not_reproduced = {s: sum(1 for r in runs[s]["summary"]["rows"]
                                      if (r.get("control") or {}).get("verdict") not in (None, "none", "reproduced"))
                               for s in args.seeds}
    emit({
        "bench": "verdicts",
        "machine": machine_info(),
        "profile": args.profile,
        "jobs": args.jobs,
        "seeds": args.seeds,
        "wall_s": {s: runs[s]["wall_s"] for s in args.seeds},
        "reused": {s: runs[s]["summary"].get("reused") for s in args.seeds},
        "counts": counts,
        "controls_not_reproduced": controls_not_reproduced,
        "agree": sum(r["agree"] for r in table),
        "rows": len(table),
        "targets": {"agree_at_least_20_of_21": sum(r["agree"] for r in table) >= min(20, len(table) - 1),
                    "quick_under_10_min": all(runs[s]["wall_s"] <= 600 for s in args.seeds)},
        "table": table,
    }, args.json_out)


if __name__ == "__main__":
    main()
