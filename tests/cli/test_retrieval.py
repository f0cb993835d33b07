"""`cm3jax retrieval build` and `query` on a tiny bank built with the toy embedder (the bank
records how to make its embedder, so `query` loads the toy one the way it loads CLIP)."""

import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from cm3jax.cli import main
from cm3jax.retrieval.bank import IMAGE, TEXT, ShapesBankOptions, build_shapes_bank, load_bank
from cm3jax.retrieval.index import load_index
from cm3jax.retrieval.neighbours import load_neighbours
from cm3jax.shapes.preview import CAPTION_LINES, CELL, LINE_HEIGHT
from tests.retrieval.bank_fixtures import TOY, fake_codes, make_codec, make_world
from tests.retrieval.toy_embedder import ToyEmbedder

LINE = re.compile(r"^\s*(\d+)\. (-?\d\.\d{4})  (\S+)  \[(\S+)\]  (.*)$")


@pytest.fixture(scope="module")
def bank_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    world = make_world(str(root / "shapes"))
    bank = build_shapes_bank(world, fake_codes(world), make_codec(), ToyEmbedder(), embedder_record=TOY,
                             options=ShapesBankOptions(0.4, 0.3, seed=1), progress=False)
    bank.save(str(root / "bank"))
    return str(root / "bank")


@pytest.fixture(scope="module")
def exact_dir(bank_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("exact") / "index")
    assert main(["retrieval", "build", "--bank", bank_dir, "--out", out]) == 0
    return out


def _hits(stdout):
    return [LINE.match(line).groups() for line in stdout.splitlines() if LINE.match(line)]


def test_build_chooses_exact_for_a_small_bank_and_records_the_bank(exact_dir, bank_dir):
    index, manifest = load_index(exact_dir)
    assert manifest["backend"] == "exact" and index.size == 48
    assert manifest["bank"] == {"path": os.path.abspath(bank_dir), "fingerprint": load_bank(bank_dir).fingerprint,
                                "relative": os.path.relpath(bank_dir, exact_dir)}


def test_query_by_text_prints_the_nearest_documents_and_draws_a_grid(exact_dir, bank_dir, tmp_path, capsys):
    bank = load_bank(bank_dir)
    row = next(r for r in range(len(bank)) if bank.kind(r) == TEXT)
    text = bank.texts[row]
    grid = str(tmp_path / "grid.png")
    capsys.readouterr()
    assert main(["retrieval", "query", "--index", exact_dir, "--text", text, "-k", "4", "--out", grid]) == 0
    hits = _hits(capsys.readouterr().out)
    ids, scores = load_index(exact_dir)[0].search(ToyEmbedder().embed_documents([text], [None]), 4)
    assert [h[2] for h in hits] == [bank.ids[i] for i in ids[0]]
    assert [float(h[1]) for h in hits] == pytest.approx(scores[0].tolist(), abs=1e-4)
    assert hits[0][2] == bank.ids[row] and hits[0][4] == text and float(hits[0][1]) == pytest.approx(1, abs=1e-4)
    width, height = Image.open(grid).size
    assert (width, height) == (5 * (CELL + 4) + 4, CELL + CAPTION_LINES * LINE_HEIGHT + 6 + 4)  # 5 tiles, one row


def test_query_by_image_finds_the_document_holding_that_image(exact_dir, bank_dir, tmp_path, capsys):
    bank = load_bank(bank_dir)
    row = next(r for r in range(len(bank)) if bank.kind(r) == IMAGE)
    path = str(tmp_path / "query.png")
    Image.fromarray(bank.image(row)).save(path)
    capsys.readouterr()
    assert main(["retrieval", "query", "--index", exact_dir, "--image", path, "-k", "3"]) == 0
    hits = _hits(capsys.readouterr().out)
    assert hits[0][2] == bank.ids[row] and float(hits[0][1]) == pytest.approx(1.0, abs=1e-4)
    assert hits[0][3] == "image" and hits[0][4] == "(image)" and len(hits) == 3


def test_scann_backend_and_selection_through_the_cli(bank_dir, tmp_path, capsys):
    out = str(tmp_path / "scann")
    assert main(["retrieval", "build", "--bank", bank_dir, "--out", out, "--backend", "scann",
                 "--leaves", "4", "--leaves-to-search", "4"]) == 0
    assert json.load(open(os.path.join(out, "cm3jax_index.json")))["backend"] == "scann"
    bank = load_bank(bank_dir)
    row = next(r for r in range(len(bank)) if bank.kind(r) == TEXT)
    capsys.readouterr()
    assert main(["retrieval", "query", "--index", out, "--text", bank.texts[row], "-k", "3", "--select"]) == 0
    hits = _hits(capsys.readouterr().out)
    # selection: the near copy (the caption's own document, score above 0.9) is skipped and
    # text + image documents come first
    assert len(hits) == 3 and bank.ids[row] not in [h[2] for h in hits] and all(float(h[1]) <= 0.9 for h in hits)
    assert [h[3] for h in hits] == sorted([h[3] for h in hits], key=lambda k: k != "text+image")


def test_cli_errors_name_the_problem(exact_dir, bank_dir, tmp_path, capsys):
    assert main(["retrieval", "query", "--index", str(tmp_path), "--text", "x"]) == 2
    assert "No retrieval index" in capsys.readouterr().err
    assert main(["retrieval", "query", "--index", exact_dir]) == 2
    assert "Give a query" in capsys.readouterr().err
    assert main(["retrieval", "build", "--bank", bank_dir, "--out", exact_dir]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["retrieval", "build", "--bank", str(tmp_path), "--out", str(tmp_path / "i")]) == 2
    assert "No memory bank" in capsys.readouterr().err
    (tmp_path / "t.model").write_bytes(b"")
    d = str(tmp_path)
    assert main(["retrieval", "bank", "--clip", d, "--data", d, "--codes", d, "--text-tokenizer",
                 str(tmp_path / "t.model"), "--image-tokenizer", d, "--out", exact_dir]) == 2
    assert "not empty" in capsys.readouterr().err


def test_query_refuses_an_index_whose_bank_changed(bank_dir, tmp_path, capsys):
    bank_copy = str(tmp_path / "bank")
    shutil.copytree(bank_dir, bank_copy)
    index_dir = str(tmp_path / "index")
    assert main(["retrieval", "build", "--bank", bank_copy, "--out", index_dir]) == 0
    # rebuild the bank in place with other keys: the index no longer describes it
    shutil.rmtree(bank_copy)
    bank = load_bank(bank_dir)
    bank.keys_ND = np.roll(bank.keys_ND, 1, axis=0)
    bank.save(bank_copy)
    assert main(["retrieval", "query", "--index", index_dir, "--text", "x"]) == 2
    assert "changed since the index" in capsys.readouterr().err


def test_neighbours_command_writes_each_examples_documents(exact_dir, bank_dir, tmp_path, capsys):
    world = os.path.join(os.path.dirname(bank_dir), "shapes")
    out = str(tmp_path / "neighbours")
    assert main(["retrieval", "neighbours", "--index", exact_dir, "--data", world, "--split", "memory",
                 "--out", out]) == 0
    assert "memory: 48 examples" in capsys.readouterr().out
    bank = load_bank(bank_dir)
    rows = load_neighbours(out, "memory", bank)
    assert rows.shape == (48, 4)
    own = np.array([[bank.ids[r] == bank.ids[i] for r in row if r >= 0].count(True) for i, row in enumerate(rows)])
    assert (own == 0).all(), "an example never retrieves its own document"
    settings = json.loads(open(os.path.join(out, "cm3jax_neighbours.json")).read())["splits"]["memory"]
    assert settings["options"]["max_relevance"] == 0.9 and settings["query_dropout"] == 0.0  # not train: as asked
    capsys.readouterr()
    assert main(["retrieval", "neighbours", "--index", exact_dir, "--data", world, "--split", "memory",
                 "--out", out, "--max-relevance", "none", "--skip-same-meaning"]) == 0
    settings = json.loads(open(os.path.join(out, "cm3jax_neighbours.json")).read())["splits"]["memory"]
    assert settings["options"]["max_relevance"] is None and settings["options"]["skip_same_meaning"] is True
    with pytest.raises(SystemExit):  # argparse refuses it, with the usage
        main(["retrieval", "neighbours", "--index", exact_dir, "--data", world, "--split", "memory",
              "--out", out, "--max-relevance", "high"])
    assert "expected a number or 'none', got 'high'" in capsys.readouterr().err
