"""`cm3jax shapes ...`: sample, render, score and preview round trip; make with a config; bad input."""

import json
from pathlib import Path

import numpy as np

from cm3jax.cli import main
from cm3jax.shapes.image_files import read_images, write_images


def test_sample_render_score_preview_round_trip(tmp_path, capsys):
    scenes, images, report, grid = (str(tmp_path / n) for n in ("s.jsonl", "i.npz", "r.json", "g.png"))
    assert main(["shapes", "sample", "--split", "eval", "--num", "30", "--seed", "5", "--out", scenes]) == 0
    assert main(["shapes", "render", "--scenes", scenes, "--out", images]) == 0
    assert main(["shapes", "score", "--scenes", scenes, "--images", images, "--json", report]) == 0
    assert "exact_match            1.0000" in capsys.readouterr().out
    assert json.load(open(report))["exact_match"] == 1.0
    assert main(["shapes", "preview", "--scenes", scenes, "--images", images, "--out", grid]) == 0
    assert open(grid, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert read_images(images).shape == (30, 32, 32, 3)


def test_make_with_config_and_overrides(tmp_path, capsys):
    out = str(tmp_path / "world")
    argv = ["shapes", "make", "--out", out, "--config", f"{Path(__file__).resolve().parents[2]}/experiments/shapes_world.py:tiny",
            "--config.world.num_train=10", "--workers", "1"]
    assert main(argv) == 0
    assert "made 122 scenes" in capsys.readouterr().out
    assert main(argv) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(argv[:-3] + ["--config.world.num_trian=10"]) == 2
    assert "world.num_train" in capsys.readouterr().err


def _fails(argv, capsys, *fragments):
    try:
        code = main(argv)
    except SystemExit as e:  # refused by the parser
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err


def test_bad_input_gets_a_clear_error_and_no_output(tmp_path, capsys):
    scenes, images = str(tmp_path / "s.jsonl"), str(tmp_path / "i.npz")
    main(["shapes", "sample", "--split", "eval", "--num", "3", "--out", scenes])
    main(["shapes", "render", "--scenes", scenes, "--out", images])
    short = str(tmp_path / "short.npz")
    write_images(short, read_images(images)[:2])
    _fails(["shapes", "score", "--scenes", scenes, "--images", short], capsys, "3 scenes but 2 images")
    floats = str(tmp_path / "f.npz")
    np.savez(floats, images=np.zeros((3, 32, 32, 3), np.float32))
    _fails(["shapes", "score", "--scenes", scenes, "--images", floats], capsys, "dtype float32")
    wrong = str(tmp_path / "w.npz")
    np.savez(wrong, pictures=np.zeros((3, 32, 32, 3), np.uint8))
    _fails(["shapes", "score", "--scenes", scenes, "--images", wrong], capsys, "'images'")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(open(scenes).read().replace('"background": "', '"background": "x', 1))
    out = tmp_path / "never.npz"
    _fails(["shapes", "render", "--scenes", str(bad), "--out", str(out)], capsys, "bad.jsonl:1", "Unknown background")
    assert not out.exists()
    _fails(["shapes", "score", "--scenes", scenes, "--images", str(tmp_path / "missing.npz")], capsys,
           "no images file (.npz) at")
