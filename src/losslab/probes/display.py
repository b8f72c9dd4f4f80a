"""Matplotlib displays of probe results (scikit-learn style: ``Display.from_result(...)`` plots and returns
the display with ``figure_`` and ``axes_``; ``display.savefig(path)`` writes atomically). Nothing here
recomputes anything."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import LosslabError
from ._common import new_figure, save_figure

__all__ = ["StiffnessDisplay", "NTKDisplay", "DiversityDisplay", "FactorizationDisplay"]


class _Display:
    figure_: Any = None
    axes_: Any = None

    def savefig(self, path: str | Path, **kwargs: Any) -> Path:
        if self.figure_ is None:
            raise LosslabError("call .plot() before .savefig()")
        return save_figure(self.figure_, path, **kwargs)

    def close(self) -> None:
        import matplotlib.pyplot as plt

        if self.figure_ is not None:
            plt.close(self.figure_)


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
    def from_result(cls, result: Any, **kwargs: Any) -> "StiffnessDisplay":
        return cls.from_results([result], **kwargs)

    @classmethod
    def from_results(cls, results: Sequence[Any], labels: Sequence[str] | None = None) -> "StiffnessDisplay":
        return cls(results, labels).plot()

    def plot(self) -> "StiffnessDisplay":
        fig, axes = new_figure(3)
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
        self.figure_, self.axes_ = fig, axes
        return self


class NTKDisplay(_Display):
    """Kernel distance to init/final and kernel velocity along training, plus (optionally) the test error
    of linearized vs full training from several checkpoints."""

    def __init__(self, velocity: Any, linearization: Any = None) -> None:
        self.velocity = velocity
        self.linearization = linearization

    @classmethod
    def from_result(cls, velocity: Any, linearization: Any = None) -> "NTKDisplay":
        return cls(velocity, linearization).plot()

    def plot(self) -> "NTKDisplay":
        v = self.velocity
        n = 3 if self.linearization is not None else 2
        fig, axes = new_figure(n)
        s = np.maximum(v.steps.astype(float), 0) + 1
        ax = axes[0, 0]
        ax.plot(s, v.distance_from_init, "o-", label="d(K_0, K_t)")
        ax.plot(s, v.distance_to_final, "s-", label="d(K_t, K_T)")
        ax.set_xscale("log")
        ax.set_xlabel("1 + step")
        ax.set_ylabel("kernel distance")
        ax.legend(fontsize=8)
        ax.set_title("NTK distance")
        ax = axes[0, 1]
        mid = np.sqrt(s[1:] * s[:-1])
        ok = v.velocity_step > 0
        ax.plot(mid[ok], v.velocity_step[ok], "o-", label="per step")
        ok2 = v.velocity_logstep > 0
        ax.plot(mid[ok2], v.velocity_logstep[ok2], "s--", label="per ln-step")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("1 + step")
        ax.set_ylabel("kernel velocity")
        ax.legend(fontsize=8)
        ax.set_title("NTK velocity")
        if self.linearization is not None:
            lz = self.linearization
            ax = axes[0, 2]
            x = lz.steps.astype(float) + 1
            ax.plot(x, lz.linear_test_error, "o-", label="linearized")
            ax.plot(x, lz.full_test_error, "s-", label="full network")
            ax.plot(x, lz.start_test_error, "^:", label="at checkpoint")
            ax.set_xscale("log")
            ax.set_xlabel("1 + step linearized at")
            ax.set_ylabel("test error")
            ax.legend(fontsize=8)
            ax.set_title("linearized training")
        fig.tight_layout()
        self.figure_, self.axes_ = fig, axes
        return self


class DiversityDisplay(_Display):
    """Disagreement between runs, t-SNE and PCA of prediction vectors along trajectories, and ensembles."""

    def __init__(self, result: Any) -> None:
        self.result = result

    @classmethod
    def from_result(cls, result: Any) -> "DiversityDisplay":
        return cls(result).plot()

    def plot(self) -> "DiversityDisplay":
        r = self.result
        fig, axes = new_figure(4)
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
        self.figure_, self.axes_ = fig, axes
        return self


class FactorizationDisplay(_Display):
    """Loss, unobserved entry, norms and effective rank of deep 2x2 factorizations over GD steps."""

    def __init__(self, results: Sequence[Any]) -> None:
        self.results = list(results)

    @classmethod
    def from_results(cls, results: Sequence[Any]) -> "FactorizationDisplay":
        return cls(results).plot()

    def plot(self) -> "FactorizationDisplay":
        fig, axes = new_figure(4)
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
        self.figure_, self.axes_ = fig, axes
        return self
