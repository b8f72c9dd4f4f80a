"""``losslab reproduce``: run the survey's findings on built-in data and write an offline HTML report."""
from __future__ import annotations

import argparse
import os
import sys
import time

from ._common import emit


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run the survey's findings and write an offline HTML report with verdicts",
        description=(
            "Run the experiments of the survey rows (A1, A2, ...; default: every implemented row) on built-in "
            "data, judge each finding (reproduced / not reproduced / inconclusive) and write OUT/report.html "
            "(self-contained, offline) and OUT/report.md. Results are saved per row and config hash, and trained "
            "runs are shared between rows, so a rerun with nothing changed only re-renders the report. Exit status "
            "1 when an experiment failed (its error is in the report), 2 on bad input."
        ),
        epilog="example: losslab reproduce --quick --jobs 2        losslab reproduce A1 C4 --full --json",
    )
    p.add_argument("ids", nargs="*", metavar="ID", help="survey rows to run (default: all implemented)")
    prof = p.add_mutually_exclusive_group()
    prof.add_argument("--quick", dest="profile", action="store_const", const="quick",
                      help="small models, minutes on a laptop CPU (default)")
    prof.add_argument("--full", dest="profile", action="store_const", const="full",
                      help="the larger regimes and more seeds (hours on one CPU)")
    p.set_defaults(profile="quick")
    p.add_argument("--out", default="reproduce-out", help="output directory (default: reproduce-out)")
    p.add_argument("--jobs", type=int, default=None,
                   help="experiments run in parallel processes, one torch thread each (default: CPU count)")
    p.add_argument("--seed", type=int, default=0,
                   help="master seed: shifts every seed of every row by SEED x 1000, for an independent replication "
                        "(default 0)")
    p.add_argument("--force", action="store_true", help="recompute saved results (trained runs are still reused)")
    p.add_argument("--list", action="store_true", help="list the survey rows and which are implemented, then exit")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=run)


def _fmt_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def run(args: argparse.Namespace) -> int:
    from ..errors import LosslabError
    from ..experiments import BROKEN, EXPERIMENTS, ROWS, get, row_order, run_many
    from ..report import render

    if args.list:
        summary = {"rows": [{"id": r, "title": ROWS[r].title,
                             "status": "implemented" if r in EXPERIMENTS else ("broken" if r in BROKEN else
                                                                               "not yet implemented")}
                            for r in sorted(ROWS, key=row_order)]}
        text = "\n".join(f"{x['id']:>4}  {x['status']:<20} {x['title']}" for x in summary["rows"])
        emit(args, summary, text)
        return 0
    if args.seed < 0:
        raise LosslabError(f"--seed must be >= 0, got {args.seed}")
    jobs = args.jobs if args.jobs is not None else (os.cpu_count() or 1)
    if jobs < 1:
        raise LosslabError(f"--jobs must be >= 1, got {jobs}")
    ids = [get(i).ID for i in args.ids] if args.ids else list(EXPERIMENTS)
    if not ids:
        raise LosslabError("no experiment is implemented yet")
    out = args.out
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    print(f"losslab reproduce: {len(ids)} row(s) {' '.join(ids)}, {args.profile} profile, master seed {args.seed}, "
          f"{jobs} job(s) -> {out}",
          file=sys.stderr, flush=True)
    outcomes = run_many(ids, args.profile, out=out, jobs=jobs, force=args.force, stream=sys.stderr, seed=args.seed)

    # the report shows every row: this call's results, and saved results of other rows for the same profile
    from ..experiments import config_for, load_saved, result_dir

    results, dirs = {}, {}
    for rid in EXPERIMENTS:
        saved = load_saved(out, rid, args.profile, args.seed)
        if saved is not None:
            results[rid] = saved
            dirs[rid] = result_dir(out, rid, config_for(rid, args.profile, args.seed))
    for o in outcomes:
        results[o.id] = o.result
        dirs[o.id] = o.path.parent
    wall = time.perf_counter() - t0
    n_saved = sum(o.cached for o in outcomes)
    computed = sum(float(r.timings.get("total", 0.0)) for r in results.values())
    paths = render(out, results, result_dirs=dirs, profile=args.profile, implemented=list(EXPERIMENTS),
                   broken=BROKEN, meta={"master seed": args.seed, "jobs": jobs,
                                        "rows computed in": f"{computed:.0f} s (sum over rows)",
                                        "last invocation": f"{wall:.1f} s, {len(outcomes) - n_saved} run, "
                                                           f"{n_saved} reused"})
    rows = []
    for o in outcomes:
        r = o.result
        ctrl = (r.control or {}).get("verdict", "-")
        rows.append([o.id, r.title[:44], r.verdict_status + (" (flagged)" if r.verdict is not None and r.verdict.flagged
                                                             else ""), ctrl, f"{r.timings.get('total', 0.0):.1f}s",
                     "saved" if o.cached else "run",
                     "; ".join(f"{k} {v}" for k, v in list(r.key_numbers.items())[:2])])
    summary = {
        "profile": args.profile,
        "out": str(out),
        "jobs": jobs,
        "seed": args.seed,
        "wall_seconds": round(wall, 3),
        "reused": n_saved,
        "report": str(paths["html"]),
        "markdown": str(paths["md"]),
        "rows": [{**o.result.summary(), "title": o.result.title, "error": o.result.error,
                  "seconds": o.result.timings.get("total"), "cached": o.cached,
                  "key_numbers": o.result.key_numbers, "result": str(o.path)} for o in outcomes],
        "not_implemented": [r for r in sorted(ROWS, key=row_order) if r not in EXPERIMENTS and r not in BROKEN],
        "broken": dict(BROKEN),
    }
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.result.verdict_status] = counts.get(o.result.verdict_status, 0) + 1
    summary["counts"] = counts
    text = (_fmt_table(rows, ["row", "finding", "verdict", "control", "time", "", "key numbers"])
            + "\n\n" + ", ".join(f"{n} {k}" for k, n in counts.items())
            + f"; {len(outcomes)} row(s) in {wall:.1f}s ({n_saved} reused from saved results); "
              f"{len(summary['not_implemented'])} row(s) not yet implemented"
            + (f"; broken: {', '.join(BROKEN)}" if BROKEN else "")
            + f"\nreport: {paths['html']}\n        {paths['md']}")
    emit(args, summary, text)
    return 1 if any(o.result.verdict_status == "failed" for o in outcomes) else 0
