"""The shared I/O helpers every saved result uses: atomic writes and JSON-safe metadata."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from losslab._io import atomic_write_text
from losslab.results import jsonable


def test_jsonable_converts_numpy_torch_paths_and_nonfinite():
    obj = {1: np.float32(1.5), "b": (np.int64(3), float("nan")), "t": torch.tensor([1.0, 2.0]),
           "p": Path("/x"), "d": torch.float32, "a": np.arange(4).reshape(2, 2), "flag": np.bool_(True)}
    out = jsonable(obj)
    assert out == {"1": 1.5, "b": [3, None], "t": [1.0, 2.0], "p": "/x", "d": "torch.float32",
                   "a": [[0, 1], [2, 3]], "flag": True}
    json.dumps(out, allow_nan=False)  # strict JSON
    kept = jsonable({"x": float("inf")}, keep_nonfinite=True)
    assert math.isinf(kept["x"])
    assert jsonable(np.zeros((10, 10)), max_array_size=64) == {"array_shape": [10, 10]}
    assert jsonable(torch.zeros(3), max_array_size=64) == [0.0, 0.0, 0.0]


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    f = tmp_path / "r.json"
    atomic_write_text(f, "old")

    from losslab._io import atomic_write

    def boom(fh):
        fh.write("partial")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(f, boom, mode="w")
    assert f.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path, mask, expected):
    import os

    from losslab._io import atomic_savez, atomic_write_json

    old = os.umask(mask)
    try:
        a = atomic_write_json(tmp_path / "a.json", {"x": 1})
        b = atomic_savez(tmp_path / "b.npz", x=np.arange(3))
    finally:
        os.umask(old)
    assert a.stat().st_mode & 0o777 == expected and b.stat().st_mode & 0o777 == expected
    assert not list(tmp_path.glob(".*.tmp"))
