"""C5 — Independent runs differ in function space far more than points of one trajectory; ensembles of
them win (Fort, Hu & Lakshminarayanan 2019, "Deep ensembles: a loss landscape perspective").

``R`` MLPs are trained on MNIST-1D from different seeds (initialization and data order), keeping a
checkpoint every epoch. On the test set, with :math:`\\hat y_a(x) = \\arg\\max_k p_a(k \\mid x)`:

* across-run disagreement: mean over pairs of final solutions :math:`a \\ne b` of
  :math:`\\frac1N \\sum_n [\\hat y_a(x_n) \\ne \\hat y_b(x_n)]`;
* within-trajectory disagreement: mean disagreement of a run's *earlier* checkpoints with its own final
  solution, over the checkpoints whose test accuracy is within ``accuracy_tolerance`` of the final one
  (:func:`losslab.probes.diversity`; "at similar accuracy");
* ensembles (mean of softmaxes): the ``R`` independent final solutions vs, for each run, its last
  ``R`` checkpoints (same size; the mean over runs is judged), and, for context, ``R`` samples around
  run 0's solution from the statistics of its trajectory tail (random / diagonal / PCA Gaussian);
* t-SNE and PCA of the checkpoints' prediction vectors (figure).

Check: across-run disagreement > within-trajectory disagreement, and the independent ensemble is more
accurate than the same-trajectory ensemble. Inconclusive when the runs did not train (train error above
``train_error_max``), are not matched in accuracy, or no checkpoint reached similar accuracy.

Deviation from the shared recipe: the runs are :func:`recipes.mnist1d_mlp` trained twice as long (30
epochs, a checkpoint every epoch). With the shared 15-epoch runs the trajectory has not converged
(train error ~0.2, test accuracy still rising between the last log-spaced checkpoints), so no earlier
checkpoint is at an accuracy similar to the final one and the comparison is not the paper's.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import Check, ExperimentResult, Verdict, verdict_from_checks
from .common import Timer, describe_data, new_figure, save_figure, train_run

ID = "C5"
VERSION = 1
COST = {"quick": 30, "full": 240}


def converged_mlp(profile: str = "quick") -> TrainConfig:
    """:func:`recipes.mnist1d_mlp` trained to convergence with a checkpoint every epoch.

    quick: 40-256-256-10, SGD lr 0.05, momentum 0.9, 30 epochs (train error < 0.01);
    full: 40-512-512-10, 40 epochs.
    """
    base = recipes.mnist1d_mlp(profile)
    epochs = 30 if profile == "quick" else 40
    return dataclasses.replace(base, optim=dataclasses.replace(base.optim, epochs=epochs),
                               ckpt=dataclasses.replace(base.ckpt, checkpoints="epoch:1"))


@dataclass(frozen=True)
class Config:
    """C5 settings.

    Attributes:
        train: the recipe of every run (:func:`converged_mlp`).
        seeds: seeds of the independent runs (init and data order).
        accuracy_tolerance: a checkpoint is "at similar accuracy" when its test accuracy is within this
            of its run's final accuracy.
        ensemble_size: members of the trajectory and subspace ensembles (default: number of runs).
        tail: last checkpoints of run 0 whose statistics define the subspace samples.
        train_error_max: precondition: every final train error at most this.
        match_tolerance: precondition: final test accuracies differ by at most this.
        seed: seed of the subspace samples and t-SNE.
    """

    train: TrainConfig = field(default_factory=lambda: converged_mlp("quick"))
    seeds: tuple[int, ...] = (0, 1, 2)
    accuracy_tolerance: float = 0.01
    ensemble_size: int | None = None
    tail: int = 5
    train_error_max: float = 0.1
    match_tolerance: float = 0.05
    seed: int = 0

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        return cls(train=converged_mlp("full"), seeds=(0, 1, 2, 3, 4))


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    """Train (or reuse) the runs, compare them in function space, judge, plot."""
    from ..probes import diversity, ensemble_accuracy, predictions

    timer = Timer()
    with timer("train"):
        runs = [train_run(recipes.with_seed(config.train, s), cache_dir, progress) for s in config.seeds]
    m_size = config.ensemble_size if config.ensemble_size is not None else max(2, len(runs))
    with timer("diversity"):
        res = diversity(runs, split="test", ensemble_size=m_size, tail=config.tail,
                        accuracy_tolerance=config.accuracy_tolerance, seed=config.seed)
    s = res.summary
    bundle = runs[0].bundle()
    # the same-trajectory ensemble of every run (the library's summary uses run 0 only)
    with timer("ensembles"):
        model = runs[0].build_model()
        y = bundle.test.y.cpu().numpy()
        traj_ens = []
        for r in runs:
            last = [step for step, _ in r.checkpoints()][-m_size:]
            pr = predictions(model, [r.state_dict(step) for step in last], bundle.test.x)
            traj_ens.append(ensemble_accuracy(pr, y))
    ens = s["ensemble_accuracy"]
    m: dict[str, Any] = {
        "runs": [{"seed": sd, "train_error": r.summary["train_error"], "test_error": r.summary["test_error"],
                  "final_accuracy": float(a), "run": r.path.name}
                 for sd, r, a in zip(config.seeds, runs, res.final_accuracy)],
        "across_run_disagreement": s["across_run_disagreement"],
        "within_trajectory_disagreement": s["within_trajectory_disagreement"],
        "matched_checkpoints": s["within_trajectory_matched_checkpoints"],
        "across_run_js": s["across_run_js"],
        "across_run_weight_cosine": s["across_run_weight_cosine"],
        "ensemble": {
            "size": m_size, "single_mean": ens["single_mean"], "independent": ens["independent"],
            "independent_size": ens["independent_size"],
            "trajectory_per_run": traj_ens, "trajectory_mean": float(np.mean(traj_ens)),
            **{k: ens[k] for k in ("random", "diag", "pca") if k in ens},
        },
        "subspace_samples": s.get("subspace_samples", {}),
        "trajectory": {"run": res.traj_run.tolist(), "step": res.traj_step.tolist(),
                       "accuracy": res.traj_accuracy.tolist(), "disagreement_with_final": res.traj_disagreement.tolist()},
        "accuracy_tolerance": config.accuracy_tolerance,
        "train_error_max": config.train_error_max,
        "match_tolerance": config.match_tolerance,
    }
    progress(f"disagreement across runs {m['across_run_disagreement']:.3f} vs within trajectory "
             f"{m['within_trajectory_disagreement']:.3f}; ensemble independent {ens['independent']:.3f} vs "
             f"trajectory {m['ensemble']['trajectory_mean']:.3f}")
    verdict = judge(m)

    with timer("plot"):
        fig_ref = _figure(res, m, work_dir)

    e = m["ensemble"]
    key = {
        "disagreement across runs": m["across_run_disagreement"],
        "disagreement within trajectory": m["within_trajectory_disagreement"],
        "ensemble acc. independent / trajectory": f"{e['independent']:.3f} / {e['trajectory_mean']:.3f}",
        "single-model accuracy": e["single_mean"],
        "weight cosine across runs": m["across_run_weight_cosine"],
    }
    sub = ", ".join(f"{k} {e[k]:.3f}" for k in ("random", "diag", "pca") if k in e)
    comparison = (
        f"{len(runs)} independent MLPs (test accuracy {', '.join(format(r['final_accuracy'], '.3f') for r in m['runs'])}) "
        f"disagree on {m['across_run_disagreement']:.1%} of test inputs pairwise; checkpoints of one trajectory at "
        f"similar accuracy (within {config.accuracy_tolerance:g}; {m['matched_checkpoints']} checkpoints) disagree "
        f"with their own final solution on {m['within_trajectory_disagreement']:.1%}. Displacements of independent "
        f"runs are nearly orthogonal (weight cosine {m['across_run_weight_cosine']:.3f}). Ensembles of {m_size}: "
        f"independent {e['independent']:.3f}, same trajectory {e['trajectory_mean']:.3f} (per run "
        f"{', '.join(f'{a:.3f}' for a in traj_ens)}), single models {e['single_mean']:.3f}; subspace samples around "
        f"one solution: {sub}."
    )
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"runs": list(config.seeds), "samples_and_tsne": config.seed,
               "note": "init and data order from each run's seed"},
        data=describe_data(bundle) + "; predictions on the full test set", timings=timer.seconds,
        notes=[("Runs: the shared MNIST-1D MLP recipe trained for 30 epochs (not 15) with a checkpoint every epoch, "
                "so that earlier checkpoints reach an accuracy similar to the final one.")],
    )


def _figure(res: Any, m: Mapping[str, Any], work_dir: Path) -> Any:
    fig, axes = new_figure(2, 2, width=4.6, height=3.6)
    runs = sorted(set(res.traj_run.tolist()))
    for ax, emb, name in ((axes[0, 0], res.tsne, "t-SNE"), (axes[0, 1], res.pca, "PCA")):
        for r in runs:
            sel = res.traj_run == r
            pts = emb[sel]
            ax.plot(pts[:, 0], pts[:, 1], "-", color=f"C{r}", lw=0.8, alpha=0.6)
            ax.scatter(pts[:, 0], pts[:, 1], s=10, color=f"C{r}", alpha=0.7)
            ax.scatter(pts[0, 0], pts[0, 1], s=45, facecolors="none", edgecolors=f"C{r}", marker="o")
            ax.scatter(pts[-1, 0], pts[-1, 1], s=110, color=f"C{r}", marker="*", edgecolors="k", linewidths=0.5,
                       label=f"seed {m['runs'][r]['seed']}")
        ax.set_title(f"{name} of test-set predictions along each run\n(o: init, *: final)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7)
    ax = axes[1, 0]
    tol = m["accuracy_tolerance"]
    for r in runs:
        sel = (res.traj_run == r)
        acc, dis = res.traj_accuracy[sel][:-1], res.traj_disagreement[sel][:-1]
        ax.plot(acc, dis, "o-", ms=3, lw=0.8, color=f"C{r}", label=f"seed {m['runs'][r]['seed']}: checkpoint vs own final")
    ax.axhline(m["across_run_disagreement"], color="k", ls="--", lw=1,
               label=f"across runs (finals): {m['across_run_disagreement']:.3f}")
    ax.axhline(m["within_trajectory_disagreement"], color="0.4", ls=":", lw=1.2,
               label=f"within trajectory, acc. within {tol:g}: {m['within_trajectory_disagreement']:.3f}")
    lo = min(r["final_accuracy"] for r in m["runs"]) - tol
    ax.axvspan(lo, max(r["final_accuracy"] for r in m["runs"]), color="0.9", zorder=0)
    ax.set_xlabel("test accuracy of the checkpoint")
    ax.set_ylabel("prediction disagreement")
    ax.set_ylim(0, None)
    ax.legend(fontsize=6.5)
    ax = axes[1, 1]
    e = m["ensemble"]
    names = ["single\n(mean)", "trajectory\n(mean)", "independent"] + [k for k in ("random", "diag", "pca") if k in e]
    vals = [e["single_mean"], e["trajectory_mean"], e["independent"]] + [e[k] for k in ("random", "diag", "pca") if k in e]
    colors = ["0.6", "C1", "C2"] + ["C7"] * (len(names) - 3)
    ax.bar(range(len(vals)), vals, color=colors)
    for i, v in enumerate(vals):
        ax.text(i, v + 0.002, f"{v:.3f}", ha="center", fontsize=7)
    ax.set_xticks(range(len(vals)), names, fontsize=7)
    lo = min(vals)
    ax.set_ylim(max(0.0, lo - 0.05), min(1.0, max(vals) + 0.02))
    ax.set_ylabel("test accuracy")
    ax.set_title(f"ensembles of {e['size']} (subspace: samples around seed {m['runs'][0]['seed']})", fontsize=9)
    return save_figure(fig, work_dir, "function_space",
                       "Top: t-SNE and PCA of the prediction vectors of every checkpoint of each run. Bottom left: "
                       "disagreement of each checkpoint with its own run's final solution vs its accuracy, against "
                       "the disagreement between independent final solutions (dashed). Bottom right: ensemble "
                       "accuracies.")


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m``: ``runs`` (``seed``, ``train_error``, ``final_accuracy``), ``across_run_disagreement``,
    ``within_trajectory_disagreement``, ``matched_checkpoints``, ``ensemble`` (``independent``,
    ``trajectory_mean``, ``size``), thresholds ``train_error_max``, ``match_tolerance``, ``accuracy_tolerance``."""
    emax, tol = float(m["train_error_max"]), float(m["match_tolerance"])
    checks = []
    for r in m["runs"]:
        checks.append(Check(f"seed {r['seed']} trained", r["train_error"] <= emax,
                            f"train error {r['train_error']:.3f} (needs <= {emax:g})", precondition=True))
    accs = [r["final_accuracy"] for r in m["runs"]]
    checks.append(Check("runs matched", len(accs) >= 2 and max(accs) - min(accs) <= tol,
                        f"{len(accs)} runs, test accuracies {min(accs):.3f}..{max(accs):.3f} (spread needs <= {tol:g})",
                        precondition=True))
    k = int(m["matched_checkpoints"])
    checks.append(Check("checkpoints at similar accuracy", k > 0,
                        f"{k} earlier checkpoints within {float(m['accuracy_tolerance']):g} of their run's final accuracy",
                        precondition=True))
    a, w = float(m["across_run_disagreement"]), float(m["within_trajectory_disagreement"])
    checks.append(Check("across runs > within trajectory", a > w,
                        f"disagreement {a:.3f} across runs vs {w:.3f} within a trajectory ({a / w:.2g}x)" if w > 0 else
                        f"disagreement {a:.3f} across runs vs {w:.3f} within a trajectory"))
    e = m["ensemble"]
    ind, tr = float(e["independent"]), float(e["trajectory_mean"])
    checks.append(Check("independent ensemble wins", ind > tr,
                        f"ensemble of {e.get('size', '?')}: independent {ind:.3f} vs same trajectory {tr:.3f} "
                        f"({ind - tr:+.3f})"))
    return verdict_from_checks(checks)
