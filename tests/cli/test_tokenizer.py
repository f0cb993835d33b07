"""`cm3jax tokenizer text`: a sentencepiece model from a corpus file, and a clear error for a
corpus that cannot be read."""

import pytest

from cm3jax import cli
from cm3jax.text_tokenizer import TextTokenizer


def test_text_tokenizer_from_a_corpus_file(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"a {c} {s} in the top left" for c in ("red", "blue", "green")
                                for s in ("circle", "square", "cross")) + "\n")
    out = str(tmp_path / "text.model")
    assert cli.main(["tokenizer", "text", "--corpus", str(corpus), "--vocab-size", "300", "--out", out]) == 0
    assert "300-piece bpe tokenizer on 9 lines" in capsys.readouterr().out
    tokenizer = TextTokenizer.load(out)
    assert tokenizer.decode(tokenizer.encode("a blue cross in the top left")) == "a blue cross in the top left"


def test_an_unreadable_corpus_is_named(tmp_path, capsys):
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SystemExit, match="2"):
        cli.main(["tokenizer", "text", "--corpus", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "t.model")])
    assert f"no corpus file at {tmp_path / 'missing.txt'}" in capsys.readouterr().err
    assert cli.main(["tokenizer", "text", "--corpus", str(tmp_path / "bin"), "--out", str(tmp_path / "t.model")]) == 2
    assert f"Cannot read the corpus {tmp_path / 'bin'}" in capsys.readouterr().err
    assert not (tmp_path / "t.model").exists()
