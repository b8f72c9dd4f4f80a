"""Tests for losslab.data: registry, built-in datasets, wrappers, adapters, vision readers."""
from __future__ import annotations

import doctest
import gzip
import hashlib
import json
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import losslab.data as D
from losslab.data import Bundle, Split
from losslab.errors import LosslabError

SRC = str(Path(__file__).resolve().parents[1] / "src")
SMALL = 200  # mnist1d samples in tests: generation takes ~0.1 s


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("LOSSLAB_CACHE", str(cache))
    return cache


def digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        a = t.detach().cpu().contiguous().numpy()
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def bundle_digest(b: Bundle) -> str:
    return digest(b.train.x, b.train.y, b.test.x, b.test.y)


def global_states():
    return np.random.get_state(), random.getstate(), torch.random.get_rng_state()


def assert_states_equal(before, after):
    (n0, p0, t0), (n1, p1, t1) = before, after
    assert n0[0] == n1[0] and np.array_equal(n0[1], n1[1]) and n0[2:] == n1[2:]
    assert p0 == p1
    assert torch.equal(t0, t1)


# ------------------------------------------------------------------------------------------ registry
def test_available_and_unknown_name():
    names = D.available()
    assert {"digits", "mnist1d", "moons", "spirals", "blobs", "mnist", "cifar10"} <= set(names)
    assert names == sorted(names)
    with pytest.raises(LosslabError, match="unknown dataset 'nope'.*digits.*mnist1d"):
        D.load("nope")


def test_unknown_and_missing_kwargs():
    with pytest.raises(LosslabError, match="unknown argument.*n_samples.*allowed: n_test, n_train, noise"):
        D.load("moons", n_samples=3)
    with pytest.raises(LosslabError, match="needs argument.*root"):
        D.load("mnist")
    with pytest.raises(LosslabError, match="seed"):
        D.load("moons", seed=-1)
    with pytest.raises(LosslabError, match="n_train"):
        D.load("moons", n_train=0)
    with pytest.raises(LosslabError, match="noise"):
        D.load("spirals", noise=float("nan"))


def test_register_custom_dataset():
    @D.register("test-tiny", overwrite=True)
    def tiny(*, seed: int = 0, n: int = 5) -> Bundle:
        g = torch.Generator().manual_seed(seed)
        return D.from_tensors(torch.randn(n, 2, generator=g), torch.arange(n) % 2, name="test-tiny")

    b = D.load("test-tiny", seed=3, n=7)
    assert len(b.train) == 7
    assert b.meta["source"] == {"dataset": "test-tiny", "seed": 3, "kwargs": {"n": 7}}
    with pytest.raises(LosslabError, match="already registered"):
        D.register("test-tiny")(tiny)
    with pytest.raises(LosslabError, match="cannot draw fresh samples"):
        D.poison(b, 2, seed=0)


# -------------------------------------------------------------------------------------------- digits
def test_digits_shapes_and_fixed_split():
    b = D.load("digits")
    assert (len(b.train), len(b.test), b.num_classes, b.input_shape) == (1347, 450, 10, (1, 8, 8))
    assert b.train.x.dtype == torch.float32 and b.train.y.dtype == torch.int64
    assert tuple(b.train.x.shape[1:]) == (1, 8, 8)
    assert 0.0 <= float(b.train.x.min()) and float(b.train.x.max()) <= 1.0
    assert bundle_digest(D.load("digits", seed=7)) == bundle_digest(b)  # split independent of seed
    frac = b.test.y.bincount(minlength=10).double() / (b.train.y.bincount(minlength=10) + b.test.y.bincount(minlength=10))
    assert float((frac - 0.25).abs().max()) < 0.02  # stratified


# ------------------------------------------------------------------------------------------- mnist1d
def test_mnist1d_matches_package_and_restores_global_rng(_cache):
    from mnist1d.data import get_dataset_args, make_dataset

    np.random.seed(123)
    random.seed(456)
    before = global_states()
    b = D.mnist1d(num_samples=SMALL)
    assert_states_equal(before, global_states())
    assert (len(b.train), len(b.test), b.input_shape, b.num_classes) == (160, 40, (40,), 10)
    assert b.train.x.dtype == torch.float32 and b.train.y.dtype == torch.int64
    args = get_dataset_args()
    args.num_samples = SMALL
    ref = make_dataset(args)  # seed 42: losslab's seed 0 is the package default
    assert np.array_equal(b.train.x.numpy(), ref["x"].astype(np.float32))
    assert np.array_equal(b.test.y.numpy(), ref["y_test"])
    assert len(list((_cache / "mnist1d").glob("*.npz"))) == 1
    other = D.load("mnist1d", seed=1, num_samples=SMALL)
    assert not torch.equal(other.train.x, b.train.x)


def test_mnist1d_cache_hit_identical(monkeypatch, _cache):
    from losslab.data import builtin

    first = D.load("mnist1d", seed=2, num_samples=SMALL)
    files = list((_cache / "mnist1d").glob("*.npz"))
    assert len(files) == 1

    def boom(args):
        raise AssertionError("regenerated despite a cache hit")

    monkeypatch.setattr(builtin, "_mnist1d_generate", boom)
    again = D.load("mnist1d", seed=2, num_samples=SMALL)
    assert bundle_digest(again) == bundle_digest(first)
    assert again.describe() == first.describe()
    with np.load(files[0], allow_pickle=False) as z:
        assert set(z.files) == {"key", "x", "y", "x_test", "y_test"}


def test_mnist1d_corrupt_cache_is_regenerated(_cache):
    first = D.load("mnist1d", num_samples=SMALL)
    (path,) = (_cache / "mnist1d").glob("*.npz")
    path.write_bytes(b"not a zip file")
    again = D.load("mnist1d", num_samples=SMALL)
    assert bundle_digest(again) == bundle_digest(first)


def test_mnist1d_bad_args():
    with pytest.raises(LosslabError, match="train_split"):
        D.load("mnist1d", num_samples=SMALL, train_split=1.0)
    with pytest.raises(LosslabError, match="num_samples"):
        D.load("mnist1d", num_samples=5)
    with pytest.raises(LosslabError, match="allowed:.*num_samples"):
        D.load("mnist1d", url="http://example.com")


# ----------------------------------------------------------------------------------------- synthetic
@pytest.mark.parametrize("name,shape,classes", [("moons", (2,), 2), ("spirals", (2,), 2), ("blobs", (2,), 3)])
def test_synthetic(name, shape, classes):
    b = D.load(name, seed=4, n_train=60, n_test=30)
    assert (len(b.train), len(b.test), b.input_shape, b.num_classes) == (60, 30, shape, classes)
    assert b.train.x.dtype == torch.float32 and b.train.y.dtype == torch.int64
    assert set(b.train.y.tolist()) == set(range(classes))
    assert bundle_digest(D.load(name, seed=4, n_train=60, n_test=30)) == bundle_digest(b)
    assert bundle_digest(D.load(name, seed=5, n_train=60, n_test=30)) != bundle_digest(b)
    assert not torch.equal(b.train.x[:30], b.test.x)


def test_spirals_geometry_and_blobs_centres():
    s = D.spirals(n_train=2000, n_test=0, noise=0.0)
    assert int(s.train.y.sum()) == 1000
    r = s.train.x.norm(dim=1)
    assert float(r.max()) <= 1.5 * 2 * np.pi * 5 / 3 + 1e-4
    b1 = D.blobs(seed=0, n_train=3000, n_test=0, classes=4, dims=5, cluster_std=0.1)
    b2 = D.blobs(seed=1, n_train=3000, n_test=0, classes=4, dims=5, cluster_std=0.1)
    for c in range(4):  # same centres (the distribution), different samples
        m1, m2 = b1.train.x[b1.train.y == c].mean(0), b2.train.x[b2.train.y == c].mean(0)
        assert float((m1 - m2).abs().max()) < 0.05
    assert b1.input_shape == (5,) and b1.num_classes == 4


def test_fresh_samples_are_new_and_seeded():
    b = D.load("moons", n_train=50, n_test=50)
    f1 = D.fresh_samples(b, 40, seed=0)
    assert tuple(f1.x.shape) == (40, 2) and f1.x.dtype == torch.float32
    assert torch.equal(f1.x, D.fresh_samples(b, 40, seed=0).x)
    assert not torch.equal(f1.x, D.fresh_samples(b, 40, seed=1).x)
    dist = torch.cdist(f1.x, torch.cat([b.train.x, b.test.x]))
    assert float(dist.min()) > 0
    with pytest.raises(LosslabError, match="'digits' cannot draw fresh samples"):
        D.fresh_samples(D.digits(), 3, seed=0)


# ---------------------------------------------------------------------------------- global RNG states
LOADERS = {
    "digits": lambda: D.load("digits"),
    "mnist1d": lambda: D.load("mnist1d", seed=3, num_samples=SMALL),
    "moons": lambda: D.load("moons", n_train=20, n_test=5),
    "spirals": lambda: D.load("spirals", n_train=20, n_test=5),
    "blobs": lambda: D.load("blobs", n_train=20, n_test=5),
    "wrappers": lambda: D.subsample(D.poison(D.corrupt_labels(D.load("moons", n_train=20, n_test=5), 0.5, seed=1),
                                             5, seed=2), 10, seed=3),
    "mnist1d-poison": lambda: D.poison(D.load("mnist1d", num_samples=SMALL), 10, seed=0),
    "from_loader": lambda: D.from_loader(DataLoader(TensorDataset(torch.ones(8, 2), torch.arange(8) % 2),
                                                    batch_size=3, shuffle=True)),
}


@pytest.mark.parametrize("which", sorted(LOADERS))
def test_global_rng_states_untouched(which):
    np.random.seed(1)
    random.seed(2)
    torch.manual_seed(3)
    before = global_states()
    LOADERS[which]()
    assert_states_equal(before, global_states())


# ------------------------------------------------------------------------------------ corrupt_labels
@pytest.mark.parametrize("p", [0.0, 0.1, 0.25, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("mode", ["uniform", "other"])
def test_corruption_fraction_exact(p, mode):
    b = D.digits()
    y_before = b.train.y.clone()
    c = D.corrupt_labels(b, p, seed=11, mode=mode)
    n = len(b.train)
    k = round(p * n)
    chosen = D.row_mask(c.train, "corrupted")
    changed = c.train.y != b.train.y
    assert int(chosen.sum()) == k
    assert not bool((changed & ~chosen).any())  # only chosen rows may change
    assert torch.equal(c.train.clean_y, b.train.y)
    assert torch.equal(b.train.y, y_before)  # input not mutated
    assert c.test is b.test and c.train.x is b.train.x
    assert c.meta["wrappers"][-1]["n_chosen"] == k
    if mode == "other":
        assert int(changed.sum()) == k  # never keeps the true label
    assert int(c.train.y.min()) >= 0 and int(c.train.y.max()) < 10


def test_uniform_corruption_can_keep_true_label():
    b = D.load("moons", n_train=1000, n_test=1)
    c = D.corrupt_labels(b, 1.0, seed=0, mode="uniform")
    frac = float((c.train.y != b.train.y).double().mean())
    assert 0.42 < frac < 0.58  # 2 classes: about half change
    assert c.meta["wrappers"][-1]["n_changed"] == int((c.train.y != b.train.y).sum())


def test_corruption_seeded_and_twice():
    b = D.digits()
    c1 = D.corrupt_labels(b, 0.3, seed=5)
    assert torch.equal(c1.train.y, D.corrupt_labels(b, 0.3, seed=5).train.y)
    assert not torch.equal(c1.train.y, D.corrupt_labels(b, 0.3, seed=6).train.y)
    c2 = D.corrupt_labels(c1, 0.2, seed=7, mode="other")
    assert torch.equal(c2.train.clean_y, b.train.y)  # clean labels are the original ones
    m2 = D.row_mask(c2.train, "corrupted")
    assert bool(m2[D.row_mask(c1.train, "corrupted")].all())
    assert len(c2.meta["wrappers"]) == 2


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.5"])
def test_corruption_bad_p(p):
    with pytest.raises(LosslabError, match="p"):
        D.corrupt_labels(D.load("moons", n_train=10, n_test=1), p, seed=0)


def test_label_wrappers_reject_regression_targets():
    reg = D.from_tensors(torch.randn(10, 3), torch.randn(10))
    assert reg.num_classes == 0
    with pytest.raises(LosslabError, match="corrupt_labels needs integer class labels.*regression"):
        D.corrupt_labels(reg, 0.5, seed=0)
    with pytest.raises(LosslabError, match="poison needs integer class labels"):
        D.poison(reg, 2, seed=0)
    with pytest.raises(LosslabError, match="stratified=False"):
        D.subsample(reg, 5, seed=0)
    assert len(D.subsample(reg, 5, seed=0, stratified=False).train) == 5
    with pytest.raises(LosslabError, match="mode"):
        D.corrupt_labels(D.load("moons", n_train=10, n_test=1), 0.5, seed=0, mode="flip")


# -------------------------------------------------------------------------------------------- poison
@pytest.mark.parametrize("name", ["moons", "spirals", "blobs"])
def test_poison_labels_always_wrong(name):
    b = D.load(name, n_train=100, n_test=20)
    p = D.poison(b, 300, seed=4)
    assert len(p.train) == 400 and p.test is b.test
    mask = D.row_mask(p.train, "poisoned")
    assert int(mask.sum()) == 300 and bool(mask[100:].all())
    assert torch.equal(p.train.x[:100], b.train.x) and torch.equal(p.train.y[:100], b.train.y)
    assert not bool((p.train.y[mask] == p.train.clean_y[mask]).any())
    assert torch.equal(p.train.clean_y[:100], b.train.y)
    assert float(torch.cdist(p.train.x[mask], b.train.x).min()) > 0  # fresh points
    assert set(p.train.clean_y[mask].tolist()) == set(range(b.num_classes))
    assert torch.equal(p.train.x, D.poison(b, 300, seed=4).train.x)


def test_poison_mnist1d_and_unsupported():
    b = D.load("mnist1d", num_samples=SMALL)
    p = D.poison(b, 30, seed=1)
    mask = D.row_mask(p.train, "poisoned")
    assert len(p.train) == 190 and int(mask.sum()) == 30
    assert not bool((p.train.y[mask] == p.train.clean_y[mask]).any())
    assert float(torch.cdist(p.train.x[mask], torch.cat([b.train.x, b.test.x])).min()) > 0
    # fresh samples are standardised like the base set
    assert abs(float(p.train.x[mask].std()) - float(b.train.x.std())) < 0.2
    with pytest.raises(LosslabError, match="'digits' cannot draw fresh samples"):
        D.poison(D.digits(), 5, seed=0)
    with pytest.raises(LosslabError, match="'user' cannot draw fresh samples"):
        D.poison(D.from_tensors(torch.randn(4, 2), torch.tensor([0, 1, 0, 1])), 5, seed=0)
    with pytest.raises(LosslabError, match="n_extra"):
        D.poison(b, -1, seed=0)


def test_wrappers_compose_and_subsample_keeps_flags():
    b = D.load("blobs", n_train=200, n_test=10, classes=4)
    w = D.corrupt_labels(D.poison(b, 100, seed=0), 0.2, seed=1, mode="other")
    s = D.subsample(w, 120, seed=2)
    assert len(s.train) == 120
    # the flags follow the rows: poisoned rows still carry wrong labels, corrupted rows changed
    pm, cm = D.row_mask(s.train, "poisoned"), D.row_mask(s.train, "corrupted")
    assert int(pm.sum()) > 0 and int(cm.sum()) > 0
    assert not bool((s.train.y[pm | cm] == s.train.clean_y[pm | cm]).any())
    assert bool((s.train.y[~(pm | cm)] == s.train.clean_y[~(pm | cm)]).all())
    assert [op["op"] for op in s.meta["wrappers"]] == ["poison", "corrupt_labels", "subsample"]
    json.dumps(s.describe())
    json.dumps(s.train.meta)
    stale = s.train.subset(torch.arange(10))
    with pytest.raises(LosslabError, match="re-indexed"):
        D.row_mask(stale, "poisoned")


def test_subsample_stratified():
    b = D.digits()
    s = D.subsample(b, 300, seed=0)
    counts = s.train.y.bincount(minlength=10)
    full = b.train.y.bincount(minlength=10)
    assert int(counts.sum()) == 300
    assert bool(((counts.double() - 300 * full.double() / len(b.train)).abs() < 1).all())
    assert torch.equal(s.train.y, D.subsample(b, 300, seed=0).train.y)
    assert s.test is b.test
    assert len(D.subsample(b, len(b.train), seed=1).train) == len(b.train)
    with pytest.raises(LosslabError, match="cannot subsample"):
        D.subsample(b, len(b.train) + 1, seed=0)


# ------------------------------------------------------------------------------------------ adapters
def test_from_tensors_inference_and_dtypes():
    x = np.arange(24, dtype=np.uint8).reshape(6, 4)
    b = D.from_tensors(x, np.array([0, 1, 2, 0, 1, 2]), x_test=x[:2], y_test=np.array([3, 0]))
    assert b.num_classes == 4 and b.input_shape == (4,) and b.name == "user"
    assert b.train.x.dtype == torch.float32 and b.train.y.dtype == torch.int64
    assert float(b.train.x.max()) == 23.0  # no rescaling of user data
    b64 = D.from_tensors(torch.randn(5, 2, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 0]), num_classes=3)
    assert b64.train.x.dtype == torch.float64 and b64.num_classes == 3
    assert b64.test.x.shape == (0, 2)
    reg = D.from_tensors(torch.randn(5, 2), torch.randn(5, 3))
    assert reg.num_classes == 0 and reg.train.y.shape == (5, 3)
    floats = D.from_tensors(torch.randn(3, 2), torch.tensor([0.0, 2.0, 1.0]), num_classes=3)
    assert floats.train.y.dtype == torch.int64
    # x_dtype: None keeps integer inputs (token ids), a dtype casts, anything else is an error
    tok = D.from_tensors(torch.tensor([[1, 2], [3, 4]]), torch.tensor([0, 1]), x_test=torch.tensor([[5, 6]]),
                         y_test=torch.tensor([1]), x_dtype=None)
    assert tok.train.x.dtype == torch.int64 and tok.test.x.dtype == torch.int64
    assert D.from_tensors(x, np.zeros(6, dtype=np.int64), x_dtype=torch.float64).train.x.dtype == torch.float64
    reg_tok = D.from_tensors(torch.tensor([[1], [2]]), torch.tensor([0.5, 1.5]), x_dtype=None)
    assert reg_tok.train.y.dtype == torch.float32 and reg_tok.num_classes == 0
    with pytest.raises(LosslabError, match="x_dtype"):
        D.from_tensors(x, np.zeros(6, dtype=np.int64), x_dtype="int")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(x=torch.zeros(0, 2), y=torch.zeros(0, dtype=torch.long)), "empty"),
        (dict(x=torch.zeros(3, 2), y=torch.zeros(4, dtype=torch.long)), "3 inputs but 4 targets"),
        (dict(x=torch.tensor([[0.0], [float("nan")]]), y=torch.tensor([0, 1])), "NaN"),
        (dict(x=torch.tensor([[0.0], [float("inf")]]), y=torch.tensor([0, 1])), "infinite"),
        (dict(x=torch.zeros(2, 1), y=torch.tensor([0.0, float("nan")])), "NaN"),
        (dict(x=torch.zeros(2, 1), y=torch.tensor([0, -1])), ">= 0"),
        (dict(x=torch.zeros(2, 1), y=torch.tensor([0, 5]), num_classes=3), "num_classes=3"),
        (dict(x=torch.zeros(2, 1), y=torch.tensor([0, 1]), x_test=torch.zeros(2, 1)), "both"),
        (dict(x=torch.zeros(2, 1), y=torch.tensor([0, 1]), x_test=torch.zeros(2, 3), y_test=torch.tensor([0, 1])),
         "shape"),
        (dict(x=torch.zeros(2, 1), y=torch.tensor([[0, 1], [1, 0]]), x_test=torch.zeros(1, 1),
              y_test=torch.tensor([0])), "per example"),  # (N, T) token labels are fine; mixed shapes are not
        (dict(x=torch.zeros(2, 1), y=torch.tensor([0.5, 1.0]), num_classes=2), "non-integer"),
    ],
)
def test_from_tensors_errors(kwargs, match):
    with pytest.raises(LosslabError, match=match) as info:
        D.from_tensors(**kwargs)
    assert "\n" not in str(info.value)


class _PILDataset(Dataset):
    """Yields (PIL image, int) like torchvision.datasets.MNIST without a transform."""

    def __init__(self, n: int, mode: str = "L"):
        from PIL import Image

        g = np.random.default_rng(0)
        shape = (5, 4) if mode == "L" else (5, 4, 3)
        self.items = [(Image.fromarray(g.integers(0, 256, shape, dtype=np.uint8), mode=None), i % 3)
                      for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class _Stream(IterableDataset):
    def __iter__(self):
        for i in range(7):
            yield np.full(3, i, dtype=np.float32), i % 2


def test_from_dataset_variants():
    ds = _PILDataset(6)
    b = D.from_dataset(ds, _PILDataset(2))
    assert b.input_shape == (1, 5, 4) and b.num_classes == 3 and b.name == "_pildataset"
    arr = np.array(ds.items[1][0])
    assert torch.allclose(b.train.x[1, 0], torch.from_numpy(arr).float() / 255)
    rgb = D.from_dataset(_PILDataset(3, mode="RGB"), name="rgb")
    assert rgb.input_shape == (3, 5, 4) and rgb.name == "rgb"
    it = D.from_dataset(_Stream())
    assert len(it.train) == 7 and it.input_shape == (3,) and it.num_classes == 2
    td = D.from_dataset(TensorDataset(torch.randn(4, 2), torch.tensor([0.5, 1.5, 2.0, 3.0])))
    assert td.num_classes == 0
    with pytest.raises(LosslabError, match="empty"):
        D.from_dataset(TensorDataset(torch.zeros(0, 2), torch.zeros(0)))
    with pytest.raises(LosslabError, match=r"\(x, y\) pairs"):
        D.from_dataset(TensorDataset(torch.zeros(3, 2)))
    with pytest.raises(LosslabError, match="different shapes"):
        D.from_dataset([(torch.zeros(2), 0), (torch.zeros(3), 1)])
    with pytest.raises(LosslabError, match="NaN"):
        D.from_dataset([(torch.zeros(2), 0), (torch.tensor([0.0, float("nan")]), 1)])


def test_from_loader():
    x, y = torch.randn(10, 3), torch.arange(10) % 4
    b = D.from_loader(DataLoader(TensorDataset(x, y), batch_size=4), DataLoader(TensorDataset(x[:3], y[:3])))
    assert torch.equal(b.train.x, x) and torch.equal(b.train.y, y) and len(b.test) == 3 and b.num_classes == 4
    shuffled = D.from_loader(DataLoader(TensorDataset(x, y), batch_size=3, shuffle=True))
    assert sorted(shuffled.train.y.tolist()) == sorted(y.tolist())
    with pytest.raises(LosslabError, match="empty"):
        D.from_loader([])
    with pytest.raises(LosslabError, match="pairs"):
        D.from_loader([(x, y, y)])


# -------------------------------------------------------------------------------------------- vision
def _idx(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def _write_mnist(root: Path, n_train: int = 20, n_test: int = 8, gz: bool = False) -> dict[str, np.ndarray]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    g = np.random.default_rng(0)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        img = g.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        lab = g.integers(0, 10, n, dtype=np.uint8)
        out[prefix] = (img, lab)
        for kind, arr in (("images-idx3", img), ("labels-idx1", lab)):
            data = _idx(arr)
            name = raw / f"{prefix}-{kind}-ubyte"
            if gz:
                with gzip.open(f"{name}.gz", "wb") as fh:
                    fh.write(data)
            else:
                name.write_bytes(data)
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reader(tmp_path, gz):
    ref = _write_mnist(tmp_path, gz=gz)
    b = D.load("mnist", root=tmp_path)
    assert (len(b.train), len(b.test), b.input_shape, b.num_classes) == (20, 8, (1, 28, 28), 10)
    assert b.train.x.dtype == torch.float32 and b.train.y.dtype == torch.int64
    assert np.allclose(b.train.x.numpy()[:, 0] * 255, ref["train"][0])
    assert np.array_equal(b.test.y.numpy(), ref["t10k"][1])
    assert b.meta["source"]["kwargs"]["root"] == str(tmp_path)
    json.dumps(b.describe())
    assert bundle_digest(D.mnist(tmp_path / "MNIST" / "raw")) == bundle_digest(b)


def test_mnist_missing_and_malformed(tmp_path):
    with pytest.raises(LosslabError, match=r"MNIST/raw/train-images-idx3-ubyte.*never downloads") as info:
        D.mnist(tmp_path)
    assert "\n" not in str(info.value)
    _write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")
    with pytest.raises(LosslabError, match="t10k-labels-idx1-ubyte"):
        D.mnist(tmp_path)


def test_mnist_via_torchvision_adapter(tmp_path):
    tv = pytest.importorskip("torchvision")
    _write_mnist(tmp_path)
    b = D.from_dataset(tv.datasets.MNIST(tmp_path, train=True, download=False),
                       tv.datasets.MNIST(tmp_path, train=False, download=False))
    assert bundle_digest(b) == bundle_digest(D.mnist(tmp_path))


def _cifar_arrays(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    g = np.random.default_rng(seed)
    return g.integers(0, 256, (n, 3072), dtype=np.uint8), [int(v) for v in g.integers(0, 10, n)]


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_python_batches(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    ref = {}
    for i, name in enumerate(names):
        data, labels = _cifar_arrays(4, i)
        ref[name] = (data, labels)
        d = {b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": [b"a.png"] * 4}
        (folder / name).write_bytes(pickle.dumps(d, protocol=protocol))
    b = D.load("cifar10", root=tmp_path)
    assert (len(b.train), len(b.test), b.input_shape, b.num_classes) == (20, 4, (3, 32, 32), 10)
    assert np.allclose(b.train.x.numpy()[4].reshape(-1) * 255, ref["data_batch_2"][0][0])
    assert b.test.y.tolist() == ref["test_batch"][1]
    assert b.meta["format"] == "py"


def test_cifar10_binary_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data, labels = _cifar_arrays(4, i)
        (folder / f"{name}.bin").write_bytes(np.concatenate([np.array(labels, np.uint8)[:, None], data], 1).tobytes())
    b = D.cifar10(tmp_path)
    assert (len(b.train), len(b.test)) == (20, 4) and b.meta["format"] == "bin"
    assert b.train.y[:4].tolist() == _cifar_arrays(4, 0)[1]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_cifar10_refuses_unsafe_pickles_and_missing(tmp_path):
    with pytest.raises(LosslabError, match=r"cifar-10-batches-py/data_batch_1.*never downloads"):
        D.cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [0]}))
    with pytest.raises(LosslabError, match="refusing to load global (posix|nt|os).system"):
        D.cifar10(tmp_path)


# ------------------------------------------------------------------------------ cross-process checks
_CHILD = """
import hashlib, json, os, sys
import losslab.data as D

def digest(b):
    h = hashlib.sha256()
    for t in (b.train.x, b.train.y, b.test.x, b.test.y):
        a = t.contiguous().numpy()
        h.update(str((a.dtype.str, a.shape)).encode()); h.update(a.tobytes())
    return h.hexdigest()

out = {}
os.environ["LOSSLAB_CACHE"] = sys.argv[1]  # an empty cache: generates
out["mnist1d_gen"] = digest(D.load("mnist1d", seed=1, num_samples=%d))
os.environ["LOSSLAB_CACHE"] = sys.argv[2]  # the parent's cache: reads it
out["mnist1d_hit"] = digest(D.load("mnist1d", seed=1, num_samples=%d))
out["digits"] = digest(D.load("digits"))
out["corrupt"] = digest(D.corrupt_labels(D.load("digits"), 0.4, seed=9))
out["poison"] = digest(D.poison(D.load("spirals", seed=2, n_train=50, n_test=5), 20, seed=3))
print(json.dumps(out))
""" % (SMALL, SMALL)


def test_determinism_across_processes(tmp_path, _cache):
    here = {
        "mnist1d_gen": bundle_digest(D.load("mnist1d", seed=1, num_samples=SMALL)),  # fills _cache
        "digits": bundle_digest(D.load("digits")),
        "corrupt": bundle_digest(D.corrupt_labels(D.load("digits"), 0.4, seed=9)),
        "poison": bundle_digest(D.poison(D.load("spirals", seed=2, n_train=50, n_test=5), 20, seed=3)),
    }
    here["mnist1d_hit"] = here["mnist1d_gen"]
    fresh_cache = tmp_path / "child-cache"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "LOSSLAB_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(fresh_cache), str(_cache)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == here
    assert len(list((fresh_cache / "mnist1d").glob("*.npz"))) == 1


# ---------------------------------------------------------------------------------------- docstrings
def test_docstring_examples_run():
    import losslab.data._registry as reg
    from losslab.data import _sources, adapters, builtin, vision, wrappers

    for mod in (D, reg, builtin, wrappers, adapters, vision, _sources):
        result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, mod.__name__


def test_public_api():
    assert set(D.__all__) == {
        "Split", "Bundle", "load", "available", "register", "fresh_samples", "digits", "mnist1d", "moons",
        "spirals", "blobs", "mnist", "cifar10", "corrupt_labels", "poison", "subsample", "row_mask",
        "from_tensors", "from_dataset", "from_loader", "resolve",
    }
    assert D.Split is Split
