"""Typed, frozen configuration dataclasses and their canonical hash.

Every concern (data, model, optimizer, seeds, checkpoints) has a frozen dataclass whose fields
carry help text (``field(metadata={"help": ...})``); CLI flags are generated from them
(:func:`losslab.cli._common.add_dataclass_args`). A run is identified by the hash of the canonical JSON of
its *non-default* settings (open_lth's scheme), so adding a new setting with a default does not
change existing run names.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from .errors import LosslabError

HASH_LEN = 12

# Default log-spaced grid of subspace dimensions for intrinsic-dimension sweeps (Li et al. 2018).
# Kept here, with no heavy imports, so the CLI can show it in --help without importing torch.
INTRINSIC_DIMS = (10, 20, 50, 100, 200, 500, 1000)


def _help(text: str, default: Any = MISSING, default_factory: Any = MISSING, *, keyed_if_set: bool = False,
          derived: bool = False) -> Any:
    """A field with help text; ``keyed_if_set``: a setting added later, left out of :func:`to_keyed_dict` (and so
    of the keys of saved results) while it has its default, so that adding it changed no existing key;
    ``derived``: set by the program (e.g. a data file's hash), never a command-line flag."""
    kw: dict[str, Any] = {"metadata": {"help": text, "keyed_if_set": keyed_if_set, "derived": derived}}
    if default is not MISSING:
        kw["default"] = default
    if default_factory is not MISSING:
        kw["default_factory"] = default_factory
    return field(**kw)


@dataclass(frozen=True)
class DataConfig:
    """Which data to train on and how it is altered."""

    dataset: str = _help("a built-in dataset name (see `losslab.data.available()`), a file (.npz/.pt/.safetensors with "
                         "x, y[, x_test, y_test]), an image folder, or pkg.module:function", "digits")
    dataset_kwargs: dict = _help("extra dataset arguments, e.g. num_samples=4000 (num_classes, x_dtype, mean, std "
                                 "for files and functions)", default_factory=dict)
    label_noise: float = _help("fraction p in [0, 1] of training labels replaced by random ones", 0.0)
    label_noise_mode: str = _help("'uniform' (Zhang et al.: random class, may equal the true one) or 'other'", "uniform")
    poison: int = _help("number of extra same-distribution training samples with wrong labels (Huang et al.)", 0)
    subsample: int = _help("keep only this many training examples (0: all)", 0)
    dataset_sha256: str = _help("sha256 of the dataset file ('' for built-ins, folders and functions): part of the "
                                "run's hash, so a changed file trains a new run; checked when the data is loaded",
                                "", keyed_if_set=True, derived=True)


@dataclass(frozen=True)
class ModelConfig:
    """Which architecture to build."""

    model: str = _help("model name (see `losslab.models.available()`) or pkg.module:factory", "mlp")
    model_kwargs: dict = _help("extra model arguments, e.g. width=512 depth=2", default_factory=dict)


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer, schedule and training length."""

    optimizer: str = _help("sgd | adam | rmsprop", "sgd")
    lr: float = _help("learning rate", 0.05)
    momentum: float = _help("momentum (sgd, rmsprop)", 0.9)
    nesterov: bool = _help("Nesterov momentum (sgd)", False)
    weight_decay: float = _help("L2 weight decay", 0.0)
    batch_size: int = _help("mini-batch size; 0 means full-batch gradient descent", 128)
    epochs: int = _help("number of epochs", 30)
    schedule: str = _help("constant | step | cosine", "constant")
    step_every: int = _help("step schedule: decay every this many epochs", 10)
    step_gamma: float = _help("step schedule: multiply the LR by this", 0.1)
    warmup_epochs: float = _help("linear warm-up length in epochs (0: none)", 0.0)
    loss: str = _help("cross-entropy, mse, nll, token-cross-entropy or pkg.module:function(output, target) -> "
                      "scalar ('': cross-entropy for class labels, mse for real targets)", "", keyed_if_set=True)
    output_key: str = _help("the model returns a dict: the loss takes output[KEY] ('': the output itself)", "",
                            keyed_if_set=True)


@dataclass(frozen=True)
class SeedConfig:
    """Separate seeds per purpose; unset ones derive from ``seed``."""

    seed: int = _help("master seed: sets every seed not given explicitly", 0)
    init_seed: int | None = _help("seed of the model's initialization", None)
    order_seed: int | None = _help("seed of the data order (mini-batch shuffling)", None)
    label_seed: int | None = _help("seed of label corruption and poisoning", None)

    def resolved(self) -> dict[str, int]:
        """The seed actually used for each purpose."""
        return {
            "init": self.seed if self.init_seed is None else self.init_seed,
            "order": self.seed if self.order_seed is None else self.order_seed,
            "label": self.seed if self.label_seed is None else self.label_seed,
        }


@dataclass(frozen=True)
class CheckpointConfig:
    """When to keep checkpoints of the trajectory (init and final are always kept)."""

    checkpoints: str = _help(
        "checkpoint schedule: 'none', 'epoch:K' (every K epochs), 'step:K' (every K steps) or 'log:N' "
        "(N log-spaced steps)",
        "log:16",
    )


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (and therefore its run directory)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seeds: SeedConfig = field(default_factory=SeedConfig)
    ckpt: CheckpointConfig = field(default_factory=CheckpointConfig)

    def validate(self) -> "TrainConfig":
        d, o = self.data, self.optim
        if not 0.0 <= d.label_noise <= 1.0:
            raise LosslabError(f"label noise p must be in [0, 1], got {d.label_noise}")
        if d.label_noise_mode not in ("uniform", "other"):
            raise LosslabError(f"label noise mode must be 'uniform' or 'other', got {d.label_noise_mode!r}")
        if d.poison < 0 or d.subsample < 0:
            raise LosslabError("poison and subsample must be >= 0")
        if o.optimizer not in ("sgd", "adam", "rmsprop"):
            raise LosslabError(f"unknown optimizer {o.optimizer!r}; choose sgd, adam or rmsprop")
        if o.schedule not in ("constant", "step", "cosine"):
            raise LosslabError(f"unknown schedule {o.schedule!r}; choose constant, step or cosine")
        if not o.lr > 0:
            raise LosslabError(f"learning rate must be > 0, got {o.lr}")
        if o.epochs < 1:
            raise LosslabError(f"epochs must be >= 1, got {o.epochs}")
        if o.batch_size < 0:
            raise LosslabError(f"batch size must be >= 0 (0 = full batch), got {o.batch_size}")
        parse_checkpoint_schedule(self.ckpt.checkpoints)
        return self


def parse_checkpoint_schedule(spec: str) -> tuple[str, int]:
    """Parse 'none' | 'epoch:K' | 'step:K' | 'log:N' into (kind, value)."""
    if spec == "none":
        return ("none", 0)
    kind, _, val = spec.partition(":")
    if kind not in ("epoch", "step", "log") or not val.isdigit() or int(val) < 1:
        raise LosslabError(f"bad checkpoint schedule {spec!r}; use none, epoch:K, step:K or log:N (K, N >= 1)")
    return (kind, int(val))


# ---------------------------------------------------------------- canonical form and hash


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain-dict form of a config dataclass (JSON-serialisable)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), sort_keys=True))


def to_keyed_dict(cfg: Any) -> Any:
    """:func:`dataclasses.asdict` of a (nested) config, less the ``keyed_if_set`` fields at their defaults: what
    the keys of saved results hash (``losslab.experiments``), unchanged by settings added with a default."""
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(to_keyed_dict(v) for v in cfg)
    if isinstance(cfg, dict):
        return {k: to_keyed_dict(v) for k, v in cfg.items()}
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        return copy.deepcopy(cfg)
    out: dict[str, Any] = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get("keyed_if_set") and f.default is not MISSING and value == f.default:
            continue
        out[f.name] = to_keyed_dict(value)
    return out


def non_default(cfg: Any) -> dict[str, Any]:
    """Only the settings that differ from the defaults, nested like the dataclass."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            sub = non_default(value)
            if sub:
                out[f.name] = sub
            continue
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING  # type: ignore[misc]
        )
        if default is MISSING or _canon(value) != _canon(default):
            out[f.name] = _canon(value)
    return out


def _canon(value: Any) -> Any:
    """JSON-normal form; integral floats become ints, so ``lr=1`` and ``lr=1.0`` are the same setting."""
    value = json.loads(json.dumps(value, sort_keys=True))

    def norm(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v

    return norm(value)


def config_hash(cfg: Any) -> str:
    """First 12 hex digits of sha256 of the canonical JSON of the non-default settings."""
    from .results import digest

    return digest(non_default(cfg), HASH_LEN)


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Build a (nested) config dataclass from a dict; unknown keys are an error listing the allowed ones."""
    if not isinstance(data, dict):
        raise LosslabError(f"config section {path or cls.__name__} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise LosslabError(f"unknown config keys {unknown} in {path or cls.__name__}; allowed: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        tp = hints[f.name]
        value = data[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = from_dict(tp, value, f"{path}{f.name}.")
        else:
            kwargs[f.name] = coerce(value, tp, f"{path}{f.name}")
    return cls(**kwargs)


def coerce(value: Any, tp: Any, name: str) -> Any:
    """Check/convert a JSON value to a field type (int, float, bool, str, dict, Optional)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return coerce(value, args[0], name)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise LosslabError(f"{name} must be true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise LosslabError(f"{name} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise LosslabError(f"{name} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise LosslabError(f"{name} must be a string, got {value!r}")
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise LosslabError(f"{name} must be a mapping, got {value!r}")
    return value
