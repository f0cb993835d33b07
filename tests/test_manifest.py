import json
import os

import pytest

from cm3jax.errors import UserError
from cm3jax.manifest import ManifestSpec, differences, file_record, fingerprint, record_files

SPEC = ManifestSpec("m.json", "toy store", "`toy make --out {directory}`", format="toy-store", version=2,
                    keys=("size", "source.kind"))
PLAIN = ManifestSpec("p.json", "plain store", "`plain make`")


def test_a_written_manifest_reads_back_with_its_format(tmp_path):
    written = SPEC.write(str(tmp_path), {"size": 3, "source": {"kind": "a"}})
    assert written == {"format": "toy-store", "version": 2, "size": 3, "source": {"kind": "a"}}
    assert SPEC.read(str(tmp_path)) == written
    assert list(json.loads((tmp_path / "m.json").read_text())) == ["format", "version", "size", "source"]
    assert os.listdir(tmp_path) == ["m.json"]  # no temporary file left beside it
    assert PLAIN.write(str(tmp_path), {"a": 1}) == {"a": 1}  # no format: written as given


@pytest.mark.parametrize("content, message", [
    (None, r"No toy store in .*absent \(no such directory\); make one with `toy make --out .*absent`"),
    ("", r"No toy store in .* \(no m.json\); make one with `toy make"),
    ("{not json", r"m.json is not valid JSON .*make the toy store again with `toy make"),
    ("[1, 2]", "holds no JSON object"),
    ('{"format": "toy-store", "version": 1}', "holds a toy-store v1, not a toy-store v2"),
    ('{"format": "other", "version": 2}', "holds a other v2, not a toy-store v2"),
    ('{"format": "toy-store", "version": 2, "size": 1, "source": {}}', "lacks source.kind; make the toy store again"),
    ('{"format": "toy-store", "version": 2, "source": 3}', "lacks size, source.kind"),
])
def test_every_unreadable_manifest_names_its_problem_and_the_command(tmp_path, content, message):
    directory = tmp_path / "absent"
    if content is not None:
        directory.mkdir()
        if content:
            (directory / "m.json").write_text(content)
    with pytest.raises(UserError, match=message):
        SPEC.read(str(directory))


def test_files_are_recorded_and_checked(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "b.bin").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    files = record_files(str(tmp_path))
    assert list(files) == ["a.bin", "b.bin"]  # plain files only, by name
    assert files["a.bin"] == {"bytes": 3, "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}
    SPEC.check_files(str(tmp_path), files)
    (tmp_path / "a.bin").write_bytes(b"abd")
    with pytest.raises(UserError, match=r"toy store in .* is corrupt: a.bin differs .*toy make"):
        SPEC.check_files(str(tmp_path), files)
    os.remove(tmp_path / "b.bin")
    with pytest.raises(UserError, match="is missing b.bin"):
        SPEC.check_files(str(tmp_path), {"b.bin": files["b.bin"]})
    assert file_record(str(tmp_path / "a.bin"))["bytes"] == 3


def test_made_already_finds_the_same_and_refuses_the_rest(tmp_path):
    asked = {"size": 3, "source": {"kind": "a", "n": 1}}
    assert SPEC.made_already(str(tmp_path / "new"), asked) is False  # absent: build it
    assert SPEC.made_already(str(tmp_path), asked) is False  # empty: build it
    manifest = SPEC.write(str(tmp_path), asked)
    assert SPEC.made_already(str(tmp_path), manifest) is True
    with pytest.raises(UserError, match=r"already holds a different toy store \(size: 3 there, 4 asked; "
                                        r"source.n: 1 there, 2 asked\)"):
        SPEC.made_already(str(tmp_path), {**manifest, "size": 4, "source": {"kind": "a", "n": 2}})
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="is not empty; choose a new directory for the toy store"):
        SPEC.made_already(str(other), manifest)


def test_differences_and_fingerprints():
    assert differences({"a": 1, "b": {"c": [1]}}, {"a": 1, "b": {"c": [2]}, "d": "x"}) == [
        "b.c: [1] there, [2] asked", 'd: null there, "x" asked']
    assert differences({"a": 1}, {"a": 1}) == []
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2}) and fingerprint({}).startswith("sha256:")
