"""Curvature along training: a :func:`losslab.train.train` callback for break-even and edge-of-stability plots.

:class:`CurvatureTracker` measures, every ``every`` optimizer steps, on a fixed subset of the training data:

* :math:`λ_{max}` of the Hessian of the subset's mean loss (Lanczos, warm-started from the previous top
  eigenvector), next to :math:`2/η` (η the learning rate of the step just taken) and, for SGD with momentum
  :math:`β`, the stability threshold :math:`(2 + 2β)/η` of gradient descent with heavy-ball momentum. Full-
  batch GD drives :math:`λ_{max}` up to about :math:`2/η` and hovers there (*edge of stability*, Cohen et
  al. 2021); with SGD, larger learning rates stop the early growth of :math:`λ_{max}` sooner and lower
  (the *break-even point*, Jastrzebski et al. 2020).
* optionally :math:`\\operatorname{Tr} H` (Hutchinson, with its standard error);
* optionally the top eigenvalue of the per-example gradient covariance
  :math:`C = \\frac1N\\sum_i (g_i - \\bar g)(g_i - \\bar g)ᵀ` (:class:`GradientCovarianceOperator`; the
  covariance of a size-:math:`B` minibatch gradient is :math:`C/B`), Jastrzebski et al.'s second
  break-even quantity.

The measurement does not change the training trajectory: the model is evaluated functionally at
private copies of its parameters (no ``.grad`` is written, the optimizer is not touched), every
module's train/eval flag is restored, all randomness comes from the tracker's own generator, and the
global RNG state (dropout's) is saved and restored around the measurement. By default the model is
measured in eval mode (dropout off, BatchNorm with running statistics); ``mode="train"`` measures the
Hessian as the optimizer sees it (the gradient covariance, from per-example gradients, always uses eval
mode).

Records go to ``run_dir/curvature.json`` (atomically, after each measurement) and the latest values
into the epoch metrics (``metrics.json``) via ``state.extra``.

Example:
    >>> import tempfile
    >>> from losslab.config import TrainConfig, OptimConfig, ModelConfig
    >>> from losslab.train import train
    >>> from losslab.curvature import CurvatureTracker
    >>> tracker = CurvatureTracker(every=5, data_subset=256, seed=0)
    >>> cfg = TrainConfig(model=ModelConfig(model_kwargs={"width": 16, "depth": 1}), optim=OptimConfig(epochs=1))
    >>> run = train(cfg, out=tempfile.mkdtemp(), callbacks=[tracker], progress=False, force=True)
    >>> [r["step"] for r in tracker.records][:3]
    [0, 5, 10]
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from .._io import atomic_write_json
from ..errors import LosslabError
from ..results import read_sealed_json, seal
from .lanczos import lanczos_eigs
from .operators import GradientCovarianceOperator, HessianOperator
from .trace import hutchinson_trace

__all__ = ["CurvatureTracker", "load_curvature_records", "plot_sharpness_trajectory"]

_FORMAT = "losslab.curvature-track/1"


@contextlib.contextmanager
def _isolated(model: nn.Module, mode: str) -> Iterator[None]:
    """Run with the global RNGs forked and every module's ``training`` flag restored afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    devices = []
    dev = next(iter(model.parameters())).device
    if dev.type == "cuda":
        devices = [dev.index if dev.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        try:
            if mode == "eval":
                model.eval()
            yield
        finally:
            for m, f in flags:
                m.training = f


class CurvatureTracker:
    """Record λmax (vs 2/LR), trace and the gradient-covariance top eigenvalue while training.

    A callback for :func:`losslab.train.train` (see the module docstring for what is measured and why
    the trajectory is unchanged). Measurements happen before the first step (``at_start``, step 0) and
    after every ``every``-th optimizer step.

    Args:
        every: measure after every ``every`` optimizer steps.
        lambda_max: measure :math:`λ_{max}` of the Hessian.
        trace: measure :math:`\\operatorname{Tr} H` (``trace_probes`` Hutchinson probes).
        grad_cov_top: measure the top eigenvalue of the per-example gradient covariance.
        data_subset: number of training examples to measure on (a fixed random subset drawn from ``seed``;
            ``None`` or more than the training set: all of it).
        seed: seed of the subset, the first Lanczos start vectors and the trace probes.
        tol: Lanczos relative-residual tolerance (float32 products limit it to about 1e-6).
        max_iter: Lanczos steps at most per measurement.
        trace_probes: Hutchinson probes per trace measurement.
        warm_start: start Lanczos from the previous top eigenvector (plus ``warm_start_noise`` of a random
            unit vector, so an eigenvalue that overtakes the previous top one is still found).
        warm_start_noise: relative weight of the random part of a warm start.
        batch_size: examples per batch in the curvature operators (``None``: the whole subset at once).
        backend: HVP backend of :class:`HessianOperator`.
        mode: ``"eval"`` (default) or ``"train"``: the module mode while measuring the Hessian (the gradient
            covariance is always measured in eval mode).
        at_start: also measure at step 0 (before training; only when the run starts from scratch).
        filename: file in the run directory the records are written to.

    Attributes:
        records: one dict per measurement: ``step``, ``epoch``, ``lr``, ``two_over_lr``,
            ``stability_threshold`` (``(2+2β)/lr`` for SGD with momentum β, else ``2/lr``), ``batch_loss``,
            ``lambda_max``, ``lambda_max_residual``, ``lambda_max_converged``, ``lambda_max_matvecs``,
            ``trace``, ``trace_stderr``, ``grad_cov_top``, ``grad_cov_converged``, ``seconds`` (keys of
            quantities not measured are absent).
        subset_indices: indices (into the training split) of the measured examples.
    """

    def __init__(
        self,
        every: int = 10,
        *,
        lambda_max: bool = True,
        trace: bool = False,
        grad_cov_top: bool = False,
        data_subset: int | None = 512,
        seed: int = 0,
        tol: float = 1e-3,
        max_iter: int = 100,
        trace_probes: int = 10,
        warm_start: bool = True,
        warm_start_noise: float = 0.1,
        batch_size: int | None = None,
        backend: str = "auto",
        mode: str = "eval",
        at_start: bool = True,
        filename: str = "curvature.json",
    ) -> None:
        if int(every) < 1:
            raise LosslabError(f"every must be >= 1, got {every}")
        if not (lambda_max or trace or grad_cov_top):
            raise LosslabError("CurvatureTracker measures nothing: enable lambda_max, trace or grad_cov_top")
        if data_subset is not None and int(data_subset) < 1:
            raise LosslabError(f"data_subset must be >= 1 or None, got {data_subset}")
        if mode not in ("eval", "train"):
            raise LosslabError(f"mode must be 'eval' or 'train', got {mode!r}")
        if trace and trace_probes < 2:
            raise LosslabError("trace_probes must be >= 2 (the standard error needs two probes)")
        self.every = int(every)
        self.measure_lambda_max = bool(lambda_max)
        self.measure_trace = bool(trace)
        self.measure_grad_cov = bool(grad_cov_top)
        self.data_subset = None if data_subset is None else int(data_subset)
        self.seed = int(seed)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.trace_probes = int(trace_probes)
        self.warm_start = bool(warm_start)
        self.warm_start_noise = float(warm_start_noise)
        self.batch_size = batch_size
        self.backend = backend
        self.mode = mode
        self.at_start = bool(at_start)
        self.filename = filename
        self.records: list[dict[str, Any]] = []
        self.subset_indices: list[int] = []
        self._gen = torch.Generator().manual_seed(self.seed)
        self._v: Tensor | None = None
        self._vc: Tensor | None = None
        self._data: tuple[Tensor, Tensor] | None = None
        self._loss_fn: Any = None
        self._path: Path | None = None
        self._momentum: float | None = None

    # -- settings ---------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The tracker's settings (JSON-serialisable)."""
        return {
            "every": self.every, "lambda_max": self.measure_lambda_max, "trace": self.measure_trace,
            "grad_cov_top": self.measure_grad_cov, "data_subset": self.data_subset, "seed": self.seed,
            "tol": self.tol, "max_iter": self.max_iter, "trace_probes": self.trace_probes,
            "warm_start": self.warm_start, "warm_start_noise": self.warm_start_noise,
            "batch_size": self.batch_size, "backend": self.backend, "mode": self.mode,
        }

    def cache_key(self) -> dict[str, Any]:
        """Part of the run's identity (:func:`losslab.runs.callback_keys`): the run directory holds
        the records of exactly these settings (training itself is unchanged)."""
        return {**self.settings(), "at_start": self.at_start, "filename": self.filename}

    # -- callback hooks ---------------------------------------------------------------------------
    def on_train_start(self, state: Any) -> None:
        from ..train import loss_fn_for

        train = state.bundle.train
        n = len(train.x)
        if self.data_subset is None or self.data_subset >= n:
            idx = torch.arange(n)
        else:
            g = torch.Generator().manual_seed(self.seed)
            idx = torch.sort(torch.randperm(n, generator=g)[: self.data_subset]).values
        self.subset_indices = [int(i) for i in idx]
        dev = next(iter(state.model.parameters())).device
        self._data = (train.x[idx].to(dev), train.y[idx].to(dev))
        self._loss_fn = loss_fn_for(state.bundle.num_classes)
        o = state.config.optim
        self._momentum = float(o.momentum) if o.optimizer == "sgd" else None
        self._path = Path(state.run_dir) / self.filename
        self.records = []
        if state.step > 0 and self._path.is_file():  # resumed run: keep the earlier records
            # a damaged file (its content hash) is a one-line DamagedFile: its earlier records cannot be
            # measured again from a resumed run, so it is not silently dropped
            old = read_sealed_json(self._path)
            try:
                self.records = [r for r in old.get("records", []) if int(r["step"]) <= state.step]
            except (AttributeError, KeyError, TypeError, ValueError):
                raise LosslabError(f"{self._path} is not a curvature-tracking file; delete it or rerun with "
                                   "--force") from None
        if state.step == 0 and self.at_start:
            lr = self._first_lr(state)
            self.measure(state.model, step=0, epoch=state.epoch, lr=lr, batch_loss=math.nan)

    def on_step_end(self, state: Any) -> None:
        if state.step % self.every == 0:
            self.measure(state.model, step=state.step, epoch=state.epoch, lr=state.lr, batch_loss=state.batch_loss)

    def on_epoch_end(self, state: Any) -> None:
        if not self.records:
            return
        last = self.records[-1]
        state.extra["curvature_step"] = last["step"]
        for key in ("lambda_max", "trace", "trace_stderr", "grad_cov_top"):
            if key in last:
                state.extra[key] = last[key]

    def on_train_end(self, state: Any) -> None:
        self.save()

    # -- measurement ------------------------------------------------------------------------------
    @staticmethod
    def _first_lr(state: Any) -> float:
        from ..train import lr_at

        n = len(state.bundle.train.x)
        bs = state.config.optim.batch_size
        bs = n if bs == 0 or bs >= n else bs
        return float(lr_at(state.config, 0, math.ceil(n / bs)))

    def _start(self, prev: Tensor | None, n: int, device: torch.device) -> Tensor | None:
        if prev is None or not self.warm_start:
            return None
        z = torch.randn(n, generator=self._gen, dtype=torch.float64).to(device)
        return prev + self.warm_start_noise * z / torch.linalg.vector_norm(z)

    def measure(self, model: nn.Module, *, step: int, epoch: int = 0, lr: float = math.nan,
                batch_loss: float = math.nan) -> dict[str, Any]:
        """Measure now (also usable outside :func:`train`, after :meth:`on_train_start` set the data)."""
        if self._data is None:
            raise LosslabError("CurvatureTracker.measure needs on_train_start first (it sets the data subset)")
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"step": int(step), "epoch": int(epoch), "lr": float(lr)}
        rec["two_over_lr"] = 2.0 / lr if lr > 0 else None
        if lr > 0:
            beta = self._momentum or 0.0
            rec["stability_threshold"] = (2.0 + 2.0 * beta) / lr
        else:
            rec["stability_threshold"] = None
        rec["batch_loss"] = None if not math.isfinite(batch_loss) else float(batch_loss)
        with _isolated(model, self.mode):
            if self.measure_lambda_max or self.measure_trace:
                H = HessianOperator(model, self._data, loss=self._loss_fn, batch_size=self.batch_size, backend=self.backend)
                if self.measure_lambda_max:
                    v0 = self._start(self._v, H.shape[0], H.device)
                    res = lanczos_eigs(H, k=1, which="LA", tol=self.tol, max_iter=self.max_iter, v0=v0,
                                       generator=self._gen)
                    self._v = res.eigenvectors[:, 0].clone() if res.eigenvectors is not None else None
                    rec.update(lambda_max=float(res.eigenvalues[0]), lambda_max_residual=float(res.residuals[0]),
                               lambda_max_converged=bool(res.converged), lambda_max_matvecs=int(res.num_matvecs))
                if self.measure_trace:
                    tr = hutchinson_trace(H, num_probes=self.trace_probes, generator=self._gen,
                                          return_frobenius=False)
                    rec.update(trace=float(tr.trace), trace_stderr=float(tr.stderr))
                H.release()
            if self.measure_grad_cov:
                model.eval()  # per-example gradients (vmap) need a deterministic, batch-independent model
                C = GradientCovarianceOperator(model, self._data, loss=self._loss_fn, batch_size=self.batch_size)
                v0 = self._start(self._vc, C.shape[0], C.device)
                res = lanczos_eigs(C, k=1, which="LA", tol=self.tol, max_iter=self.max_iter, v0=v0,
                                   generator=self._gen)
                self._vc = res.eigenvectors[:, 0].clone() if res.eigenvectors is not None else None
                rec.update(grad_cov_top=float(res.eigenvalues[0]), grad_cov_converged=bool(res.converged))
        rec["seconds"] = round(time.perf_counter() - t0, 4)
        self.records = [r for r in self.records if r["step"] != rec["step"]] + [rec]
        self.save()
        return rec

    # -- output -----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike | None = None) -> Path | None:
        """Write the records (and settings, subset) to ``path`` (default ``run_dir/curvature.json``)."""
        target = Path(path) if path is not None else self._path
        if target is None:
            return None
        atomic_write_json(target, seal({"format": _FORMAT, "settings": self.settings(),  # with its content hash
                                        "subset_indices": self.subset_indices, "records": self.records}))
        return target

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """Plot :attr:`records` (:class:`~losslab.plot.SharpnessTrajectoryDisplay`); returns the ``Axes``
        as :func:`plot_sharpness_trajectory` does."""
        return plot_sharpness_trajectory(self.records, ax=ax, **kwargs)


def load_curvature_records(source: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a tracked run: a run directory (its ``curvature.json``) or the JSON file itself."""
    path = Path(source)
    if path.is_dir():
        path = path / "curvature.json"
    if not path.is_file():
        raise LosslabError(f"{path} does not exist (train with a CurvatureTracker callback to record it)")
    data = read_sealed_json(path)  # a truncated or changed file is a one-line DamagedFile
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise LosslabError(f"{path} is not a curvature-tracking file")
    return list(data["records"])


def plot_sharpness_trajectory(
    records: Sequence[dict[str, Any]] | str | os.PathLike | CurvatureTracker,
    *,
    ax: Any = None,
    threshold: str = "two_over_lr",
    grad_cov: bool = False,
    log: bool = True,
    label: str | None = None,
    color: str | None = None,
) -> Any:
    """λmax over training steps with the :math:`2/η` line (edge-of-stability / break-even plot).

    Args:
        records: tracker records, a :class:`CurvatureTracker`, a run directory or a ``curvature.json``.
        ax: matplotlib axes to draw on (default: a new figure).
        threshold: ``"two_over_lr"`` (:math:`2/η`), ``"stability"`` (:math:`(2+2β)/η` with momentum) or
            ``"none"``.
        grad_cov: also draw the gradient-covariance top eigenvalue (dotted).
        log: logarithmic y axis.
        label, color: of the λmax curve (the threshold is drawn dashed in the same color).

    Returns:
        The matplotlib ``Axes`` (the display's ``ax_``; use
        :class:`~losslab.plot.SharpnessTrajectoryDisplay` for the display itself).
    """
    from ..plot._curves import SharpnessTrajectoryDisplay

    if isinstance(records, (str, os.PathLike)):
        records = load_curvature_records(records)
    return SharpnessTrajectoryDisplay.from_result(records, ax=ax, threshold=threshold, grad_cov=grad_cov, log=log,
                                                  label=label, color=color).ax_
