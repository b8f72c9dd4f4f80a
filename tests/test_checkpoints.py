"""Checkpoints as people save them (issue 15): wrappers, prefixes, safetensors, non-float weights, wrapped models."""
import json
import warnings

import pytest
import torch
from torch import nn

from losslab import models
from losslab.cli.main import main
from losslab.errors import LosslabError


def _mlp():
    return models.build("mlp", input_shape=(64,), num_classes=10, seed=3)


def _evaluate(capsys, path):
    code = main(["evaluate", str(path), "--model", "mlp", "--dataset", "digits", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out), out.err


def _loss(summary):
    return {k: v for k, v in summary.items() if k in ("train", "test")}


@pytest.fixture
def plain(tmp_path):
    sd = _mlp().state_dict()
    path = tmp_path / "plain.pt"
    torch.save(sd, path)
    return sd, path


def test_lightning_compiled_ddp_and_safetensors_checkpoints_evaluate_like_the_plain_one(tmp_path, capsys, plain):
    sd, path = plain
    ref, err = _evaluate(capsys, path)
    assert "note" not in err
    lightning = {"state_dict": {**{f"model.{k}": v for k, v in sd.items()}, "criterion.weight": torch.ones(10)},
                 "epoch": 7, "global_step": 70}
    compiled = {f"_orig_mod.{k}": v for k, v in sd.items()}
    ddp_compiled = {"model_state_dict": {f"module._orig_mod.{k}": v for k, v in sd.items()}, "optimizer": {}}
    cases = {"lightning.ckpt": (lightning, "'model.'", "ignored 1 keys"), "compiled.pt": (compiled, "'_orig_mod.'", ""),
             "ddp.pt": (ddp_compiled, "'module._orig_mod.'", "")}
    for name, (obj, prefix, extra) in cases.items():
        torch.save(obj, tmp_path / name)
        got, err = _evaluate(capsys, tmp_path / name)
        assert _loss(got) == _loss(ref), name  # the same function: identical numbers
        assert err.count("\n") == 1 and f"stripped the prefix {prefix}" in err and extra in err, err
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "w.safetensors")
    got, _ = _evaluate(capsys, tmp_path / "w.safetensors")
    assert _loss(got) == _loss(ref)


def test_integer_weights_and_unmatched_prefixes_are_one_line_errors(tmp_path, capsys, plain):
    sd, _ = plain
    ints = tmp_path / "ints.pt"
    torch.save({k: v.to(torch.int64) for k, v in sd.items()}, ints)
    assert main(["evaluate", str(ints), "--model", "mlp", "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "non-floating-point weights" in err and "int64" in err, err
    other = tmp_path / "other.pt"  # a prefix that strips, but the rest does not fit: named, not guessed
    torch.save({f"module.{k}": v for k, v in list(sd.items())[:-1]}, other)
    assert main(["evaluate", str(other), "--model", "mlp", "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "every key starts with 'module.'" in err and "missing keys" in err, err
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    assert main(["evaluate", str(broken), "--model", "mlp", "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.safetensors" in err


def test_match_state_dict_strips_only_when_the_keys_then_fit():
    m = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    sd = m.state_dict()
    same, note = models.match_state_dict(m, sd)
    assert note is None and list(same) == list(sd)
    wrapped = {f"model.module.{k}": v for k, v in sd.items()}
    got, note = models.match_state_dict(m, wrapped)
    assert note == "stripped the prefix 'model.module.' from the checkpoint's keys" and set(got) == set(sd)
    assert all(got[k] is v for k, v in zip(sd, sd.values()))
    partial = {f"module.{k}": v for k, v in sd.items() if k != "0.bias"}
    got, note = models.match_state_dict(m, partial)
    assert note is None and got == partial  # nothing fits: the input back, load_state_dict_checked names the gap
    with pytest.raises(LosslabError, match="missing keys"):
        models.load_state_dict_checked(m, got)


def test_unwrap_model_returns_the_users_module_sharing_its_parameters():
    inner = nn.Linear(3, 2)
    assert models.unwrap_model(inner) is inner
    assert models.unwrap_model(nn.DataParallel(inner)) is inner
    with warnings.catch_warnings():  # importing dynamo warns about torch.jit on some versions
        warnings.simplefilter("ignore", DeprecationWarning)
        compiled = torch.compile(inner)  # wrapping compiles nothing until called
    assert models.unwrap_model(compiled) is inner
    assert models.unwrap_model(nn.DataParallel(compiled)) is inner
    assert models.unwrap_model(compiled).weight is inner.weight


def test_evaluator_and_hessian_measure_the_module_inside_a_wrapper():
    from losslab.curvature import HessianOperator
    from losslab.evaluate import Evaluator

    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        wrapped = [nn.DataParallel(inner), torch.compile(inner)]
    ref = Evaluator(inner, (x, y)).evaluate({})["loss"]
    v = torch.randn(sum(p.numel() for p in inner.parameters()), dtype=torch.float64)
    hv = HessianOperator(inner, (x, y), loss=nn.CrossEntropyLoss()) @ v
    for w in wrapped:
        assert Evaluator(w, (x, y)).evaluate({})["loss"] == ref
        assert torch.equal(HessianOperator(w, (x, y), loss=nn.CrossEntropyLoss()) @ v, hv)
