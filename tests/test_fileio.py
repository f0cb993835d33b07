import os

import pytest

from cm3jax.fileio import atomic_write, atomic_write_text


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


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
