"""Moved to :mod:`losslab.cli.distributed` (the command line lives in ``losslab.cli``); re-exported here."""
from __future__ import annotations

from ..cli.distributed import _sigterm_to_exit, _Terminated, build_parser, main, run_surface

__all__ = ["build_parser", "main", "run_surface", "_Terminated", "_sigterm_to_exit"]
