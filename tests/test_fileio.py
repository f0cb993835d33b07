import os
import stat

import pytest

from cm3jax.fileio import atomic_write, atomic_write_text, built_aside, is_empty_or_absent


def test_writes_whole_files_with_usual_permissions(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write_text(str(path), "hello")
    assert path.read_text() == "hello"
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()


def test_a_failed_write_leaves_the_old_file_and_no_litter(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(str(path), "old")

    def explode(f):
        f.write(b"half")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        atomic_write(str(path), explode)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


@pytest.mark.parametrize("exists_empty", [False, True])
def test_a_built_directory_replaces_an_absent_or_empty_one(tmp_path, exists_empty):
    out = tmp_path / "out"
    if exists_empty:
        out.mkdir()
    with built_aside(str(out), prefix=".tmp-test-") as staging:
        atomic_write_text(os.path.join(staging, "m.json"), "{}")
        assert not (out / "m.json").exists()  # nothing visible until the block ends
    assert (out / "m.json").read_text() == "{}"
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755


def test_a_failed_build_leaves_the_destination_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError, match="boom"):
        with built_aside(str(out), prefix=".tmp-test-") as staging:
            atomic_write_text(os.path.join(staging, "m.json"), "{}")
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(out) == []


def test_emptiness(tmp_path):
    assert is_empty_or_absent(str(tmp_path)) and is_empty_or_absent(str(tmp_path / "missing"))
    (tmp_path / "x").write_text("")
    assert not is_empty_or_absent(str(tmp_path))


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
