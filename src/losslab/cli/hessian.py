"""``losslab hessian``: curvature and sharpness of a run's (or a checkpoint's) solution.

Top-k Hessian eigenvalues (Lanczos, with residuals and convergence flags), the trace (Hutchinson, ± its
standard error) and :math:`\\operatorname{Tr}H/\\|H\\|_F`, the negative-curvature ratio
:math:`|λ_{min}|/λ_{max}`, Keskar et al.'s ε-sharpness, ASAM's adaptive sharpness, the basin width along
random filter-normalized directions (and a volume estimate), and optionally the spectral density (SLQ)
as a PNG.

The orchestration and its cache are :func:`losslab.curvature.analysis.hessian_analysis`; this module
parses the flags, resolves the checkpoint, prints the table and sets the exit status. Every expensive
computation is cached on its own in the output directory (``RUN_DIR/hessian`` by default)
as ``<name>-<hash>.json`` (+ ``.npz`` for arrays), the hash covering the checkpoint (path, size, mtime),
the data (split, subset, seed) and that computation's settings; a rerun with the same settings loads
them and only re-renders the table and the plot (``--sigma`` changes the density's smoothing without
recomputing). ``--force`` recomputes.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import LosslabError
from ._common import emit
from ._load import add_target_args, resolve, target_loss

_ALL = ("topk", "trace", "negative", "epsilon", "adaptive", "basin")  # curvature.analysis.ANALYSIS_PARTS



def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hessian",
        help="Hessian spectrum (top-k, trace, density) and sharpness (ε, adaptive, basin width) of a solution",
        description=(
            "Curvature of the full-data loss at a run's final (or --step) checkpoint, or a bare checkpoint "
            "with --model: top-k eigenvalues with residuals, trace ± stderr, Tr/||H||_F, negative-curvature "
            "ratio, epsilon-sharpness (Keskar et al. 2017), adaptive sharpness (Kwon et al. 2021), basin width "
            "along random filter-normalized directions (Huang et al. 2020) and, with --density, the spectral "
            "density by stochastic Lanczos quadrature (PNG). Results are cached in RUN_DIR/hessian (or --out); "
            "a rerun with the same settings re-renders from the cache."
        ),
        epilog="example: losslab hessian runs/train-<hash> --top-k 5 --density --json",
    )
    add_target_args(p)
    d = p.add_argument_group("data")
    d.add_argument("--split", choices=("train", "test"), default="train", help="data split (default train)")
    d.add_argument("--subset", type=int, default=None, metavar="N",
                   help="use N examples of the split, drawn at random with --seed (default: all)")
    d.add_argument("--batch-size", type=int, default=None,
                   help="examples per batch in Hessian-vector products (default: all at once)")
    d.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="compute dtype of the curvature operators (default: the model's)")
    s = p.add_argument_group("spectrum")
    s.add_argument("--top-k", type=int, default=5, help="top eigenvalues to compute (default 5)")
    s.add_argument("--tol", type=float, default=1e-4,
                   help="Lanczos relative residual tolerance of every eigen computation: the top-k and λmin "
                        "(default 1e-4)")
    s.add_argument("--max-iter", type=int, default=None, help="Lanczos steps at most (default max(100, 20k))")
    s.add_argument("--repeats", action="store_true",
                   help="also find repeated copies of top eigenvalues (reruns Lanczos deflated; ~1 run more each)")
    s.add_argument("--probes", type=int, default=50, help="Hutchinson probes for the trace (default 50)")
    s.add_argument("--density", action="store_true", help="spectral density by SLQ, saved as PNG")
    s.add_argument("--density-probes", type=int, default=10, help="SLQ probe vectors (default 10)")
    s.add_argument("--density-steps", type=int, default=80, help="Lanczos steps per SLQ probe (default 80)")
    s.add_argument("--sigma", type=float, default=None,
                   help="Gaussian smoothing of the density plot (default 1%% of the spectrum's range; no recompute)")
    h = p.add_argument_group("sharpness")
    h.add_argument("--epsilon", type=float, default=1e-3, help="box size of the epsilon-sharpness (default 1e-3)")
    h.add_argument("--rho", type=float, default=0.5, help="radius of the adaptive sharpness (default 0.5)")
    h.add_argument("--ascent-steps", type=int, default=20,
                   help="gradient-ascent steps of both sharpness measures (default 20)")
    h.add_argument("--basin-directions", type=int, default=10, help="random directions of the basin width (default 10)")
    h.add_argument("--basin-threshold", type=float, default=0.1,
                   help="basin edge: loss > L(θ*) + THRESHOLD (additive; see --basin-kind) (default 0.1)")
    h.add_argument("--basin-kind", choices=("additive", "relative", "absolute"), default="additive",
                   help="how --basin-threshold is applied (default additive)")
    p.add_argument("--skip", nargs="+", choices=_ALL, default=[], metavar="PART",
                   help=f"parts not to compute: {', '.join(_ALL)}")
    p.add_argument("--seed", type=int, default=0, help="seed of subsets, probes and directions (default 0)")
    p.add_argument("--out", default=None, help="output directory (default RUN_DIR/hessian or ./hessian)")
    p.add_argument("--force", action="store_true", help="recompute even when cached results exist")
    p.add_argument("--no-progress", action="store_true", help="accepted for symmetry with other commands")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------------- cache


def _fingerprint(t: Any, args: argparse.Namespace) -> dict[str, Any]:
    """What identifies the measured point: the checkpoint file (path, size, mtime) and the model spec."""
    if t.run is not None:
        ckpts = t.run.checkpoints()
        if not ckpts:
            raise LosslabError(f"run {t.run.path} has no checkpoints")
        step = args.step
        path = ckpts[-1][1] if step is None else next((f for s, f in ckpts if s == step), None)
        if path is None:
            raise LosslabError(f"run {t.run.path} has no checkpoint at step {step}")
    else:
        path = Path(args.target)
    st = Path(path).stat()
    return {"checkpoint": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "model": t.description.get("model"), "model_kwargs": getattr(args, "model_kwargs", None),
            "loss": getattr(args, "loss", None), "output_key": getattr(args, "output_key", None),
            "dataset": t.description.get("dataset"), "dataset_kwargs": getattr(args, "dataset_kwargs", None)}


# --------------------------------------------------------------------------------------------- run


def _subset(split: Any, n: int | None, seed: int) -> tuple[Any, Any]:
    if n is not None and n < 1 and n < len(split.x):
        raise LosslabError(f"--subset must be >= 1, got {n}")
    from ..curvature.analysis import data_subset

    return data_subset(split, n, seed)


def run(args: argparse.Namespace) -> int:
    from .._functional import batchnorm_layers
    from ..curvature.analysis import hessian_analysis

    if args.top_k < 1:
        raise LosslabError(f"--top-k must be >= 1, got {args.top_k}")
    if args.probes < 2:
        raise LosslabError(f"--probes must be >= 2, got {args.probes}")
    t_start = time.perf_counter()
    t = resolve(args.target, args)
    num_params = sum(p.numel() for p in t.model.parameters() if p.requires_grad)
    if args.top_k > num_params:
        raise LosslabError(f"--top-k {args.top_k} exceeds the model's {num_params} parameters (the Hessian has "
                           f"{num_params} eigenvalues)")
    split = t.bundle.train if args.split == "train" else t.bundle.test
    if len(split) == 0:
        raise LosslabError(f"the {args.split} split of {t.bundle.name} is empty")
    if args.bn == "recompute" and batchnorm_layers(t.model):
        if args.split == "test":
            raise LosslabError("--bn recompute takes BatchNorm statistics from the training data, and the Hessian "
                               "through them on the test split is not supported: use --split train or --bn eval")
        if args.batch_size is not None and args.batch_size < (args.subset or len(split)):
            raise LosslabError("--bn recompute takes BatchNorm statistics over all the examples at once: drop "
                               "--batch-size or use --bn eval")
    x, y = _subset(split, args.subset, args.seed)
    out = Path(args.out) if args.out else ((t.run.path / "hessian") if t.run is not None else Path("hessian"))
    summary = hessian_analysis(
        t.model, (x, y), loss=target_loss(args, t.bundle), out=out, point=_fingerprint(t, args), bn=args.bn,
        split=args.split, subset=args.subset, seed=args.seed, batch_size=args.batch_size, dtype=args.dtype,
        top_k=args.top_k, tol=args.tol, max_iter=args.max_iter, repeats=args.repeats, probes=args.probes,
        density=args.density, density_probes=args.density_probes, density_steps=args.density_steps,
        sigma=args.sigma, epsilon=args.epsilon, rho=args.rho, ascent_steps=args.ascent_steps,
        basin_directions=args.basin_directions, basin_threshold=args.basin_threshold, basin_kind=args.basin_kind,
        skip=args.skip, force=args.force, header=t.description, t_start=t_start)
    emit(args, summary, _table(summary, args))
    bad = [i + 1 for i, c in enumerate(summary.get("eigen_converged") or []) if not c]
    if bad:
        print(f"losslab: warning: {len(bad)} of {len(summary['eigen_converged'])} top eigenpairs did not converge "
              f"(first: λ{bad[0]}); raise --max-iter, loosen --tol or lower --top-k; exit status 1", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------------------- render


def _fmt(v: Any, spec: str = ".5g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return format(v, spec)


def _table(s: dict[str, Any], args: argparse.Namespace) -> str:
    where = s.get("run_dir") or s.get("checkpoint")
    lines = [f"Hessian of the {s['split']} loss at {where}"
             + (f" (step {s['step']})" if s.get("step") is not None else "")
             + f": {s['examples']} examples, {s['parameters']} parameters, loss {s.get('loss_fn')}, "
             f"BatchNorm {s.get('bn')}",
             f"  {'quantity':<34}{'value':>14}  note"]

    def row(name: str, value: str, note: str = "") -> None:
        lines.append(f"  {name:<34}{value:>14}  {note}")

    row("loss L(θ)", _fmt(s["loss"]))
    if "eigenvalues" in s:
        for i, (v, r, c) in enumerate(zip(s["eigenvalues"], s["residuals"], s["eigen_converged"])):
            row(f"λ{i + 1}", _fmt(v), f"residual {r:.1e} {'converged' if c else 'NOT converged'}")
    if "trace" in s:
        row("trace Tr(H)", _fmt(s["trace"]), f"± {_fmt(s['trace_stderr'], '.3g')} ({s['trace_probes']} probes)")
        row("Tr(H)/||H||_F", _fmt(s["trace_over_frobenius"], ".4g"), f"||H||_F ≈ {_fmt(s['frobenius'], '.4g')}")
    if "negative_curvature_ratio" in s:
        row("λmin", _fmt(s["lambda_min"]))
        row("negative-curvature ratio |λmin|/λmax", _fmt(s["negative_curvature_ratio"], ".4g"))
    if "epsilon_sharpness" in s:
        row(f"ε-sharpness (ε={s['epsilon']:g})", _fmt(s["epsilon_sharpness"], ".4g"), "Keskar et al., % of 1+L")
    if "adaptive_sharpness" in s:
        row(f"adaptive sharpness (ρ={s['rho']:g})", _fmt(s["adaptive_sharpness"], ".4g"), "ASAM, max ΔL")
    if "basin" in s:
        b = s["basin"]
        q = b["radius_quantiles"]
        row(f"basin radius (L > {b['threshold_loss']:.4g})", _fmt(b["radius_mean"], ".4g"),
            f"mean of {2 * b['num_directions']} rays; q05-q95 {q['q05']:.3g}-{q['q95']:.3g}; "
            f"{b['censored']} censored")
        row("basin log-volume", _fmt(b["log_volume"], ".6g"), f"D = {b['dim']}, effective radius "
            f"{b['effective_radius']:.4g}")
    if "density" in s:
        row("density plot", "", s["density"]["png"])
    cached = [k for k, v in s["cached"].items() if v]
    lines.append(f"  results in {s['out']}" + (f" (from cache: {', '.join(cached)})" if cached else ""))
    return "\n".join(lines)
