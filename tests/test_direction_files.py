"""Direction files (issues 18 and 15): recipes that regenerate seeded directions bit-identically, and
``surface --directions FILE`` with the directions a user gives in a .pt/.npz file."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from losslab import directions as D
from losslab import params as P
from losslab.cli.main import main
from losslab.errors import DamagedFile, LosslabError
from losslab.results import seal
from losslab.surface import SurfaceResult, bundle_settings, line, plane

from cases import tiny_cnn, train_digits, zoo_mlp


def same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def weights(cnn=False):
    """A float64 point with conv filters, or with BatchNorm affine (1-D) tensors."""
    model = tiny_cnn(0) if cnn else zoo_mlp(0, input_dim=6, num_classes=3, width=8, depth=2, norm="bn")
    return P.get_point(model)


# ------------------------------------------------------------------------------------------- recipes
@pytest.mark.parametrize("orthogonalize, renormalize", [(False, True), (True, True), (True, False)])
@pytest.mark.parametrize("cnn", [False, True])
def test_plane_recipes_regenerate_bit_identically(tmp_path, orthogonalize, renormalize, cnn):
    w = weights(cnn)
    dx, dy = D.random_plane(w, seed=7, normalization="layer", ignore_1d=False, orthogonalize=orthogonalize,
                            renormalize=renormalize)
    for name, d in (("dx", dx), ("dy", dy)):
        D.save_direction(d, tmp_path / name, weights=w)
        assert not (tmp_path / f"{name}.npz").exists()
        e = D.load_direction(tmp_path / name, weights=w)
        same(e.vector, d.vector)
        assert e.meta == json.loads(json.dumps(d.meta))


def test_direction_and_generator_recipes(tmp_path):
    w = weights()
    d = D.random_direction(w, seed=11)
    assert D.direction_recipe(d) == {"call": "random_direction", "seed": 11, "normalization": "filter",
                                     "ignore_1d": True}
    D.save_direction(d, tmp_path / "d", weights=w)
    same(D.load_direction(tmp_path / "d", weights=w).vector, d.vector)
    # a plane drawn from a caller's generator records its root seed: regenerable too
    dx, _ = D.random_plane(w, generator=torch.Generator().manual_seed(3))
    D.save_direction(dx, tmp_path / "gx", weights=w)
    same(D.load_direction(tmp_path / "gx", weights=w).vector, dx.vector)
    # a direction drawn from a generator has no seed: its vectors are written
    dg = D.random_direction(w, generator=torch.Generator().manual_seed(3))
    assert D.direction_recipe(dg) is None
    D.save_direction(dg, tmp_path / "g", weights=w)
    assert (tmp_path / "g.npz").exists()
    same(D.load_direction(tmp_path / "g").vector, dg.vector)


def test_recipes_refuse_other_weights_and_need_weights(tmp_path):
    w = weights()
    d = D.random_direction(w, seed=1)
    D.save_direction(d, tmp_path / "d", weights=w)
    with pytest.raises(LosslabError, match="pass the weights"):
        D.load_direction(tmp_path / "d")
    with pytest.raises(LosslabError, match="is a direction recipe"):
        D.Direction.load(tmp_path / "d")
    other = {k: v + 1e-3 for k, v in w.items()}
    with pytest.raises(LosslabError, match="other weights"):
        D.load_direction(tmp_path / "d", weights=other)
    header = json.loads((tmp_path / "d.json").read_text())
    header["recipe"]["seed"] = 2  # another seed: the content hash no longer matches
    (tmp_path / "d.json").write_text(json.dumps(header))
    with pytest.raises(DamagedFile, match="d.json is damaged"):
        D.load_direction(tmp_path / "d", weights=w)
    # resealed, the regenerated vector still does not match its recorded digest
    (tmp_path / "d.json").write_text(json.dumps(seal(header)))
    with pytest.raises(LosslabError, match="differs from the one recorded"):
        D.load_direction(tmp_path / "d", weights=w)


def test_vectors_when_asked_or_not_regenerable(tmp_path):
    w = weights()
    d = D.random_direction(w, seed=1)
    D.save_direction(d, tmp_path / "v", weights=w, vectors=True)
    same(D.load_direction(tmp_path / "v").vector, d.vector)
    m = D.model_to_model(w, {k: v + 1 for k, v in w.items()})
    assert D.direction_recipe(m) is None
    D.save_direction(m, tmp_path / "m", weights=w)
    assert (tmp_path / "m.npz").exists()
    # a recipe written over an older vector file removes the stale tensors
    D.save_direction(d, tmp_path / "v", weights=w)
    assert not (tmp_path / "v.npz").exists()
    same(D.load_direction(tmp_path / "v", weights=w).vector, d.vector)


def test_built_directions_save_recipes_by_default(tmp_path):
    w = weights()
    b = D.build("random", w, dim=2, seed=4, orthogonalize=True)
    b.save(tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["direction0.json", "direction1.json"]
    for i, d in enumerate(b.directions):
        same(D.load_direction(tmp_path / "r" / f"direction{i}", weights=w).vector, d.vector)
    b.save(tmp_path / "v", vectors=True)
    assert (tmp_path / "v" / "direction1.npz").exists()


# ------------------------------------------------------------------------------------- user files
def test_read_direction_file_forms(tmp_path):
    w = weights()
    dx, dy = D.random_plane(w, seed=2)
    torch.save(dx.vector, tmp_path / "one.pt")
    torch.save({"dx": dx.vector, "dy": dy.vector}, tmp_path / "nested.pt")
    torch.save([dx.vector, dy.vector], tmp_path / "list.pt")
    np.savez(tmp_path / "one.npz", **{k: v.numpy() for k, v in dx.vector.items()})
    np.savez(tmp_path / "two.npz", **{f"{a}/{k}": v.numpy() for a, d in (("dx", dx), ("dy", dy))
                                      for k, v in d.vector.items()})
    assert D.count_directions(tmp_path / "one.pt") == 1 and D.count_directions(tmp_path / "two.npz") == 2
    for name in ("one.pt", "one.npz"):
        (v,) = D.read_direction_file(tmp_path / name, w)
        same(v, dx.vector)
    for name in ("nested.pt", "list.pt", "two.npz"):
        vx, vy = D.read_direction_file(tmp_path / name, w)
        same(vx, dx.vector)
        same(vy, dy.vector)


def test_read_direction_file_errors(tmp_path):
    w = weights()
    good = D.random_direction(w, seed=0).vector
    bad = dict(good)
    k0 = next(iter(bad))
    bad["extra.weight"] = bad.pop(k0)
    torch.save(bad, tmp_path / "keys.pt")
    with pytest.raises(LosslabError, match=rf"missing keys \['{k0}'\], unexpected keys \['extra.weight'\]"):
        D.read_direction_file(tmp_path / "keys.pt", w)
    torch.save({**good, k0: torch.zeros(1)}, tmp_path / "shape.pt")
    with pytest.raises(LosslabError, match="shape"):
        D.read_direction_file(tmp_path / "shape.pt", w)
    torch.save([good, good, good], tmp_path / "three.pt")
    with pytest.raises(LosslabError, match="holds 3 directions"):
        D.read_direction_file(tmp_path / "three.pt", w)
    with open(tmp_path / "pickle.pt", "wb") as fh:  # an arbitrary pickle: weights_only refuses it
        pickle.dump({"w": object()}, fh)
    with pytest.raises(LosslabError, match="cannot read"):
        D.read_direction_file(tmp_path / "pickle.pt", w)
    with pytest.raises(LosslabError, match="does not exist"):
        D.read_direction_file(tmp_path / "nope.npz", w)
    with pytest.raises(LosslabError, match=".pt or .npz"):
        D.read_direction_file(tmp_path / "keys.safetensors", w)
    torch.save(good, tmp_path / "single.pt")
    with pytest.raises(LosslabError, match=r"holds 1 direction\(s\) but dim is 2"):
        D.build("file", w, dim=2, file=tmp_path / "single.pt")


def test_build_file_normalizes_like_random_directions(tmp_path):
    w = weights()
    g = torch.Generator().manual_seed(0)
    raw = [{k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in w.items()} for _ in range(2)]
    torch.save(raw, tmp_path / "raw.pt")
    b = D.build("file", w, dim=2, file=tmp_path / "raw.pt", normalization="none")
    same(b.directions[0].vector, raw[0])
    b = D.build("file", w, dim=2, file=tmp_path / "raw.pt", normalization="filter")
    same(b.directions[1].vector, D.normalize(raw[1], w, "filter", True))
    b.save(tmp_path / "out")  # user-given: written as vectors
    same(D.load_direction(tmp_path / "out" / "direction1").vector, b.directions[1].vector)


# ------------------------------------------------------------------------------------ the CLI
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return train_digits(tmp_path_factory.mktemp("runs"), epochs=1)


def _surface(run, out, *extra):
    assert main(["surface", str(run), "--grid", "4", "3", "--out", str(out), "--no-progress", *extra]) == 0
    return SurfaceResult.load(out / "surface")


def test_cli_digits_surface_writes_small_recipes_and_resumes(digits_run, tmp_path):
    from losslab.runs import Run

    res = _surface(digits_run, tmp_path / "s")
    files = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert files == ["direction0.json", "direction1.json", "surface.json", "surface.npz"]
    assert max((tmp_path / "s" / f).stat().st_size for f in files) < 2**20
    w = P.get_point(Run(digits_run).build_model())
    dx, dy = (D.load_direction(tmp_path / "s" / f"direction{i}", weights=w) for i in range(2))
    ref_x, ref_y = D.random_plane(w, seed=0)
    same(dx.vector, ref_x.vector)
    same(dy.vector, ref_y.vector)
    # a partial surface resumes (directions regenerated from the seed) to the same bits as in one go
    part = tmp_path / "part"
    assert main(["surface", str(digits_run), "--grid", "4", "3", "--out", str(part), "--no-progress"]) == 0
    r = SurfaceResult.load(part / "surface")
    r.done[1:] = False
    r.metrics["loss"][1:] = np.nan
    r.save(part / "surface")
    again = _surface(digits_run, part)
    assert again.done.all() and np.array_equal(again.metrics["loss"], res.metrics["loss"])
    vec = _surface(digits_run, tmp_path / "v", "--save-vectors")
    assert (tmp_path / "v" / "direction0.npz").exists()
    assert np.array_equal(vec.metrics["loss"], res.metrics["loss"])


def test_cli_directions_file_matches_the_api(digits_run, tmp_path):
    from losslab.runs import Run

    run = Run(digits_run)
    model, bundle = run.build_model(), run.bundle()
    w = P.get_point(model)
    dx, dy = D.random_plane(w, seed=5)
    torch.save({"dx": dx.vector, "dy": dy.vector}, tmp_path / "plane.pt")
    got = _surface(digits_run, tmp_path / "f", "--directions", str(tmp_path / "plane.pt"), "--normalization", "none")
    x, y = np.linspace(-1, 1, 4), np.linspace(-1, 1, 3)
    ref = plane(model, bundle.train, dx=dx, dy=dy, x=x, y=y, progress=False, **bundle_settings(bundle, "train"))
    np.testing.assert_allclose(got.metrics["loss"], ref.metrics["loss"], rtol=1e-6, atol=1e-7)
    # the same directions as the seeded random plane: the same surface, bit for bit
    seeded = _surface(digits_run, tmp_path / "r", "--seed", "5")
    assert np.array_equal(got.metrics["loss"], seeded.metrics["loss"])
    # a file with one direction gives a line, without --dim
    np.savez(tmp_path / "line.npz", **{k: v.numpy() for k, v in dx.vector.items()})
    assert main(["surface", str(digits_run), "--directions", str(tmp_path / "line.npz"), "--grid", "5",
                 "--normalization", "none", "--out", str(tmp_path / "l"), "--no-progress"]) == 0
    got_line = SurfaceResult.load(tmp_path / "l" / "surface")
    ref_line = line(model, bundle.train, direction=dx, alphas=np.linspace(-1, 1, 5), progress=False,
                    **bundle_settings(bundle, "train"))
    assert got_line.kind == "line"
    np.testing.assert_allclose(got_line.metrics["loss"], ref_line.metrics["loss"], rtol=1e-6, atol=1e-7)


def test_cli_directions_file_errors(digits_run, tmp_path, capsys):
    bad = {"nope.weight": torch.zeros(2)}
    torch.save(bad, tmp_path / "bad.pt")
    assert main(["surface", str(digits_run), "--directions", str(tmp_path / "bad.pt"), "--out",
                 str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "losslab: error:" in err[0] and "unexpected keys ['nope.weight']" in err[0]
    with pytest.raises(SystemExit):
        main(["surface", str(digits_run), "--directions", "sideways"])
