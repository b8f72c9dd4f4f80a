"""``torchrun --nproc_per_node N -m losslab.distributed surface RUN_DIR ...``: a sharded ``losslab surface``.

The flags are those of ``losslab surface`` (its parser is reused), plus ``--device``, ``--backend``,
``--timeout``, ``--threads`` and ``--max-points``. Every rank loads the run and builds the same
directions (seeded, :func:`losslab.directions.build`); rank 0 alone writes files (directions, the
resumable result, figures by :func:`losslab.surface.render`) and prints the summary.

This module is the command line only (flags, messages, exit codes); ``python -m losslab.distributed``
runs its :func:`main`. It is not a ``losslab`` subcommand (it has no ``add_parser``): it needs torchrun.
"""
from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from ..errors import LosslabError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m losslab.distributed``: the ``surface`` command plus the distributed flags."""
    from ..distributed._runtime import DEFAULT_TIMEOUT
    from . import surface as cli_surface

    parser = argparse.ArgumentParser(
        prog="torchrun --nproc_per_node N -m losslab.distributed",
        description="losslab commands sharded over the ranks of a torchrun job (see docs/distributed.md).",
        epilog="example: torchrun --standalone --nproc_per_node 2 -m losslab.distributed surface runs/train-<hash> "
               "--grid 41 --json",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    cli_surface.add_parser(sub)
    p = sub.choices["surface"]
    g = p.add_argument_group("distributed")
    g.add_argument("--device", default=None,
                   help="this rank's device (default: cuda:LOCAL_RANK when CUDA is available, else cpu)")
    g.add_argument("--backend", default=None,
                   help="process-group backend (default: cpu:gloo,cuda:nccl on CUDA, gloo on CPU)")
    g.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds a rank waits for another before failing (default {DEFAULT_TIMEOUT:g})")
    g.add_argument("--threads", type=int, default=None, help="torch threads per rank (default LOSSLAB_THREADS or 1)")
    g.add_argument("--max-points", type=int, default=None,
                   help="evaluate at most this many grid points in this call (rerun to resume)")
    p.set_defaults(func=run_surface)
    return parser


def run_surface(args: argparse.Namespace) -> int:
    """``surface`` under torchrun: every rank evaluates its share of the grid; rank 0 writes and reports."""

    from ..distributed import distributed_line, distributed_plane, init_distributed, shutdown
    from ._load import resolve
    from .surface import (_grid, _render, build_directions, compute_surface, emit_surface, evaluation_kwargs,
                          output_dir, summarize)

    ctx = init_distributed(args.backend, timeout=args.timeout, device=args.device, threads=args.threads)
    try:
        t = resolve(args.target, args)
        nx, ny = _grid(args)
        data = t.bundle.train if args.split == "train" else t.bundle.test
        if len(data) == 0:
            raise LosslabError(f"the {args.split} split of {t.bundle.name} is empty")
        out = output_dir(args, t)
        if ctx.is_root:
            out.mkdir(parents=True, exist_ok=True)
        # every rank builds the same (seeded, deterministic) directions; only rank 0 writes files
        dirs, pca, xr = build_directions(args, t, data, out, write=ctx.is_root)
        kw = evaluation_kwargs(args, t, out)
        kw.update(device=ctx.device, timeout=args.timeout, max_points=args.max_points)
        # --rtol/--atol: adaptive precision, its waves shared over the ranks
        res = compute_surface(args, t.model, data, dirs, xr, (nx, ny), kw, distributed_line, distributed_plane)
        if not ctx.is_root:
            return 0
        files = {"result": str(out / "surface.npz")}
        files.update(_render(res, out, args, pca))
        dmeta = res.meta.get("distributed", {})
        summary = {
            **summarize(res, t, args, out, files),
            "world_size": ctx.world_size, "backend": ctx.backend, "device": str(ctx.device),
            "points_per_rank": [r.get("points") for r in dmeta.get("per_rank", [])] or None,
        }
        return emit_surface(args, res, summary, files, f"{args.dim}-D surface on {ctx.world_size} rank(s), "
                            f"{res.n_done}/{res.n_points} points -> {out}")
    finally:
        shutdown(ctx)


class _Terminated(SystemExit):
    """SIGTERM (torchrun stopping the job after another rank failed), raised in the main thread."""


def _sigterm_to_exit(signum: int, frame: Any) -> None:  # pragma: no cover - exercised by torchrun teardown
    raise _Terminated(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m losslab.distributed`` (run it under ``torchrun``)."""
    from ._common import parse_or_help

    args = parse_or_help(build_parser(), argv)
    if args is None:
        return 2
    # torchrun stops the other ranks with SIGTERM when one fails: turn it into an exception so rank 0
    # saves its partial result and the store keys are released before the process ends.
    signal.signal(signal.SIGTERM, _sigterm_to_exit)
    try:
        return int(args.func(args) or 0)
    except _Terminated:
        print("losslab: stopped by SIGTERM (torchrun stops all ranks when one fails); finished points are "
              "saved: rerun the same command to resume", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("losslab: interrupted (finished work is saved; rerun the same command to resume)", file=sys.stderr)
        return 130
    except (LosslabError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"losslab: error: {msg}", file=sys.stderr)
        return 2
