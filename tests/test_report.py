"""write_report: one HTML page of a demo's results: the evaluation suite's headline per task (the
decoder's, then the instruction-tuned decoder's), the
stages' tables (nested dicts as their own tables), every PNG of the picture directories linked
relatively, and every value HTML-escaped."""

import os
import re

from cm3jax.report import PICTURE_DIRS, write_report


def _rate(hits, total):
    return {"rate": hits / total, "hits": hits, "total": total, "ci95": [0.1, 0.9]}


def _results():
    return {
        "evaluation": {"size": "quick", "prompts_per_set": 128, "tasks": {
            "text_to_image": {"status": "done", "seconds": 1.0,
                              "results": {"eval": {"exact_match": _rate(32, 128)}, "novel": {"exact_match": _rate(0, 128)}}},
            "vqa": {"status": "not trained", "reason": "the checkpoint was not trained for <vqa>"}}},
        "decoder": {"step": 40, "loss": 0.123456, "by_split": {"eval": 0.5}, "note": "<b>bold</b> & 'quoted'",
                    "ignored_list": [1, 2]},
        "tuned_evaluation": {"size": "quick", "prompts_per_set": 128, "tasks": {
            "vqa": {"status": "done", "seconds": 1.0, "results": {"accuracy": _rate(64, 128)}}}},
        "stage_seconds": {"vqgan": 1.5, "decoder": 2.25},
    }


def test_the_evaluation_headline_then_tables_for_top_level_and_nested_dicts(tmp_path):
    path = write_report(str(tmp_path), _results(), title="A & B")
    assert path == os.path.join(str(tmp_path), "report.html")
    text = open(path, encoding="utf-8").read()
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    assert "<title>A &amp; B</title>" in text and "<h1>A &amp; B</h1>" in text
    assert "<tr><th>text_to_image: eval exact match</th><td>25.0% [10.0, 90.0] of 128</td></tr>" in text
    assert "not trained: the checkpoint was not trained for &lt;vqa&gt;" in text
    assert "<a href='eval/report.html'>every figure</a>" in text
    assert "<a href='sft_eval/report.html'>every figure</a>" in text
    assert "<tr><th>vqa: accuracy</th><td>50.0% [10.0, 90.0] of 128</td></tr>" in text
    for title in ("decoder", "decoder / by_split", "stage_seconds"):
        assert f"<h3>{title}</h3>" in text
    assert "<tr><th>loss</th><td>0.1235</td></tr>" in text, "floats to 4 places"
    assert "<tr><th>step</th><td>40</td></tr>" in text and "ignored_list" not in text
    assert text.index("the decoder on the evaluation suite") < text.index("instruction-tuned decoder on every task") \
        < text.index("<h3>decoder</h3>") < text.index("<h3>stage_seconds</h3>")


def test_values_are_html_escaped(tmp_path):
    text = open(write_report(str(tmp_path), _results()), encoding="utf-8").read()
    assert "<b>bold</b>" not in text
    assert "<td>&lt;b&gt;bold&lt;/b&gt; &amp; &#x27;quoted&#x27;</td>" in text


def test_every_png_of_the_picture_dirs_is_linked_relatively(tmp_path):
    pictures = ["vqgan/loss.png", "vqgan/recon.png", "clip/curves.png", "decoder/loss.png", "eval/cfg_plot.png"]
    for relative in pictures + ["decoder/notes.txt", "elsewhere/skip.png"]:
        os.makedirs(tmp_path / os.path.dirname(relative), exist_ok=True)
        (tmp_path / relative).write_bytes(b"\x89PNG")
    text = open(write_report(str(tmp_path), {"decoder": {"step": 1}}), encoding="utf-8").read()
    linked = re.findall(r"<img src='([^']+)'", text)
    assert linked == pictures, "every PNG, in PICTURE_DIRS order then by name, and only those"
    assert PICTURE_DIRS == ("vqgan", "clip", "decoder", "eval", "sft", "sft_eval")
    assert str(tmp_path) not in text, "links are relative to the workdir"
    assert "<figcaption>vqgan/loss.png</figcaption>" in text


def test_a_report_without_pictures_or_tables_is_still_a_page(tmp_path):
    text = open(write_report(str(tmp_path), {}), encoding="utf-8").read()
    assert "<img" not in text and text.rstrip().endswith("</html>")
