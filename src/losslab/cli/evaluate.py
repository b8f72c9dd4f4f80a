"""``losslab evaluate``: loss and error of a checkpoint on its train and test data."""
from __future__ import annotations

import argparse

from ._common import emit
from ._load import add_target_args, resolve


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="loss and error of a run or checkpoint on train and test data",
                       description="Evaluate a run directory's checkpoint (or a bare state-dict checkpoint "
                                   "with --model) on the full train and test splits.")
    add_target_args(p)
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train import evaluate_model

    t = resolve(args.target, args)
    b = t.bundle
    tr = evaluate_model(t.model, b.train.x, b.train.y, b.num_classes)
    te = evaluate_model(t.model, b.test.x, b.test.y, b.num_classes)
    s = {**t.description, "train_loss": tr["loss"], "train_error": tr["error"],
         "test_loss": te["loss"], "test_error": te["error"]}
    emit(args, s, f"train loss {tr['loss']:.4f} error {tr['error']:.4f}\n"
                  f"test  loss {te['loss']:.4f} error {te['error']:.4f}")
    return 0
