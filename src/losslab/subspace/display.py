"""Matplotlib displays for subspace results (matplotlib is imported only when plotting)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write
from ..errors import LosslabError

from .intrinsic import IntrinsicDimResult

__all__ = ["IntrinsicDimDisplay", "savefig"]


def savefig(figure: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write ``figure`` atomically (temp file + rename); the format comes from the suffix (default png)."""
    if figure is None:
        raise LosslabError("call .plot() before .savefig()")
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    kwargs.setdefault("dpi", 120)
    kwargs.setdefault("bbox_inches", "tight")
    return atomic_write(path, lambda fh: figure.savefig(fh, format=fmt, **kwargs))


class _ResultDisplay:
    """The scikit-learn-style shell of the subspace displays: ``from_result``, ``savefig`` and the axes."""

    def __init__(self, result: Any, *, title: str | None = None) -> None:
        self.result = result
        self.title = title
        self.ax_: Any = None
        self.figure_: Any = None

    @classmethod
    def from_result(cls, result: Any, *, ax: Any = None, title: str | None = None) -> Any:
        """Plot ``result`` on ``ax`` (a new figure when None); returns the display (scikit-learn style)."""
        return cls(result, title=title).plot(ax=ax)

    def plot(self, ax: Any = None) -> Any:  # pragma: no cover - every display defines it
        raise NotImplementedError

    def savefig(self, path: str | os.PathLike, **kwargs: Any) -> Path:
        """Atomic ``Figure.savefig`` of the plotted figure."""
        return savefig(self.figure_, path, **kwargs)

    def _axes(self, ax: Any) -> Any:
        """``ax``, or the axes of a new 5.5 x 4 figure; sets ``ax_`` and ``figure_``."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5.5, 4))
        self.ax_, self.figure_ = ax, ax.figure
        return ax


class IntrinsicDimDisplay(_ResultDisplay):
    """Accuracy vs subspace dimension (log x): per-seed points, the mean, the baseline, the target line
    (``threshold x baseline``) and :math:`d_{int}` with its bracket.

    Example:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> r = IntrinsicDimResult.from_table([10, 100, 1000], [[0.3], [0.8], [0.95]], 1.0)
        >>> disp = IntrinsicDimDisplay.from_result(r)
        >>> disp.ax_.get_xscale()
        'log'
    """

    result: IntrinsicDimResult

    def plot(self, ax: Any = None) -> "IntrinsicDimDisplay":
        """Draw on ``ax`` (a new figure when None); sets ``figure_`` and ``ax_``; returns self."""
        r = self.result
        ax = self._axes(ax)
        v = r.metrics[r.metric]
        for j in range(len(r.seeds)):
            sel = r.done[:, j]
            ax.scatter(r.dims[sel], v[sel, j], s=14, color="0.55", alpha=0.7, zorder=2,
                       label="runs" if j == 0 else None)
        mean = r.mean()
        ok = np.isfinite(mean)
        ax.plot(r.dims[ok], mean[ok], "o-", color="C0", zorder=3, label=f"mean {r.metric.replace('_', ' ')}")
        c = r.crossing()
        if np.isfinite(r.baseline):
            ax.axhline(r.baseline, color="k", lw=1, ls="--", label=f"full space {r.baseline:.3f}")
            ax.axhline(c["target"], color="C3", lw=1, ls=":",
                       label=f"{int(round(100 * r.threshold))}% of full ({c['target']:.3f})")
        if c["d"] is not None:
            lab = f"$d_{{int{int(round(100 * r.threshold))}}}$ ≈ {c['d']:.0f}"
            if c["status"] == "at_first":
                lab = f"$d_{{int}}$ ≤ {c['d']:.0f}"
            ax.axvline(c["d"], color="C3", lw=1.2, label=lab)
            if c["d_lo"] is not None:
                ax.axvspan(c["d_lo"], c["d_hi"], color="C3", alpha=0.08, lw=0)
        elif c["status"] == "not_reached":
            ax.text(0.02, 0.03, "target not reached in the grid", transform=ax.transAxes, va="bottom", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("subspace dimension d")
        ax.set_ylabel(r.metric.replace("_", " "))
        proj = r.meta.get("settings", {}).get("projection")
        ax.set_title(self.title or f"intrinsic dimension ({proj} projection, D={r.meta.get('D')})", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3, which="both")
        return self
