from pathlib import Path

import pytest

from cm3jax.config import flat_keys, load_config
from cm3jax.errors import UserError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
WORLD = str(EXPERIMENTS / "shapes_world.py")


def test_variant_and_typed_overrides():
    config = load_config(f"{WORLD}:tiny", ["--config.world.num_train=7", "--config.workers=2"])
    assert config.world.num_train == 7 and config.workers == 2
    assert config.world.num_eval == 32
    assert "world.num_train" in flat_keys(config)


def test_unknown_key_names_the_key_and_its_neighbours():
    with pytest.raises(UserError, match=r"Unknown config key 'world.num_trian'.*world\.num_train"):
        load_config(f"{WORLD}:tiny", ["--config.world.num_trian=7"])
    with pytest.raises(UserError, match=r"Unknown config key 'wrld.seed'.*world"):
        load_config(f"{WORLD}:tiny", ["--config.wrld.seed=7"])


def test_bad_value_and_missing_file():
    with pytest.raises(UserError, match="num_train=many"):
        load_config(f"{WORLD}:tiny", ["--config.world.num_train=many"])
    with pytest.raises(UserError, match="No config file at '.*nope.py'"):
        load_config(f"{EXPERIMENTS / 'nope.py'}:tiny")
    with pytest.raises(UserError, match="--config.key=value"):
        load_config(f"{WORLD}:tiny", ["world.seed=1"])
