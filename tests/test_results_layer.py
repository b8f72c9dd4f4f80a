"""The results layer (:mod:`losslab.results`): ``jsonable``'s options reproduce each of the
conversions it replaced, the array files round-trip, and the one progress bar keeps the old rules."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pytest
import torch

from losslab import results
from losslab.errors import LosslabError


def _old_registry_jsonable(value: Any) -> Any:  # data/_registry.jsonable before issue 17
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_old_registry_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _old_registry_jsonable(v) for k, v in value.items()}
    return value


def _old_default(obj: Any) -> Any:  # experiments/_base._json_default before issue 17
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


@dataclasses.dataclass
class _DC:
    a: int = 1
    b: tuple[float, ...] = (1.5, float("nan"))


SAMPLE = {"p": Path("/x/y"), "i": np.int64(3), "f": np.float32(0.5), "nan": float("nan"), "inf": np.float64(np.inf),
          "t": (1, 2, [3, {"k": np.bool_(True)}]), "arr": np.arange(6.0).reshape(2, 3), "ten": torch.tensor([1.0, 2.0]),
          1: "int key", "s": "str", "n": None}


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=repr) == json.dumps(b, sort_keys=True, default=repr)


def test_jsonable_default_is_strict_metadata() -> None:
    out = results.jsonable({**SAMPLE, "dc": _DC(), "obj": object}, max_array_size=4)
    assert out["nan"] is None and out["inf"] is None and out["p"] == "/x/y" and out["i"] == 3
    assert out["arr"] == {"array_shape": [2, 3]} and out["ten"] == [1.0, 2.0]
    assert out["dc"] == {"a": 1, "b": [1.5, None]} and out["1"] == "int key" and out["obj"] == str(object)
    json.dumps(out, allow_nan=False)  # strict JSON
    kept = results.jsonable(SAMPLE, keep_nonfinite=True)
    assert math.isnan(kept["nan"]) and kept["inf"] == math.inf and kept["arr"] == [[0, 1, 2], [3, 4, 5]]


def test_jsonable_raise_matches_the_experiments_conversion() -> None:
    sample = {**SAMPLE, "set": {3, 1}, "fs": frozenset({"b", "a"})}
    assert _same(results.jsonable(sample, unknown="raise"), json.loads(json.dumps(sample, default=_old_default)))
    with pytest.raises(TypeError):
        results.jsonable({"dc": _DC()}, unknown="raise")
    from losslab.experiments._base import jsonable as exp_jsonable

    assert _same(exp_jsonable(sample), json.loads(json.dumps(sample, default=_old_default)))


def test_jsonable_keep_matches_the_registry_conversion() -> None:
    from losslab.data._registry import jsonable as reg_jsonable

    out = results.jsonable(SAMPLE, unknown="keep")
    ref = _old_registry_jsonable(SAMPLE)
    assert out.keys() == ref.keys() and out["arr"] is SAMPLE["arr"] and out["ten"] is SAMPLE["ten"]
    assert math.isnan(out["nan"]) and out["t"] == [1, 2, [3, {"k": True}]] and out["p"] == "/x/y"
    assert reg_jsonable(SAMPLE).keys() == ref.keys()
    with pytest.raises(ValueError):
        results.jsonable(1, unknown="nope")  # type: ignore[arg-type]


def test_old_jsonable_names_keep_their_options() -> None:
    from losslab import _io
    from losslab.connect import paths
    from losslab.distributed._surface import _jsonable as dist_jsonable
    from losslab.probes import _common
    from losslab.subspace._grid import jsonable as grid_jsonable
    from losslab.surface import _jsonable as surface_jsonable

    big = {"a": np.zeros(100), "nan": float("nan")}
    assert surface_jsonable(big) == dist_jsonable(big) == {"a": {"array_shape": [100]}, "nan": None}
    assert grid_jsonable is results.jsonable and grid_jsonable(big) == {"a": [0.0] * 100, "nan": None}
    assert not hasattr(_io, "jsonable")  # one home: losslab.results (no _io <-> results circle)
    # the probes' and the paths' copies are gone: they call losslab.results.jsonable (paths keep NaN)
    assert not hasattr(_common, "jsonable") and not hasattr(_common, "none_to_nan")
    assert not hasattr(paths, "jsonable") and math.isnan(results.jsonable(big, keep_nonfinite=True)["nan"])


def test_save_load_arrays_round_trip(tmp_path: Path) -> None:
    arrays = {"x": np.arange(5, dtype=np.int32), "y": np.linspace(0, 1, 3)}
    npz = results.save_arrays(tmp_path / "r.json", "demo", arrays, {"meta": {"v": float("nan")}})
    assert npz == tmp_path / "r.npz" and (tmp_path / "r.json").is_file()
    got, desc = results.load_arrays(tmp_path / "r", "demo")
    assert desc["format"] == "demo" and desc["format_version"] == 1 and desc["arrays"] == ["x", "y"]
    assert desc["meta"] == {"v": None}
    assert got["x"].dtype == np.int32 and np.array_equal(got["x"], arrays["x"]) and np.array_equal(got["y"], arrays["y"])
    with pytest.raises(LosslabError, match="not a other result"):
        results.load_arrays(tmp_path / "r", "other")
    with pytest.raises(LosslabError, match="no saved result"):
        results.load_arrays(tmp_path / "missing", "demo")


def test_arrays_format_round_trip(tmp_path: Path) -> None:
    """ArraysFormat: positional fields are the npz arrays, keyword-only dicts the JSON; summary NaN read back."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Demo(results.SummaryArraysFormat):
        x: np.ndarray
        y: np.ndarray
        _FORMAT = "losslab.demo"

    d = Demo(np.arange(3.0), np.ones((2, 2), dtype=np.int32), summary={"a": float("nan"), "b": 2}, meta={"m": 1})
    d.save(tmp_path / "d")
    arrays, desc = results.load_arrays(tmp_path / "d", "losslab.demo")
    assert sorted(arrays) == ["x", "y"] and desc["summary"] == {"a": None, "b": 2} and desc["meta"] == {"m": 1}
    back = Demo.load(tmp_path / "d")
    assert np.array_equal(back.x, d.x) and back.y.dtype == np.int32 and back.meta == {"m": 1}
    assert math.isnan(back.summary["a"]) and back.summary["b"] == 2

    @dataclasses.dataclass(frozen=True)
    class Raw(results.SummaryArraysFormat):
        x: np.ndarray
        y: np.ndarray
        _FORMAT = "losslab.demo"
        _SUMMARY_NAN = False

    assert Raw.load(tmp_path / "d").summary == {"a": None, "b": 2}

    @dataclasses.dataclass(frozen=True)
    class MetaOnly(results.ArraysFormat):
        x: np.ndarray
        _FORMAT = "losslab.meta-only"

    MetaOnly(np.zeros(2), meta={"k": [1, 2]}).save(tmp_path / "m")
    assert set(results.load_arrays(tmp_path / "m", "losslab.meta-only")[1]) >= {"meta"}
    assert "summary" not in results.load_arrays(tmp_path / "m", "losslab.meta-only")[1]
    assert MetaOnly.load(tmp_path / "m").meta == {"k": [1, 2]}


def test_progress_bar_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    class FakeErr:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

        def write(self, s: str) -> int:
            return len(s)

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stderr", FakeErr(False))
    assert results.progress_bar(3, progress=True, desc="x") is None
    assert results.progress_bar(3, progress=None, desc="x", always_if_true=True) is None
    bar = results.progress_bar(3, progress=True, desc="x", always_if_true=True)
    assert bar is not None and bar.total == 3
    bar.close()
    monkeypatch.setattr(sys, "stderr", FakeErr(True))
    assert results.progress_bar(3, progress=False, desc="x") is None
    assert results.progress_bar(3, progress=None, desc="x") is None
    for kw in ({"progress": True}, {"progress": None, "always_if_true": True}):
        bar = results.progress_bar(5, 2, desc="y", unit="pt", **kw)
        assert bar is not None and bar.total == 5 and bar.n == 2 and bar.unit == "pt"
        bar.close()
