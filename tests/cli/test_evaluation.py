"""`cm3jax eval`: a bad request is refused before anything loads, naming the fix (the suite itself
runs end to end in tests/eval/test_suite.py)."""

import pytest

from cm3jax import cli


@pytest.mark.parametrize("arguments, message", [
    (["--tasks", "text_to_image,texttoimage"], "Unknown task(s) texttoimage; the shapes suite has text_to_image"),
    (["--size", "huge"], "Unknown size 'huge'; choose one of smoke, quick, full"),
    (["--split", "train"], "not 'train'"),
    (["--suite", "coco"], "Unknown suite 'coco'"),
])
def test_bad_requests_are_refused_before_anything_loads(arguments, message, capsys, tmp_path):
    assert cli.main(["eval", "--checkpoint", str(tmp_path), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_the_summary_gives_each_task_s_headline():
    from cm3jax.eval.report import summary
    rate = {"rate": 0.5, "hits": 2, "total": 4, "ci95": [0.15, 0.85]}
    out = summary({"out": "/tmp/x", "tasks": {
        "caption": {"status": "done", "seconds": 2.0, "results": {"exact_match": rate, "cider": 1.5}},
        "vqa": {"status": "not trained", "reason": "no vqa"}}})
    assert "caption (2 s)\n  exact match: 50.0% [15.0, 85.0] of 4\n  CIDEr-D: 1.5000" in out
    assert "vqa: not trained (no vqa)" in out and "/tmp/x" in out
