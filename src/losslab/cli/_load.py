"""Resolve what a measurement command runs on: a run directory, or a checkpoint plus a model spec."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LosslabError


def add_target_args(p: argparse.ArgumentParser, *, positional: str = "target", nargs: Any = None) -> None:
    p.add_argument(positional, nargs=nargs, metavar="RUN_DIR_OR_CHECKPOINT",
                   help="a losslab run directory, or a state-dict checkpoint (.pt) with --model")
    g = p.add_argument_group("model and data for a bare checkpoint (a run directory knows its own)")
    g.add_argument("--model", default=None,
                   help="zoo model name (see `losslab.models.available()`) or pkg.module:factory for your own")
    g.add_argument("--model-kwargs", nargs="+", metavar="KEY=VALUE", default=None,
                   help="arguments of the zoo model or of your factory")
    g.add_argument("--data", "--dataset", dest="dataset", default=None, metavar="DATA",
                   help="a built-in dataset name, a file (.npz/.pt/.safetensors with x, y[, x_test, y_test]), an "
                        "image folder, or pkg.module:function (default: the run's data; digits for a zoo model)")
    g.add_argument("--data-kwargs", "--dataset-kwargs", dest="dataset_kwargs", nargs="+", metavar="KEY=VALUE",
                   default=None, help="arguments of the dataset or function; num_classes, x_dtype, mean, std for "
                                      "files and functions")
    g.add_argument("--step", type=int, default=None, help="checkpoint step of a run directory (default: final)")
    g.add_argument("--allow-unfinished", action="store_true",
                   help="measure the last checkpoint of a run that has not finished training (refused otherwise)")
    add_loss_args(p)


BN_HELP = ("BatchNorm statistics: recompute (default: at the point measured, from the training data it is measured "
           "on, as train-mode BatchNorm on that data as one batch) or eval (the checkpoint's running statistics); "
           "dropout is always off")


def add_loss_args(p: argparse.ArgumentParser, *, bn: bool = True) -> None:
    """``--loss``, ``--output-key`` and (with ``bn``) ``--bn``: what every measurement of a loss takes."""
    g = p.add_argument_group("loss and BatchNorm")
    g.add_argument("--loss", default=None, metavar="NAME|pkg.module:function",
                   help="cross-entropy, mse, nll, token-cross-entropy ((N, T) targets) or your "
                        "pkg.module:function(output, target) -> scalar batch mean (default: cross-entropy for "
                        "class labels, mse for real targets)")
    g.add_argument("--output-key", default=None, metavar="KEY",
                   help="the model returns a dict: the loss takes output[KEY] (e.g. logits)")
    if bn:
        g.add_argument("--bn", choices=("recompute", "eval"), default="recompute", help=BN_HELP)


def run_loss_defaults(args: argparse.Namespace, config: Any) -> None:
    """``--loss``/``--output-key`` not given: the run's (a run knows the loss it was trained with)."""
    for name in ("loss", "output_key"):
        if getattr(args, name, None) is None and getattr(config.optim, name, ""):
            setattr(args, name, getattr(config.optim, name))


def target_loss(args: argparse.Namespace, bundle: Any) -> Any:
    """The loss callable the flags name (:func:`losslab._functional.resolve_loss`)."""
    from .._functional import resolve_loss

    return resolve_loss(getattr(args, "loss", None), num_classes=bundle.num_classes,
                        output_key=getattr(args, "output_key", None))


def evaluator_loss(args: argparse.Namespace, bundle: Any) -> Any:
    """The same loss for an :class:`~losslab.evaluate.Evaluator`: the name of a built-in it batches
    (``cross_entropy``, ``mse``) when the flags name one, else the callable of :func:`target_loss`."""
    name = getattr(args, "loss", None) or ("cross_entropy" if bundle.num_classes > 0 else "mse")
    name = name.replace("-", "_")
    if name in ("cross_entropy", "mse") and not getattr(args, "output_key", None):
        return name
    return target_loss(args, bundle)


def probe_model(model: Any, args: argparse.Namespace, bundle: Any) -> Any:
    """``model`` as per-example-gradient probes measure it under ``--bn``: with ``recompute``, a copy whose
    BatchNorm statistics are recomputed on the training data at its parameters (then held fixed)."""
    from .._functional import with_recomputed_batchnorm

    if getattr(args, "bn", "eval") == "recompute":
        return with_recomputed_batchnorm(model, bundle.train.x)
    return model


def loss_description(args: argparse.Namespace, bundle: Any) -> dict[str, Any]:
    """What the summaries say about the loss and BatchNorm: ``loss_fn`` (the loss's name or spec),
    ``output_key`` and ``bn``."""
    name = getattr(args, "loss", None) or ("cross_entropy" if bundle.num_classes > 0 else "mse")
    out: dict[str, Any] = {"loss_fn": name}
    if getattr(args, "output_key", None):
        out["output_key"] = args.output_key
    if getattr(args, "bn", None) is not None:
        out["bn"] = args.bn
    return out


@dataclass
class Target:
    """A model ready to measure (never trained further), its data and a description."""

    model: Any  # torch.nn.Module (torch is imported lazily: `losslab --help` stays fast)
    bundle: Any
    description: dict[str, Any]
    run: Any = None


def resolve(target: str, args: argparse.Namespace) -> Target:
    """Load ``target`` (run dir or checkpoint file) into a model + data bundle."""
    from torch import nn

    from .. import data, models
    from ..runs import Run
    from ._common import parse_kv

    path = Path(target)
    if not path.exists():
        raise LosslabError(f"{target} does not exist (expected a run directory or a checkpoint file)")
    dataset_kwargs = parse_kv(getattr(args, "dataset_kwargs", None), "--dataset-kwargs")
    model_kwargs = parse_kv(getattr(args, "model_kwargs", None), "--model-kwargs")
    if path.is_dir():
        run = Run.open(path)
        step = getattr(args, "step", None)
        if not run.done and step is None and not getattr(args, "allow_unfinished", False):
            epochs = len(run.metrics) - 1 if run.metrics else 0
            raise LosslabError(f"run {path} has not finished training ({max(epochs, 0)} of {run.config.optim.epochs} "
                               f"epochs saved): resume it with `losslab train`, or measure a saved step with --step "
                               f"or the last checkpoint with --allow-unfinished")
        damaged = run.verify() if run.done else []
        if damaged:
            raise LosslabError(f"run {path} is damaged ({', '.join(damaged)}): rerun `losslab train` with its "
                               f"settings to repair it")
        cfg = run.config
        run_loss_defaults(args, cfg)
        if args.dataset is not None and args.dataset != cfg.data.dataset:
            bundle = data.resolve(args.dataset, **dataset_kwargs)
        else:
            bundle = run.bundle()
        model = run.build_model(getattr(args, "step", None))
        desc = {"run_dir": str(path), "step": getattr(args, "step", None), "dataset": bundle.name,
                "model": cfg.model.model}
        _check_finite(model, f"{path} (step {getattr(args, 'step', None) or 'final'})")
        return Target(model, bundle, {**desc, **loss_description(args, bundle)}, run)

    if not path.is_file():
        raise LosslabError(f"checkpoint {path} is not a file")
    state = models.load_checkpoint(path)  # plain, Lightning-style wrappers, safetensors
    if not args.model:
        raise LosslabError(f"{path} is a bare checkpoint: say which model with --model NAME or pkg.module:factory")
    if args.dataset is None and ":" in args.model:
        raise LosslabError(f"say which data {args.model} is measured on with --data (a built-in name, an .npz/.pt "
                           "file, an image folder or pkg.module:function)")
    bundle = data.resolve(args.dataset or "digits", **dataset_kwargs)
    if ":" in args.model:
        factory = models.load_factory(args.model)
        try:
            model = factory(**model_kwargs)
        except Exception as exc:  # noqa: BLE001 - the user's code: name it and its error in one line
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise LosslabError(f"model factory {args.model}({', '.join(f'{k}={v!r}' for k, v in model_kwargs.items())}) "
                               f"raised {type(exc).__name__}: {first}") from None
        if not isinstance(model, nn.Module):
            raise LosslabError(f"factory {args.model} returned {type(model).__name__}, not an nn.Module")
    else:
        model = models.build(args.model, input_shape=tuple(bundle.input_shape), num_classes=bundle.num_classes,
                             seed=0, **model_kwargs)
    state, note = models.match_state_dict(model, state)
    if note:
        print(f"losslab: note: {path}: {note}", file=sys.stderr)
    models.load_state_dict_checked(model, state)
    _check_finite(model, str(path))
    model.eval()
    desc = {"checkpoint": str(path), "dataset": bundle.name, "model": args.model}
    if note:
        desc["checkpoint_keys"] = note
    return Target(model, bundle, {**desc, **loss_description(args, bundle)})


def _check_finite(model: Any, where: str) -> None:
    """One-line error when a loaded model holds NaN/inf (a diverged run): every measurement would be NaN."""
    import torch

    bad = [n for n, t in model.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise LosslabError(f"{where} holds non-finite values (NaN/inf) in {', '.join(bad[:3])}{more}: "
                           "nothing to measure (did training diverge?)")
