"""Pins each of losslab's five hashing schemes on a fixed input (issue 17: one hash primitive,
no hash value changed), and checks the primitive in :mod:`losslab.results`."""
from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from losslab import results
from losslab.config import DataConfig, SeedConfig, TrainConfig, config_hash


def test_config_hash_pinned() -> None:
    cfg = TrainConfig(data=DataConfig(dataset="blobs"), seeds=SeedConfig(seed=3))
    assert config_hash(cfg) == "875022725073"


def test_settings_hash_pinned() -> None:
    from losslab.cli._common import settings_hash

    args = argparse.Namespace(k=3, which="LA", path=Path("/tmp/x"), tol=1e-6, other="ignored")
    assert settings_hash(args, ["k", "which", "path", "tol", "missing"], extra=[1, 2.5]) == "fcdb7f6df8"


def test_hessian_cache_stem_pinned() -> None:
    from losslab.curvature.analysis import ResultCache as _Cache  # was cli.hessian._Cache

    cache = _Cache(Path("/tmp/cache"), {"checkpoint": "/a/b.pt", "size": 10, "model": "mlp", "p": Path("/q")}, False)
    assert cache.stem("eig", {"k": 3, "tol": 1e-6, "which": "LA"}).name == "eig-8e8dd750b2a8"
    # the stem is results.digest of the same spec (loose separators, str for other objects)
    spec = {"base": cache.base, "name": "eig", "params": {"k": 3, "tol": 1e-6, "which": "LA"}}
    assert results.digest(spec, 12, compact=False, default=str) == "8e8dd750b2a8"


@dataclass(frozen=True)
class _Cfg:
    n: int = 3
    xs: tuple[float, ...] = (0.5, 1.0)
    name: str = "a"


def test_result_key_pinned() -> None:
    from losslab.experiments._base import result_key

    assert result_key("A1", _Cfg()) == "A1-d6a5e4c9a2c2"
    assert result_key("B2", {"n": 1, "v": [1, 2]}, version=2) == "B2-addedbc4b07b"


def test_surface_fingerprint_pinned() -> None:
    from losslab.evaluate import Evaluator
    from losslab.surface import _fingerprint

    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(6, 3, generator=g)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    ev = Evaluator(model, (x, y))
    base = {k: v.detach().clone() for k, v in model.named_parameters()}
    basis = [{k: torch.ones_like(v) * (j + 1) for k, v in base.items()} for j in range(2)]
    assert _fingerprint("plane", base, basis, ev) == "9b94882f8bcb82b5cb34e8e2c3e518598b6bb53926c70ae92f9fd83fff14f904"
    assert _fingerprint("line", None, basis[:1], ev) == "af0cf9575cc854e6ac9902da84a8a74397003606b7a7f0617b7df909479a04f1"


def test_digest_is_canonical_json_sha256() -> None:
    obj = {"b": [1, 2.5, None], "a": {"y": "z", "x": True}}
    canon = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    assert results.canonical_json(obj) == canon
    assert results.digest(obj) == hashlib.sha256(canon.encode()).hexdigest()
    assert results.digest(obj, 10) == hashlib.sha256(canon.encode()).hexdigest()[:10]
    loose = json.dumps(obj, sort_keys=True, default=str)
    assert results.digest(obj, compact=False, default=str) == hashlib.sha256(loose.encode()).hexdigest()
    assert results.digest({"b": 1, "a": [1, 2]}, 12) == hashlib.sha256(b'{"a":[1,2],"b":1}').hexdigest()[:12]
