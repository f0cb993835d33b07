"""Config overrides are told apart from a command's own arguments."""

from cm3jax.cli.common import split_overrides


def test_overrides_with_and_without_an_equals_sign_are_split_off_in_order():
    rest, overrides = split_overrides(["train", "--config.train.steps", "5", "--workdir", "w",
                                       "--config.model.d_model=64", "--config", "x.py"])
    assert rest == ["train", "--workdir", "w", "--config", "x.py"]
    assert overrides == ["--config.train.steps=5", "--config.model.d_model=64"]


def test_a_trailing_override_without_a_value_is_kept_for_the_config_parser_to_refuse():
    assert split_overrides(["--config.train.steps"]) == ([], ["--config.train.steps"])
