"""`cm3jax demo`: its profiles (the demo itself runs in tests/test_demo.py)."""

import pytest

from cm3jax import cli


def test_only_known_profiles_parse(capsys):
    args = cli.build_parser().parse_args(["demo", "--profile", "quick", "--workdir", "w"])
    assert (args.profile, args.workdir) == ("quick", "w")
    assert cli.build_parser().parse_args(["demo"]).workdir == "runs/demo"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["demo", "--profile", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err
