"""A small recording trainer: reproducible, resumable, keeps the trajectory.

Example:
    >>> from losslab.config import TrainConfig, OptimConfig
    >>> from losslab.train import train
    >>> run = train(TrainConfig(optim=OptimConfig(epochs=2)), out="/tmp/losslab-doc", progress=False)
    >>> sorted(run.summary)[:3]
    ['checkpoints', 'epochs', 'epochs_to_fit']

Seeds are separate per purpose (init, data order, label noise; see :class:`SeedConfig`); nothing seeds
the global RNGs. A finished run with the same config is reused; an interrupted one resumes from its
last saved epoch and ends with bit-identical weights to an uninterrupted run (CPU, same threads).
The resumable state (``state.pt``) and ``metrics.json`` are saved after the last epoch of a call and
otherwise at most every :data:`SAVE_EVERY_S` seconds, so a kill loses at most that much work while
runs of many tiny epochs (full-batch GD) are not dominated by writing and syncing files.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from ._io import _json_default, atomic_torch_save, atomic_write_json, file_lock, file_sha256, remove_stale_temporaries
from .config import TrainConfig, parse_checkpoint_schedule
from .errors import DamagedFile, LosslabError
from ._functional import resolve_loss
from .optim import OptimizerLike, build as build_optimizer
from .results import seal
from .runs import (Run, build_bundle, build_model, callback_keys, environment, load_resume_state, run_dir_for,
                   seal_resume_state, write_config)
from .settings import resolve_device, set_threads

EVAL_CHUNK = 4096
SAVE_EVERY_S = 2.0
"""Seconds of training between saves of the resumable state (always saved after a call's last epoch)."""


# ---------------------------------------------------------------- building blocks


def loss_fn_for(num_classes: int, config: TrainConfig | None = None) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    """The loss of a run: ``config.optim.loss`` (a name or ``pkg.module:function``, with ``output_key``) when set,
    else cross-entropy for classification and MSE for regression (``num_classes == 0``); see
    :func:`losslab._functional.resolve_loss`."""
    o = config.optim if config is not None else None
    return resolve_loss(o.loss if o is not None and o.loss else None, num_classes=num_classes,
                        output_key=o.output_key if o is not None and o.output_key else None)


@torch.no_grad()
def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                   config: TrainConfig | None = None) -> dict[str, float]:
    """Mean loss and error of ``model`` (in its current mode) on (x, y), in chunks, with the loss of
    :func:`loss_fn_for`. The error is the fraction of wrong arg-max predictions (per token, averaged per
    example, for ``(N, T)`` targets); NaN for regression or outputs that are not class scores."""
    if len(x) == 0:
        return {"loss": float("nan"), "error": float("nan")}
    from .evaluate import check_model_output

    loss_fn = loss_fn_for(num_classes, config)
    key = config.optim.output_key if config is not None and config.optim.output_key else None
    total, wrong, scored = 0.0, 0.0, num_classes > 0
    for i in range(0, len(x), EVAL_CHUNK):
        xb, yb = x[i : i + EVAL_CHUNK], y[i : i + EVAL_CHUNK]
        out = model(xb)
        logits = out[key] if key is not None and isinstance(out, dict) and key in out else out
        if i == 0 and (config is None or not config.optim.loss) and not key:
            check_model_output(out, y, classification=num_classes > 0)  # one line, not a torch traceback
        total += float(loss_fn(out, yb)) * len(xb)
        scored = scored and isinstance(logits, torch.Tensor) and logits.dim() == yb.dim() + 1
        if scored:
            miss = (logits.argmax(-1) != yb).to(torch.float64)
            wrong += float(miss.reshape(len(xb), -1).mean(1).sum())
    n = len(x)
    return {"loss": total / n, "error": wrong / n if scored else float("nan")}


def make_optimizer(config: TrainConfig, model: nn.Module) -> OptimizerLike:
    """The run's optimizer (``config.optim``) over ``model``'s trainable parameters: :mod:`losslab.optim`'s
    for CPU parameters (torch's arithmetic, without importing ``torch._dynamo``), ``torch.optim``'s on
    other devices; the two are bit-identical on CPU and share the state dict format."""
    o = config.optim
    ps = [p for p in model.parameters() if p.requires_grad]
    if o.optimizer == "sgd":
        return build_optimizer("sgd", ps, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                               weight_decay=o.weight_decay)
    if o.optimizer == "adam":
        return build_optimizer("adam", ps, lr=o.lr, weight_decay=o.weight_decay)
    return build_optimizer("rmsprop", ps, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def lr_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at a (0-based) optimizer step: warm-up, then constant / step / cosine."""
    o = config.optim
    total = o.epochs * steps_per_epoch
    warm = int(round(o.warmup_epochs * steps_per_epoch))
    if warm > 0 and step < warm:
        return o.lr * (step + 1) / warm
    if o.schedule == "constant":
        return o.lr
    if o.schedule == "step":
        return o.lr * o.step_gamma ** (step // (o.step_every * steps_per_epoch))
    progress = (step - warm) / max(1, total - warm)
    return o.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def checkpoint_steps(config: TrainConfig, steps_per_epoch: int) -> list[int]:
    """The optimizer steps after which a trajectory checkpoint is kept (0 = init, always with the last)."""
    kind, k = parse_checkpoint_schedule(config.ckpt.checkpoints)
    total = config.optim.epochs * steps_per_epoch
    steps = {0, total}
    if kind == "epoch":
        steps |= {e * steps_per_epoch for e in range(k, config.optim.epochs + 1, k)}
    elif kind == "step":
        steps |= set(range(k, total + 1, k))
    elif kind == "log":
        steps |= {int(s) for s in np.unique(np.round(np.logspace(0, np.log10(max(total, 1)), k)))}
    return sorted(s for s in steps if 0 <= s <= total)


# ---------------------------------------------------------------- callbacks


@dataclass
class TrainState:
    """What callbacks see. ``extra`` collects values a callback wants recorded with the epoch metrics."""

    config: TrainConfig
    model: nn.Module
    optimizer: OptimizerLike
    bundle: Any
    run_dir: Path
    epoch: int = 0
    step: int = 0
    lr: float = 0.0
    batch_loss: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)


class Callback(Protocol):
    """Hooks called by :func:`train`; implement any subset (missing ones are skipped)."""

    def on_train_start(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...


def _fire(callbacks: Sequence[Any], hook: str, state: TrainState) -> None:
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(state)


# ---------------------------------------------------------------- the loop


def train(
    config: TrainConfig,
    *,
    out: str | os.PathLike = "runs",
    callbacks: Sequence[Any] = (),
    progress: bool | None = None,
    force: bool = False,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    max_epochs: int | None = None,
) -> Run:
    """Train the run described by ``config`` in ``<out>/train-<hash>`` and return its :class:`Run`.

    Args:
        config: the run's settings (validated here).
        out: parent directory of run directories.
        callbacks: objects with any of ``on_train_start/on_step_end/on_epoch_end/on_train_end(state)``,
            and optionally ``cache_key()``: the callbacks are part of the run's identity (its directory
            name, see :func:`losslab.runs.run_dir_for`), so a run trained with a regularizing callback
            is not reused for the plain config; a pure observer returns ``None`` from ``cache_key``.
            ``on_step_end`` runs after ``optimizer.step()`` and before that step's checkpoint is written, so
            a change a callback makes to the parameters (a projection, a decay) is in the checkpoint.
        progress: show a progress bar (default: only when stderr is a TTY).
        force: retrain even when a finished run exists.
        device: where to train (data is kept resident there).
        threads: torch intra-op threads (default ``LOSSLAB_THREADS`` or 1; see :mod:`losslab.settings`).
        max_epochs: stop after this many epochs *in this call* (the run stays resumable; for tests and
            time-boxed jobs).

    Returns:
        The run handle; ``run.summary`` holds final train/test loss and error.
    """
    config.validate()
    set_threads(threads)
    dev = resolve_device(device)  # validate before creating anything
    run_dir = run_dir_for(config, out, callbacks)
    run = Run(run_dir)
    if run.intact and not force:
        return run
    bundle = build_bundle(config)  # before anything is created: a bad dataset leaves no directory behind
    # one process trains a run at a time: a second identical `train` waits here, then reuses the result
    with file_lock(Path(out) / ".locks" / f"{run_dir.name}.train.lock"):
        for d in (run_dir, run_dir / "checkpoints"):
            remove_stale_temporaries(d)  # left by a process killed mid-write; we hold the lock
        return _train_locked(config, run, bundle, dev, callbacks, progress, force, max_epochs)


def _train_locked(config: TrainConfig, run: Run, bundle: Any, dev: torch.device, callbacks: Sequence[Any],
                  progress: bool | None, force: bool, max_epochs: int | None) -> Run:
    run_dir = run.path
    damaged = [] if force else run.verify()
    if damaged:
        # a run whose files were truncated or changed: retrain it (deterministic, so the repaired run is
        # bit-identical to the original), never reuse it
        print(f"losslab: run {run_dir.name} is damaged ({', '.join(damaged)}); retraining it", file=sys.stderr,
              flush=True)
        force = True
    elif run.done and not force:
        return run

    xtr, ytr = bundle.train.x.to(dev), bundle.train.y.to(dev)
    xte, yte = bundle.test.x.to(dev), bundle.test.y.to(dev)
    n = len(xtr)
    bs = n if config.optim.batch_size in (0,) or config.optim.batch_size >= n else config.optim.batch_size
    steps_per_epoch = math.ceil(n / bs)
    ckpt_steps = set(checkpoint_steps(config, steps_per_epoch))

    model = build_model(config, bundle).to(dev)
    opt = make_optimizer(config, model)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config)
    seeds = config.seeds.resolved()
    order_gen = torch.Generator().manual_seed(seeds["order"])
    loss_fn = loss_fn_for(bundle.num_classes, config)

    metrics: list[dict[str, Any]] = []
    start_epoch = 0
    state_file = run_dir / "state.pt"
    ck_hashes: dict[str, str] = {}  # sha256 of each checkpoint written, saved with the resume state
    st = None
    if state_file.is_file() and not force:
        try:
            st = load_resume_state(state_file)
            ck_hashes = dict(st.get("checkpoints", {}))
            bad = [f"{n} ({'changed' if (run_dir / n).is_file() else 'missing'})" for n, h in sorted(ck_hashes.items())
                   if not (run_dir / n).is_file() or file_sha256(run_dir / n) != h]
            if bad:
                raise DamagedFile(run_dir / bad[0].split(" ")[0], bad[0].split(" ", 1)[1].strip("()"))
            metrics = json.loads(st["metrics"]) if "metrics" in st else list(Run(run_dir).metrics)
        except DamagedFile as exc:  # truncated by a kill or a full disk, or changed: start over (deterministic)
            print(f"losslab: {exc.path} is damaged ({exc.reason}); training run {run_dir.name} from the start",
                  file=sys.stderr, flush=True)
            st, ck_hashes, metrics = None, {}, []
    if st is not None:
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        order_gen.set_state(st["order_rng"])
        start_epoch = int(st["epoch"])
        metrics = metrics[: start_epoch + 1]
    info = {
        "status": "running",
        "env": environment(),
        "seeds": seeds,
        "data": bundle.describe(),
        "steps_per_epoch": steps_per_epoch,
        "batch_size": bs,
        "resumed_from_epoch": start_epoch,
        "callbacks": callback_keys(callbacks),
    }
    atomic_write_json(run_dir / "run.json", seal(info))  # with its content hash

    state = TrainState(config, model, opt, bundle, run_dir, epoch=start_epoch, step=start_epoch * steps_per_epoch)

    def record(epoch: int) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        tr = evaluate_model(model, xtr, ytr, bundle.num_classes, config)
        te = evaluate_model(model, xte, yte, bundle.num_classes, config)
        model.train(was_training)
        return {"epoch": epoch, "step": state.step, "train_loss": tr["loss"], "train_error": tr["error"],
                "test_loss": te["loss"], "test_error": te["error"]}

    ckdir = run_dir / "checkpoints"

    def save_checkpoint(step: int) -> None:
        f = atomic_torch_save(ckdir / f"step_{step:08d}.pt", model.state_dict())
        ck_hashes[f.relative_to(run_dir).as_posix()] = file_sha256(f)

    if start_epoch == 0:
        metrics = [record(0)]
        atomic_write_json(run_dir / "metrics.json", metrics)
        save_checkpoint(0)

    t0 = time.perf_counter()
    _fire(callbacks, "on_train_start", state)
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.optim.epochs, initial=start_epoch, desc=f"train {run_dir.name}", leave=False,
                   file=sys.stderr)
    end_epoch = config.optim.epochs if max_epochs is None else min(config.optim.epochs, start_epoch + max_epochs)
    last_save = time.perf_counter()
    for epoch in range(start_epoch + 1, end_epoch + 1):
        state.epoch = epoch
        model.train()
        perm = torch.randperm(n, generator=order_gen).to(dev) if bs < n else torch.arange(n, device=dev)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            lr = lr_at(config, state.step, steps_per_epoch)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xtr[idx]), ytr[idx])
            if not torch.isfinite(loss):
                raise LosslabError(
                    f"training diverged: loss is {float(loss.detach())} at epoch {epoch}, step {state.step}; lower the LR"
                )
            loss.backward()
            opt.step()
            state.step += 1
            state.lr, state.batch_loss = lr, float(loss.detach())
            _fire(callbacks, "on_step_end", state)  # before the checkpoint: it may change the parameters
            if state.step in ckpt_steps:
                save_checkpoint(state.step)
        rec = record(epoch)
        state.extra = {}
        _fire(callbacks, "on_epoch_end", state)
        rec.update(state.extra)
        metrics.append(rec)
        if epoch == end_epoch or time.perf_counter() - last_save >= SAVE_EVERY_S:
            atomic_write_json(run_dir / "metrics.json", metrics)
            # the metrics and the checkpoints' hashes go into the (sealed) state too: a resume needs no other file
            atomic_torch_save(state_file, seal_resume_state({
                "model": model.state_dict(), "optimizer": opt.state_dict(), "order_rng": order_gen.get_state(),
                "epoch": epoch, "metrics": json.dumps(metrics, default=_json_default), "checkpoints": dict(ck_hashes)}))
            last_save = time.perf_counter()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train_err=f"{rec['train_error']:.3f}", test_err=f"{rec['test_error']:.3f}")
    if bar is not None:
        bar.close()
    _fire(callbacks, "on_train_end", state)
    if state.epoch < config.optim.epochs:
        return run  # time-boxed: stays resumable

    final = metrics[-1]
    fit = next((m for m in metrics if m["train_error"] == 0.0), None)
    info.update(
        status="done",
        seconds=round(time.perf_counter() - t0, 3),
        summary={
            "run_dir": str(run_dir),
            "train_loss": final["train_loss"], "train_error": final["train_error"],
            "test_loss": final["test_loss"], "test_error": final["test_error"],
            "epochs": config.optim.epochs, "steps": state.step,
            "checkpoints": len(run.checkpoints()),
            "epochs_to_fit": None if fit is None else fit["epoch"],
            "seconds": round(time.perf_counter() - t0, 3),
        },
        manifest=run.manifest(),
    )
    atomic_write_json(run_dir / "run.json", seal(info))  # with its content hash
    return run
