"""``losslab diversity``: function-space diversity of independent runs vs one trajectory, and ensembles
(Fort, Hu & Lakshminarayanan 2019)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import LosslabError
from ._common import add_probe_output_args, emit, settings_hash
from ._load import BN_HELP


DESCRIPTION = (
    "Compare independent runs (trained on the same data with different seeds) in function space: prediction "
    "disagreement, KL and JS between predictive distributions and cosine of weight displacements; within-trajectory "
    "disagreement at similar accuracy; t-SNE and PCA of the prediction vectors along the trajectories; and the "
    "accuracy of ensembles of independent runs, of checkpoints of one run and of random / diagonal-Gaussian / "
    "PCA-subspace samples around one solution."
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diversity", description=DESCRIPTION,
        help="prediction disagreement, KL/JS, weight cosine, t-SNE and ensembles of runs and trajectories",
        epilog="example: losslab diversity runs/train-<a> runs/train-<b> runs/train-<c> --plot --json")
    p.add_argument("targets", nargs="+", metavar="RUN_DIR", help="losslab run directories")
    p.add_argument("--split", choices=("train", "test"), default="test", help="evaluation split (default test)")
    p.add_argument("--n-examples", type=int, default=None, help="random subset of the split (default all)")
    p.add_argument("--max-checkpoints", type=int, default=None, help="checkpoints per run (default all)")
    p.add_argument("--ensemble-size", type=int, default=None,
                   help="members of the trajectory and subspace ensembles (default max(2, number of runs))")
    p.add_argument("--tail", type=int, default=5, help="last checkpoints of run 1 for the subspace samples (default 5)")
    p.add_argument("--sample-scale", type=float, default=1.0, help="scale of the subspace samples (default 1)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="accuracy tolerance of 'similar accuracy' checkpoints (default 0.01)")
    p.add_argument("--no-tsne", action="store_true", help="skip t-SNE (PCA only)")
    p.add_argument("--seed", type=int, default=0, help="seed of subsets, samples and t-SNE (default 0)")
    p.add_argument("--bn", choices=("recompute", "eval"), default="recompute", help=BN_HELP)
    add_probe_output_args(p, "diversity", run_dir="FIRST_RUN_DIR")
    p.set_defaults(func=run)


def _name(args: argparse.Namespace) -> str:
    keys = ("split", "n_examples", "max_checkpoints", "ensemble_size", "tail", "sample_scale", "tolerance",
            "no_tsne", "seed")
    extra = {"bn": args.bn} if getattr(args, "bn", "recompute") != "recompute" else {}  # the default keeps old names
    return "diversity-" + settings_hash(args, keys, targets=[str(Path(t).resolve()) for t in args.targets], **extra)


def run(args: argparse.Namespace) -> int:
    from ..probes import diversity
    from ..runs import Run

    runs = []
    for t in args.targets:
        if not Path(t).is_dir():
            raise LosslabError(f"{t} is not a run directory")
        runs.append(Run.open(t))
    out = Path(args.out) if args.out else Path(args.targets[0]) / "probes" / _name(args)
    out.mkdir(parents=True, exist_ok=True)
    res = diversity(runs, split=args.split, n_examples=args.n_examples, max_checkpoints=args.max_checkpoints,
                    ensemble_size=args.ensemble_size, tail=args.tail, sample_scale=args.sample_scale,
                    accuracy_tolerance=args.tolerance, embed=("pca",) if args.no_tsne else ("tsne", "pca"),
                    seed=args.seed, bn=args.bn)
    files: dict[str, str] = {"result": str(res.save(out / "diversity"))}
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        from ..probes import DiversityDisplay

        disp = DiversityDisplay.from_result(res)
        files["png"] = str(disp.savefig(out / "diversity.png"))
        disp.close()
    s = res.summary
    summary: dict[str, Any] = {
        "runs": res.meta["runs"], "out": str(out), "files": files, "split": args.split, "bn": res.meta["bn"],
        "n_examples": res.meta["n_examples"], "final_accuracy": res.final_accuracy.tolist(),
        "disagreement": res.disagreement.tolist(), "js": res.js.tolist(), "kl": res.kl.tolist(),
        "weight_cosine": res.weight_cosine.tolist(), **s, "seconds": res.meta["seconds"],
    }
    ens = s["ensemble_accuracy"]
    fmt = lambda v: "n/a" if v is None or v != v else f"{v:.4f}"  # noqa: E731
    text = (f"{len(runs)} runs, {res.meta['n_examples']} {args.split} examples, BatchNorm {res.meta['bn']} -> {out}\n"
            f"disagreement across runs {fmt(s['across_run_disagreement'])}, within trajectory (similar accuracy) "
            f"{fmt(s['within_trajectory_disagreement'])}\n"
            f"ensemble accuracy: single {fmt(ens['single_mean'])}, independent {fmt(ens['independent'])}, "
            f"trajectory {fmt(ens['trajectory'])}"
            + "".join(f", {k} {fmt(ens[k])}" for k in ("random", "diag", "pca") if k in ens)
            + "".join(f"\n  {k}: {v}" for k, v in files.items()))
    from ..results import jsonable

    emit(args, jsonable(summary), text)
    return 0
