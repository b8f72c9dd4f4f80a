"""Shared training recipes: the same :class:`~losslab.config.TrainConfig` gives the same run directory,
so experiments that use a recipe share its trained runs through the run cache (``cache_dir/runs``).

Use these in an experiment's ``Config`` when a SURVEY row measures the same kind of model as
another row; vary the seed with :func:`with_seed`. Each recipe has a ``"quick"`` profile sized for
one CPU core in seconds (SURVEY pilot regimes) and a ``"full"`` one. :class:`PairedRuns` (with
:func:`train_pairs`) is the ``Config`` base of the rows that compare runs of a recipe in disjoint pairs
of seeds (C2, C4, C5).

==============================  ==========================================  =======================
recipe                          what                                        used by
==============================  ==========================================  =======================
``mnist1d_mlp``                 SGD MLP on MNIST-1D (independent runs)      A1, C4 (and C2, C5)
``mnist1d_mlp_large_lr``        the same MLP, large-LR SGD (MLI contrast)   A1
``memorization_mlp(p)``         Adam MLP, label noise p (Zhang et al.)      (base of the next)
``random_labels_mlp(p)``        the same, quick on 1000 examples            A2, A3
``deep_linear_mlp(p)``          its deep *linear* twin (negative control)   A2, A3
``poison_pair``                 clean / poisoned MLP pair (Huang et al.)    A4 (and C1)
``skip_resnet(skip)``           deep 1-D ResNet with / without shortcuts    B1
==============================  ==========================================  =======================
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..config import TrainConfig
from ..errors import LosslabError
from .common import pairs_of, RowConfig, Timer, train_config, train_run

__all__ = ["with_seed", "with_label_noise", "mnist1d_mlp", "mnist1d_mlp_large_lr", "memorization_mlp",
           "random_labels_mlp", "deep_linear_mlp", "poison_pair", "skip_resnet", "digits_mlp", "PairedRuns",
           "train_pairs"]


def _profile(profile: str) -> str:
    if profile not in ("quick", "full"):
        raise LosslabError(f"profile must be 'quick' or 'full', got {profile!r}")
    return profile


def with_seed(config: Any, seed: int) -> Any:
    """The same recipe with every seed (init, data order, labels) set from ``seed``."""
    from ..config import SeedConfig

    return dataclasses.replace(config, seeds=SeedConfig(seed=int(seed)))


def with_label_noise(config: Any, p: float) -> Any:
    """The same recipe with a fraction ``p`` of the training labels replaced by random ones."""
    return dataclasses.replace(config, data=dataclasses.replace(config.data, label_noise=float(p)))


def mnist1d_mlp(profile: str = "quick") -> Any:
    """SGD MLP on MNIST-1D (4000 train / 1000 test): independently trained solutions.

    Both profiles train to a minimum (train error 0 on every seed measured; rows about minima check
    train error <= 1% as a precondition). quick: 40-256-256-10, SGD lr 0.05, momentum 0.9, batch 128,
    40 epochs (about 5 s; 15 epochs left train error 0.19, not a minimum); full: 40-512-512-10,
    60 epochs.
    """
    if _profile(profile) == "quick":
        return train_config(dataset="mnist1d", model="mlp", model_kwargs={"width": 256, "depth": 2},
                            optimizer="sgd", lr=0.05, momentum=0.9, epochs=40)
    return train_config(dataset="mnist1d", model="mlp", model_kwargs={"width": 512, "depth": 2},
                        optimizer="sgd", lr=0.05, momentum=0.9, epochs=60)


@dataclass(frozen=True)
class PairedRuns(RowConfig):
    """Base of the ``Config`` of a row that compares independently trained runs in disjoint pairs (C2, C4, C5).

    Attributes:
        train: the recipe of every run (default :func:`mnist1d_mlp`, the runs A1, C2 and C4 share); seed ``s``
            gives its init and data order (:func:`with_seed`).
        seeds: the run seeds, taken in disjoint consecutive pairs (:func:`~losslab.experiments.common.pairs_of`);
            an even number.
    """

    train: TrainConfig = field(default_factory=lambda: mnist1d_mlp("quick"))
    seeds: tuple[int, ...] = tuple(range(10))


def train_pairs(config: PairedRuns, cache_dir: str | os.PathLike, progress: Callable[[str], None] | None,
                timer: Timer) -> Iterator[tuple[int, int, Any, Any]]:
    """For each pair ``(sa, sb)`` of ``pairs_of(config.seeds)``: ``(sa, sb, run_a, run_b)``, the two runs of
    ``config.train`` with those seeds trained (or reused, :func:`~losslab.experiments.common.train_run`) under
    ``timer("train")``."""
    for sa, sb in pairs_of(config.seeds):
        with timer("train"):
            ra = train_run(with_seed(config.train, sa), cache_dir, progress)
            rb = train_run(with_seed(config.train, sb), cache_dir, progress)
        yield sa, sb, ra, rb


def mnist1d_mlp_large_lr(profile: str = "quick") -> Any:
    """:func:`mnist1d_mlp` trained with plain SGD at learning rate 1.0: a regime where monotonic linear
    interpolation fails (Lucas et al. 2021)."""
    base = mnist1d_mlp(profile)
    return dataclasses.replace(base, optim=dataclasses.replace(base.optim, lr=1.0, momentum=0.0))


def memorization_mlp(p: float, profile: str = "quick") -> Any:
    """Adam MLP on MNIST-1D with a fraction ``p`` of training labels replaced by random ones.

    quick: 2000 training examples, 40-256-256-10, Adam lr 1e-3, batch 128, 60 epochs;
    full: all 4000, 40-512-512-10, 100 epochs (the survey's pilot network).
    """
    if _profile(profile) == "quick":
        return train_config(dataset="mnist1d", subsample=2000, label_noise=float(p), model="mlp",
                            model_kwargs={"width": 256, "depth": 2}, optimizer="adam", lr=1e-3, epochs=60,
                            checkpoints="none")
    return train_config(dataset="mnist1d", label_noise=float(p), model="mlp",
                        model_kwargs={"width": 512, "depth": 2}, optimizer="adam", lr=1e-3, epochs=100,
                        checkpoints="none")


def random_labels_mlp(p: float, profile: str = "quick") -> Any:
    """Adam MLP on MNIST-1D with a fraction ``p`` of training labels random: A2's and A3's runs.

    quick: :func:`memorization_mlp` on a 1000-example training subset (40-256-256-10, 78,858
    parameters, Adam lr 1e-3, batch 128, 60 epochs, about 1.5 s a run); full: :func:`memorization_mlp`'s
    full profile (all 4000 examples, 40-512-512-10, 100 epochs).
    """
    cfg = memorization_mlp(p, profile)
    if profile == "quick":
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, subsample=1000))
    return cfg


def deep_linear_mlp(p: float, profile: str = "quick") -> Any:
    """The negative control of A2 and A3: :func:`random_labels_mlp`'s data, optimizer and budget on a deep
    *linear* net (40-64-64-10, identity activations, 7,434 parameters): over-parameterized by count, but
    it represents only linear classifiers."""
    base = random_labels_mlp(p, profile)
    return dataclasses.replace(base, model=dataclasses.replace(
        base.model, model_kwargs={"width": 64, "depth": 2, "activation": "identity"}))


def digits_mlp(profile: str = "quick") -> Any:
    """Adam MLP on scikit-learn digits (1347 train / 450 test): 64-256-256-10, 30 epochs (quick) or 60."""
    return train_config(dataset="digits", model="mlp", model_kwargs={"width": 256, "depth": 2}, optimizer="adam",
                        lr=1e-3, epochs=30 if _profile(profile) == "quick" else 60, checkpoints="none")


def poison_pair(profile: str = "quick") -> tuple[Any, Any]:
    """(clean, poisoned) Adam MLPs on MNIST-1D from the same initialization (Huang et al. 2020).

    The poisoned run trains on the clean training set plus as many fresh same-distribution examples
    with wrong labels. quick: 2000 clean examples (+2000 poison), 40-256-256-10, Adam lr 1e-3,
    60 epochs; full: 4000 (+4000), 40-512-512-10, 100 epochs.
    """
    if _profile(profile) == "quick":
        kw = dict(dataset="mnist1d", dataset_kwargs={"num_samples": 2500}, model="mlp",
                  model_kwargs={"width": 256, "depth": 2}, optimizer="adam", lr=1e-3, epochs=60)
        n_poison = 2000
    else:
        kw = dict(dataset="mnist1d", model="mlp", model_kwargs={"width": 512, "depth": 2}, optimizer="adam",
                  lr=1e-3, epochs=100)
        n_poison = 4000
    return train_config(**kw), train_config(poison=n_poison, **kw)


def skip_resnet(skip: bool, profile: str = "quick") -> Any:
    """A deep 1-D ResNet on MNIST-1D with (``skip=True``) or without shortcuts (Li et al. 2018).

    quick: 1000 training examples, width 16, 20 blocks (41 conv layers), BatchNorm, SGD lr 0.05 with
    momentum 0.9, cosine schedule, 15 epochs; full: all 4000 examples, 27 blocks (56 layers, as
    Li et al.'s ResNet-56), 30 epochs.
    """
    if _profile(profile) == "quick":
        return train_config(dataset="mnist1d", subsample=1000, model="resnet",
                            model_kwargs={"width": 16, "depth": 20, "skip": bool(skip)},
                            optimizer="sgd", lr=0.05, momentum=0.9, epochs=15, schedule="cosine",
                            checkpoints="none")
    return train_config(dataset="mnist1d", model="resnet", model_kwargs={"width": 16, "depth": 27, "skip": bool(skip)},
                        optimizer="sgd", lr=0.05, momentum=0.9, epochs=30, schedule="cosine", checkpoints="none")
