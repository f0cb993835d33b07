from pathlib import Path

import pytest

from cm3jax.config import flat_keys, from_json_dict, load_config, with_found_paths, with_recorded_paths
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


def test_a_saved_config_finds_its_inputs_relative_to_the_run(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "demo"
    (run / "decoder").mkdir(parents=True)
    (run / "text.model").write_text("")
    monkeypatch.chdir(tmp_path)
    config = load_config(str(EXPERIMENTS / "shapes_tiny.py"), ["--config.data.text_tokenizer=runs/demo/text.model"])
    saved = with_recorded_paths(config, "runs/demo/decoder")
    assert saved["data"]["text_tokenizer"] == str(run / "text.model")
    assert saved["paths"]["text_tokenizer"] == "../text.model" and "retrieval_bank" not in saved["paths"]  # empty
    assert config.data.text_tokenizer == "runs/demo/text.model"  # the run's own config is left alone
    (tmp_path / "runs").rename(tmp_path / "moved")
    found = with_found_paths(from_json_dict(saved), str(tmp_path / "moved" / "demo" / "decoder"))
    assert found.data.text_tokenizer == str(tmp_path / "moved" / "demo" / "text.model")
    assert found.data.shapes_dir == str(tmp_path / "runs" / "demo" / "shapes")  # not beside it: where it was
