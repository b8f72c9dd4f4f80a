"""Hash-named run directories: config, versions, seeds, metrics and checkpoints of one training run.

Layout of ``<out>/train-<hash>/``::

    config.json        the full config (and, under "non_default", what the hash covers)
    run.json           status (running|done), versions, git SHA, device, seeds, timings, summary
    metrics.json       one record per evaluation (epoch 0 = init): train/test loss and error
    state.pt           latest full training state (model, optimizer, scheduler, RNG) for resuming
    checkpoints/step_XXXXXXXX.pt   state dicts along the trajectory (init and final included)

Everything is written atomically (temp file + rename) and loaded with ``weights_only=True``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from . import __version__
from ._io import atomic_write_json, file_sha256, read_json
from .results import jsonable, read_sealed_json, seal
from .config import TrainConfig, config_hash, from_dict, non_default, to_dict
from .errors import DamagedFile, LosslabError

RUN_PREFIX = "train-"


# ---- what a config describes (used by the trainer and by Run; losslab.train re-exports them) ----


def build_bundle(config: TrainConfig):
    """The training data described by ``config.data`` (label noise and poisoning use the label seed)."""
    from . import data

    d = config.data
    seeds = config.seeds.resolved()
    if d.dataset_sha256:
        digest = file_sha256(d.dataset) if Path(d.dataset).is_file() else None
        if digest != d.dataset_sha256:
            what = "is missing" if digest is None else "has changed"
            raise LosslabError(f"data file {d.dataset} {what} since the run was configured (sha256 "
                               f"{d.dataset_sha256[:12]}...); train again on the new file to get its own run")
    bundle = data.resolve(d.dataset, **d.dataset_kwargs)  # a name, a file, a folder or pkg.module:function
    if d.label_noise > 0:
        bundle = data.corrupt_labels(bundle, d.label_noise, seed=seeds["label"], mode=d.label_noise_mode)
    if d.poison > 0:
        bundle = data.poison(bundle, d.poison, seed=seeds["label"] + 1_000_003)
    if d.subsample > 0:
        bundle = data.subsample(bundle, d.subsample, seed=seeds["label"] + 2_000_003)
    if len(bundle.train) == 0:
        raise LosslabError(f"dataset {d.dataset!r} has no training examples")
    return bundle


def build_model(config: TrainConfig, bundle) -> torch.nn.Module:
    """The model described by ``config.model``, initialized with the init seed."""
    from . import models

    return models.build(
        config.model.model,
        input_shape=tuple(bundle.input_shape),
        num_classes=bundle.num_classes,
        seed=config.seeds.resolved()["init"],
        **config.model.model_kwargs,
    )


def callback_keys(callbacks: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """What the trainer's ``callbacks`` add to a run's identity (see :func:`run_dir_for`).

    A callback's ``cache_key()`` (JSON-able) describes how it changes the run; a callback whose
    ``cache_key()`` returns ``None`` declares that it changes nothing saved in the run directory
    (it is left out, and a finished run is reused without calling it). A callback without
    ``cache_key`` is assumed to change the run: its class name is the key, so a run trained with it
    is never mistaken for a run trained without it (nor reused for a different instance of it).
    """
    keys: list[dict[str, Any]] = []
    for cb in callbacks:
        name = f"{type(cb).__module__}.{type(cb).__qualname__}"
        fn = getattr(cb, "cache_key", None)
        if fn is None:
            keys.append({"callback": name})
            continue
        k = fn() if callable(fn) else fn
        if k is not None:
            keys.append({"callback": name, "key": jsonable(k)})
    return keys


def run_dir_for(config: TrainConfig, out: str | os.PathLike = "runs", callbacks: Sequence[Any] = ()) -> Path:
    """The directory a config's run lives in: ``<out>/train-<hash of non-default settings>``, with
    ``-<hash of the callbacks' keys>`` appended when :func:`callback_keys` of ``callbacks`` is not
    empty (a regularizing or warm-starting callback makes a different run)."""
    name = f"{RUN_PREFIX}{config_hash(config)}"
    keys = callback_keys(callbacks)
    if keys:
        canon = json.dumps(keys, sort_keys=True, separators=(",", ":"))
        name += "-" + hashlib.sha256(canon.encode()).hexdigest()[:8]
    return Path(out) / name


def environment() -> dict[str, Any]:
    """Versions, device and git SHA recorded with every run."""
    return {
        "losslab": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "git_sha": git_sha(),
    }


def git_sha() -> str | None:
    """The SHA of the losslab source checkout, when it is one (None for an installed wheel)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass(frozen=True)
class Run:
    """A handle on a run directory (which may be unfinished)."""

    path: Path

    def __post_init__(self) -> None:
        if not isinstance(self.path, Path):
            object.__setattr__(self, "path", Path(self.path))  # Run("runs/train-...") works as well

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Run":
        p = Path(path)
        if not (p / "config.json").is_file():
            raise LosslabError(f"{p} is not a losslab run directory (no config.json)")
        return cls(p)

    @property
    def config(self) -> TrainConfig:
        return from_dict(TrainConfig, read_sealed_json(self.path / "config.json")["config"])

    @property
    def info(self) -> dict[str, Any]:
        """``run.json`` (``{}`` before training starts; a :class:`~losslab.errors.DamagedFile` if it is not
        valid JSON or does not match its content hash)."""
        f = self.path / "run.json"
        return read_sealed_json(f) if f.is_file() else {}

    @property
    def done(self) -> bool:
        """Finished: ``run.json`` says so (see :meth:`verify` for whether its files are intact)."""
        return self.info.get("status") == "done"

    def manifest(self) -> dict[str, str]:
        """``{relative path: sha256}`` of the files a finished run's results rest on: its checkpoints,
        ``metrics.json`` and ``state.pt`` (recorded in ``run.json`` when training ends)."""
        names = [p.relative_to(self.path).as_posix() for _, p in self.checkpoints()]
        names += [n for n in ("metrics.json", "state.pt") if (self.path / n).is_file()]
        return {n: file_sha256(self.path / n) for n in names}

    def verify(self) -> list[str]:
        """The damaged files of a run, in one line each.

        ``config.json`` and ``run.json`` carry their own content hash (``"run.json (damaged)"`` when
        truncated or changed); a finished run's manifest lists the sha256 of its checkpoints,
        ``metrics.json`` and ``state.pt``, each reported ``"path (missing|changed)"`` when it no longer
        matches. Empty when intact, and for runs saved before hashes existed (nothing to check
        against). An unfinished run's files are checked when it resumes (:func:`load_resume_state`).
        """
        bad = []
        if (self.path / "config.json").is_file():
            try:
                read_sealed_json(self.path / "config.json")
            except DamagedFile:
                bad.append("config.json (damaged)")
        try:
            recorded = self.info.get("manifest")
        except DamagedFile:
            return [*bad, "run.json (damaged)"]
        if not isinstance(recorded, dict):
            return bad
        for name, digest in sorted(recorded.items()):
            f = self.path / name
            if not f.is_file():
                bad.append(f"{name} (missing)")
            elif file_sha256(f) != digest:
                bad.append(f"{name} (changed)")
        return bad

    @property
    def intact(self) -> bool:
        """Finished and every file of its manifest unchanged (``run.json`` included): safe to reuse."""
        return not self.verify() and self.done

    @property
    def metrics(self) -> list[dict[str, Any]]:
        f = self.path / "metrics.json"
        return read_json(f) if f.is_file() else []

    @property
    def summary(self) -> dict[str, Any]:
        return self.info.get("summary", {})

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of every saved trajectory checkpoint, in step order."""
        d = self.path / "checkpoints"
        if not d.is_dir():
            return []
        out = []
        for f in d.glob("step_*.pt"):
            try:
                out.append((int(f.stem.split("_")[1]), f))
            except (IndexError, ValueError):
                continue
        return sorted(out)

    def state_dict(self, step: int | None = None) -> dict[str, torch.Tensor]:
        """The model state dict at ``step`` (default: the last checkpoint)."""
        ckpts = self.checkpoints()
        if not ckpts:
            raise LosslabError(f"run {self.path} has no checkpoints")
        if step is None:
            return load_state(ckpts[-1][1])
        for s, f in ckpts:
            if s == step:
                return load_state(f)
        raise LosslabError(f"run {self.path} has no checkpoint at step {step}; steps: {[s for s, _ in ckpts]}")

    def build_model(self, step: int | None = None) -> torch.nn.Module:
        """Rebuild the run's model and load the checkpoint at ``step`` (default: final)."""
        from .models import load_state_dict_checked

        cfg = self.config
        bundle = build_bundle(cfg)
        model = build_model(cfg, bundle)
        load_state_dict_checked(model, self.state_dict(step))
        model.eval()
        return model

    def bundle(self):
        """The run's dataset (with the same corruption/poisoning)."""
        return build_bundle(self.config)

    def trajectory(self) -> list[tuple[int, dict[str, torch.Tensor]]]:
        """(step, parameter point) for every checkpoint (parameters only, no buffers)."""
        model = self.build_model()
        names = {n for n, _ in model.named_parameters()}
        return [(s, {k: v for k, v in load_state(f).items() if k in names}) for s, f in self.checkpoints()]


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(..., weights_only=True)`` with a one-line error for unreadable files."""
    p = Path(path)
    if not p.is_file():
        raise LosslabError(f"checkpoint {p} does not exist")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is "unreadable"
        raise LosslabError(f"cannot read checkpoint {p}: {type(exc).__name__}: {(str(exc).strip().splitlines() or ['empty or truncated file'])[0][:200]}")


STATE_FORMAT = "losslab.train_state"


def seal_resume_state(state: dict[str, Any]) -> dict[str, Any]:
    """The trainer's resume ``state`` sealed with the sha256 of its bytes, to be written with
    :func:`losslab._io.atomic_torch_save` and read with :func:`load_resume_state`.

    It is ``{"format", "sha256", "payload"}``, the payload being the bytes of ``torch.save(state)`` as
    a uint8 tensor, so that :func:`load_resume_state` detects any changed byte (``torch.load`` itself
    does not: a flipped byte in a tensor loads as a different value).
    """
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    return {"format": STATE_FORMAT, "sha256": hashlib.sha256(data).hexdigest(),
            "payload": torch.frombuffer(bytearray(data), dtype=torch.uint8)}


def load_resume_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a state sealed by :func:`seal_resume_state`; a truncated or changed file is a
    :class:`~losslab.errors.DamagedFile`. A state saved before sealing (a plain dict) is returned as is."""
    import io

    try:
        outer = load_state(path)
    except DamagedFile:
        raise
    except LosslabError as exc:
        raise DamagedFile(path, str(exc).split(": ", 1)[-1]) from None
    if not (isinstance(outer, dict) and outer.get("format") == STATE_FORMAT):
        return outer
    data = outer["payload"].numpy().tobytes()
    if hashlib.sha256(data).hexdigest() != outer.get("sha256"):
        raise DamagedFile(path, "its content hash does not match")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def write_config(path: Path, config: TrainConfig) -> None:
    atomic_write_json(
        path / "config.json",
        seal({"config": to_dict(config), "non_default": non_default(config), "hash": config_hash(config)}),
    )
