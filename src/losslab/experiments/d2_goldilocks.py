"""D2 — The Goldilocks zone (Fort & Scherlis 2019, arXiv 1807.02581).

A standard initialization :math:`\\theta_{init}` (PyTorch's default for the zoo MLP) is rescaled to
:math:`\\theta_r = r\\,\\theta_{init}` for radii ``r`` on a log grid (``r`` = multiple of the init norm). At each
:math:`\\theta_r` the Hessian of the training loss restricted to a random ``d``-dimensional subspace,
:math:`H_{sub} = P^\\top H(\\theta_r) P` (exact, ``d`` Hessian-vector products:
:func:`losslab.goldilocks.restricted_hessian`), gives

.. math::

    \\rho(r) = \\frac{\\mathrm{Tr}(H_{sub})}{\\lVert H_{sub} \\rVert_F} \\in [-\\sqrt d, \\sqrt d],
    \\qquad f(r) = \\rho(r)/\\sqrt d,

and the fraction of positive eigenvalues (:func:`losslab.goldilocks.subspace_curvature`). For a random
symmetric (GOE) matrix :math:`\\rho` is about :math:`\\mathcal N(0, 2/d)`, so :math:`\\rho \\ge 5\\sqrt{2/d}` is
"clearly > 0". Then, in the *same* subspace, training starts at :math:`\\theta_r`
(:func:`losslab.subspace.train_subspace`, :math:`\\theta = \\theta_r + Pz`) and succeeds when the test accuracy
reaches ``success_accuracy``. Training uses SGD with momentum: its steps scale with the local gradient, so the
run probes the landscape around the start radius; Adam's per-coordinate steps (about ``lr`` each, whatever
the gradient) jump away from small radii in the first steps, which makes the start radius irrelevant there.

The zone is the band of radii with :math:`f(r) \\ge` ``band_fraction`` :math:`\\times \\max_r f` around the peak
(mean over seeds). Checks:

* precondition: subspace training succeeds at some radius and fails at some radius (else the budget cannot
  discriminate);
* decisive: at the peak :math:`\\rho \\ge` ``clear_sigmas`` :math:`\\sqrt{2/d}` (clearly positive);
* decisive: :math:`f` falls below ``band_fraction`` of the peak at both ends of the grid (a band, not a
  monotone trend);
* decisive: the success rate over all (radius, seed) cells inside the band exceeds the rate outside;
* context: the positive-eigenvalue fraction and the mean test accuracy inside vs outside, and the success
  rate inside vs *below* and vs *above* the band separately. A hyperplane :math:`\\theta_r + Pz` (random ``P``,
  nearly orthogonal to :math:`\\theta_r`) only contains radii :math:`\\gtrsim r`, so from below the zone it still
  crosses the zone and training can get there (more so with more epochs), while from above it cannot: the
  trainability contrast is expected mainly on the large-radius side.

Seeds: seed ``s`` gives the init (``model_factory(s)``), the projection (seed ``104729 s + d``, shared by all
radii of that seed) and the data order of training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ._base import Check, ExperimentResult, Verdict, verdict_from_checks
from .common import Timer, describe_data, new_figure, save_figure
from .d1_intrinsic_dim import (
    fmax,
    fmin,
    load_data,
    log_ticks,
    mlp_factory,
    nanmean_rows,
)

ID = "D2"
VERSION = 1
COST = {"quick": 20, "full": 300}


@dataclass(frozen=True)
class Config:
    """D2 settings.

    Attributes:
        dataset, dataset_kwargs, subsample: the data.
        width, depth, activation: the MLP (zoo ``mlp``, PyTorch default init).
        radii: multiples of each seed's init norm.
        d: subspace dimension (Hessian and training).
        seeds: seeds (init, projection, data order).
        projection: ``dense``, ``sparse`` or ``fastfood``.
        hessian_examples: the first this many training examples define the loss whose Hessian is taken.
        epochs, lr, momentum, batch_size: subspace training (SGD on z).
        success_accuracy: a run succeeds when its final test accuracy reaches this.
        band_fraction: the zone is where f(r) >= band_fraction * peak.
        clear_sigmas: "clearly > 0": peak rho >= clear_sigmas * sqrt(2 / d).
    """

    dataset: str = "digits"
    dataset_kwargs: dict = field(default_factory=dict)
    subsample: int = 0
    width: int = 64
    depth: int = 1
    activation: str = "tanh"
    radii: tuple[float, ...] = (0.05, 0.15, 0.4, 1.0, 2.5, 6.0, 15.0, 40.0)
    d: int = 50
    seeds: tuple[int, ...] = (0, 1, 2)
    projection: str = "dense"
    hessian_examples: int = 500
    epochs: int = 10
    lr: float = 0.5
    momentum: float = 0.9
    batch_size: int = 128
    success_accuracy: float = 0.5
    band_fraction: float = 0.5
    clear_sigmas: float = 5.0

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        return cls(radii=(0.03, 0.06, 0.15, 0.3, 0.6, 1.0, 1.6, 2.5, 4.0, 6.0, 10.0, 15.0, 25.0, 40.0, 80.0),
                   seeds=tuple(range(8)), hessian_examples=1347, epochs=20)


def _loss_acc(model: Any, theta: Any, like: Mapping[str, Any], x: Any, y: Any) -> tuple[float, float]:
    import torch
    import torch.nn.functional as F

    from .. import params

    with torch.no_grad():
        out = params.call(model, params.unflatten(theta, like), x)
        return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).double().mean())


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    """Curvature and subspace training at every (radius, seed); judge; plot."""

    from .. import params
    from ..goldilocks import restricted_hessian, subspace_curvature
    from ..subspace import make_projection, train_subspace

    timer = Timer()
    bundle = load_data(config.dataset, config.dataset_kwargs, config.subsample)
    make = mlp_factory(bundle, config.width, config.depth, config.activation)
    hx, hy = bundle.train.x[: config.hessian_examples], bundle.train.y[: config.hessian_examples]
    nr, ns = len(config.radii), len(config.seeds)
    keys = ("trace_over_frobenius", "positive_fraction", "lambda_min", "lambda_max", "loss", "accuracy",
            "test_accuracy", "train_accuracy", "success", "final_radius")
    cells = {k: np.full((nr, ns), np.nan) for k in keys}
    init_norms = []
    D = None
    for j, s in enumerate(config.seeds):
        model = make(s)
        like = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
        theta = params.flatten(like)
        rho = float(theta.norm())
        init_norms.append(rho)
        D = int(theta.numel())
        P = make_projection(config.projection, D, config.d, seed=104729 * int(s) + config.d)
        for i, r in enumerate(config.radii):
            theta_r = theta * float(r)
            with timer("hessian"):
                c = subspace_curvature(restricted_hessian(model, (hx, hy), P, point=theta_r))
                loss, acc = _loss_acc(model, theta_r, like, hx, hy)
            with timer("train"):
                tr = train_subspace(model, bundle, config.d, projection=P, theta0=theta_r, epochs=config.epochs,
                                    lr=config.lr, optimizer="sgd", momentum=config.momentum,
                                    batch_size=config.batch_size, order_seed=int(s))
            vals = {k: c[k] for k in ("trace_over_frobenius", "positive_fraction", "lambda_min", "lambda_max")}
            ok = math.isfinite(tr.test_accuracy) and not tr.diverged and tr.test_accuracy >= config.success_accuracy
            vals.update(loss=loss, accuracy=acc, test_accuracy=tr.test_accuracy if not tr.diverged else float("nan"),
                        train_accuracy=tr.train_accuracy if not tr.diverged else float("nan"), success=float(ok),
                        final_radius=tr.meta["final_norm"] / rho)
            for k, v in vals.items():
                cells[k][i, j] = v
        progress(f"seed {s}: Tr/|H| " + " ".join(f"{v:.2f}" for v in cells["trace_over_frobenius"][:, j]) +
                 "; test acc " + " ".join(f"{v:.2f}" for v in cells["test_accuracy"][:, j]))
    mean = {k: nanmean_rows(v).tolist() for k, v in cells.items()}
    m = {"radii": list(config.radii), "seeds": list(config.seeds), "d": config.d, "D": D,
         "init_norms": init_norms, "cells": {k: v.tolist() for k, v in cells.items()}, "mean": mean,
         "success_accuracy": config.success_accuracy, "band_fraction": config.band_fraction,
         "clear_sigmas": config.clear_sigmas}
    m.update(analyse(m))
    verdict = judge(m)

    with timer("plot"):
        fig_ref = _figure(m, config, work_dir)
    lo, hi = m["band"]
    key = {
        "zone (r / init norm)": f"{lo:g} .. {hi:g}" if m["band_ok"] else "none",
        "peak Tr(H)/|H|_F": f"{m['peak_rho']:.2f} at r = {m['peak_radius']:g} (noise {m['noise_rho']:.2f})",
        "Tr/|H| at the grid ends": f"{m['rho_first']:.2f} / {m['rho_last']:.2f}",
        "success rate inside / outside": f"{m['success_inside']:.2f} / {m['success_outside']:.2f}",
        "test accuracy inside / outside": f"{m['acc_inside']:.3f} / {m['acc_outside']:.3f}",
    }
    comparison = (
        f"Tr(H_sub)/||H_sub||_F in random {config.d}-dim subspaces of a {config.activation} MLP "
        f"{config.width}x{config.depth} (D = {D}) peaks at {m['peak_rho']:.2f} (random-matrix scale "
        f"{m['noise_rho']:.2f}) at r = {m['peak_radius']:g} x the default init norm and falls to {m['rho_first']:.2f} at "
        f"r = {config.radii[0]:g} and {m['rho_last']:.2f} at r = {config.radii[-1]:g}; the zone (>= "
        f"{config.band_fraction:g} of the peak) is r in [{lo:g}, {hi:g}]. Subspace training from those radii reached "
        f"test accuracy >= {config.success_accuracy:g} in {m['success_inside']:.0%} of runs vs {m['success_outside']:.0%} "
        f"outside (mean accuracy {m['acc_inside']:.3f} vs {m['acc_outside']:.3f})."
    )
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"runs": list(config.seeds), "note": "seed s: init, projection 104729 s + d, data order"},
        data=describe_data(bundle) + f"; Hessian on the first {len(hx)} training examples", timings=timer.seconds,
        notes=[(f"Radii are multiples of the PyTorch default init norm (uniform +-1/sqrt(fan_in)), which is "
               f"sqrt(6) smaller than He init; subspace training: SGD lr {config.lr:g}, momentum {config.momentum:g}, "
               f"{config.epochs} epochs, batch {config.batch_size}.")],
    )


def analyse(m: Mapping[str, Any]) -> dict[str, Any]:
    """Band, peak and inside/outside rates from ``m["radii"]``, ``m["d"]``, ``m["cells"]`` (``(nr, ns)`` lists of
    ``trace_over_frobenius``, ``success``, ``test_accuracy``) and ``m["band_fraction"]``."""
    radii = np.asarray(m["radii"], dtype=float)
    d = int(m["d"])
    rho_cells = np.asarray(m["cells"]["trace_over_frobenius"], dtype=float)
    rho = nanmean_rows(rho_cells)
    k = int(np.nanargmax(rho)) if np.isfinite(rho).any() else 0
    level = float(m["band_fraction"]) * rho[k]
    inside = np.zeros(len(radii), bool)
    inside[k] = True
    for step in (-1, 1):  # the contiguous run of radii around the peak above the level
        i = k + step
        while 0 <= i < len(radii) and rho[i] >= level:
            inside[i] = True
            i += step
    idx = np.arange(len(radii))
    below = ~inside & (idx < k)
    above = ~inside & (idx > k)
    succ = np.asarray(m["cells"]["success"], dtype=float)
    acc = np.asarray(m["cells"]["test_accuracy"], dtype=float)

    def rate(a: np.ndarray, sel: np.ndarray) -> float:
        v = a[sel].ravel()
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else math.nan

    band_ok = bool(rho[0] < level and rho[-1] < level)
    return {
        "rho_mean": rho.tolist(), "peak_index": k, "peak_radius": float(radii[k]), "peak_rho": float(rho[k]),
        "noise_rho": math.sqrt(2.0 / d), "rho_first": float(rho[0]), "rho_last": float(rho[-1]),
        "inside": inside.tolist(), "band": [float(radii[inside].min()), float(radii[inside].max())],
        "band_ok": band_ok,
        "success_inside": rate(succ, inside), "success_outside": rate(succ, ~inside),
        "success_below": rate(succ, below), "success_above": rate(succ, above),
        "acc_inside": rate(acc, inside), "acc_outside": rate(acc, ~inside),
        "success_any": fmax(nanmean_rows(succ)),
        "success_min": fmin(nanmean_rows(succ)),
    }


def _figure(m: Mapping[str, Any], config: Config, work_dir: Path) -> Any:
    radii = m["radii"]
    fig, axes = new_figure(2, 1, width=4.6, height=3.4)
    ax = axes[0]
    rho = np.asarray(m["cells"]["trace_over_frobenius"])
    d = m["d"]
    for j in range(rho.shape[1]):
        ax.plot(radii, rho[:, j] / math.sqrt(d), color="C0", alpha=0.25, lw=0.8)
    ax.plot(radii, np.asarray(m["rho_mean"]) / math.sqrt(d), "o-", color="C0", label=r"Tr$(H)/\|H\|_F/\sqrt{d}$")
    ax.plot(radii, m["mean"]["positive_fraction"], "s-", color="C1", ms=4, label="fraction λ > 0")
    ax.axhline(m["band_fraction"] * m["peak_rho"] / math.sqrt(d), color="C0", ls=":", lw=1, label="band level")
    ax.axhspan(-m["noise_rho"] / math.sqrt(d) * m["clear_sigmas"], m["noise_rho"] / math.sqrt(d) * m["clear_sigmas"],
               color="0.9", zorder=0, label=f"±{m['clear_sigmas']:g}σ random matrix")
    lo, hi = m["band"]
    for a in axes:
        a.axvspan(lo, hi, color="C2", alpha=0.12, zorder=0)
        a.axvline(1.0, color="0.4", ls="--", lw=0.8)
    ax.set_xlabel("radius / default init norm")
    ax.set_title(f"curvature in random {d}-dim subspaces", fontsize=10)
    log_ticks(ax, radii)
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.plot(radii, m["mean"]["success"], "^-", color="C2", label=f"success rate (test acc >= {m['success_accuracy']:g})")
    ax.plot(radii, m["mean"]["test_accuracy"], "o-", color="C3", label="mean test accuracy")
    ax.plot(radii, m["mean"]["accuracy"], "x:", color="0.5", label="train accuracy at start")
    ax.set_xlabel("radius / default init norm")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"SGD in the same subspace ({config.epochs} epochs)", fontsize=10)
    log_ticks(ax, radii)
    ax.legend(fontsize=7)
    return save_figure(fig, work_dir, "goldilocks",
                       "Left: Tr(H)/||H||_F (normalized by sqrt d) and the fraction of positive eigenvalues of the "
                       "Hessian restricted to random subspaces vs the init radius (thin: seeds); green: the zone "
                       "(>= band level); grey band: random-matrix noise. Right: training in the same subspaces from "
                       "each radius. Dashed: the default init.")


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m``: ``radii``, ``d``, ``cells`` (``trace_over_frobenius``, ``success``, ``test_accuracy``: ``(nr, ns)``),
    ``band_fraction``, ``clear_sigmas`` (the band and rates are recomputed by :func:`analyse`)."""
    a = analyse(m)
    checks = [
        Check("training succeeds somewhere", a["success_any"] > 0,
              f"best success rate over radii {a['success_any']:.2f}", precondition=True),
        Check("training fails somewhere", a["success_min"] < 1,
              f"worst success rate over radii {a['success_min']:.2f}", precondition=True),
    ]
    need = float(m["clear_sigmas"]) * a["noise_rho"]
    checks.append(Check("Tr(H)/|H| clearly > 0 in the zone", a["peak_rho"] >= need,
                        f"peak {a['peak_rho']:.2f} at r = {a['peak_radius']:g} (needs >= {need:.2f} = "
                        f"{float(m['clear_sigmas']):g} x random-matrix sd {a['noise_rho']:.2f})"))
    lvl = float(m["band_fraction"]) * a["peak_rho"]
    checks.append(Check("falls off on both sides", a["band_ok"],
                        f"Tr/|H| {a['rho_first']:.2f} at r = {m['radii'][0]:g}, {a['peak_rho']:.2f} at the peak, "
                        f"{a['rho_last']:.2f} at r = {m['radii'][-1]:g} (both ends need < {lvl:.2f}); zone "
                        f"r in [{a['band'][0]:g}, {a['band'][1]:g}]"))
    si, so = a["success_inside"], a["success_outside"]
    checks.append(Check("training succeeds more often inside", None if math.isnan(si) or math.isnan(so) else si > so,
                        f"success rate {si:.2f} inside vs {so:.2f} outside"))
    pos = np.asarray(m["cells"].get("positive_fraction", []), dtype=float)
    if pos.size:
        pm = nanmean_rows(pos)
        inside = np.asarray(a["inside"])
        checks.append(Check("more positive eigenvalues inside", float(pm[inside].mean()) > float(pm[~inside].mean())
                            if (~inside).any() else None,
                            f"fraction λ>0 {pm[inside].mean():.3f} inside vs "
                            f"{pm[~inside].mean() if (~inside).any() else float('nan'):.3f} outside", decisive=False))
    for side in ("below", "above"):
        v = a[f"success_{side}"]
        if not math.isnan(v):
            checks.append(Check(f"succeeds more often inside than {side}", si > v,
                                f"success rate {si:.2f} inside vs {v:.2f} {side} the zone", decisive=False))
    checks.append(Check("higher test accuracy inside", None if math.isnan(a["acc_inside"]) or math.isnan(a["acc_outside"])
                        else a["acc_inside"] > a["acc_outside"],
                        f"mean test accuracy {a['acc_inside']:.3f} inside vs {a['acc_outside']:.3f} outside",
                        decisive=False))
    return verdict_from_checks(checks)
