"""Benchmark: the trainer's overhead on runs of many tiny epochs (full-batch GD), one CPU thread.

Same config, one process, alternating:

* ``every_epoch``: ``losslab.train.SAVE_EVERY_S = 0``, i.e. ``state.pt`` (fsynced) and the growing
  ``metrics.json`` rewritten after every epoch, as the trainer did before this was a setting;
* ``default``: the shipped ``SAVE_EVERY_S`` (state saved on a clock and after the last epoch).

Each training starts from scratch in a fresh directory (the process-wide imports, e.g. torch._dynamo
pulled in by the first optimizer, are paid once in a warm-up). Reported: seconds per run (median
over repeats, wall and CPU), epochs per second, state saves per run and the ratio.

Usage::

    .venv/bin/python bench/trainer.py                 # digits MLP, 300 full-batch epochs, 3 repeats
    .venv/bin/python bench/trainer.py --epochs 100 --repeats 1
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=300, help="full-batch epochs per run (default 300)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per setting (default 3)")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1:
        p.error("--epochs and --repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    C.set_threads(1)
    import losslab.train as T
    from losslab.experiments.common import train_config

    cfg = train_config(dataset="digits", model="mlp", model_kwargs={"width": 64, "depth": 2}, batch_size=0,
                       epochs=args.epochs, lr=0.1, checkpoints="none")
    shipped = T.SAVE_EVERY_S
    settings = {"every_epoch": 0.0, "default": shipped}
    saves: dict[str, int] = {}
    real_save = T.atomic_torch_save

    def run_once(name: str) -> Any:
        T.SAVE_EVERY_S = settings[name]
        count = [0]

        def counting(path: Any, obj: Any) -> Any:
            count[0] += Path(path).name == "state.pt"
            return real_save(path, obj)

        T.atomic_torch_save = counting
        try:
            with tempfile.TemporaryDirectory() as d:
                t = C.timed(lambda: T.train(cfg, out=d, progress=False))
        finally:
            T.atomic_torch_save = real_save
            T.SAVE_EVERY_S = shipped
        saves[name] = count[0]
        return t

    C.log("warm-up (imports, data)")
    with tempfile.TemporaryDirectory() as d:
        T.train(train_config(dataset="digits", model="mlp", model_kwargs={"width": 64, "depth": 2}, batch_size=0,
                             epochs=2, lr=0.1, checkpoints="none"), out=d, progress=False)
    wall: dict[str, list[float]] = {k: [] for k in settings}
    cpu: dict[str, list[float]] = {k: [] for k in settings}
    for r in range(args.repeats):
        for name in (list(settings) if r % 2 == 0 else list(settings)[::-1]):
            C.log(f"repeat {r + 1}/{args.repeats}: {name}")
            t = run_once(name)
            wall[name].append(t.wall)
            cpu[name].append(t.cpu)
    med = {k: C.median(v) for k, v in wall.items()}
    med_cpu = {k: C.median(v) for k, v in cpu.items()}
    result = {
        "benchmark": "trainer",
        "machine": C.machine_info(),
        "settings": {"config": "digits MLP 64-64-64-10, full batch (1347 examples), SGD lr 0.1",
                     "epochs": args.epochs, "repeats": args.repeats, "save_every_s_default": shipped},
        "seconds": med,
        "seconds_cpu": med_cpu,
        "seconds_range": {k: C.summarize(v) for k, v in wall.items()},
        "epochs_per_s": {k: args.epochs / v for k, v in med.items()},
        "state_saves_per_run": saves,
        "speedup_default_over_every_epoch": C.ratio(med["every_epoch"], med["default"]),
        "speedup_cpu": C.ratio(med_cpu["every_epoch"], med_cpu["default"]),
    }
    C.emit(C.rounded(result), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
