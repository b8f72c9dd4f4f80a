"""Shared training recipes: the same :class:`~losslab.config.TrainConfig` gives the same run directory,
so experiments that use a recipe share its trained runs through the run cache (``cache_dir/runs``).

Use these in an experiment's ``Config`` when a SURVEY row measures the same kind of model as
another row; vary the seed with :func:`with_seed`. Each recipe has a ``"quick"`` profile sized for
one CPU core in seconds (SURVEY pilot regimes) and a ``"full"`` one.

==============================  ==========================================  =======================
recipe                          what                                        used by
==============================  ==========================================  =======================
``mnist1d_mlp``                 SGD MLP on MNIST-1D (independent runs)      A1, C4 (and C2, C5)
``mnist1d_mlp_large_lr``        the same MLP, large-LR SGD (MLI contrast)   A1
``memorization_mlp(p)``         Adam MLP, label noise p (Zhang et al.)      A2, A3
``poison_pair``                 clean / poisoned MLP pair (Huang et al.)    A4 (and C1)
``skip_resnet(skip)``           deep 1-D ResNet with / without shortcuts    B1
==============================  ==========================================  =======================
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import LosslabError
from .common import train_config

__all__ = ["with_seed", "mnist1d_mlp", "mnist1d_mlp_large_lr", "memorization_mlp", "poison_pair", "skip_resnet",
           "digits_mlp"]


def _profile(profile: str) -> str:
    if profile not in ("quick", "full"):
        raise LosslabError(f"profile must be 'quick' or 'full', got {profile!r}")
    return profile


def with_seed(config: Any, seed: int) -> Any:
    """The same recipe with every seed (init, data order, labels) set from ``seed``."""
    from ..config import SeedConfig

    return dataclasses.replace(config, seeds=SeedConfig(seed=int(seed)))


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
