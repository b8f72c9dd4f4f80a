"""Issue 17 (one house): the survey rows use the library's barriers and monotonicity, and their shared
boilerplate lives in experiments.common; none of it may change a number, a criterion or a result key."""
from __future__ import annotations

import numpy as np
import pytest

from losslab.connect.paths import barriers
from losslab.experiments import _registry
from losslab.experiments._base import result_key
from losslab.interpolation import monotonicity, rising_steps

# result keys of every row before the refactor (quick, full): saved `losslab reproduce` results stay found;
# a row whose measurement code changed bumps its VERSION on purpose (noted beside its key)
KEYS = {
    "A1": ("A1-a9a89c0c304c", "A1-fdade76729c2"),
    "A2": ("A2-ea4b9298dbb0", "A2-cfeef4983309"),
    "A3": ("A3-f478a5720c20", "A3-e84e4c90fd51"),
    "A4": ("A4-46198cbb247a", "A4-06dea4116bb9"),
    "A5": ("A5-da116aa62747", "A5-a3fc2f79cbaa"),
    "B1": ("B1-6839bba762f7", "B1-76daf6410bbc"),  # VERSION 3 (was B1-9307b810ec75): BN recompute changed
    "B2": ("B2-b94671614fb4", "B2-2563a38f99c8"),
    "C1": ("C1-173d42a092fb", "C1-c6f5a87fbdb0"),
    "C2": ("C2-ff9fdc53dbbb", "C2-715406d12a78"),
    "C3": ("C3-8c2487953b23", "C3-bfb44fa64ac1"),
    "C4": ("C4-3695d15f3c35", "C4-09722713b5b7"),
    "C5": ("C5-c31b42c30473", "C5-dce98c097540"),
    "C6": ("C6-db9e82ff5255", "C6-5be5f21934d4"),
    "C7": ("C7-96b2876ddebe", "C7-d15b6d724831"),
    "C8": ("C8-557f80686058", "C8-7bf8a56bb8a5"),
    "C9": ("C9-346e4053e4d1", "C9-a3b0e2997ddb"),  # VERSION 3 (was C9-fd2dca96da10): Lanczos changed
    "C10": ("C10-1e25f1000b1d", "C10-fd8482380c0d"),
    "C11": ("C11-dddf418576f3", "C11-2f256f2da768"),
    "C12": ("C12-23331771f94b", "C12-c5b731cc3732"),
    "D1": ("D1-9f7808ad87a6", "D1-e7ac541fb90e"),
    "D2": ("D2-97a663cbd10e", "D2-74ac64dcd918"),
}


# sha256 (first 16 hex digits) of every row's criteria text before the refactor: what the report prints
CRITERIA_TEXT = {
    "A1": "a6e3cc0a2970479a",
    "A2": "bb25b799da5b2e73",
    "A3": "53ad8941e65ae3a0",
    "A4": "9a18853bb91909eb",
    "A5": "4d3ae16cd4620607",
    "B1": "0f1d41a278bbbefd",
    "B2": "b1344988a20acbf0",
    "C1": "0e40a1f75252d3b2",
    "C2": "ea6bb7172d3e3a66",
    "C3": "49ac5469d89de4d2",
    "C4": "81db6e66d96b8ba8",
    "C5": "a0767fcf64e6c43f",
    "C6": "cfa47d67f9794af4",
    "C7": "548bc2a8f677674a",
    "C8": "4cdd0476c4b86c87",
    "C9": "1aec4c10828d2029",
    "C10": "7e584770e6ccc4bb",
    "C11": "8b76f24fc0a45319",
    "C12": "b1eaa41aeee5f2c4",
    "D1": "475e080fca50f4b8",
    "D2": "734a2067a586b2db",
}


def _criteria_digest(criteria):
    import hashlib
    import json

    return hashlib.sha256(json.dumps([criteria.lines(), criteria.to_dict()]).encode()).hexdigest()[:16]


def test_criteria_text_of_every_row_unchanged():
    mods, _ = _registry.discover()
    assert {rid: _criteria_digest(m.CRITERIA) for rid, m in mods.items()} == CRITERIA_TEXT


def test_result_keys_of_every_row_unchanged():
    mods, errors = _registry.discover()
    assert not errors
    got = {rid: (result_key(m.ID, m.Config.quick(), getattr(m, "VERSION", 1)),
                 result_key(m.ID, m.Config.full(), getattr(m, "VERSION", 1))) for rid, m in mods.items()}
    assert got == KEYS


# ---- the experiments' former private definitions, frozen here as the reference ----------------------


def _old_barriers(alphas, values):
    a = np.asarray(alphas, dtype=float)
    v = np.asarray(values, dtype=float)
    keep = (a >= -1e-12) & (a <= 1 + 1e-12)
    a, v = a[keep], v[keep]
    order = np.argsort(a)
    a, v = a[order], v[order]
    l0, l1 = v[0], v[-1]
    return {"barrier_mean": float(v.max() - 0.5 * (l0 + l1)),
            "barrier_linear": float(np.max(v - ((1 - a) * l0 + a * l1))), "start": float(l0), "end": float(l1)}


def _old_monotonicity(values, *, rtol=1e-5, atol=1e-6):
    v = np.asarray(values, dtype=float)
    d = np.diff(v)
    rise = d > atol + rtol * np.abs(v[:-1])
    bump = float(np.max(v - np.minimum.accumulate(v))) if v.size else 0.0
    first = int(np.argmax(rise)) if rise.any() else None
    return {"nonmonotone_steps": int(rise.sum()), "steps": int(d.size), "bump_height": bump,
            "first_rise_index": first}


def _curves():
    g = np.random.default_rng(0)
    out = [np.array([1.0, 2.0, 4.0, 3.0, 3.0]), np.array([3.0, 2.0, 2.0 + 1e-9, 2.5, 1.0, 1.2]),
           np.linspace(2, 0, 51), np.array([0.5, 0.5, 0.5]), np.array([1e-3, 1e-3 + 2e-8, 0.9e-3])]
    for n in (2, 7, 25, 41, 51):
        out.append(g.normal(size=n))
        out.append(np.cumsum(g.exponential(size=n))[::-1] + 1e-5 * g.normal(size=n))
        out.append(g.uniform(0, 1, size=n).astype(np.float32).astype(float))
    return out


@pytest.mark.parametrize("v", _curves())
def test_library_barriers_equal_the_rows_old_ones_exactly(v):
    a = np.linspace(0.0, 1.0, len(v))  # C4's grid
    old, new = _old_barriers(a, v), barriers(v, a)
    assert (new["mean"], new["interp"], new["start"], new["end"]) == (
        old["barrier_mean"], old["barrier_linear"], old["start"], old["end"])
    bad = v.copy()
    bad[len(v) // 2] = np.nan
    old, new = _old_barriers(a, bad), barriers(bad, a)
    assert np.isnan(old["barrier_mean"]) and np.isnan(new["mean"])
    assert np.isnan(old["barrier_linear"]) and np.isnan(new["interp"])


@pytest.mark.parametrize("rtol", [1e-5, 1e-3, 0.0])
@pytest.mark.parametrize("v", _curves())
def test_library_monotonicity_equals_the_rows_old_one_exactly(v, rtol):
    from losslab.experiments import a1_monotonic as A1

    old = _old_monotonicity(v, rtol=rtol, atol=A1.ATOL)
    h = 1.0 / (len(v) - 1)
    alphas = np.concatenate([[-2 * h, -h], np.linspace(0.0, 1.0, len(v)), [1 + h]])  # A1's grid: extended
    loss = np.concatenate([[9.0, -9.0], v, [7.0]])
    assert A1._monotonicity(alphas, loss, rtol) == old
    new = monotonicity(np.linspace(0.0, 1.0, len(v)), v, atol=A1.ATOL, rtol=rtol)
    assert (new["non_monotone_steps"], new["steps"], new["bump_height"]) == (
        old["nonmonotone_steps"], old["steps"], old["bump_height"])


def test_monotonicity_tolerances():
    v = np.array([3.0, 2.0, 2.0 + 1e-9, 2.5, 1.0, 1.2])
    a = np.linspace(0, 1, len(v))
    assert monotonicity(a, v)["non_monotone_steps"] == 3  # the CLI's default: every rise counts
    assert monotonicity(a, v, atol=1e-6, rtol=1e-5)["non_monotone_steps"] == 2
    assert monotonicity(a, v, tol=1e-6) == monotonicity(a, v, atol=1e-6)
    assert monotonicity(a, v, atol=0.6)["non_monotone_steps"] == 0
    assert monotonicity(a, v, rtol=0.2)["non_monotone_steps"] == 1  # only 2 -> 2.5 rises by more than 0.2 * 2
    assert rising_steps(v, atol=1e-6, rtol=1e-5).tolist() == [False, False, True, False, True]


@pytest.mark.parametrize("module", ["losslab.experiments.common", "losslab.interpolation"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(module))
    assert res.attempted > 0 and res.failed == 0


# ---- shared row helpers ------------------------------------------------------------------------------


def test_row_configs_share_quick():
    from losslab.experiments.common import RowConfig

    mods, _ = _registry.discover()
    for m in mods.values():
        assert issubclass(m.Config, RowConfig) and m.Config.quick() == m.Config()


def test_same_seeds_keeps_the_record_and_its_order():
    from losslab.experiments.common import same_seeds

    rec = same_seeds((3, 4), "note", {"offsets": [1]})
    assert rec == {"runs": [3, 4], "control": [3, 4], "offsets": [1], "note": "note"}
    assert list(rec) == ["runs", "control", "offsets", "note"]


def test_label_axes_sets_what_it_is_given_only():
    from losslab.experiments.common import label_axes, new_figure

    fig, ax = new_figure()
    ax.plot([0, 1], [0, 1], label="a line")
    ax.set_xlabel("kept")
    label_axes(ax, ylabel="y", title="t", title_size=7, legend=6, loc="upper left")
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("kept", "y", "t")
    assert ax.title.get_fontsize() == 7
    assert ax.get_legend().get_texts()[0].get_fontsize() == 6


def test_row_result_is_experiment_result_create():
    from losslab.experiments import ExperimentResult
    from losslab.experiments import a1_monotonic as A1
    from losslab.experiments.common import FigureRef, Timer, row_result

    timer = Timer()
    with timer("x"):
        pass
    verdict = A1.judge({"main": [{"seed": s, "train_error": 0.0, "bump_height": 0.0, "loss_init": 2.0,
                                  "nonmonotone_steps": 0} for s in range(5)]})
    kw = dict(seeds={"runs": [0]}, data="d", notes=["n"])
    got = row_result(A1.ID, A1.CRITERIA, A1.Config(), {"main": []}, verdict, None, {"k": 1.5}, FigureRef("f.png"),
                     timer, comparison="c", **kw)
    want = ExperimentResult.create(A1.ID, A1.Config(), measurements={"main": []}, verdict=verdict, comparison="c",
                                   key_numbers={"k": 1.5}, figures=[FigureRef("f.png")], criteria=A1.CRITERIA,
                                   timings=timer.seconds, **kw)
    assert got.to_dict() == want.to_dict()


def test_shared_criteria_and_recipes_are_the_old_ones():
    from losslab.experiments import a3_random_labels as A3
    from losslab.experiments import recipes
    from losslab.experiments.criteria import (
        Criterion, lanczos_converged, over_parameterized, run_trained, trained_to_minimum,
    )

    assert trained_to_minimum("final train error") == Criterion(
        "trained to a minimum", "final train error", "<=", 0.01,
        "a claim about solutions needs minima: train error <= 1% (issue 14, like with like)", precondition=True)
    assert run_trained("s", "why") == Criterion("run trained", "s", ">=", 0.1, "why", precondition=True)
    assert over_parameterized("why") == Criterion("over-parameterized", "parameters / training examples", ">", 1.0,
                                                  "why", precondition=True)
    assert lanczos_converged("s", "why") == Criterion("Lanczos converged", "s", "<", 0.5, "why", precondition=True)
    quick = recipes.random_labels_mlp(0.5)
    assert quick.data.subsample == 1000 and quick.data.label_noise == 0.5
    assert recipes.random_labels_mlp(0.5, "full") == recipes.memorization_mlp(0.5, "full")
    assert recipes.deep_linear_mlp(0.0).model.model_kwargs["activation"] == "identity"
    assert recipes.with_label_noise(recipes.random_labels_mlp(0.0), 0.5) == quick
    assert (A3.memorization_mlp, A3.deep_linear_mlp, A3.with_noise) == (
        recipes.random_labels_mlp, recipes.deep_linear_mlp, recipes.with_label_noise)


def test_judge_records_equals_the_checks_spelled_out():
    from losslab.experiments import c7_stiffness as C7
    from losslab.experiments import verdict_from_checks
    from losslab.experiments.criteria import per_seed

    g = np.random.default_rng(3)
    recs = [{"seed": s, "initial_train_error": 0.9, "train_error": float(g.uniform(0, 0.3)),
             "gap_cos": float(g.normal(0.1, 0.05)), "gap_sign": float(g.normal(0.0, 0.1)),
             "length_ratio": float(g.normal(0.8, 0.1))} for s in range(5)]
    seeds = [r["seed"] for r in recs]
    c = C7.CRITERIA
    want = verdict_from_checks([
        c["run trained"].judge([0.9 - r["train_error"] for r in recs], seeds=seeds),
        c["within > between (cos)"].judge(per_seed(recs, "gap_cos"), seeds=seeds),
        c["within > between (sign)"].judge(per_seed(recs, "gap_sign"), seeds=seeds),
        c["stiffness length shrinks"].judge(per_seed(recs, "length_ratio"), seeds=seeds),
    ])
    assert C7.judge({"runs": recs}).to_dict() == want.to_dict()


def test_spread_and_interval_text_equal_the_rows_old_helpers():
    from losslab.experiments.common import interval_text, spread
    from losslab.experiments.criteria import t_interval

    def old_pick(n, k):  # A5's
        if k <= 0 or k >= n:
            return list(range(n))
        return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})

    def old_spread(idx, k):  # C9's
        if k <= 0 or k >= len(idx):
            return idx
        pos = sorted({int(round(p)) for p in np.linspace(0, len(idx) - 1, k)})
        return [idx[p] for p in pos]

    for n in (1, 2, 5, 17, 40):
        for k in (0, 1, 2, 3, 4, 8, 60):
            assert spread(range(n), k) == old_pick(n, k)
            idx = list(range(3, 3 + 2 * n, 2))
            assert spread(idx, k) == old_spread(idx, k)
    v = [0.31, 0.29, 0.35, 0.4, 0.27]
    i = t_interval(v)
    assert interval_text(v) == f"{i.mean:.3g} [{i.lo:.3g}, {i.hi:.3g}]"
    assert interval_text(v, "+.4f") == f"{i.mean:+.4f} [{i.lo:+.4f}, {i.hi:+.4f}]"
