"""``losslab stiffness``: gradient alignment between examples by class and input distance (Fort et al. 2019)."""
from __future__ import annotations

import argparse
from typing import Any

from ..errors import LosslabError
from ._common import add_probe_output_args, emit, probe_name, result_dir
from ._load import add_target_args, probe_model, resolve, target_loss


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stiffness",
        help="cosine and sign stiffness of per-example gradients, by class pair and input distance",
        description=(
            "Sample examples per class, compute their per-example loss gradients (torch.func vmap(grad)) and "
            "the cosine / sign stiffness matrices between them; report the class-pair means, within- vs "
            "between-class stiffness and stiffness vs input distance. For a run directory the first "
            "checkpoint (init) is measured too, on the same examples, unless --no-init."
        ),
        epilog="example: losslab stiffness runs/train-<hash> --n-per-class 20 --plot --json",
    )
    add_target_args(p)
    p.add_argument("--n-per-class", type=int, default=10, help="examples per class (default 10)")
    p.add_argument("--split", choices=("train", "test"), default="train", help="data split (default train)")
    p.add_argument("--bins", type=int, default=10, help="input-distance bins (default 10)")
    p.add_argument("--chunk-size", type=int, default=256, help="examples per vmap call (default 256)")
    p.add_argument("--no-init", action="store_true", help="do not also measure the run's first checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of the example sample (default 0)")
    add_probe_output_args(p, "stiffness")
    p.set_defaults(func=run)



def run(args: argparse.Namespace) -> int:
    from .. import params as P
    from ..probes import stiffness

    t = resolve(args.target, args)
    if t.bundle.num_classes < 1:
        raise LosslabError("stiffness by class needs a classification dataset")
    data = t.bundle.train if args.split == "train" else t.bundle.test
    if len(data) == 0:
        raise LosslabError(f"the {args.split} split of {t.bundle.name} is empty")
    out = result_dir(args, t, "probes", probe_name(args, "stiffness", ("n_per_class", "split", "bins", "no_init", "seed", "step"), t.description))
    out.mkdir(parents=True, exist_ok=True)
    kw = dict(n_per_class=args.n_per_class, seed=args.seed, chunk_size=args.chunk_size)
    final_step = None
    if t.run is not None:
        ckpts = [s for s, _ in t.run.checkpoints()]
        final_step = args.step if args.step is not None else ckpts[-1]
    kw["loss"] = target_loss(args, t.bundle)
    model = probe_model(t.model, args, t.bundle)
    res = stiffness(model, data, point=P.get_point(model), n_bins=args.bins, meta={**t.description, "step": final_step},
                    **kw)
    results = {"final": res}
    if t.run is not None and not args.no_init:
        first = t.run.checkpoints()[0][0]
        if first != final_step:
            init_model = probe_model(t.run.build_model(first), args, t.bundle)
            results = {"init": stiffness(init_model, data, point=P.get_point(init_model), distance_edges=res.distance_edges,
                                         meta={**t.description, "step": first}, **kw), "final": res}
    files: dict[str, str] = {name: str(r.save(out / f"stiffness_{name}")) for name, r in results.items()}
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        from ..probes import StiffnessDisplay

        labels = [f"{k} (step {r.meta.get('step')})" if r.meta.get("step") is not None else k
                  for k, r in results.items()]
        disp = StiffnessDisplay.from_results(list(results.values()), labels)
        files["png"] = str(disp.savefig(out / "stiffness.png"))
        disp.close()
    summary: dict[str, Any] = {**t.description, "out": str(out), "files": files, "split": args.split,
                               "n_per_class": args.n_per_class}
    for name, r in results.items():
        summary[name] = {**r.summary, "step": r.meta.get("step"), "class_cos": r.class_cos.tolist()}
    summary["within_gt_between"] = bool(res.summary["within_cos"] > res.summary["between_cos"])
    text = "\n".join(
        f"{name}{'' if r.meta.get('step') is None else ' (step ' + str(r.meta['step']) + ')'}: cosine stiffness "
        f"within-class {r.summary['within_cos']:.4f}, between-class {r.summary['between_cos']:.4f}; sign within "
        f"{r.summary['within_sign']:.4f}, between {r.summary['between_sign']:.4f}"
        for name, r in results.items()) + "".join(f"\n  {k}: {v}" for k, v in files.items())
    from ..results import jsonable

    emit(args, jsonable(summary), f"loss {summary['loss_fn']}, BatchNorm {args.bn}\n" + text)
    return 0
