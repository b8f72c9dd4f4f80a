"""Every ``*Result`` class in ``src/losslab`` saves itself and loads back with every field equal.

The classes are discovered by grepping the sources for ``class <Name>Result``, so a new result type
fails here until it has a factory below and a working ``save``/``load`` (issue 17: one results layer).
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from losslab.results import Result

SRC = Path(__file__).resolve().parents[1] / "src" / "losslab"


# Dataclasses that public functions return but that are not measurements: inputs, settings, handles and
# the experiments' parts (saved inside an ExperimentResult).  Everything else they return is a result.
NOT_RESULTS = {
    "Bundle", "Split",                      # data: built from the user's data, never saved as a result
    "Direction", "BuiltDirections",         # directions: Direction has its own file format (direction .npz)
    "PermutationSpec", "NEBCycle", "InstabilityConfig", "TrainConfig", "Config",  # settings
    "DistContext",                          # a process group handle
    # parts of an ExperimentResult (criteria, checks, their intervals, figures) and the runner's bookkeeping
    "Criterion", "Control", "Check", "Interval", "Verdict", "FigureRef", "Outcome",
    "RowView", "BrowserCheck",              # the HTML report's view models
}


def _grep_results() -> dict[str, str]:
    """``{ClassName: module}`` for every ``class <X>Result`` defined in src/losslab."""
    found: dict[str, str] = {}
    for f in sorted(SRC.rglob("*.py")):
        for m in re.finditer(r"^class (\w+Result)\b", f.read_text(), re.M):
            mod = "losslab." + ".".join(f.relative_to(SRC).with_suffix("").parts)
            found[m.group(1)] = mod
    return found


def _returned_dataclasses() -> dict[str, str]:
    """``{ClassName: module}`` for every losslab dataclass that a public function or method returns (by its
    return annotation), over the ``__all__`` of every public module."""
    import inspect
    import pkgutil
    import typing

    import losslab

    found: dict[str, str] = {}
    for info in pkgutil.walk_packages(losslab.__path__, "losslab."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]) or ".cli" in info.name:
            continue
        mod = importlib.import_module(info.name)
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name, None)
            funcs = [obj] if inspect.isfunction(obj) else []
            if inspect.isclass(obj):
                funcs = [getattr(v, "__func__", v) for k, v in vars(obj).items() if not k.startswith("_")]
            for fn in funcs:
                if not inspect.isfunction(fn):
                    continue
                try:
                    ret = typing.get_type_hints(fn).get("return")
                except Exception:  # an annotation naming an optional dependency's type
                    continue
                for cls in (ret, *typing.get_args(ret)):
                    if (inspect.isclass(cls) and dataclasses.is_dataclass(cls)
                            and cls.__module__.startswith("losslab.") and cls.__name__ not in NOT_RESULTS):
                        found[cls.__name__] = cls.__module__
    return found


def _discover() -> dict[str, str]:
    """Every result type: the ``*Result`` classes and every other dataclass a public function returns."""
    return {**_returned_dataclasses(), **_grep_results()}


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _f64(*shape: int) -> np.ndarray:
    return _rng().standard_normal(shape)


def _point() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"0.weight": torch.randn(3, 2, generator=g), "0.bias": torch.randn(3, generator=g)}


def _path_result() -> Any:
    from losslab.connect.paths import PathResult

    a = np.linspace(0.0, 1.0, 5)
    return PathResult.from_metrics(a, {"train": {"loss": np.array([0.1, 0.5, 0.9, 0.4, 0.2]),
                                                 "error": np.array([0.0, 0.2, 0.5, 0.1, 0.0])},
                                       "test": {"loss": np.array([0.2, 0.6, 1.0, 0.5, 0.3]),
                                                "error": np.array([0.1, 0.3, 0.6, 0.2, 0.1])}},
                                   {"kind": "linear", "n": 5})


def _experiment() -> Any:
    from losslab.experiments._base import Check, ExperimentResult, FigureRef, Verdict

    chk = Check("monotone", True, "mean 0.02", value=0.02, ci=[0.01, 0.03], interval="t95", threshold=0.0, op=">",
                seeds=5, per_seed=[0.01, 0.02, 0.03, 0.02, 0.02], rule="interval")
    return ExperimentResult(id="A1", title="t", claim="c", reference="r", check="k", config={"n": 3, "xs": [1, 2]},
                            config_hash="abc", profile="quick", seeds={"train": [0, 1]}, data="digits",
                            timings={"total": 1.5}, measurements={"barrier": [0.1, 0.2]}, key_numbers={"b": "0.1"},
                            comparison="same", verdict=Verdict("reproduced", "why", (chk,)),
                            figures=[FigureRef("a.png", "cap")], env={"torch": "x"}, created="2026-01-01",
                            notes=["n"], criteria=["c1"], control={"x": 1})


def _neb() -> Any:
    from losslab.connect.neb import NEBResult

    return NEBResult(pivots=torch.randn(4, 5, generator=torch.Generator().manual_seed(1)),
                     pivot_values=_f64(4), positions=np.linspace(0, 1, 4), dense_values=_f64(10), saddle_value=0.7,
                     saddle_position=0.4, saddle_point=torch.arange(5.0), linear_saddle=1.2,
                     history=[{"cycle": 0, "loss": 0.5, "pivots": 4}], path=_path_result(), meta={"seed": 0})


def _align() -> Any:
    from losslab.connect.permute import AlignResult, PermutationSpec, WeightMatchingInfo

    spec = PermutationSpec({"h": (("0.weight", 0), ("0.bias", 0), ("2.weight", 1))}, frozenset({"bn.running_mean"}))
    info = WeightMatchingInfo(iterations=2, objective=[1.0, 2.5], identity_objective=1.0, converged=True,
                              keys=("0.weight", "0.bias"))
    return AlignResult(point_b_aligned=_point(), perm={"h": torch.tensor([2, 0, 1])}, verified=True,
                       max_abs_output_diff=1e-7, info=info, spec=spec)


def _eig() -> Any:
    from losslab.curvature.lanczos import lanczos_eigs

    a = torch.tensor(_f64(6, 6))
    return lanczos_eigs(a + a.T, 2, seed=0, compute_residuals=True)


def _sharpness(kind: str) -> Any:
    from losslab.curvature import adaptive_sharpness, epsilon_sharpness

    g = torch.Generator().manual_seed(0)
    X = torch.randn(16, 3, generator=g, dtype=torch.float64)
    y = X @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64)
    model = torch.nn.Linear(3, 1).double()
    fn = adaptive_sharpness if kind == "adaptive" else epsilon_sharpness
    return fn(model, (X, y), loss=torch.nn.MSELoss(), steps=3)


def _graph() -> Any:
    from losslab.connect.neb import ConnectionGraph

    nan = float("nan")
    lin = np.array([[nan, 1.2], [1.2, nan]])
    return ConnectionGraph(minima_values=np.array([0.1, 0.2]), linear_saddles=lin, saddles=lin * 0.5,
                           refined=np.array([[False, True], [True, False]]), mst=[(0, 1, 0.6)], minimax=lin * 0.5,
                           results={(0, 1): _neb()}, rounds=1)


def _trace() -> Any:
    from losslab.curvature.trace import hutchinson_trace

    return hutchinson_trace(torch.diag(torch.arange(1.0, 7.0, dtype=torch.float64)), num_probes=5, seed=0)


FACTORIES: dict[str, Callable[[], Any]] = {
    "IntrinsicDimResult": lambda: __import__("losslab.subspace.intrinsic", fromlist=["x"]).IntrinsicDimResult(
        dims=np.array([10, 20], dtype=np.int64), seeds=np.array([0, 1], dtype=np.int64),
        metrics={"test_accuracy": np.array([[0.5, 0.6], [0.9, 0.95]]), "train_accuracy": np.array([[0.6, 0.6], [1.0, 1.0]]),
                 "train_loss": _f64(2, 2)},
        done=np.ones((2, 2), bool), baseline_metrics={"test_accuracy": np.array([0.97, 0.98]),
                                                      "train_accuracy": np.array([1.0, 1.0]), "train_loss": _f64(2)},
        baseline_done=np.ones(2, bool), metric="test_accuracy", threshold=0.9, baseline_value=0.975,
        meta={"format": "x", "settings": {"epochs": 2}}),
    "SubspaceResult": lambda: __import__("losslab.subspace.training", fromlist=["x"]).SubspaceResult(
        d=4, D=9, seed=0, train_loss=0.3, train_accuracy=0.9, test_loss=float("nan"), test_accuracy=0.8,
        history=[{"epoch": 1.0, "train_loss": 0.4}], theta_d=np.arange(4.0, dtype=np.float32), point=_point(),
        diverged=False, steps=12, seconds=0.5, meta={"projection": {"kind": "dense"}, "seeds": (1, 2)}),
    "FactorizationResult": lambda: __import__("losslab.probes.implicit", fromlist=["x"]).FactorizationResult(
        *[np.arange(3, dtype=np.int64)] + [_f64(3) for _ in range(10)] + [_f64(3, 4, 4)], meta={"depth": 3}),
    "DiversityResult": lambda: __import__("losslab.probes.function_space", fromlist=["x"]).DiversityResult(
        final_accuracy=_f64(3), disagreement=_f64(3, 3), kl=_f64(3, 3), js=_f64(3, 3), weight_cosine=_f64(3, 3),
        traj_run=np.array([0, 0, 1], dtype=np.int64), traj_step=np.array([1, 2, 1], dtype=np.int64),
        traj_accuracy=_f64(3), traj_disagreement=_f64(3), traj_js=_f64(3), traj_weight_cosine=_f64(3),
        tsne=_f64(3, 2), pca=_f64(3, 2), summary={"ensemble": {"size": 3}}, meta={"split": "test"}),
    "StiffnessResult": lambda: __import__("losslab.probes.stiffness", fromlist=["x"]).StiffnessResult(
        indices=np.arange(4, dtype=np.int64), labels=np.array([0, 0, 1, 1], dtype=np.int64),
        classes=np.array([0, 1], dtype=np.int64), cos=_f64(4, 4), sign=_f64(4, 4), class_cos=_f64(2, 2),
        class_sign=_f64(2, 2), distance_edges=np.linspace(0, 1, 3), distance_cos=_f64(2), distance_sign=_f64(2),
        distance_count=np.array([3, 3], dtype=np.int64), summary={"within": 0.5}, meta={"n": 4}),
    "KernelVelocityResult": lambda: __import__("losslab.probes.ntk", fromlist=["x"]).KernelVelocityResult(
        steps=np.array([0, 10, 20], dtype=np.int64), kernels=_f64(3, 4, 4), kernel_norm=_f64(3), distance=_f64(3, 3),
        velocity_step=_f64(2), velocity_logstep=_f64(2), distance_from_init=_f64(3), distance_to_final=_f64(3),
        summary={"v": 0.1}, meta={"mode": "trace"}),
    "LinearTrainResult": lambda: __import__("losslab.probes.ntk", fromlist=["x"]).LinearTrainResult(
        point=_point(), train_loss=0.1, train_error=0.0, test_loss=0.3, test_error=0.1,
        history=[{"epoch": 1.0, "loss": 0.2}], seconds=0.25),
    "LinearizationResult": lambda: __import__("losslab.probes.ntk", fromlist=["x"]).LinearizationResult(
        np.array([0, 100], dtype=np.int64), *[_f64(2) for _ in range(7)], summary={"later_is_better": True},
        meta={"lr": 0.1}),
    "GradientNoiseResult": lambda: __import__("losslab.probes.noise", fromlist=["x"]).GradientNoiseResult(
        b_simple=12.5, b_simple_unbiased=11.0, trace_cov=3.0, grad_norm_sq=0.24, eigenvalues=_f64(5), n=64,
        meta={"split": "train"}),
    "PathResult": _path_result,
    "NEBResult": _neb,
    "InstabilityResult": lambda: __import__("losslab.connect.instability", fromlist=["x"]).InstabilityResult(
        spawn_steps=np.array([0, 10], dtype=np.int64), paths=[_path_result(), _path_result()], threshold=0.02,
        total_steps=100, run_dir="set by the test", meta={"config": {"num": 5}, "reused": True}),
    "AlignResult": _align,
    "CurveResult": lambda: __import__("losslab.connect.curves", fromlist=["x"]).CurveResult(
        kind="bezier", num_bends=1, control_points=[_point(), _point(), _point()], path=_path_result(),
        history=[{"epoch": 1.0, "loss": 0.5}], plane=None, plane_coords=_f64(3, 2), meta={"lr": 0.05}),
    "ExperimentResult": _experiment,
    "GoldilocksResult": lambda: __import__("losslab.subspace.goldilocks", fromlist=["x"]).GoldilocksResult(
        radii=np.array([0.5, 1.0]), seeds=np.array([0, 1], dtype=np.int64), d=4, relative=False,
        init_norms=_f64(2, 2), metrics={m: _f64(2, 2) for m in __import__("losslab.subspace.goldilocks", fromlist=["x"]).CELL_METRICS},
        eigenvalues=_f64(2, 2, 4),
        done=np.ones((2, 2), bool), meta={"format": "x", "settings": {"d": 4}}),
    "TraceResult": _trace,
    "AdaptiveSharpness": lambda: _sharpness("adaptive"),
    "EpsilonSharpness": lambda: _sharpness("epsilon"),
    "NegativeCurvature": lambda: __import__("losslab.curvature", fromlist=["x"]).negative_curvature_ratio(
        torch.diag(torch.tensor([4.0, 1.0, -1.0], dtype=torch.float64)), seed=0),
    "CovarianceSpectrum": lambda: __import__("losslab.probes", fromlist=["x"]).covariance_spectrum(
        torch.tensor(_f64(6, 4)), k=2, eigenvectors=True),
    "WeightMatchingInfo": lambda: _align().info,
    "ConnectionGraph": _graph,
    "SLQResult": lambda: __import__("losslab.curvature.density", fromlist=["x"]).SLQResult(
        nodes=_f64(3, 5), weights=np.abs(_f64(3, 5)), dim=40, num_matvecs=15, meta={"seed": 0}),
    "EigResult": _eig,
    "BasinResult": lambda: __import__("losslab.curvature.basin", fromlist=["x"]).BasinResult(
        radii=np.abs(_f64(3, 2)), euclidean_radii=np.abs(_f64(3, 2)), censored=np.zeros((3, 2), bool),
        direction_norms=np.abs(_f64(3)), direction_seeds=[1, 2, 3], base_loss=0.1, threshold_loss=0.2, dim=9,
        num_evaluations=30, meta={"normalization": "filter"}),
    "SurfaceResult": lambda: __import__("losslab.surface", fromlist=["x"]).SurfaceResult(
        kind="plane", x=np.linspace(-1, 1, 3), y=np.linspace(-1, 1, 2), metrics={"loss": _f64(2, 3)},
        done=np.ones((2, 3), bool), meta={"origin": {"source": "model"}}),
    "PCAResult": lambda: __import__("losslab.directions", fromlist=["x"]).PCAResult(
        directions=[__import__("losslab.directions", fromlist=["x"]).Direction(_point(), {"kind": "pca", "j": j})
                    for j in range(2)],
        explained_variance_ratio=np.array([0.7, 0.2]), coords=_f64(4, 2), residual=_f64(4), center=_point(),
        singular_values=np.array([2.0, 1.0]), meta={"n": 4}),
}


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Exact equality of loaded and original values, with types, dtypes and shapes."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), f"{where}: {type(b).__name__} instead of ndarray"
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), f"{where}: values differ"
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), f"{where}: {type(b).__name__} instead of Tensor"
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        assert torch.equal(a.detach().cpu(), b.detach().cpu()), f"{where}: values differ"
    elif dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        # key order is not compared: the established formats write JSON with sorted keys
        assert isinstance(b, dict) and sorted(map(repr, a)) == sorted(map(repr, b)), f"{where}: keys {list(a)} vs {b!r}"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple, set, frozenset)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a!r} vs {b!r}"
        if isinstance(a, (set, frozenset)):
            assert a == b, f"{where}: {a!r} vs {b!r}"
        else:
            for i, (x, y) in enumerate(zip(a, b)):
                assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"{where}: {a!r} vs {b!r}"
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} ({type(a).__name__}) vs {b!r} ({type(b).__name__})"


def test_every_result_class_has_a_factory() -> None:
    found = _discover()
    assert len(found) >= 22
    missing = sorted(set(found) - set(FACTORIES))
    assert not missing, f"result classes without a round-trip factory here: {missing}"


@pytest.mark.parametrize("name", sorted(_discover()))
def test_result_round_trip(name: str, tmp_path: Path) -> None:
    cls = getattr(importlib.import_module(_discover()[name]), name)
    assert issubclass(cls, Result), f"{name} does not follow the Result contract"
    assert name in FACTORIES, f"no factory for {name}"
    obj = FACTORIES[name]()
    if name == "InstabilityResult":  # a sweep directory: its path is part of the loaded result
        obj = dataclasses.replace(obj, run_dir=str(tmp_path / "r"))
    assert type(obj) is cls
    written = obj.save(tmp_path / "r")
    assert Path(written).exists()
    back = cls.load(tmp_path / "r")
    assert_same(obj, back, name)


def test_generic_result_refuses_another_type(tmp_path: Path) -> None:
    from losslab.curvature.trace import TraceResult
    from losslab.errors import LosslabError
    from losslab.probes.noise import GradientNoiseResult

    FACTORIES["GradientNoiseResult"]().save(tmp_path / "g")
    with pytest.raises(LosslabError, match="not a losslab.result.TraceResult"):
        TraceResult.load(tmp_path / "g")
    assert GradientNoiseResult.load(tmp_path / "g.json").n == 64


@pytest.mark.parametrize("name", sorted(_discover()))
def test_every_saved_result_file_is_checked_on_load(name: str, tmp_path: Path) -> None:
    """Issue 16: each file a result writes (JSON sidecars sealed with a content hash, npz read whole) is
    checked when it is loaded: a changed digit in any JSON file, or a truncated file, is a DamagedFile."""
    from losslab.errors import DamagedFile
    from test_faults_files import damage

    cls = getattr(importlib.import_module(_discover()[name]), name)
    obj = FACTORIES[name]()
    if name == "InstabilityResult":
        obj = dataclasses.replace(obj, run_dir=str(tmp_path / "r"))
    obj.save(tmp_path / "r")
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert written
    for f in written:
        for how in ("flip", "truncate"):
            if how == "flip" and f.suffix == ".npz":
                continue  # a flipped npz byte: covered by the zip CRC-32 tests in test_faults_files
            good = f.read_bytes()
            try:
                damage(f, how)
            except AssertionError:  # no digit in the second half of a tiny JSON file: nothing to flip
                continue
            with pytest.raises(DamagedFile):
                cls.load(tmp_path / "r")
            f.write_bytes(good)
    assert_same(obj, cls.load(tmp_path / "r"), name)
