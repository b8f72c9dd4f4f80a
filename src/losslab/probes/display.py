"""Matplotlib displays of probe results, in the scikit-learn style of :mod:`losslab.plot`:
``Display.from_result(result, ax=None, ...)`` plots and returns the display; ``display.plot(ax=None)``
draws (again) and returns it; after plotting, ``figure_`` is the figure and ``ax_`` the (1, n) array of
panel axes (``axes_`` is the same array). ``ax`` may be n axes of your own (any array-like of them).
``display.savefig(path)`` writes atomically. Nothing here recomputes anything."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import LosslabError
from ._common import new_figure, save_figure

__all__ = ["StiffnessDisplay", "NTKDisplay", "DiversityDisplay", "FactorizationDisplay"]


class _Display:
    """The shared part of the probe displays: panel axes, ``savefig`` and ``close``."""

    figure_: Any = None
    ax_: Any = None
    axes_: Any = None

    def __init__(self, result: Any) -> None:
        self.result = result

    @classmethod
    def from_result(cls, result: Any, *, ax: Any = None) -> Any:
        """Plot ``result`` on ``ax`` (a new figure when None); returns the display."""
        return cls(result).plot(ax=ax)

    def plot(self, ax: Any = None) -> Any:  # pragma: no cover - every display defines it
        raise NotImplementedError

    def _axes(self, ax: Any, n: int) -> tuple[Any, Any]:
        """``n`` panel axes as a (1, n) array: a new figure when ``ax`` is None, else the given axes."""
        if ax is None:
            return new_figure(n)
        arr = np.empty(n, dtype=object)
        given = list(np.ravel(np.asarray(ax, dtype=object)))
        if len(given) != n:
            raise LosslabError(f"{type(self).__name__} draws {n} panels; got {len(given)} axes")
        arr[:] = given
        return arr[0].figure, arr.reshape(1, n)

    def _done(self, fig: Any, axes: Any) -> None:
        self.figure_, self.ax_, self.axes_ = fig, axes, axes

    def savefig(self, path: str | Path, **kwargs: Any) -> Path:
        """Atomic ``Figure.savefig`` of the plotted figure (format from the suffix, dpi 120 by default)."""
        if self.figure_ is None:
            raise LosslabError("call .plot() before .savefig()")
        return save_figure(self.figure_, path, **kwargs)

    def close(self) -> None:
        """Close the plotted figure (pyplot keeps figures open until closed)."""
        import matplotlib.pyplot as plt

        if self.figure_ is not None:
            plt.close(self.figure_)


def _log_panel(ax: Any, xlabel: str, ylabel: str, title: str, *, ylog: bool = False) -> None:
    """Log x axis (log y with ``ylog``), labels, a small legend and the title of a panel."""
    ax.set_xscale("log")
    if ylog:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.set_title(title)


def _heat(ax: Any, M: np.ndarray, title: str, ticks: Sequence[Any] | None = None, vmin: float = -1,
          vmax: float = 1, cmap: str = "RdBu_r") -> None:
    im = ax.imshow(M, vmin=vmin, vmax=vmax, cmap=cmap)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title)
    if ticks is not None and len(ticks) <= 20:
        ax.set_xticks(range(len(ticks)), [str(t) for t in ticks])
        ax.set_yticks(range(len(ticks)), [str(t) for t in ticks])


class StiffnessDisplay(_Display):
    """Class-pair cosine and sign stiffness matrices and stiffness vs input distance.

    ``results`` may be several results (e.g. init and final); the matrices show the last one, the
    distance panel shows all, labelled by ``labels``.
    """

    def __init__(self, results: Sequence[Any], labels: Sequence[str] | None = None) -> None:
        if not results:
            raise LosslabError("nothing to plot")
        self.results = list(results)
        self.labels = list(labels) if labels is not None else [str(r.meta.get("step", i)) for i, r in enumerate(results)]

    @classmethod
    def from_result(cls, result: Any, *, ax: Any = None, labels: Sequence[str] | None = None) -> "StiffnessDisplay":
        """Plot one :class:`~losslab.probes.StiffnessResult`; returns the display."""
        return cls.from_results([result], ax=ax, labels=labels)

    @classmethod
    def from_results(cls, results: Sequence[Any], labels: Sequence[str] | None = None, *,
                     ax: Any = None) -> "StiffnessDisplay":
        """Plot several results (e.g. init and final), the matrices of the last; returns the display."""
        return cls(results, labels).plot(ax=ax)

    def plot(self, ax: Any = None) -> "StiffnessDisplay":
        """Draw the three panels on ``ax`` (3 axes; a new figure when None); returns self."""
        fig, axes = self._axes(ax, 3)
        r = self.results[-1]
        _heat(axes[0, 0], r.class_cos, f"class cosine stiffness ({self.labels[-1]})", r.classes.tolist())
        _heat(axes[0, 1], r.class_sign, f"class sign stiffness ({self.labels[-1]})", r.classes.tolist())
        ax = axes[0, 2]
        for res, lab in zip(self.results, self.labels):
            c = 0.5 * (res.distance_edges[1:] + res.distance_edges[:-1])
            ok = res.distance_count > 0
            ax.plot(c[ok], res.distance_cos[ok], "o-", label=f"cos {lab}")
            ax.plot(c[ok], res.distance_sign[ok], "s--", label=f"sign {lab}", alpha=0.7)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel("input distance ||x_i - x_j||")
        ax.set_ylabel("mean stiffness")
        ax.set_title("stiffness vs distance")
        ax.legend(fontsize=7)
        fig.tight_layout()
        self._done(fig, axes)
        return self


class NTKDisplay(_Display):
    """Kernel distance to init/final and kernel velocity along training, plus (optionally) the test error
    of linearized vs full training from several checkpoints."""

    def __init__(self, velocity: Any, linearization: Any = None) -> None:
        self.velocity = velocity
        self.linearization = linearization

    @classmethod
    def from_result(cls, velocity: Any, linearization: Any = None, *, ax: Any = None) -> "NTKDisplay":
        """Plot a :class:`~losslab.probes.KernelVelocityResult` (and a linearization result); returns the display."""
        return cls(velocity, linearization).plot(ax=ax)

    def plot(self, ax: Any = None) -> "NTKDisplay":
        """Draw 2 panels (3 with a linearization) on ``ax`` (a new figure when None); returns self."""
        v = self.velocity
        n = 3 if self.linearization is not None else 2
        fig, axes = self._axes(ax, n)
        s = np.maximum(v.steps.astype(float), 0) + 1
        ax = axes[0, 0]
        ax.plot(s, v.distance_from_init, "o-", label="d(K_0, K_t)")
        ax.plot(s, v.distance_to_final, "s-", label="d(K_t, K_T)")
        _log_panel(ax, "1 + step", "kernel distance", "NTK distance")
        ax = axes[0, 1]
        mid = np.sqrt(s[1:] * s[:-1])
        ok = v.velocity_step > 0
        ax.plot(mid[ok], v.velocity_step[ok], "o-", label="per step")
        ok2 = v.velocity_logstep > 0
        ax.plot(mid[ok2], v.velocity_logstep[ok2], "s--", label="per ln-step")
        _log_panel(ax, "1 + step", "kernel velocity", "NTK velocity", ylog=True)
        if self.linearization is not None:
            lz = self.linearization
            ax = axes[0, 2]
            x = lz.steps.astype(float) + 1
            ax.plot(x, lz.linear_test_error, "o-", label="linearized")
            ax.plot(x, lz.full_test_error, "s-", label="full network")
            ax.plot(x, lz.start_test_error, "^:", label="at checkpoint")
            _log_panel(ax, "1 + step linearized at", "test error", "linearized training")
        fig.tight_layout()
        self._done(fig, axes)
        return self


class DiversityDisplay(_Display):
    """Disagreement between runs, t-SNE and PCA of prediction vectors along trajectories, and ensembles."""

    def plot(self, ax: Any = None) -> "DiversityDisplay":
        """Draw the four panels on ``ax`` (4 axes; a new figure when None); returns self."""
        r = self.result
        fig, axes = self._axes(ax, 4)
        _heat(axes[0, 0], r.disagreement, "prediction disagreement", list(range(len(r.disagreement))), 0,
              max(1e-9, float(np.nanmax(r.disagreement))) if r.disagreement.size else 1, "viridis")
        for ax, emb, name in ((axes[0, 1], r.tsne, "t-SNE"), (axes[0, 2], r.pca, "PCA")):
            ax.set_title(f"{name} of predictions")
            if not np.isfinite(emb).all():
                ax.text(0.5, 0.5, "not computed", ha="center", transform=ax.transAxes)
                continue
            for run in np.unique(r.traj_run):
                m = r.traj_run == run
                ax.plot(emb[m, 0], emb[m, 1], "-", alpha=0.4)
                sc = ax.scatter(emb[m, 0], emb[m, 1], c=np.log1p(r.traj_step[m]), cmap="viridis", s=18)
                ax.scatter(emb[m, 0][-1], emb[m, 1][-1], marker="*", s=120, color="k")
            fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.04, label="ln(1 + step)")
        ax = axes[0, 3]
        ens = r.summary.get("ensemble_accuracy", {})
        names = [k for k in ("single_mean", "independent", "trajectory", "random", "diag", "pca")
                 if isinstance(ens.get(k), (int, float)) and ens.get(k) is not None and np.isfinite(ens.get(k))]
        vals = [ens[k] for k in names]
        ax.bar(range(len(names)), vals, color="C0")
        ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
        if vals:
            lo = min(vals)
            ax.set_ylim(max(0.0, lo - 0.1), min(1.0, max(vals) + 0.05))
        ax.set_ylabel("test accuracy")
        ax.set_title("ensembles")
        fig.tight_layout()
        self._done(fig, axes)
        return self


class FactorizationDisplay(_Display):
    """Loss, unobserved entry, norms and effective rank of deep 2x2 factorizations over GD steps."""

    def __init__(self, results: Sequence[Any]) -> None:
        self.results = list(results)

    @classmethod
    def from_result(cls, result: Any, *, ax: Any = None) -> "FactorizationDisplay":
        """Plot one factorization result; returns the display."""
        return cls.from_results([result], ax=ax)

    @classmethod
    def from_results(cls, results: Sequence[Any], *, ax: Any = None) -> "FactorizationDisplay":
        """Plot several factorization results (e.g. one per depth); returns the display."""
        return cls(results).plot(ax=ax)

    def plot(self, ax: Any = None) -> "FactorizationDisplay":
        """Draw the four panels on ``ax`` (4 axes; a new figure when None); returns self."""
        fig, axes = self._axes(ax, 4)
        panels = [("loss", "loss", True), ("unobserved", "|unobserved entry|", True),
                  ("nuclear", "nuclear norm", True), ("effective_rank", "effective rank", False)]
        for ax, (key, title, logy) in zip(axes[0], panels):
            for r in self.results:
                ax.plot(r.steps + 1, getattr(r, key), label=f"depth {r.meta.get('depth')}")
            ax.set_xscale("log")
            if logy:
                ax.set_yscale("log")
            ax.set_xlabel("1 + GD step")
            ax.set_title(title)
        axes[0, 0].legend(fontsize=8)
        fig.tight_layout()
        self._done(fig, axes)
        return self
