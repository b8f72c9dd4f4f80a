"""``losslab evaluate``: loss and error of a checkpoint on its train and test data."""
from __future__ import annotations

import argparse
from typing import Any

from ._common import emit
from ._load import add_target_args, evaluator_loss, resolve


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="loss and error of a run or checkpoint on train and test data",
                       description="Evaluate a run directory's checkpoint (or a bare state-dict checkpoint "
                                   "with --model) on the full train and test splits, with the loss and "
                                   "BatchNorm policy every measurement command uses (--loss, --bn).")
    add_target_args(p)
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluate import Evaluator

    t = resolve(args.target, args)
    b = t.bundle
    loss = evaluator_loss(args, b)
    s: dict[str, Any] = dict(t.description)
    for split in ("train", "test"):
        data = getattr(b, split)
        r: dict[str, Any] = {}
        if len(data):  # BatchNorm statistics from the training data for both splits, as surfaces do
            r = Evaluator(t.model, data, loss=loss, bn=args.bn, bn_data=b.train, strategy="loop").evaluate({})
        s[f"{split}_loss"] = float(r["loss"]) if "loss" in r else None  # no test split: null, not NaN
        s[f"{split}_error"] = 1.0 - float(r["accuracy"]) if "accuracy" in r else None
    emit(args, s, f"loss {s['loss_fn']}, BatchNorm {args.bn}\n"
                  f"train loss {_fmt(s['train_loss'])} error {_fmt(s['train_error'])}\n"
                  f"test  loss {_fmt(s['test_loss'])} error {_fmt(s['test_error'])}")
    return 0


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"
