"""Recorded paths are found beside the recording artefact first, else where they were."""

import os
import shutil

from cm3jax.paths import find_path, record_path


def test_a_recorded_path_follows_its_artefact_when_both_move(tmp_path, monkeypatch):
    run = tmp_path / "run"
    (run / "index").mkdir(parents=True)
    (run / "bank").mkdir()
    monkeypatch.chdir(tmp_path)
    record = record_path("run/bank", "run/index")
    assert record == {"path": str(run / "bank"), "relative": "../bank"}
    assert find_path(record, str(run / "index")) == str(run / "bank")
    shutil.move(str(run), str(tmp_path / "moved"))
    assert find_path(record, str(tmp_path / "moved" / "index")) == str(tmp_path / "moved" / "bank")


def test_a_recorded_path_not_beside_the_artefact_is_the_absolute_one(tmp_path):
    (tmp_path / "bank").mkdir()
    record = record_path(str(tmp_path / "bank"), str(tmp_path / "index"))
    elsewhere = tmp_path / "elsewhere" / "index"
    assert find_path(record, str(elsewhere)) == str(tmp_path / "bank")
    assert find_path(record, None) == str(tmp_path / "bank")
    assert find_path("plain/path", str(elsewhere)) == "plain/path"  # a record that predates this
    assert os.path.isabs(record["path"])
