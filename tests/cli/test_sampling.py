"""`cm3jax generate | caption | answer | edit | infill`: flags become sampling settings; bad flags
are refused before a checkpoint is loaded (the commands run end to end in tests/test_demo.py)."""

import pytest

from cm3jax import cli
from cm3jax.cli.sampling import settings_from


def _args(*argv):
    return cli.build_parser().parse_args(list(argv))


def test_flags_choose_the_strategy_and_guidance():
    base = ("--checkpoint", ".", "--prompt", "p", "--out", "o.png")
    assert settings_from(_args("generate", *base)).strategy == "sample"
    assert settings_from(_args("generate", *base, "--temperature", "0")).strategy == "greedy"
    top_p = settings_from(_args("generate", *base, "--top-p", "0.9", "--cfg", "5"))
    assert (top_p.strategy, top_p.top_p, top_p.cfg_scale) == ("sample", 0.9, 5.0)
    cd = settings_from(_args("generate", *base, "--cd-k", "0.2,4"))
    assert (cd.strategy, cd.cd_alpha, cd.cd_k) == ("cd_k", 0.2, 4)
    assert settings_from(_args("generate", *base, "--cd-k", "0.2,4", "--top-p", "0.9")).strategy == "mix"
    edit = settings_from(_args("edit", "--checkpoint", ".", "--image", __file__, "--instruction", "i",
                               "--out", "o.png"))
    assert (edit.image_scale, edit.text_scale) == (1.5, 7.5)
    assert settings_from(_args("caption", "--checkpoint", ".", "--image", __file__)).strategy == "greedy"


def test_a_malformed_cd_k_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        _args("generate", "--checkpoint", ".", "--prompt", "p", "--out", "o.png", "--cd-k", "0.1")
    assert "--cd-k takes ALPHA,K" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [(("--samples", "0"), "--samples must be at least 1"),
                                            (("--retrieve", "2"), "--retrieve K needs --index DIR")])
def test_generate_refuses_bad_flags_before_loading_anything(tmp_path, capsys, extra, message):
    argv = ["generate", "--checkpoint", str(tmp_path), "--prompt", "p", "--out", str(tmp_path / "g.png")]
    assert cli.main(argv + list(extra)) == 2
    assert message in capsys.readouterr().err


def test_a_missing_checkpoint_names_the_command_that_trains_one(tmp_path, capsys):
    (tmp_path / "x.png").write_bytes(b"")
    assert cli.main(["caption", "--checkpoint", str(tmp_path), "--image", str(tmp_path / "x.png")]) == 2
    assert "cm3jax train" in capsys.readouterr().err
