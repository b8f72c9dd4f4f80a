"""``losslab noise``: the gradient noise scale (McCandlish et al. 2018) and the gradient-covariance spectrum."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import LosslabError
from ._common import add_probe_output_args, emit, probe_name, result_dir, save_figure
from ._load import add_target_args, probe_model, resolve, target_loss


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "noise",
        help="gradient noise scale B_simple and the top eigenvalues of the per-example gradient covariance",
        description=(
            "Per-example loss gradients (torch.func vmap(grad)) of a random subset give the simple noise scale "
            "B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018; also its bias-corrected form) and the top "
            "eigenvalues of the gradient covariance Sigma (Gram trick). With --checkpoints all, every saved "
            "checkpoint of a run directory is measured on the same examples: the noise scale over training."
        ),
        epilog="example: losslab noise runs/train-<hash> --examples 512 --checkpoints all --plot --json",
    )
    add_target_args(p)
    p.add_argument("--examples", type=int, default=512,
                   help="random examples (default 512; memory is examples x parameters; 0: all)")
    p.add_argument("--top-k", type=int, default=10, help="covariance eigenvalues to report (default 10)")
    p.add_argument("--split", choices=("train", "test"), default="train", help="data split (default train)")
    p.add_argument("--checkpoints", choices=("final", "all"), default="final",
                   help="measure the final (or --step) checkpoint, or every saved checkpoint of a run directory")
    p.add_argument("--chunk-size", type=int, default=256, help="examples per vmap call (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the example subset (default 0)")
    add_probe_output_args(p, "noise")
    p.set_defaults(func=run)



def run(args: argparse.Namespace) -> int:
    from .._io import atomic_write_json
    from ..probes import gradient_noise
    from ..results import jsonable, seal

    if args.examples < 0 or args.examples == 1:
        raise LosslabError(f"--examples must be 0 (all) or >= 2, got {args.examples}")
    if args.top_k < 1:
        raise LosslabError(f"--top-k must be >= 1, got {args.top_k}")
    t = resolve(args.target, args)
    data = t.bundle.train if args.split == "train" else t.bundle.test
    if len(data) < 2:
        raise LosslabError(f"the {args.split} split of {t.bundle.name} has {len(data)} examples; the noise scale needs >= 2")
    if args.checkpoints == "all" and t.run is None:
        raise LosslabError("--checkpoints all needs a run directory (a bare checkpoint is one point)")
    if t.run is not None:
        ckpts = [s for s, _ in t.run.checkpoints()]
        steps: list[int | None] = ckpts if args.checkpoints == "all" else [args.step if args.step is not None else ckpts[-1]]
    else:
        steps = [None]
    out = result_dir(args, t, "probes", probe_name(args, "noise", ("examples", "top_k", "split", "checkpoints", "seed", "step"), t.description))
    out.mkdir(parents=True, exist_ok=True)

    records = []
    for step in steps:
        model = probe_model(t.model if step is None or t.run is None else t.run.build_model(step), args, t.bundle)
        r = gradient_noise(model, data, n_examples=args.examples or None, k=args.top_k, seed=args.seed,
                           chunk_size=args.chunk_size, loss=target_loss(args, t.bundle))
        records.append({"step": step, **r.summary(), "n_params": r.meta["n_params"]})
    files = {"result": str(atomic_write_json(out / "noise.json", seal(jsonable(  # with its content hash
        {"target": t.description, "split": args.split, "seed": args.seed, "records": records}))))}
    if args.plot:
        files["png"] = str(_plot(records, out / "noise.png"))
    last = records[-1]
    summary: dict[str, Any] = {**t.description, "out": str(out), "files": files, "split": args.split,
                               "examples": last["n"], "b_simple": last["b_simple"],
                               "b_simple_unbiased": last["b_simple_unbiased"], "trace_cov": last["trace_cov"],
                               "grad_norm_sq": last["grad_norm_sq"], "top_eigenvalues": last["top_eigenvalues"],
                               "records": records}
    text = "\n".join(
        f"{'' if r['step'] is None else 'step ' + str(r['step']) + ': '}B_simple {r['b_simple']:.4g} "
        f"(bias-corrected {r['b_simple_unbiased']:.4g}), tr(Sigma) {r['trace_cov']:.4g}, |G|^2 {r['grad_norm_sq']:.4g}, "
        f"top eigenvalue {r['top_eigenvalues'][0]:.4g} ({r['n']} examples)"
        for r in records) + "".join(f"\n  {k}: {v}" for k, v in files.items())
    emit(args, jsonable(summary), f"loss {summary['loss_fn']}, BatchNorm {args.bn}\n" + text)
    return 0


def _plot(records: list[dict[str, Any]], path: Path) -> Path:
    from ..plot import NoiseScaleDisplay

    return save_figure(lambda: NoiseScaleDisplay.from_result(records), path, format="png", dpi=110)
