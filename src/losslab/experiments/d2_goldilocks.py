"""D2 — The Goldilocks zone (Fort & Scherlis 2019, arXiv 1807.02581).

A standard initialization :math:`\\theta_{init}` (PyTorch's default for the zoo MLP) is rescaled to
:math:`\\theta_r = r\\,\\theta_{init}` for radii ``r`` on a log grid (``r`` = multiple of the init norm). At each
:math:`\\theta_r` the Hessian of the training loss restricted to a random ``d``-dimensional subspace,
:math:`H_{sub} = P^\\top H(\\theta_r) P` (exact, ``d`` Hessian-vector products:
:func:`losslab.subspace.goldilocks.restricted_hessian`), gives

.. math::

    \\rho(r) = \\frac{\\mathrm{Tr}(H_{sub})}{\\lVert H_{sub} \\rVert_F} \\in [-\\sqrt d, \\sqrt d],

and the fraction of positive eigenvalues (:func:`losslab.subspace.goldilocks.subspace_curvature`). For a random
symmetric (GOE) matrix :math:`\\rho` is about :math:`\\mathcal N(0, 2/d)`; :math:`\\rho` is reported in units of
that standard deviation :math:`\\sigma_d = \\sqrt{2/d}` (0.2 for ``d = 50``), and "clearly > 0" means
:math:`\\rho > 5\\sigma_d`. Then, in the *same* subspace, training starts at :math:`\\theta_r`
(:func:`losslab.subspace.train_subspace`, :math:`\\theta = \\theta_r + Pz`) and succeeds when the test accuracy
reaches :data:`SUCCESS_ACCURACY`. Training uses SGD with momentum: its steps scale with the local gradient, so the
run probes the landscape around the start radius (Adam's per-coordinate steps jump away from small radii).

Every statistic is computed per seed ``s`` on that seed's own curve :math:`\\rho_s(r)`: its peak, its zone (the
contiguous run of radii around the peak with :math:`\\rho_s \\ge` :data:`BAND_FRACTION` x peak), the ratio of the
larger end value to the peak, and the success rate of subspace training inside minus outside its zone. The
pre-registered criteria (:data:`CRITERIA`) judge them on 95% t-intervals over seeds.

Negative control: the same measurement on a *linear* softmax model (depth 0, no hidden layer). Its loss is
convex, so :math:`H \\succeq 0` and :math:`\\rho \\ge 1` at every radius: curvature is positive everywhere rather
than in a zone, so "falls off on both sides" should fail; it is judged by the same :func:`judge`.

Seeds: seed ``s`` gives the init (``model_factory(s)``), the projection (seed ``104729 s + d``, shared by all
radii of that seed) and the data order of training; the control uses the same seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ._base import ExperimentResult, Verdict, verdict_from_checks
from .common import describe_data, interval_text, new_figure, row_result, same_seeds, save_figure, Timer
from .criteria import Control, Criteria, Criterion
from .d1_intrinsic_dim import load_data, log_ticks, mlp_factory, MLPTask, nanmean_rows, undecided_as_inf

ID = "D2"
VERSION = 2
COST = {"quick": 25, "full": 300}

BAND_FRACTION = 0.5
"""The zone: radii around the peak where rho >= BAND_FRACTION x the peak (same seed)."""
SUCCESS_ACCURACY = 0.5
"""Subspace training from a radius succeeds when its final test accuracy reaches this (chance: 0.1)."""
CLEAR_SIGMAS = 5.0
""""Clearly > 0": rho above this many random-matrix standard deviations sqrt(2/d)."""

CRITERIA = Criteria(
    preconditions=(
        Criterion("training succeeds somewhere", "fraction of (radius, seed) cells where subspace training reaches "
                  f"test accuracy >= {SUCCESS_ACCURACY:g}", ">", 0.0,
                  "a trainability comparison needs some successes (else the budget cannot discriminate)",
                  precondition=True),
        Criterion("training fails somewhere", "fraction of (radius, seed) cells where subspace training reaches "
                  f"test accuracy >= {SUCCESS_ACCURACY:g}", "<", 1.0,
                  "a trainability comparison needs some failures (else the budget cannot discriminate)",
                  precondition=True),
    ),
    claims=(
        Criterion("Tr(H)/|H| clearly > 0 in the zone", "peak over radii of Tr(H_sub)/||H_sub||_F, in units of the "
                  "random-matrix sd sqrt(2/d), each seed's own curve", ">", CLEAR_SIGMAS,
                  "Fort & Scherlis 2019: a large Tr(H)/||H|| in the zone; for a random symmetric (GOE) matrix "
                  "Tr/||.||_F ~ N(0, 2/d), so 5 sd is 'clearly' (pre-existing survey threshold)"),
        Criterion("falls off on both sides", "max(rho at the smallest radius, rho at the largest radius) / peak rho, "
                  "each seed's own curve", "<", BAND_FRACTION,
                  "Fort & Scherlis 2019 Fig. 2: a band of radii (a shell), rho near 0 inside and outside it; the "
                  "zone is where rho >= half the peak (pre-existing survey band level)"),
        Criterion("training succeeds more often inside", "success rate of subspace training from radii inside the "
                  "seed's zone minus from radii outside it", ">", 0.0,
                  "Fort & Scherlis 2019 Sec. 4: training on a random hyperplane reaches high accuracy when the "
                  "hyperplane starts in the zone; SURVEY check 'succeeds more often inside it'"),
        Criterion("more positive eigenvalues inside", "fraction of positive eigenvalues of H_sub, mean inside the "
                  "zone minus mean outside", ">", 0.0, "context: Fort & Scherlis 2019 report an excess of positive "
                  "eigenvalues in the zone", decisive=False),
        Criterion("higher test accuracy inside", "test accuracy after subspace training, mean inside the zone minus "
                  "mean outside", ">", 0.0, "context: the continuous version of the success rate", decisive=False),
        Criterion("succeeds more often inside than below", "success rate inside the zone minus below it", ">", 0.0,
                  "context: a hyperplane from below the zone can still cross it", decisive=False),
        Criterion("succeeds more often inside than above", "success rate inside the zone minus above it", ">", 0.0,
                  "context: a hyperplane from above the zone cannot reach smaller radii", decisive=False),
    ),
    control="a linear softmax model (no hidden layer) with the same data, radii (multiples of its own init norm), "
            "d, seeds and training: its loss is convex, so H_sub is positive semi-definite and Tr/||.||_F >= 1 at "
            "every radius, i.e. positive curvature everywhere rather than in a zone; same judge",
    seeds="5 independent seeds in quick, 8 in full; seed s gives the init, the projection (shared by all radii of "
          "the seed) and the data order; each statistic is computed on one seed's radius curve",
    registered="2026-12-04",
    changes=(
        "criterion changed on 2026-12-04 because issue 14: the peak, the fall-off and the success-rate difference "
        "are computed per seed on its own curve and judged on 95% t-intervals over seeds instead of on the "
        "seed-mean curve and pooled cells (thresholds 5 sd, half the peak and 'more often' unchanged); the peak is "
        "stated in random-matrix sd units so that the text, the check and the figure use one scale",
    ),
)


@dataclass(frozen=True)
class Config(MLPTask):
    """D2 settings: the data and the MLP as :class:`~losslab.experiments.d1_intrinsic_dim.MLPTask`.

    Attributes:
        activation: the MLP's activation.
        control_depth: hidden layers of the negative-control model (0: linear softmax, convex loss).
        radii: multiples of each seed's init norm.
        d: subspace dimension (Hessian and training).
        seeds: seeds (init, projection, data order); the control uses the same.
        projection: ``dense``, ``sparse`` or ``fastfood``.
        hessian_examples: the first this many training examples define the loss whose Hessian is taken.
        epochs, lr, momentum, batch_size: subspace training (SGD on z).
    """

    activation: str = "tanh"
    control_depth: int = 0
    radii: tuple[float, ...] = (0.05, 0.15, 0.4, 1.0, 2.5, 6.0, 15.0, 40.0)
    d: int = 50
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    projection: str = "dense"
    hessian_examples: int = 500
    epochs: int = 10
    lr: float = 0.5
    momentum: float = 0.9
    batch_size: int = 128

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


CELL_KEYS = ("trace_over_frobenius", "positive_fraction", "lambda_min", "lambda_max", "loss", "accuracy",
             "test_accuracy", "train_accuracy", "success", "final_radius")


def _measure(config: Config, bundle: Any, depth: int, label: str, timer: Timer,
             progress: Callable[[str], None]) -> dict[str, Any]:
    """Curvature and subspace training at every (radius, seed) of a model with ``depth`` hidden layers."""
    from .. import params
    from ..subspace.goldilocks import restricted_hessian, subspace_curvature
    from ..subspace import make_projection, train_subspace

    make = mlp_factory(bundle, config.width, depth, config.activation)
    hx, hy = bundle.train.x[: config.hessian_examples], bundle.train.y[: config.hessian_examples]
    nr, ns = len(config.radii), len(config.seeds)
    cells = {k: np.full((nr, ns), np.nan) for k in CELL_KEYS}
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
            with timer(f"hessian{'' if label == 'main' else '_' + label}"):
                c = subspace_curvature(restricted_hessian(model, (hx, hy), projection=P, point=theta_r))
                loss, acc = _loss_acc(model, theta_r, like, hx, hy)
            with timer(f"train{'' if label == 'main' else '_' + label}"):
                tr = train_subspace(model, bundle, d=config.d, projection=P, theta0=theta_r, epochs=config.epochs,
                                    lr=config.lr, optimizer="sgd", momentum=config.momentum,
                                    batch_size=config.batch_size, order_seed=int(s))
            vals = {k: c[k] for k in ("trace_over_frobenius", "positive_fraction", "lambda_min", "lambda_max")}
            ok = math.isfinite(tr.test_accuracy) and not tr.diverged and tr.test_accuracy >= SUCCESS_ACCURACY
            vals.update(loss=loss, accuracy=acc, test_accuracy=tr.test_accuracy if not tr.diverged else float("nan"),
                        train_accuracy=tr.train_accuracy if not tr.diverged else float("nan"), success=float(ok),
                        final_radius=tr.meta["final_norm"] / rho)
            for k, v in vals.items():
                cells[k][i, j] = v
        progress(f"{label} seed {s}: Tr/|H| " + " ".join(f"{v:.2f}" for v in cells["trace_over_frobenius"][:, j]) +
                 "; test acc " + " ".join(f"{v:.2f}" for v in cells["test_accuracy"][:, j]))
    return {"radii": list(config.radii), "seeds": list(config.seeds), "d": config.d, "D": D,
            "depth": depth, "init_norms": init_norms, "cells": {k: v.tolist() for k, v in cells.items()},
            "mean": {k: nanmean_rows(v).tolist() for k, v in cells.items()}}


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    """Curvature and subspace training at every (radius, seed), for the MLP and the linear control; judge; plot."""
    timer = Timer()
    bundle = load_data(config.dataset, config.dataset_kwargs, config.subsample)
    m = _measure(config, bundle, config.depth, "main", timer, progress)
    m["control"] = _measure(config, bundle, config.control_depth, "control", timer, progress)
    verdict = judge(m)
    control = Control(CRITERIA.control, judge(m["control"]))

    with timer("plot"):
        fig_ref = _figure(m, config, work_dir)
    per, cper = seed_analysis(m), seed_analysis(m["control"])
    sd = math.sqrt(2.0 / config.d)

    def peaks(ps: list[dict[str, Any]]) -> str:
        return ", ".join(f"{p['peak_rho']:.2f} at r={p['peak_radius']:g}" for p in ps)

    def iv(vals: list[float], fmt: str = ".2f") -> str:
        v = [x for x in vals if math.isfinite(x)]
        if len(v) < 2:
            return "undetermined"
        return interval_text(v, fmt) + ("" if len(v) == len(vals) else f" ({len(v)} seeds)")

    zones = ", ".join(f"[{p['band'][0]:g}, {p['band'][1]:g}]" for p in per)
    key = {
        "peak Tr(H)/|H|_F per seed (sd = sqrt(2/d))": f"{peaks(per)} (sd {sd:.2f})",
        "peak in sd units, mean [95% CI]": iv([p["peak_sd"] for p in per], ".1f"),
        "end / peak, mean [95% CI]": iv([p["end_ratio"] for p in per]),
        "zone per seed (r / init norm)": zones,
        "success inside - outside, mean [95% CI]": iv([p["success_diff"] for p in per]),
        "control (linear): end / peak; success inside - outside":
            f"{iv([p['end_ratio'] for p in cper])}; {iv([p['success_diff'] for p in cper])}",
    }
    si = ", ".join(f"{p['success_inside']:.2f}/{p['success_outside']:.2f}" for p in per)
    return row_result(ID, CRITERIA, config, m, verdict, control, key, fig_ref, timer,
        seeds=same_seeds(config.seeds, "seed s: init, projection 104729 s + d, data order"),
        data=describe_data(bundle) + f"; Hessian on the first {min(config.hessian_examples, len(bundle.train))} "
                                     "training examples",
        notes=[(f"Radii are multiples of the PyTorch default init norm (uniform +-1/sqrt(fan_in)), which is "
               f"sqrt(6) smaller than He init; subspace training: SGD lr {config.lr:g}, momentum {config.momentum:g}, "
               f"{config.epochs} epochs, batch {config.batch_size}.")],
        comparison=(
            f"Tr(H_sub)/||H_sub||_F in random {config.d}-dim subspaces of a {config.activation} MLP "
            f"{config.width}x{config.depth} (D = {m['D']}), {len(per)} seeds: the per-seed peak is {peaks(per)} "
            f"(random-matrix sd {sd:.2f}; in sd units {iv([p['peak_sd'] for p in per], '.1f')}); the larger "
            f"grid-end value is {iv([p['end_ratio'] for p in per])} of the peak (r = {config.radii[0]:g} and "
            f"{config.radii[-1]:g} x the default init norm). Zones (rho >= {BAND_FRACTION:g} x peak): {zones}. "
            "Subspace training reached test "
            f"accuracy >= {SUCCESS_ACCURACY:g} from inside / outside the zone at rates {si} per seed (difference "
            f"{iv([p['success_diff'] for p in per])}). Control, a linear softmax model (D = {m['control']['D']}, "
            "convex): "
            f"peak {peaks(cper)}, end / peak {iv([p['end_ratio'] for p in cper])}, success difference "
            f"{iv([p['success_diff'] for p in cper])}."
        ),
    )


def _zone(rho: np.ndarray, k: int) -> np.ndarray:
    """The contiguous run of radii around index ``k`` with ``rho >= BAND_FRACTION * rho[k]``."""
    level = BAND_FRACTION * rho[k]
    inside = np.zeros(len(rho), bool)
    inside[k] = True
    for step in (-1, 1):
        i = k + step
        while 0 <= i < len(rho) and np.isfinite(rho[i]) and rho[i] >= level:
            inside[i] = True
            i += step
    return inside


def _rate(a: np.ndarray, sel: np.ndarray) -> float:
    v = a[sel]
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def seed_analysis(m: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per seed (column of ``m["cells"]`` arrays ``(nr, ns)``: ``trace_over_frobenius``, ``success``, optionally
    ``test_accuracy`` and ``positive_fraction``): the peak of its rho curve, the peak in random-matrix sd units
    (``sqrt(2 / m["d"])``), its zone, the larger end value over the peak, and inside-minus-outside differences."""
    radii = np.asarray(m["radii"], dtype=float)
    sd = math.sqrt(2.0 / float(m["d"]))
    cells = {k: np.asarray(v, dtype=float).reshape(len(radii), -1) for k, v in m["cells"].items()}
    rho_all = cells["trace_over_frobenius"]
    nan = math.nan
    out = []
    for j in range(rho_all.shape[1]):
        rho = rho_all[:, j]
        seed = m["seeds"][j] if "seeds" in m else j
        if not np.isfinite(rho).any():
            out.append({"seed": seed, "peak_rho": nan, "peak_sd": nan, "peak_radius": nan, "end_ratio": nan,
                        "band": [nan, nan], "inside": [False] * len(radii), "success_inside": nan,
                        "success_outside": nan, "success_diff": nan, "below_diff": nan, "above_diff": nan,
                        "acc_diff": nan, "pos_diff": nan})
            continue
        k = int(np.nanargmax(rho))
        peak = float(rho[k])
        inside = _zone(rho, k)
        idx = np.arange(len(radii))
        below, above = ~inside & (idx < k), ~inside & (idx > k)
        ends = [float(rho[0]), float(rho[-1])]
        end_ratio = max(ends) / peak if peak > 0 and all(math.isfinite(e) for e in ends) else nan

        def diff(key: str, other: np.ndarray) -> float:
            if key not in cells:
                return nan
            return _rate(cells[key][:, j], inside) - _rate(cells[key][:, j], other)

        out.append({
            "seed": seed, "peak_rho": peak, "peak_sd": peak / sd, "peak_radius": float(radii[k]),
            "end_ratio": end_ratio, "band": [float(radii[inside].min()), float(radii[inside].max())],
            "inside": inside.tolist(),
            "success_inside": _rate(cells["success"][:, j], inside),
            "success_outside": _rate(cells["success"][:, j], ~inside),
            "success_diff": diff("success", ~inside), "below_diff": diff("success", below),
            "above_diff": diff("success", above), "acc_diff": diff("test_accuracy", ~inside),
            "pos_diff": diff("positive_fraction", ~inside),
        })
    return out


def _figure(m: Mapping[str, Any], config: Config, work_dir: Path) -> Any:
    radii = m["radii"]
    d = m["d"]
    sd = math.sqrt(2.0 / d)
    fig, axes = new_figure(3, 1, width=4.0, height=3.5)
    ctrl = m.get("control")
    main_rho = np.asarray(m["cells"]["trace_over_frobenius"], dtype=float)
    per = seed_analysis(m)
    ax = axes[0]
    for j in range(main_rho.shape[1]):
        ax.plot(radii, main_rho[:, j] / sd, color="C0", alpha=0.35, lw=0.8, marker=".", ms=3)
        ax.plot([per[j]["peak_radius"]], [per[j]["peak_sd"]], "v", color="C0", ms=4)
    ax.plot(radii, nanmean_rows(main_rho) / sd, "o-", color="C0", lw=2, ms=4,
            label=f"{config.activation} MLP (seeds thin, mean bold)")
    if ctrl:
        crho = np.asarray(ctrl["cells"]["trace_over_frobenius"], dtype=float)
        for j in range(crho.shape[1]):
            ax.plot(radii, crho[:, j] / sd, color="C3", alpha=0.35, lw=0.8, ls="--")
        ax.plot(radii, nanmean_rows(crho) / sd, "s--", color="C3", lw=1.5, ms=3, label="control: linear model")
    ax.axhline(CLEAR_SIGMAS, color="k", ls=":", lw=1, label=f"claim: > {CLEAR_SIGMAS:g} sd")
    ax.axhspan(-2, 2, color="0.9", zorder=0, label="±2 sd random matrix")
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_ylabel(f"Tr(H)/||H||_F in sd units (sd = sqrt(2/d) = {sd:.2f})")
    sec = ax.secondary_yaxis("right", functions=(lambda v: v * sd, lambda v: v / sd))
    sec.set_ylabel("Tr(H)/||H||_F", fontsize=8)
    ax.set_title(f"curvature in random {d}-dim subspaces", fontsize=10)
    ax = axes[1]
    pos = np.asarray(m["cells"]["positive_fraction"], dtype=float)
    for j in range(pos.shape[1]):
        ax.plot(radii, pos[:, j], color="C1", alpha=0.35, lw=0.8)
    ax.plot(radii, nanmean_rows(pos), "o-", color="C1", lw=2, ms=4, label=f"{config.activation} MLP")
    if ctrl:
        ax.plot(radii, nanmean_rows(np.asarray(ctrl["cells"]["positive_fraction"], dtype=float)), "s--", color="C3",
                ms=3, label="control: linear model")
    ax.axhline(0.5, color="0.5", lw=0.6, ls=":")
    ax.set_ylabel("fraction of eigenvalues of H_sub > 0")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("positive eigenvalues", fontsize=10)
    ax = axes[2]
    acc = np.asarray(m["cells"]["test_accuracy"], dtype=float)
    for j in range(acc.shape[1]):
        ax.plot(radii, acc[:, j], ".", color="C2", alpha=0.6, ms=5)
    ax.plot(radii, nanmean_rows(np.asarray(m["cells"]["success"], dtype=float)), "^-", color="C2", lw=2,
            label=f"success rate ({config.activation} MLP)")
    if ctrl:
        ax.plot(radii, nanmean_rows(np.asarray(ctrl["cells"]["success"], dtype=float)), "s--", color="C3", ms=3,
                label="success rate (control)")
    ax.axhline(SUCCESS_ACCURACY, color="0.5", ls=":", lw=1, label=f"success: test acc >= {SUCCESS_ACCURACY:g}")
    ax.set_ylabel("test accuracy (dots: seeds) / success rate")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"SGD in the same subspace ({config.epochs} epochs)", fontsize=10)
    for a in axes:
        a.axvline(1.0, color="0.4", ls="--", lw=0.8)
        for p in per:
            if math.isfinite(p["band"][0]):
                a.axvspan(p["band"][0], p["band"][1], color="C0", alpha=0.05, zorder=0)
        a.set_xlabel("radius / default init norm")
        log_ticks(a, radii)
        a.legend(fontsize=7)
    return save_figure(fig, work_dir, "goldilocks",
                       "Left: Tr(H)/||H||_F of the Hessian restricted to random subspaces vs the init radius, in "
                       "random-matrix sd units (left axis, the scale of the check) and raw (right axis, the numbers "
                       "in the text); thin: seeds (triangles: each seed's peak), red dashed: the linear-model control. "
                       "Middle: fraction of positive eigenvalues. Right: test accuracy after training in the same "
                       "subspace from each radius (dots: seeds) and the success rate. Shaded: each seed's zone; "
                       "dashed vertical: the default init.")


def judge(m: Mapping[str, Any]) -> Verdict:
    """Judge by :data:`CRITERIA`. ``m``: ``radii``, ``d``, optional ``seeds``, ``cells``
    (``trace_over_frobenius``, ``success``, optionally ``test_accuracy``, ``positive_fraction``: ``(nr, ns)``);
    the per-seed statistics come from :func:`seed_analysis`. The control is judged by calling this on
    ``m["control"]``."""
    per = seed_analysis(m)
    seeds = [p["seed"] for p in per]
    succ = np.asarray(m["cells"]["success"], dtype=float)
    frac = float(np.nanmean(succ)) if np.isfinite(succ).any() else math.nan
    zones = "zones " + ", ".join(f"[{p['band'][0]:g}, {p['band'][1]:g}]" for p in per)
    peaks = "peak Tr/|H| " + ", ".join(f"{p['peak_rho']:.2f} at r={p['peak_radius']:g}" for p in per)
    rates = "inside/outside " + ", ".join(f"{p['success_inside']:.2f}/{p['success_outside']:.2f}" for p in per)
    u = undecided_as_inf  # a seed without a value is undecided (inf survives the JSON round trip, NaN does not)

    def col(key: str) -> list[float]:
        return u([p[key] for p in per])

    checks = [
        CRITERIA["training succeeds somewhere"].judge(u([frac])),
        CRITERIA["training fails somewhere"].judge(u([frac])),
        CRITERIA["Tr(H)/|H| clearly > 0 in the zone"].judge(col("peak_sd"), seeds=seeds, unit="sd", note=peaks),
        CRITERIA["falls off on both sides"].judge(col("end_ratio"), seeds=seeds, note=zones),
        CRITERIA["training succeeds more often inside"].judge(col("success_diff"), seeds=seeds, note=rates),
    ]
    if "positive_fraction" in m["cells"]:
        checks.append(CRITERIA["more positive eigenvalues inside"].judge(col("pos_diff"), seeds=seeds))
    if "test_accuracy" in m["cells"]:
        checks.append(CRITERIA["higher test accuracy inside"].judge(col("acc_diff"), seeds=seeds))
    for side in ("below", "above"):
        if any(math.isfinite(p[f"{side}_diff"]) for p in per):
            checks.append(CRITERIA[f"succeeds more often inside than {side}"].judge(col(f"{side}_diff"), seeds=seeds))
    return verdict_from_checks(checks)
