import pytest

from losslab.config import (
    DataConfig, ModelConfig, OptimConfig, SeedConfig, TrainConfig, config_hash, from_dict, non_default,
    parse_checkpoint_schedule, to_dict,
)
from losslab.errors import LosslabError


def test_non_default_only_lists_changes():
    cfg = TrainConfig(data=DataConfig(dataset="mnist1d"), optim=OptimConfig(lr=0.1))
    assert non_default(cfg) == {"data": {"dataset": "mnist1d"}, "optim": {"lr": 0.1}}
    assert non_default(TrainConfig()) == {}


# Regression pins: changing these means every existing run directory is orphaned.
@pytest.mark.parametrize(
    "cfg, expected",
    [
        (TrainConfig(), "44136fa355b3"),
        (TrainConfig(data=DataConfig(dataset="mnist1d"), model=ModelConfig(model="cnn1d")), "7501df876798"),
        (TrainConfig(seeds=SeedConfig(seed=1)), "1c667e9ac239"),
        (TrainConfig(data=DataConfig(label_noise=1.0), model=ModelConfig(model_kwargs={"width": 512})), "04278c305277"),
    ],
)
def test_hash_pinned(cfg, expected):
    assert config_hash(cfg) == expected


def test_hash_ignores_int_float_spelling_and_key_order():
    a = TrainConfig(optim=OptimConfig(lr=1), model=ModelConfig(model_kwargs={"a": 1, "b": 2}))
    b = TrainConfig(optim=OptimConfig(lr=1.0), model=ModelConfig(model_kwargs={"b": 2, "a": 1}))
    assert config_hash(a) == config_hash(b)
    assert config_hash(TrainConfig(seeds=SeedConfig(seed=2))) != config_hash(TrainConfig(seeds=SeedConfig(seed=3)))


def test_round_trip_and_unknown_keys():
    cfg = TrainConfig(data=DataConfig(dataset="moons", dataset_kwargs={"noise": 0.1}), seeds=SeedConfig(init_seed=4))
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    with pytest.raises(LosslabError, match=r"unknown config keys \['lrr'\].*allowed"):
        from_dict(TrainConfig, {"optim": {"lrr": 0.1}})
    with pytest.raises(LosslabError, match="must be an integer"):
        from_dict(TrainConfig, {"optim": {"epochs": "ten"}})


def test_validate_and_schedule_parse():
    with pytest.raises(LosslabError, match=r"label noise p must be in \[0, 1\]"):
        TrainConfig(data=DataConfig(label_noise=1.5)).validate()
    with pytest.raises(LosslabError, match="unknown optimizer"):
        TrainConfig(optim=OptimConfig(optimizer="lion")).validate()
    assert parse_checkpoint_schedule("log:8") == ("log", 8)
    assert parse_checkpoint_schedule("none") == ("none", 0)
    for bad in ("log", "epoch:0", "every:3", "step:-1"):
        with pytest.raises(LosslabError, match="bad checkpoint schedule"):
            parse_checkpoint_schedule(bad)


def test_resolved_seeds():
    assert SeedConfig(seed=5).resolved() == {"init": 5, "order": 5, "label": 5}
    assert SeedConfig(seed=5, order_seed=9).resolved() == {"init": 5, "order": 9, "label": 5}


def test_hash_is_sha256_of_canonical_json():
    import hashlib

    canon = '{"seeds":{"seed":1}}'
    assert config_hash(TrainConfig(seeds=SeedConfig(seed=1))) == hashlib.sha256(canon.encode()).hexdigest()[:12]
