"""Shared CLI plumbing: flags generated from config dataclasses, JSON output, one-line errors."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import typing
from pathlib import Path
from typing import Any

from ..config import coerce
from ..results import digest
from ..errors import LosslabError


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = (),
                       title: str | None = None) -> None:
    """Add one flag per field of a config dataclass, with its help text and default.

    ``dict`` fields take repeated ``KEY=VALUE`` items (values parsed as JSON when possible).
    """
    group = parser.add_argument_group(title or (cls.__doc__ or cls.__name__).strip().splitlines()[0])
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.metadata.get("derived"):  # derived settings (a file's hash) are not flags
            continue
        tp = hints[f.name]
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else None
        if tp is bool:
            group.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, default=None,
                               help=f"{help_text} (default: {default})")
        elif tp is dict:
            group.add_argument(flag(f.name), nargs="+", metavar="KEY=VALUE", default=None, help=help_text)
        else:
            base = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
            group.add_argument(flag(f.name), type=_typed(base[0], f.name), default=None,
                               help=f"{help_text} (default: {default})")


def _typed(tp: type, name: str):
    def convert(text: str):
        try:
            return tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag(name)} expects {tp.__name__}, got {text!r}")

    convert.__name__ = tp.__name__
    return convert


def parse_kv(items: list[str] | None, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LosslabError(f"{what} expects KEY=VALUE items, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def dataclass_from_args(cls: type, args: argparse.Namespace, base: Any = None, **overrides: Any) -> Any:
    """Build ``cls`` from parsed flags (unset flags keep ``base``'s or the default values)."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {} if base is None else {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if hints[f.name] is dict:
            value = parse_kv(value, flag(f.name))
        kwargs[f.name] = coerce(value, hints[f.name], flag(f.name))
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**kwargs)


def emit(args: argparse.Namespace, summary: dict[str, Any], text: str) -> None:
    """Print the machine-readable summary with ``--json``, else the human text."""
    if getattr(args, "json", False):
        print(json.dumps(_finite_or_null(summary), indent=2, sort_keys=True, default=str))
    else:
        print(text)


def _finite_or_null(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as ``None``: the summary stays valid JSON (``null``, never ``NaN``)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    return obj


def settings_hash(args: argparse.Namespace, keys: typing.Iterable[str], **extra: Any) -> str:
    """First 10 hex digits of the sha256 of the canonical JSON of ``args``' ``keys`` plus ``extra``:
    the name of a result directory, so that runs with other settings never share it."""
    spec = {k: getattr(args, k, None) for k in keys} | extra
    return digest(spec, 10, compact=False, default=str)


def result_dir(args: argparse.Namespace, target: Any, kind: str, name: str) -> Path:
    """``--out``, else ``RUN_DIR/<kind>/<name>`` (``./<kind>/<name>`` for a bare checkpoint)."""
    if getattr(args, "out", None):
        return Path(args.out)
    run = getattr(target, "run", None)
    return (run.path / kind if run is not None else Path(kind)) / name


def add_probe_output_args(parser: argparse.ArgumentParser, name: str, run_dir: str = "RUN_DIR") -> None:
    """``--out``, ``--plot`` and ``--json`` of a probe command whose results go to
    ``<run_dir>/probes/<name>-<hash>`` (see :func:`result_dir`) and whose figure is ``<name>.png``."""
    parser.add_argument("--out", default=None, help=f"output directory (default {run_dir}/probes/{name}-<hash>)")
    parser.add_argument("--plot", action="store_true", help=f"write {name}.png")
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary")


def save_figure(make: typing.Callable[[], Any], path: str | Path, **savefig_kwargs: Any) -> Path:
    """``make()`` a display with matplotlib's Agg backend, save it to ``path`` and close its figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    disp = make()
    try:
        return disp.savefig(Path(path), **savefig_kwargs)
    finally:
        plt.close(disp.figure_)


def probe_name(args: argparse.Namespace, kind: str, keys: typing.Iterable[str], description: dict[str, Any]) -> str:
    """``<kind>-<hash>``: a probe's result directory, the hash over its flags ``keys`` and what it measures."""
    return f"{kind}-" + settings_hash(args, keys, target=description)


def parse_or_help(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace | None:
    """The parsed ``argv``, or ``None`` (after printing the help) when no command was given."""
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return None
    return args


def add_data_model_args(parser: argparse.ArgumentParser, *, training: bool = False) -> None:
    """The ``DataConfig`` and ``ModelConfig`` flags, with ``--data``/``--data-kwargs`` for ``--dataset``/
    ``--dataset-kwargs`` (a built-in name, a file, a folder or ``pkg.module:function``); with ``training``
    also the ``OptimConfig`` and ``SeedConfig`` flags."""
    from ..config import DataConfig, ModelConfig, OptimConfig, SeedConfig

    add_dataclass_args(parser, DataConfig, title="data", skip=("dataset", "dataset_kwargs"))
    g = parser.add_argument_group("your data (a built-in name, a file, a folder or pkg.module:function)")
    for f in dataclasses.fields(DataConfig):
        if f.name in ("dataset", "dataset_kwargs"):
            kw: dict[str, Any] = {"nargs": "+", "metavar": "KEY=VALUE"} if f.name == "dataset_kwargs" else {"metavar": "DATA"}
            g.add_argument("--" + f.name.replace("dataset", "data").replace("_", "-"), flag(f.name), dest=f.name,
                           default=None, help=f"{f.metadata['help']} (default: "
                                              f"{f.default if f.name == 'dataset' else 'none'})", **kw)
    add_dataclass_args(parser, ModelConfig, title="model")
    if training:
        add_dataclass_args(parser, OptimConfig, title="optimization")
        add_dataclass_args(parser, SeedConfig, title="seeds (init, data order and labels derive from --seed unless given)")


def add_precision_args(parser: argparse.ArgumentParser, over: str = "the surface's range", note: str = "") -> None:
    """``--rtol``/``--atol``: adaptive precision (:mod:`losslab.precision`), exact when neither is given;
    ``over`` names what ``--rtol`` is relative to, ``note`` adds to its help."""
    parser.add_argument("--rtol", type=float, default=None, metavar="R",
                        help=f"adaptive precision: error tolerance relative to {over} (e.g. 0.01); "
                             f"subsampled estimates with error bars, coarse to fine{note} (default: exact)")
    parser.add_argument("--atol", type=float, default=None, metavar="A",
                        help="adaptive precision: absolute error tolerance of the loss (default: exact)")


def precision_from_args(args: argparse.Namespace, seed: int = 0) -> Any:
    """The :class:`~losslab.precision.Precision` ``--rtol``/``--atol`` ask for (draws seeded by ``seed``),
    or ``None`` (exact) when neither is given; a bad value is a one-line :class:`LosslabError`."""
    if getattr(args, "rtol", None) is None and getattr(args, "atol", None) is None:
        return None
    from ..precision import Precision

    return Precision(rtol=args.rtol or 0.0, atol=args.atol or 0.0, seed=seed)


def check_precision_bn(args: argparse.Namespace, model: Any, precision: Any) -> None:
    """Refuse ``--rtol``/``--atol`` with recomputed BatchNorm statistics in one line naming ``--bn eval``."""
    from ..evaluate import has_batchnorm

    if precision is not None and getattr(args, "bn", "recompute") != "eval" and has_batchnorm(model):
        raise LosslabError("--rtol/--atol (adaptive precision) need --bn eval on a model with BatchNorm: statistics "
                           "recomputed at every point couple all the examples")


def fail(message: str, code: int = 2) -> "typing.NoReturn":
    print(f"losslab: error: {message}", file=sys.stderr)
    raise SystemExit(code)
