r"""Instability analysis (Frankle, Dziugaite, Roy & Carbin 2020, "Linear Mode Connectivity and the
Lottery Ticket Hypothesis").

A *parent* run is trained for :math:`k` optimizer steps; at step :math:`k` two *children* are spawned
that share everything — weights, optimizer state (momentum buffers, Adam moments), learning-rate
schedule position, hyperparameters — except the data order (different order seeds). Both are trained
to the end of the schedule (:math:`T` steps in total, counted from the parent's initialisation), and
the test-error barrier along the linear path between them is measured,

.. math::

    B(k) = \max_{\alpha} \mathcal{E}((1-\alpha)\theta_1 + \alpha\theta_2) - \tfrac12(\mathcal{E}(\theta_1)
    + \mathcal{E}(\theta_2)),

on ``num`` (30) evenly spaced points (the other definition, above the chord, is reported too). The
network is *stable* at :math:`k` when :math:`B(k)` is below a threshold (Frankle et al. use 2%).
Sweeping :math:`k` (log-spaced) gives the step at which linear mode connectivity emerges.

Data order: the parent reproduces :func:`losslab.train.train` exactly (a permutation of the training
set from the config's order seed at every epoch start), so the parent at step :math:`k` is the step-k
state of the ordinary run. A child with order seed :math:`s` draws a fresh permutation at the spawn
step and at every later epoch start; when :math:`k` falls inside an epoch, the child's first epoch is
the remaining batches of its fresh permutation, so epochs stay aligned with global steps and the
schedule ``lr_at(step)`` is unchanged. Child ``c`` (``child_seeds``, default 1 and 2) uses the order
seed ``order_seed + 1_000_003 * c``.

Caching: everything lives in ``<out>/instability-<hash>/`` where the hash is
:func:`losslab.config.config_hash` of :class:`InstabilityConfig` (the training config, spawn steps,
points, child seeds, splits); the threshold is not part of it (it only reads the results). Parent
snapshots (``parent/step_XXXXXXXX.pt``: model, optimizer, step), children (``k_XXXXXXXX/child_c.pt``),
each path (``k_XXXXXXXX/path.{npz,json}``) and the final ``result.json`` are written atomically; a
rerun loads what is done and computes only what is missing.

Example:
    >>> from losslab.config import TrainConfig, DataConfig, ModelConfig, OptimConfig
    >>> from losslab.connect import instability
    >>> cfg = TrainConfig(data=DataConfig("digits", subsample=200), model=ModelConfig("mlp", {"width": 16, "depth": 1}),
    ...                   optim=OptimConfig(epochs=2, batch_size=50))
    >>> res = instability(cfg, [0, 4], out="/tmp/losslab-doc-instability", num=5)  # doctest: +SKIP
    >>> res.spawn_steps.tolist()  # doctest: +SKIP
    [0, 4]
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..results import Result
from .._io import atomic_torch_save, atomic_write_json
from ..config import TrainConfig, config_hash, non_default, to_dict
from ..errors import DamagedFile, LosslabError
from ..optim import OptimizerLike
from ..runs import environment, load_resume_state, seal_resume_state
from ..settings import set_threads
from ..results import jsonable, read_sealed_json, seal
from .paths import PathResult, linear_path

__all__ = [
    "InstabilityConfig",
    "InstabilityResult",
    "instability",
    "train_parent",
    "train_child",
    "child_order_seed",
    "DEFAULT_SPAWN_STEPS",
]

DEFAULT_SPAWN_STEPS = (0, 1, 4, 16, 64, 256)
PREFIX = "instability-"
CHILD_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class InstabilityConfig:
    """Everything that determines an instability sweep (and therefore its directory)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    spawn_steps: tuple[int, ...] = DEFAULT_SPAWN_STEPS
    num: int = 30
    child_seeds: tuple[int, int] = (1, 2)
    splits: tuple[str, ...] = ("test",)

    def validate(self, total_steps: int | None = None) -> "InstabilityConfig":
        self.train.validate()
        ks = list(self.spawn_steps)
        if not ks or any((not isinstance(k, (int, np.integer))) or isinstance(k, bool) or k < 0 for k in ks):
            raise LosslabError(f"spawn steps must be integers >= 0, got {ks}")
        if len(set(ks)) != len(ks):
            raise LosslabError(f"spawn steps must be distinct, got {ks}")
        if total_steps is not None and max(ks) > total_steps:
            raise LosslabError(f"spawn step {max(ks)} is beyond the end of training ({total_steps} steps)")
        if int(self.num) < 3:
            raise LosslabError(f"num (points on the path) must be >= 3, got {self.num}")
        if len(self.child_seeds) != 2 or self.child_seeds[0] == self.child_seeds[1]:
            raise LosslabError(f"child_seeds must be two different seeds, got {self.child_seeds}")
        if not self.splits or any(s not in ("train", "test") for s in self.splits):
            raise LosslabError(f"splits must be a non-empty subset of ('train', 'test'), got {self.splits}")
        return self


def child_order_seed(config: TrainConfig, child: int) -> int:
    """The data-order seed of child ``child``: ``order_seed + 1_000_003 * child``."""
    return int(config.seeds.resolved()["order"]) + CHILD_SEED_STRIDE * int(child)


# ----------------------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class InstabilityResult(Result):
    """Barriers between children spawned at each step.

    Attributes:
        spawn_steps: ``(K,)`` the swept steps, increasing.
        paths: the :class:`PathResult` between the two children of each step.
        child_metrics: per step, ``{split: {metric: [child1, child2]}}`` (endpoint values).
        threshold: the stability threshold on the test error barrier.
        total_steps: ``T``, optimizer steps of a full run.
        run_dir: where the sweep is cached.
        meta: config, timings, versions.
    """

    spawn_steps: np.ndarray
    paths: list[PathResult]
    threshold: float
    total_steps: int
    run_dir: str
    meta: dict[str, Any] = field(default_factory=dict)

    def barriers(self, metric: str = "error", *, split: str = "test", kind: str = "mean") -> np.ndarray:
        """``(K,)`` barrier per spawn step."""
        return np.array([p.barrier(metric, split=split, kind=kind) for p in self.paths])

    @property
    def stable_step(self) -> int | None:
        """The smallest swept ``k`` whose test-error barrier (max − mean) is below the threshold."""
        b = self.barriers("error", split=self._split, kind="mean")
        below = np.nonzero(b < self.threshold)[0]
        return int(self.spawn_steps[below[0]]) if below.size else None

    @property
    def stable_from(self) -> int | None:
        """The smallest swept ``k`` from which *every* larger swept step is below the threshold."""
        b = self.barriers("error", split=self._split, kind="mean")
        out = None
        for i in range(len(b) - 1, -1, -1):
            if b[i] < self.threshold:
                out = int(self.spawn_steps[i])
            else:
                break
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the sweep's directory layout under ``path``: ``k_XXXXXXXX/path.{npz,json}`` per step and
        ``result.json`` (spawn steps, total steps, meta, summary), as :func:`instability` does. Returns
        the ``result.json`` path; :meth:`load` reads it back (``run_dir`` becomes ``path``, the meta gains
        ``reused``, the threshold is :meth:`load`'s argument)."""
        d = Path(path)
        for k, p in zip(self.spawn_steps.tolist(), self.paths):
            p.save(d / f"k_{int(k):08d}" / "path")
        return _write_result(d, [int(k) for k in self.spawn_steps.tolist()], self.total_steps, self.meta, self.summary())

    @classmethod
    def load(cls, run_dir: str | os.PathLike, threshold: float = 0.02) -> "InstabilityResult":
        """Read a finished sweep from its ``instability-<hash>`` directory (any threshold)."""
        d = Path(run_dir)
        if not (d / "result.json").is_file():
            raise LosslabError(f"{d} holds no finished instability sweep (no result.json)")
        return _load(d, threshold)

    @property
    def _split(self) -> str:
        return "test" if "test" in self.paths[0].metrics else self.paths[0].splits[0]

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary: per-step barriers (both kinds), endpoint errors, the stable step."""
        s = self._split
        rows = []
        for k, p in zip(self.spawn_steps.tolist(), self.paths):
            rows.append({
                "k": int(k),
                f"{s}_error_barrier": p.barrier("error", split=s, kind="mean"),
                f"{s}_error_barrier_interp": p.barrier("error", split=s, kind="interp"),
                f"{s}_loss_barrier": p.barrier("loss", split=s, kind="mean"),
                f"{s}_error_children": [p.barriers[s]["error"]["start"], p.barriers[s]["error"]["end"]],
            })
        return {"run_dir": self.run_dir, "split": s, "threshold": self.threshold, "total_steps": self.total_steps,
                "stable_step": self.stable_step, "stable_from": self.stable_from, "sweep": rows}


# ------------------------------------------------------------------------------------- training
class _Data:
    """Resident training data, batch size and schedule facts of a config (as :func:`losslab.train.train`)."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        from ..train import build_bundle

        self.bundle = build_bundle(config)
        self.x = self.bundle.train.x.to(device)
        self.y = self.bundle.train.y.to(device)
        self.n = int(self.x.shape[0])
        bs = config.optim.batch_size
        self.bs = self.n if bs == 0 or bs >= self.n else bs
        self.steps_per_epoch = math.ceil(self.n / self.bs)
        self.total = config.optim.epochs * self.steps_per_epoch
        self.device = device


def _run_steps(config: TrainConfig, model: nn.Module, opt: OptimizerLike, data: _Data, start: int,
               stop: int, order_gen: torch.Generator, *, on_step: Any = None, fresh_at_start: bool = False) -> None:
    """Optimizer steps ``start .. stop-1`` (global numbering), the batches of :func:`losslab.train.train`.

    A permutation is drawn at every epoch start (and at ``start`` when ``fresh_at_start``); batch
    ``p = step mod steps_per_epoch`` of an epoch is ``perm[p*bs : (p+1)*bs]``.
    """
    from ..train import loss_fn_for, lr_at

    loss_fn = loss_fn_for(data.bundle.num_classes)
    spe, bs, n = data.steps_per_epoch, data.bs, data.n
    perm = None
    model.train()
    for step in range(start, stop):
        pos = step % spe
        if pos == 0 or perm is None:
            if pos != 0 and not fresh_at_start:
                raise LosslabError("internal: resuming inside an epoch needs a fresh permutation")
            perm = torch.randperm(n, generator=order_gen).to(data.device) if bs < n else torch.arange(n, device=data.device)
        idx = perm[pos * bs : (pos + 1) * bs]
        lr = lr_at(config, step, spe)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(data.x[idx]), data.y[idx])
        if not torch.isfinite(loss):
            raise LosslabError(f"training diverged: loss is {float(loss.detach())} at step {step}; lower the LR")
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step + 1)


def train_parent(config: TrainConfig, steps: Sequence[int], out_dir: str | os.PathLike, *,
                 device: str | torch.device = "cpu") -> dict[int, Path]:
    """Train the parent and snapshot model + optimizer state after each of ``steps`` optimizer steps.

    Reuses :mod:`losslab.train`'s building blocks (``build_bundle``, ``build_model``,
    ``make_optimizer``, ``lr_at``, ``loss_fn_for``) and its data order, so the snapshot at step k equals
    the step-k state of ``train(config)``. Existing snapshots are reused (training then stops at the
    last missing one; the parent is retrained from its initialisation when any is missing, which is
    cheap next to the children).

    Returns:
        ``{step: path}`` of ``<out_dir>/step_XXXXXXXX.pt`` files holding ``{"model", "optimizer",
        "step"}``.
    """
    from ..train import build_model, make_optimizer

    dev = torch.device(device)
    data = _Data(config, dev)
    out = Path(out_dir)
    want = sorted(set(int(s) for s in steps))
    if want and want[-1] > data.total:
        raise LosslabError(f"spawn step {want[-1]} is beyond the end of training ({data.total} steps)")
    paths = {k: out / f"step_{k:08d}.pt" for k in want}
    missing = [k for k in want if not _intact(paths[k])]
    if not missing:
        return paths
    model = build_model(config, data.bundle).to(dev)
    opt = make_optimizer(config, model)
    order_gen = torch.Generator().manual_seed(config.seeds.resolved()["order"])

    def save(step: int) -> None:  # sealed: a changed byte is detected on reuse (torch.load would not notice)
        atomic_torch_save(paths[step], seal_resume_state({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                                          "step": step}))

    if 0 in missing:
        save(0)
    targets = set(missing)

    def on_step(s: int) -> None:
        if s in targets:
            save(s)

    _run_steps(config, model, opt, data, 0, max(missing), order_gen, on_step=on_step)
    return paths


def _load_intact(path: Path) -> dict[str, Any] | None:
    """The state saved at ``path``; ``None`` when there is none, or when it is damaged (then said in one
    line on stderr and removed, so that it is recomputed)."""
    import sys

    if not path.is_file():
        return None
    try:
        return load_resume_state(path)
    except DamagedFile as exc:
        print(exc.recomputing(), file=sys.stderr)
        path.unlink(missing_ok=True)
        return None


def _intact(path: Path) -> bool:
    """Whether ``path`` holds an intact saved state (see :func:`_load_intact`)."""
    return _load_intact(path) is not None


def train_child(config: TrainConfig, snapshot: str | os.PathLike | dict[str, Any], order_seed: int, *,
                device: str | torch.device = "cpu", data: Any = None) -> nn.Module:
    """Continue a parent snapshot to the end of training with another data order.

    The child copies the snapshot's weights *and optimizer state* (momentum buffers / Adam moments),
    continues the learning-rate schedule from the snapshot's step, and draws its own batches from a
    generator seeded with ``order_seed`` (a fresh permutation at the spawn step and at every epoch
    start).

    Returns:
        The trained model (eval mode).
    """
    from ..train import build_model, make_optimizer

    dev = torch.device(device)
    d = data if isinstance(data, _Data) else _Data(config, dev)
    st = load_resume_state(snapshot) if not isinstance(snapshot, dict) else snapshot
    model = build_model(config, d.bundle).to(dev)
    model.load_state_dict(st["model"])
    opt = make_optimizer(config, model)
    # a deep copy: load_state_dict may keep the given tensors, and the steps below update them in place
    opt.load_state_dict(copy.deepcopy(st["optimizer"]))
    gen = torch.Generator().manual_seed(int(order_seed))
    _run_steps(config, model, opt, d, int(st["step"]), d.total, gen, fresh_at_start=True)
    model.eval()
    return model


# ------------------------------------------------------------------------------------ the sweep
def instability(
    config: TrainConfig,
    spawn_steps: Sequence[int] = DEFAULT_SPAWN_STEPS,
    *,
    out: str | os.PathLike = "runs",
    threshold: float = 0.02,
    num: int = 30,
    child_seeds: tuple[int, int] = (1, 2),
    splits: Sequence[str] = ("test",),
    device: str | torch.device = "cpu",
    threads: int | None = None,
    force: bool = False,
    progress: bool = False,
) -> InstabilityResult:
    """Instability analysis: spawn two children at each step k, train both, measure their barrier.

    Args:
        config: the training run (data, model, optimizer, schedule, seeds).
        spawn_steps: optimizer steps at which to spawn (log-spaced, e.g. 0, 1, 4, 16, 64, 256).
        out: parent directory of the cache directory ``instability-<hash>``.
        threshold: stability threshold on the test-error barrier (Frankle et al.: 0.02).
        num: points on each linear path (default 30).
        child_seeds: the two children's ids (see :func:`child_order_seed`).
        splits: splits evaluated along each path (default test only; add "train" for the train barrier).
        device: where to train and evaluate.
        threads: torch threads (default ``LOSSLAB_THREADS`` or 1).
        force: recompute everything.
        progress: print one line per spawn step to stderr.

    Returns:
        An :class:`InstabilityResult`; ``.stable_step`` is the smallest k with barrier < threshold.
    """
    import sys

    set_threads(threads)
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise LosslabError(f"threshold must be a number >= 0, got {threshold!r}")
    icfg = InstabilityConfig(config, tuple(sorted(int(k) for k in spawn_steps)), int(num),
                             (int(child_seeds[0]), int(child_seeds[1])), tuple(splits))
    icfg.validate()
    dev = torch.device(device)
    data = _Data(config, dev)
    icfg.validate(data.total)
    run_dir = Path(out) / f"{PREFIX}{config_hash(icfg)}"
    run_dir.mkdir(parents=True, exist_ok=True)
    result_file = run_dir / "result.json"
    ks = list(icfg.spawn_steps)
    if result_file.is_file() and not force:
        try:
            return _load(run_dir, threshold)
        except DamagedFile as exc:  # a damaged sweep file: say so, and recompute what is damaged
            print(exc.recomputing(), file=sys.stderr)
    atomic_write_json(run_dir / "config.json", seal({"config": jsonable(to_dict(icfg), keep_nonfinite=True),
                                                     "non_default": jsonable(non_default(icfg), keep_nonfinite=True),
                                                     "hash": config_hash(icfg)}))
    t0 = time.perf_counter()
    if force:
        for f in list((run_dir / "parent").glob("step_*.pt")) + list(run_dir.glob("k_*/*")):
            f.unlink()
    snaps = train_parent(config, ks, run_dir / "parent", device=dev)
    parent_s = time.perf_counter() - t0
    paths: list[PathResult] = []
    from ..train import build_model

    template = build_model(config, data.bundle).to(dev)
    for k in ks:
        kd = run_dir / f"k_{k:08d}"
        pf = kd / "path"
        if PathResult.paths(pf)[1].is_file():
            try:
                paths.append(PathResult.load(pf))
                continue
            except DamagedFile as exc:
                print(exc.recomputing(), file=sys.stderr)
        tk = time.perf_counter()
        children = []
        for j, c in enumerate(icfg.child_seeds):
            cf = kd / f"child_{j}.pt"
            sd = _load_intact(cf)
            if sd is None:
                sd = train_child(config, snaps[k], child_order_seed(config, c), device=dev, data=data).state_dict()
                atomic_torch_save(cf, seal_resume_state(sd))  # sealed like the parent's snapshots
            children.append(sd)
        names = [n for n, _ in template.named_parameters()] + [n for n, _ in template.named_buffers()]
        pa = {n: children[0][n] for n in names}
        pb = {n: children[1][n] for n in names}
        res = linear_path(template, data.bundle, point_a=pa, point_b=pb, num=icfg.num, splits=icfg.splits)
        res = PathResult(res.alphas, res.metrics, res.barriers,
                         {**res.meta, "spawn_step": k, "seconds_total": round(time.perf_counter() - tk, 3),
                          "child_order_seeds": [child_order_seed(config, c) for c in icfg.child_seeds]})
        res.save(pf)
        paths.append(res)
        if progress:
            s = "test" if "test" in res.metrics else "train"
            print(f"instability: k={k} {s} error barrier {res.barrier('error', split=s):.4f}", file=sys.stderr)
    meta = {"config": jsonable(to_dict(icfg), keep_nonfinite=True), "hash": config_hash(icfg), "env": environment(),
            "steps_per_epoch": data.steps_per_epoch, "batch_size": data.bs, "parent_seconds": round(parent_s, 3),
            "seconds": round(time.perf_counter() - t0, 3)}
    out_res = InstabilityResult(np.array(ks), paths, float(threshold), data.total, str(run_dir), meta)
    _write_result(run_dir, ks, data.total, meta, out_res.summary())
    return out_res


def _write_result(run_dir: Path, ks: list[int], total_steps: int, meta: dict[str, Any], summary: dict[str, Any]) -> Path:
    """``run_dir/result.json``: what marks a sweep finished (read by :func:`_load`)."""
    return atomic_write_json(run_dir / "result.json", seal({"spawn_steps": ks, "total_steps": total_steps,
                                                            "meta": meta, "summary": summary}))


def _load(run_dir: Path, threshold: float) -> InstabilityResult:
    desc = read_sealed_json(run_dir / "result.json")  # a changed or truncated file is a DamagedFile
    ks = [int(k) for k in desc["spawn_steps"]]
    paths = [PathResult.load(run_dir / f"k_{k:08d}" / "path") for k in ks]
    meta = dict(desc.get("meta", {}))
    meta["reused"] = True
    return InstabilityResult(np.array(ks), paths, float(threshold), int(desc["total_steps"]), str(run_dir), meta)
