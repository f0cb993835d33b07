import os
import stat

import pytest

from cm3jax.tfds_arrayrecord import built_aside, is_empty_or_absent, read_manifest, write_manifest


@pytest.mark.parametrize("exists_empty", [False, True])
def test_a_built_directory_replaces_an_absent_or_empty_one(tmp_path, exists_empty):
    out = tmp_path / "out"
    if exists_empty:
        out.mkdir()
    with built_aside(str(out), prefix=".tmp-test-") as staging:
        write_manifest(staging, "m.json", {"a": [1, 2]})
        assert not (out / "m.json").exists()  # nothing visible until the block ends
    assert read_manifest(str(out), "m.json") == {"a": [1, 2]}
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755


def test_a_failed_build_leaves_the_destination_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError, match="boom"):
        with built_aside(str(out), prefix=".tmp-test-") as staging:
            write_manifest(staging, "m.json", {})
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(out) == []


def test_manifests_and_emptiness(tmp_path):
    assert read_manifest(str(tmp_path), "m.json") is None
    assert is_empty_or_absent(str(tmp_path)) and is_empty_or_absent(str(tmp_path / "missing"))
    (tmp_path / "x").write_text("")
    assert not is_empty_or_absent(str(tmp_path))
