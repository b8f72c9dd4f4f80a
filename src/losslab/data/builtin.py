"""Built-in offline datasets: ``digits``, ``mnist1d`` (generated and cached), ``moons``, ``spirals``, ``blobs``.

All return ``float32`` inputs and ``int64`` labels; nothing is downloaded. Generated datasets draw from
private generators seeded by ``seed`` (never the global ones) and can draw fresh samples of the same
distribution (see :func:`~losslab.data.fresh_samples`).
"""
from __future__ import annotations

import hashlib
import random
import threading
import zipfile
from typing import Any

import numpy as np

from .._io import atomic_savez
from ..errors import LosslabError
from ..settings import cache_dir
from ._base import Bundle, Split
from ._registry import (
    TAG_CENTERS,
    TAG_FRESH,
    TAG_TEST,
    TAG_TRAIN,
    check_float,
    check_int,
    check_seed,
    dumps_key,
    make_split,
    random_state,
    register,
    rng,
    source_meta,
)

__all__ = ["digits", "mnist1d", "moons", "spirals", "blobs"]

#: ``digits`` uses this fixed, seed-independent stratified split.
DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0

#: ``mnist1d``'s generator seed is ``MNIST1D_BASE_SEED + seed``: seed 0 is the package's default (42).
MNIST1D_BASE_SEED = 42
_MNIST1D_CACHE_FORMAT = 1
_MNIST1D_LOCK = threading.Lock()


def _bundle(name: str, train: Split, test: Split, num_classes: int, input_shape: tuple[int, ...],
            source: dict[str, Any], **meta: Any) -> Bundle:
    return Bundle(name, train, test, num_classes, input_shape, meta={"source": source, **meta})


# -------------------------------------------------------------------------------------------- digits
@register("digits")
def digits() -> Bundle:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), bundled with scikit-learn.

    ``x`` is ``pixels / 16`` shaped ``(N, 1, 8, 8)``. The train/test split is fixed (stratified, 25% test,
    scikit-learn ``random_state=0``) and independent of any seed: 1347 train, 450 test. The pixels and
    the split are cached in ``settings.cache_dir()/digits/<hash>.npz`` after first use (keyed by
    scikit-learn's version), so later calls do not import scikit-learn.

    Returns:
        The ``Bundle`` (``input_shape == (1, 8, 8)``, ``num_classes == 10``).

    Example:
        >>> from losslab.data import digits
        >>> b = digits()
        >>> (len(b.train), len(b.test), b.input_shape)
        (1347, 450, (1, 8, 8))
    """
    a = _cached_arrays("digits", _digits_key(), ("images", "target", "train", "test"), _digits_generate)
    x = (a["images"].astype(np.float64) / 16.0)[:, None, :, :]
    y = a["target"]
    tr, te = a["train"], a["test"]
    return _bundle(
        "digits", make_split(x[tr], y[tr]), make_split(x[te], y[te]), 10, (1, 8, 8),
        source_meta("digits", 0, {}),
        split={"test_fraction": DIGITS_TEST_FRACTION, "stratified": True, "split_seed": DIGITS_SPLIT_SEED},
    )


_DIGITS_CACHE_FORMAT = 1


def _digits_key() -> str:
    """The cache key of the digits arrays: format, scikit-learn's version (read without importing it), split."""
    return dumps_key({"format": _DIGITS_CACHE_FORMAT, "scikit-learn": _version("scikit-learn"),
                      "test_fraction": DIGITS_TEST_FRACTION, "split_seed": DIGITS_SPLIT_SEED})


def _digits_generate() -> dict[str, np.ndarray]:
    """scikit-learn's digits (pixel values 0-16, exact in ``uint8``) and the sorted stratified split indices."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    y = np.asarray(d.target, dtype=np.int64)
    tr, te = train_test_split(
        np.arange(len(y)), test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    images = np.asarray(d.images)
    if not np.array_equal(images, np.round(images)) or images.min() < 0 or images.max() > 255:
        raise LosslabError("scikit-learn's digits are not integer pixel values in [0, 255]")  # pragma: no cover
    return {"images": images.astype(np.uint8), "target": y, "train": np.sort(tr).astype(np.int64),
            "test": np.sort(te).astype(np.int64)}


def _version(package: str) -> str:
    """An installed distribution's version from its metadata (the package itself is not imported)."""
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:  # pragma: no cover - metadata missing in odd installs
        return "unknown"


def _cached_arrays(kind: str, key: str, names: tuple[str, ...], make: Any) -> dict[str, np.ndarray]:
    """Arrays ``names`` for ``key``: from ``cache_dir()/kind/<hash>.npz`` when present and valid, else
    ``make()`` and cached (atomically; an unwritable cache only costs regeneration next time)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    path = cache_dir() / kind / f"{digest}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"][()]) == key:
                return {k: np.array(z[k]) for k in names}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # missing or unreadable cache: regenerate below
    arrays = make()
    try:
        atomic_savez(path, key=np.array(key), **arrays)
    except OSError:
        pass
    return arrays


# ------------------------------------------------------------------------------------------- mnist1d
_MNIST1D_OVERRIDES = (
    "num_samples", "train_split", "iid_noise_scale", "corr_noise_scale", "shear_scale", "scale_coeff",
    "max_translation", "shuffle_seq",
)


def _mnist1d_args(generator_seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """The full ``mnist1d`` argument dict: package defaults, then ``overrides``, then the seed (no url)."""
    from mnist1d.data import get_dataset_args

    args = dict(get_dataset_args(as_dict=True))
    args.pop("url", None)
    for k, v in overrides.items():
        if v is not None:
            args[k] = v
    args["seed"] = int(generator_seed)
    return args


def _mnist1d_key(args: dict[str, Any]) -> str:
    return dumps_key({"format": _MNIST1D_CACHE_FORMAT, "mnist1d": _version("mnist1d"), "args": args})


def _mnist1d_generate(args: dict[str, Any]) -> dict[str, np.ndarray]:
    """Run ``mnist1d.data.make_dataset`` with the global ``numpy``/``random`` states saved and restored.

    ``make_dataset`` reseeds both global generators; the lock keeps two threads of this module from
    interleaving (other code touching the global generators concurrently is not protected).
    """
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    with _MNIST1D_LOCK:
        np_state = np.random.get_state()
        py_state = random.getstate()
        try:
            data = make_dataset(ObjectView(dict(args)))
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
    return {
        "x": np.asarray(data["x"], dtype=np.float32),
        "y": np.asarray(data["y"], dtype=np.int64),
        "x_test": np.asarray(data["x_test"], dtype=np.float32).reshape(-1, int(args["final_seq_length"])),
        "y_test": np.asarray(data["y_test"], dtype=np.int64),
    }


def _mnist1d_arrays(args: dict[str, Any]) -> dict[str, np.ndarray]:
    """Generated arrays for ``args``: from the cache when present and valid, else generated and cached."""
    return _cached_arrays("mnist1d", _mnist1d_key(args), ("x", "y", "x_test", "y_test"),
                          lambda: _mnist1d_generate(args))


@register("mnist1d", sampler=lambda n, *, seed, **kw: _mnist1d_sample(n, seed=seed, **kw))
def mnist1d(
    *,
    seed: int = 0,
    num_samples: int | None = None,
    train_split: float | None = None,
    iid_noise_scale: float | None = None,
    corr_noise_scale: float | None = None,
    shear_scale: float | None = None,
    scale_coeff: float | None = None,
    max_translation: int | None = None,
    shuffle_seq: bool | None = None,
) -> Bundle:
    """MNIST-1D (Greydanus 2020), generated offline by ``mnist1d.data.make_dataset`` and cached.

    Arguments left ``None`` take the package's defaults (5000 samples, 80/20 split, ...). The generator
    seed is ``42 + seed``, so ``seed=0`` reproduces the package's default generation; other seeds draw
    other datasets of the same distribution. The global ``numpy``/``random`` states are restored after
    generation. Arrays are cached in ``settings.cache_dir()/mnist1d/<hash of the arguments>.npz``.
    ``make_dataset`` keeps ``10 * (num_samples // 10)`` samples (equal per class) and standardises
    the inputs with the statistics of the generated set.

    Args:
        seed: data seed (``>= 0``).
        num_samples: total samples before the split (``>= 10``).
        train_split: fraction in the training set, in ``(0, 1)``.
        iid_noise_scale, corr_noise_scale, shear_scale, scale_coeff, max_translation, shuffle_seq:
            ``mnist1d`` generation arguments.

    Returns:
        The ``Bundle``: ``x`` ``(N, 40)`` ``float32``, 10 classes, ``input_shape == (40,)``.

    Example:
        >>> from losslab.data import mnist1d
        >>> b = mnist1d(num_samples=100)  # doctest: +SKIP
        >>> (len(b.train), len(b.test), b.input_shape)  # doctest: +SKIP
        (80, 20, (40,))
    """
    seed = check_seed(seed)
    overrides = _mnist1d_overrides(
        num_samples=num_samples, train_split=train_split, iid_noise_scale=iid_noise_scale,
        corr_noise_scale=corr_noise_scale, shear_scale=shear_scale, scale_coeff=scale_coeff,
        max_translation=max_translation, shuffle_seq=shuffle_seq,
    )
    args = _mnist1d_args(MNIST1D_BASE_SEED + seed, overrides)
    if args["train_split"] >= 1.0 or args["train_split"] <= 0.0:
        raise LosslabError(f"train_split must be in (0, 1), got {args['train_split']}")
    arrays = _mnist1d_arrays(args)
    length = int(args["final_seq_length"])
    return _bundle(
        "mnist1d", make_split(arrays["x"], arrays["y"]), make_split(arrays["x_test"], arrays["y_test"]),
        10, (length,), source_meta("mnist1d", seed, overrides),
        mnist1d_args=args,
    )


def _mnist1d_overrides(**kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in kw.items():
        if v is None:
            continue
        if k == "num_samples":
            v = check_int(k, v, minimum=10)
        elif k == "max_translation":
            v = check_int(k, v, minimum=1)
        elif k == "shuffle_seq":
            if not isinstance(v, (bool, np.bool_)):
                raise LosslabError(f"shuffle_seq must be a bool, got {v!r}")
            v = bool(v)
        else:
            v = check_float(k, v, minimum=0.0)
        out[k] = v
    return out


def _mnist1d_sample(n: int, *, seed: int, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """``n`` fresh MNIST-1D examples: a whole dataset generated with generator seed ``seed``.

    ``make_dataset`` standardises by the statistics of what it generates; generating at least as many
    samples as the base dataset keeps those statistics as precise as the base dataset's own.
    """
    overrides = _mnist1d_overrides(**{k: v for k, v in kwargs.items() if k in _MNIST1D_OVERRIDES})
    base = _mnist1d_args(seed, overrides)
    total = max(10 * -(-max(n, 1) // 10), int(base["num_samples"]))
    base["num_samples"] = total
    base["train_split"] = 1.0
    arrays = _mnist1d_arrays(base)
    return arrays["x"][:n], arrays["y"][:n]


# ----------------------------------------------------------------------------------------- synthetic
def _moons_draw(keys: tuple[int, ...], n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_moons

    if n == 0:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    return make_moons(n_samples=n, noise=noise, shuffle=True, random_state=random_state(*keys))


def _check_sizes(n_train: Any, n_test: Any) -> tuple[int, int]:
    return check_int("n_train", n_train, minimum=1), check_int("n_test", n_test, minimum=0)


@register("moons", sampler=lambda n, *, seed, noise=0.2, **_: _moons_draw((seed, TAG_FRESH), n, noise))
def moons(*, seed: int = 0, n_train: int = 1000, n_test: int = 1000, noise: float = 0.2) -> Bundle:
    """Two interleaving half circles (scikit-learn ``make_moons``), 2 classes, inputs in 2-D.

    Args:
        seed: data seed; train and test are independent draws.
        n_train, n_test: split sizes.
        noise: standard deviation of the Gaussian noise added to the points.

    Returns:
        The ``Bundle`` (``input_shape == (2,)``, ``num_classes == 2``).

    Example:
        >>> from losslab.data import moons
        >>> b = moons(n_train=20, n_test=10, seed=3)
        >>> (tuple(b.train.x.shape), b.train.y.dtype)
        ((20, 2), torch.int64)
    """
    seed = check_seed(seed)
    n_train, n_test = _check_sizes(n_train, n_test)
    noise = check_float("noise", noise, minimum=0.0)
    xtr, ytr = _moons_draw((seed, TAG_TRAIN), n_train, noise)
    xte, yte = _moons_draw((seed, TAG_TEST), n_test, noise)
    return _bundle("moons", make_split(xtr, ytr), make_split(xte, yte), 2, (2,),
                   source_meta("moons", seed, {"n_train": n_train, "n_test": n_test, "noise": noise}))


def _spirals_draw(keys: tuple[int, ...], n: int, noise: float, turns: float) -> tuple[np.ndarray, np.ndarray]:
    g = rng(*keys)
    y = g.permutation(np.arange(n) % 2)
    angle = np.sqrt(g.random(n)) * turns * 2.0 * np.pi  # sqrt: uniform density along the arms
    radius = 1.5 * angle
    arm = np.stack([-radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    x = np.where((y == 1)[:, None], -arm, arm) + noise * g.standard_normal((n, 2))
    return x, y.astype(np.int64)


@register(
    "spirals",
    sampler=lambda n, *, seed, noise=1.0, turns=5 / 3, **_: _spirals_draw((seed, TAG_FRESH), n, noise, turns),
)
def spirals(*, seed: int = 0, n_train: int = 400, n_test: int = 400, noise: float = 1.0,
            turns: float = 5 / 3) -> Bundle:
    """Two interleaved spirals ("swiss roll"), the 2-D toy problem of Huang et al. 2020.

    Class 0 lies on the arm ``r = 1.5 t``, ``(x, y) = (-r cos t, r sin t)`` with ``t = 2 pi turns sqrt(u)``,
    ``u ~ U(0, 1)``; class 1 is the same arm rotated by 180 degrees; isotropic Gaussian noise of standard
    deviation ``noise`` is added. The defaults (600 degrees of winding, radius up to about 15.7, noise 1)
    follow the setting of "Understanding generalization through visualizations". Classes are balanced.

    Args:
        seed: data seed.
        n_train, n_test: split sizes.
        noise: noise standard deviation (the arms are about ``1.5 pi`` apart).
        turns: winding of each arm, in full turns.

    Returns:
        The ``Bundle`` (``input_shape == (2,)``, ``num_classes == 2``).

    Example:
        >>> from losslab.data import spirals
        >>> b = spirals(n_train=10, n_test=4)
        >>> int(b.train.y.sum())
        5
    """
    seed = check_seed(seed)
    n_train, n_test = _check_sizes(n_train, n_test)
    noise = check_float("noise", noise, minimum=0.0)
    turns = check_float("turns", turns, minimum=0.0)
    xtr, ytr = _spirals_draw((seed, TAG_TRAIN), n_train, noise, turns)
    xte, yte = _spirals_draw((seed, TAG_TEST), n_test, noise, turns)
    return _bundle(
        "spirals", make_split(xtr, ytr), make_split(xte, yte), 2, (2,),
        source_meta("spirals", seed, {"n_train": n_train, "n_test": n_test, "noise": noise, "turns": turns}),
    )


def _blob_centers(classes: int, dims: int, center_box: float, centers_seed: int) -> np.ndarray:
    return rng(centers_seed, classes, dims, TAG_CENTERS).uniform(-center_box, center_box, size=(classes, dims))


def _blobs_draw(keys: tuple[int, ...], n: int, centers: np.ndarray, cluster_std: float) -> tuple[np.ndarray, np.ndarray]:
    g = rng(*keys)
    k, d = centers.shape
    y = g.permutation(np.arange(n) % k)
    return centers[y] + cluster_std * g.standard_normal((n, d)), y.astype(np.int64)


def _blobs_sample(n: int, *, seed: int, classes: int = 3, dims: int = 2, cluster_std: float = 1.0,
                  center_box: float = 10.0, centers_seed: int = 0, **_: Any) -> tuple[np.ndarray, np.ndarray]:
    return _blobs_draw((seed, TAG_FRESH), n, _blob_centers(classes, dims, center_box, centers_seed), cluster_std)


@register("blobs", sampler=_blobs_sample)
def blobs(*, seed: int = 0, n_train: int = 1000, n_test: int = 1000, classes: int = 3, dims: int = 2,
          cluster_std: float = 1.0, center_box: float = 10.0, centers_seed: int = 0) -> Bundle:
    """Isotropic Gaussian blobs, one per class (balanced), in ``dims`` dimensions.

    The class centres are uniform in ``[-center_box, center_box]^dims``, drawn from ``centers_seed``
    (part of the distribution), so datasets with different ``seed`` share the same centres.

    Args:
        seed: data seed.
        n_train, n_test: split sizes.
        classes: number of classes (``>= 2``).
        dims: input dimension.
        cluster_std: standard deviation of each blob.
        center_box: half-width of the box the centres are drawn from.
        centers_seed: seed of the centres.

    Returns:
        The ``Bundle`` (``input_shape == (dims,)``, ``num_classes == classes``).

    Example:
        >>> from losslab.data import blobs
        >>> b = blobs(n_train=30, n_test=0, classes=5, dims=3)
        >>> (b.num_classes, b.input_shape, len(b.test))
        (5, (3,), 0)
    """
    seed = check_seed(seed)
    n_train, n_test = _check_sizes(n_train, n_test)
    classes = check_int("classes", classes, minimum=2)
    dims = check_int("dims", dims, minimum=1)
    cluster_std = check_float("cluster_std", cluster_std, minimum=0.0)
    center_box = check_float("center_box", center_box, minimum=0.0)
    centers_seed = check_seed(centers_seed, "centers_seed")
    centers = _blob_centers(classes, dims, center_box, centers_seed)
    xtr, ytr = _blobs_draw((seed, TAG_TRAIN), n_train, centers, cluster_std)
    xte, yte = _blobs_draw((seed, TAG_TEST), n_test, centers, cluster_std)
    kwargs = {"n_train": n_train, "n_test": n_test, "classes": classes, "dims": dims,
              "cluster_std": cluster_std, "center_box": center_box, "centers_seed": centers_seed}
    return _bundle("blobs", make_split(xtr, ytr), make_split(xte, yte), classes, (dims,),
                   source_meta("blobs", seed, kwargs))
