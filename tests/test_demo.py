"""The main job's pipeline end to end at test size: every stage runs, writes what a person
looks at, and a second run resumes instead of redoing the work."""

import json

from cm3jax.demo import run_demo


def test_demo_runs_every_stage_and_resumes(tmp_path, capsys):
    results = run_demo(str(tmp_path), "test")
    assert results["step"] == 6 and results["eval_nll"] > 0
    assert set(results["text_to_image"]) >= {"exact_match", "color", "shape"}
    for picture in ("decoder/samples.png", "decoder/loss.png"):
        assert (tmp_path / picture).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "decoder" / "results.json").read_text())["step"] == 6
    capsys.readouterr()
    run_demo(str(tmp_path), "test")
    assert capsys.readouterr().out.count("already done") == 5
