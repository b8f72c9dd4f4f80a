"""``losslab env``: versions, threads, device and cache directory."""
from __future__ import annotations

import argparse

from ._common import emit


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("env", help="print versions, threads, device and cache directory",
                       description="Print what losslab runs on: package versions, torch threads, devices.")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy
    import scipy
    import torch

    from .. import __version__
    from ..runs import git_sha
    from ..settings import cache_dir

    info = {
        "losslab": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "devices": ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())],
        "cache_dir": str(cache_dir()),
        "git_sha": git_sha(),
    }
    emit(args, info, "\n".join(f"{k:15s} {v}" for k, v in info.items()))
    return 0
