"""Entry point of the ``losslab`` command. Each subcommand lives in its own module with
``add_parser(subparsers)`` and ``run(args) -> int``."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from ..errors import LosslabError

# Order shown in --help; any other module of this package with ``add_parser`` is added after these.
PREFERRED = ["train", "evaluate", "surface", "interpolate", "trajectory", "hessian", "connect", "instability",
             "intrinsic-dim", "ntk", "stiffness", "diversity", "reproduce", "env"]


def subcommands() -> list[str]:
    """Module names of the subcommands (one module a subcommand, discovered in this package)."""
    import pkgutil

    found = [m.name for m in pkgutil.iter_modules(_pkg_path()) if not m.name.startswith("_")
             and m.name != "main"]
    order = [n.replace("-", "_") for n in PREFERRED]
    return sorted(found, key=lambda n: (order.index(n) if n in order else len(order), n))


def _pkg_path() -> list[str]:
    import os

    return [os.path.dirname(__file__)]


class _Parser(argparse.ArgumentParser):
    """argparse with losslab's error contract: one line ``losslab: error: ...`` (naming the command and
    where its help is) and exit status 2, instead of the usage block plus a message."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(2, f"losslab: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="losslab",
        description="losslab: measure neural-network loss landscapes on any PyTorch model.",
        epilog="Run `losslab COMMAND --help` for a command's options. Add --json for machine-readable output.",
    )
    parser.add_argument("--version", action="version", version=f"losslab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in subcommands():
        module = importlib.import_module(f".{name}", __package__)
        if hasattr(module, "add_parser"):
            module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ._common import parse_or_help

    args = parse_or_help(build_parser(), argv)
    if args is None:
        return 2
    import json
    import zipfile

    from ..settings import resolve_device, set_threads

    previous = _on_sigterm_interrupt()
    try:
        set_threads(getattr(args, "threads", None))
        if getattr(args, "device", None) is not None:
            resolve_device(args.device)  # one line for --device bogus / cuda without a GPU, before any work
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        how = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"losslab: {how} (finished work is saved; rerun the same command to resume)", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except LosslabError as exc:
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"losslab: error: {msg}", file=sys.stderr)
        return 2
    except (EOFError, UnicodeDecodeError, json.JSONDecodeError, zipfile.BadZipFile) as exc:  # a damaged saved file
        if args.debug:
            raise
        print(f"losslab: error: a saved file is damaged ({type(exc).__name__}: "
              f"{(str(exc).strip().splitlines() or [''])[0][:200]}); rerun with --force to recompute",
              file=sys.stderr)
        return 2
    except OSError as exc:  # a path that is a file, read-only, full disk, missing: name the path
        if args.debug:
            raise
        print(f"losslab: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    finally:
        _restore_sigterm(previous)


def _os_error_line(exc: OSError) -> str:
    """``"cannot write /x/y: No space left on device (disk full)"``: the operation's path and a hint."""
    import errno

    hints = {errno.ENOSPC: "disk full: free space or choose another --out",
             errno.EROFS: "read-only file system: choose another --out",
             errno.ENOTDIR: "a part of the path is a file, not a directory",
             errno.EEXIST: "a file is in the way",
             errno.EACCES: "permission denied: choose another --out",
             errno.EISDIR: "expected a file, found a directory"}
    what = exc.strerror or type(exc).__name__
    path = exc.filename if exc.filename is not None else ""
    hint = hints.get(exc.errno or -1, "")
    return f"{path}: {what}" + (f" ({hint})" if hint and hint.lower() not in what.lower() else "") if path else (
        f"{what}" + (f" ({hint})" if hint else ""))


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds like Ctrl-C (work saved, workers stopped)."""


def _on_sigterm_interrupt() -> object:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # pragma: no cover
        return None


def _restore_sigterm(previous: object) -> None:
    import signal

    if previous is not None:
        try:
            signal.signal(signal.SIGTERM, previous)
        except (ValueError, OSError, TypeError):  # pragma: no cover
            pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
