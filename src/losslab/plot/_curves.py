"""Displays of the curve-like results the commands plot: connecting paths, interpolations,
instability barriers, gradient-noise scales and λmax over training (scikit-learn style, as in
:mod:`losslab.plot`). Nothing here recomputes anything."""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import LosslabError
from ._common import DisplayMixin

__all__ = ["PathsDisplay", "InterpolationDisplay", "InstabilityDisplay", "NoiseScaleDisplay",
           "SharpnessTrajectoryDisplay"]


def _panels(ax: Any, n: int, figsize: tuple[float, float], who: str) -> tuple[Any, np.ndarray]:
    """``(figure, (1, n) array of axes)``: a new figure when ``ax`` is None, else the ``n`` axes given."""
    if ax is None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, n, figsize=figsize, squeeze=False)
        return fig, axes
    given = list(np.ravel(np.asarray(ax, dtype=object)))
    if len(given) != n:
        raise LosslabError(f"{who} draws {n} panel(s); got {len(given)} axes")
    arr = np.empty(n, dtype=object)
    arr[:] = given
    return arr[0].figure, arr.reshape(1, n)


def _one(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    if ax is None:
        import matplotlib.pyplot as plt

        return plt.subplots(figsize=figsize)
    return ax.figure, ax


class PathsDisplay(DisplayMixin):
    """Loss (left) and, when recorded, error (right) along connecting paths; train solid, test dashed.

    Args:
        results: ``{name: path result}``, each with ``alphas`` and ``metrics[split][metric]``.

    Attributes (after ``plot``): ``figure_``, ``ax_`` (a (1, n) array of the panels' axes).
    """

    def __init__(self, results: Mapping[str, Any]) -> None:
        self.results = dict(results)

    @classmethod
    def from_result(cls, results: Mapping[str, Any], *, ax: Any = None) -> "PathsDisplay":
        """Plot ``{name: path result}`` (one result per connecting curve); returns the display."""
        return cls(results).plot(ax=ax)

    def plot(self, ax: Any = None) -> "PathsDisplay":
        """Draw on ``ax`` (1 or 2 axes; a new figure when None); returns self."""
        import matplotlib.pyplot as plt

        results = self.results
        metrics = ["loss"] + (["error"] if any("error" in m for r in results.values() for m in r.metrics.values())
                              else [])
        fig, axes = _panels(ax, len(metrics), (5.5 * len(metrics), 4), "PathsDisplay")
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (name, r) in enumerate(results.items()):
            for a, m in zip(axes[0], metrics):
                for split, style in (("train", "-"), ("test", "--")):
                    if split in r.metrics and m in r.metrics[split]:
                        a.plot(r.alphas, r.metrics[split][m], style, color=colors[i % len(colors)],
                               label=f"{name} ({split})")
        for a, m in zip(axes[0], metrics):
            a.set_xlabel("position along the path (α, t or arc length)")
            a.set_ylabel(m)
            a.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        self.figure_, self.ax_ = fig, axes
        return self


class InterpolationDisplay(DisplayMixin):
    """Loss and error along a linear interpolation (Goodfellow et al. 2015), one curve per split.

    Args:
        alphas: (n,) interpolation coefficients (0 and 1 are marked).
        results: ``{split: line result}`` with ``metrics["loss"]`` (and ``"accuracy"``).
        label: what was interpolated (in the title).

    Attributes (after ``plot``): ``figure_``, ``ax_`` (a (1, 2) array: loss, error).
    """

    def __init__(self, alphas: Any, results: Mapping[str, Any], label: str = "") -> None:
        self.alphas, self.results, self.label = np.asarray(alphas), dict(results), label

    @classmethod
    def from_result(cls, results: Mapping[str, Any], *, alphas: Any = None, label: str = "",
                    ax: Any = None) -> "InterpolationDisplay":
        """Plot ``{split: line result}`` (``alphas`` default: the first result's ``x``); returns the display."""
        if alphas is None:
            alphas = next(iter(results.values())).x
        return cls(alphas, results, label).plot(ax=ax)

    def plot(self, ax: Any = None) -> "InterpolationDisplay":
        """Draw on ``ax`` (2 axes; a new figure when None); returns self."""
        fig, axes = _panels(ax, 2, (9, 3.5), "InterpolationDisplay")
        ax1, ax2 = axes[0]
        for split, r in self.results.items():
            ax1.plot(self.alphas, r.metrics["loss"], label=split)
            if "accuracy" in r.metrics:
                ax2.plot(self.alphas, 1.0 - r.metrics["accuracy"], label=split)
        for a, name in ((ax1, "loss"), (ax2, "error")):
            a.axvline(0, color="0.7", lw=0.8)
            a.axvline(1, color="0.7", lw=0.8)
            a.set_xlabel("a")
            a.set_ylabel(name)
            a.legend()
        fig.suptitle(f"linear interpolation, {self.label}")
        fig.tight_layout()
        self.figure_, self.ax_ = fig, axes
        return self


class InstabilityDisplay(DisplayMixin):
    """Error barrier (max − mean, and above the chord) vs spawn step of an instability analysis.

    Args:
        result: an instability result (``spawn_steps``, ``barriers(...)``, ``threshold``, ``summary()``).

    Attributes (after ``plot``): ``figure_``, ``ax_``.
    """

    def __init__(self, result: Any) -> None:
        self.result = result

    @classmethod
    def from_result(cls, result: Any, *, ax: Any = None) -> "InstabilityDisplay":
        """Plot ``result`` on ``ax`` (a new figure when None); returns the display."""
        return cls(result).plot(ax=ax)

    def plot(self, ax: Any = None) -> "InstabilityDisplay":
        """Draw on ``ax`` (a new figure when None); returns self."""
        res = self.result
        split = res.summary()["split"]
        k = np.asarray(res.spawn_steps, dtype=float)
        fig, ax = _one(ax, (5.5, 4))
        x = np.where(k == 0, 0.5, k)  # k = 0 drawn at 0.5 on the log axis
        ax.plot(x, res.barriers("error", split=split), "o-", label=f"{split} error barrier (max - mean)")
        ax.plot(x, res.barriers("error", split=split, kind="interp"), "s--", label="above the chord")
        ax.axhline(res.threshold, color="gray", lw=0.8, ls=":", label=f"threshold {res.threshold:g}")
        ax.set_xscale("log")
        ax.set_xticks(x, [str(int(v)) for v in k])
        ax.set_xlabel("spawn step k")
        ax.set_ylabel("barrier")
        ax.legend(fontsize=8)
        fig.tight_layout()
        self.figure_, self.ax_ = fig, ax
        return self


class NoiseScaleDisplay(DisplayMixin):
    """The gradient-noise scale: over steps (B_simple, tr(Σ), |G|²) or, for one record, its parts and
    the covariance's top eigenvalues.

    Args:
        records: dicts with ``step``, ``b_simple``, ``b_simple_unbiased``, ``trace_cov``,
            ``grad_norm_sq`` and ``top_eigenvalues``.

    Attributes (after ``plot``): ``figure_``, ``ax_`` (a (1, 2) array).
    """

    def __init__(self, records: Sequence[Mapping[str, Any]]) -> None:
        if not records:
            raise LosslabError("nothing to plot: no records")
        self.records = list(records)

    @classmethod
    def from_result(cls, records: Sequence[Mapping[str, Any]], *, ax: Any = None) -> "NoiseScaleDisplay":
        """Plot the records on ``ax`` (2 axes; a new figure when None); returns the display."""
        return cls(records).plot(ax=ax)

    def plot(self, ax: Any = None) -> "NoiseScaleDisplay":
        """Draw on ``ax`` (2 axes; a new figure when None); returns self."""
        records = self.records
        fig, axes2 = _panels(ax, 2, (9.5, 3.6), "NoiseScaleDisplay")
        axes = axes2[0]
        if len(records) > 1:
            steps = np.array([r["step"] for r in records], dtype=float)
            a = axes[0]
            a.plot(steps, [r["b_simple"] for r in records], "o-", ms=3, label="B_simple")
            a.plot(steps, [r["b_simple_unbiased"] for r in records], "s--", ms=3, label="bias-corrected")
            a.set_yscale("log")
            a.set_xlabel("step")
            a.set_ylabel("noise scale (examples)")
            a.legend(fontsize=8)
            a = axes[1]
            a.plot(steps, [r["trace_cov"] for r in records], "o-", ms=3, label="tr(Σ)")
            a.plot(steps, [r["grad_norm_sq"] for r in records], "s-", ms=3, label="|G|²")
            a.set_yscale("log")
            a.set_xlabel("step")
            a.legend(fontsize=8)
        else:
            r = records[-1]
            axes[0].bar(["tr(Σ)", "|G|²"], [r["trace_cov"], r["grad_norm_sq"]])
            axes[0].set_yscale("log")
            axes[0].set_title(f"B_simple = {r['b_simple']:.3g}", fontsize=9)
            ev = np.asarray(r["top_eigenvalues"])
            axes[1].semilogy(np.arange(1, len(ev) + 1), ev, "o-", ms=3)
            axes[1].set_xlabel("index")
            axes[1].set_ylabel("covariance eigenvalue")
        fig.tight_layout()
        self.figure_, self.ax_ = fig, axes2
        return self


class SharpnessTrajectoryDisplay(DisplayMixin):
    """λmax over training steps with the :math:`2/η` line (edge-of-stability / break-even plot).

    Args:
        records: curvature-tracking records (dicts with ``step``, ``lambda_max``, ``two_over_lr``...).
        threshold: ``"two_over_lr"`` (:math:`2/η`), ``"stability"`` (:math:`(2+2β)/η`) or ``"none"``.
        grad_cov: also draw the gradient-covariance top eigenvalue (dotted).
        log: logarithmic y axis.
        label, color: of the λmax curve (the threshold is dashed in the same color).

    Attributes (after ``plot``): ``figure_``, ``ax_``.
    """

    def __init__(self, records: Sequence[Mapping[str, Any]], *, threshold: str = "two_over_lr",
                 grad_cov: bool = False, log: bool = True, label: str | None = None,
                 color: str | None = None) -> None:
        if threshold not in ("two_over_lr", "stability", "none"):
            raise LosslabError(f"threshold must be 'two_over_lr', 'stability' or 'none', got {threshold!r}")
        self.records, self.threshold, self.grad_cov = list(records), threshold, grad_cov
        self.log, self.label, self.color = log, label, color

    @classmethod
    def from_result(cls, result: Any, *, ax: Any = None, **kwargs: Any) -> "SharpnessTrajectoryDisplay":
        """Plot a :class:`~losslab.curvature.CurvatureTracker` (anything with ``records``) or its records
        on ``ax`` (a new figure when None); ``kwargs`` as in the constructor. For a run directory or a
        ``curvature.json``, :func:`losslab.curvature.plot_sharpness_trajectory` reads the records (plot
        depends on no analysis module)."""
        if isinstance(result, (str, os.PathLike)):
            raise LosslabError("SharpnessTrajectoryDisplay.from_result takes a CurvatureTracker or its records; for "
                               f"a file ({os.fspath(result)}) use losslab.curvature.plot_sharpness_trajectory or "
                               "load_curvature_records")
        recs = list(result.records) if hasattr(result, "records") else list(result)
        return cls(recs, **kwargs).plot(ax=ax)

    def plot(self, ax: Any = None) -> "SharpnessTrajectoryDisplay":
        """Draw on ``ax`` (a new figure when None); returns self."""
        recs, label, color = self.records, self.label, self.color
        fig, ax = _one(ax, (6, 4))
        pts = [(r["step"], r["lambda_max"]) for r in recs if r.get("lambda_max") is not None]
        if pts:
            (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3,
                              label=label or "λmax (Hessian)", color=color)
            color = line.get_color()
        if self.threshold != "none":
            key = "two_over_lr" if self.threshold == "two_over_lr" else "stability_threshold"
            th = [(r["step"], r[key]) for r in recs if r.get(key) is not None]
            if th:
                name = "2/η" if self.threshold == "two_over_lr" else "(2+2β)/η"
                ax.step([p[0] for p in th], [p[1] for p in th], where="post", ls="--", color=color,
                        label=f"{name}" + (f" ({label})" if label else ""))
        if self.grad_cov:
            gc = [(r["step"], r["grad_cov_top"]) for r in recs if r.get("grad_cov_top") is not None]
            if gc:
                ax.plot([p[0] for p in gc], [p[1] for p in gc], ls=":", marker=".", color=color,
                        label="λmax (gradient covariance)" + (f" ({label})" if label else ""))
        if self.log:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("eigenvalue")
        ax.legend(fontsize=8)
        self.figure_, self.ax_ = fig, ax
        return self
