"""write_report: one HTML page of a demo's results, nested dicts as their own tables, every PNG of
the picture directories linked relatively, and every value HTML-escaped."""

import os
import re

from cm3jax.report import PICTURE_DIRS, write_report


def _results():
    return {
        "text_to_image": {"exact_match": 0.123456, "count": 3, "by_split": {"eval": 0.5}},
        "stage_seconds": {"vqgan": 1.5, "decoder": 2.25},
        "steps": 40,
        "note": "<b>bold</b> & 'quoted'",
        "ignored_list": [1, 2],
    }


def test_tables_for_top_level_and_nested_dicts(tmp_path):
    path = write_report(str(tmp_path), _results(), title="A & B")
    assert path == os.path.join(str(tmp_path), "report.html")
    text = open(path, encoding="utf-8").read()
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    assert "<title>A &amp; B</title>" in text and "<h1>A &amp; B</h1>" in text
    for title in ("text_to_image", "text_to_image / by_split", "stage_seconds", "decoder run"):
        assert f"<h3>{title}</h3>" in text
    assert "<tr><th>exact_match</th><td>0.1235</td></tr>" in text, "floats to 4 places"
    assert "<tr><th>count</th><td>3</td></tr>" in text
    assert "<tr><th>eval</th><td>0.5000</td></tr>" in text
    assert "<tr><th>steps</th><td>40</td></tr>" in text
    assert "ignored_list" not in text
    assert text.index("<h3>text_to_image</h3>") < text.index("<h3>stage_seconds</h3>") < text.index("decoder run")


def test_values_are_html_escaped(tmp_path):
    text = open(write_report(str(tmp_path), _results()), encoding="utf-8").read()
    assert "<b>bold</b>" not in text
    assert "<td>&lt;b&gt;bold&lt;/b&gt; &amp; &#x27;quoted&#x27;</td>" in text


def test_every_png_of_the_picture_dirs_is_linked_relatively(tmp_path):
    pictures = ["vqgan/loss.png", "vqgan/recon.png", "clip/curves.png", "decoder/samples.png"]
    for relative in pictures + ["decoder/notes.txt", "elsewhere/skip.png"]:
        os.makedirs(tmp_path / os.path.dirname(relative), exist_ok=True)
        (tmp_path / relative).write_bytes(b"\x89PNG")
    text = open(write_report(str(tmp_path), {"steps": 1}), encoding="utf-8").read()
    linked = re.findall(r"<img src='([^']+)'", text)
    assert linked == pictures, "every PNG, in PICTURE_DIRS order then by name, and only those"
    assert PICTURE_DIRS == ("vqgan", "clip", "decoder")
    assert str(tmp_path) not in text, "links are relative to the workdir"
    assert "<figcaption>vqgan/loss.png</figcaption>" in text


def test_a_report_without_pictures_or_tables_is_still_a_page(tmp_path):
    text = open(write_report(str(tmp_path), {}), encoding="utf-8").read()
    assert "<img" not in text and "<h3>decoder run</h3>" in text
