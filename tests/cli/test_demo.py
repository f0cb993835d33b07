"""`cm3jax demo`: its variants (the demo itself runs in tests/test_demo.py)."""

import pytest

from cm3jax import cli


def test_only_known_variants_parse(capsys):
    args = cli.build_parser().parse_args(["demo", "--variant", "test", "--workdir", "w"])
    assert (args.variant, args.workdir) == ("test", "w")
    assert cli.build_parser().parse_args(["demo"]).workdir == "runs/demo"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["demo", "--variant", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err
