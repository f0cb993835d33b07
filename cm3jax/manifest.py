"""A built directory's JSON manifest: what the directory holds, what made it, and the size and
SHA-256 of the files it records. Every stage that writes a directory (Shapes dataset, image
codes, memory bank, retrieval index, neighbours) reads and writes its manifest here, so all of
them refuse a missing, corrupt or foreign directory the same way.

    BANK = ManifestSpec("cm3jax_bank.json", "memory bank", "`cm3jax retrieval bank --out {directory}`",
                        format="cm3jax-memory-bank", version=1, keys=("size", "dim"))
    BANK.write(staging, {"size": 3, ...})
    manifest = BANK.read(directory)           # UserError naming the problem and the command
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from cm3jax.errors import UserError
from cm3jax.fileio import atomic_write_text, is_empty_or_absent


@dataclasses.dataclass(frozen=True)
class ManifestSpec:
    """One kind of manifest. `what` names the directory's contents in messages ("memory bank");
    `make` is the command that makes one, `{directory}` standing for the directory. With
    `format`, a manifest holds "format" and "version" and reading checks them; `keys` are the
    ones it must hold ("a.b" for key b of the object under a)."""
    filename: str
    what: str
    make: str
    format: str | None = None
    version: int | None = None
    keys: tuple[str, ...] = ()

    def path(self, directory: str) -> str:
        return os.path.join(directory, self.filename)

    def exists(self, directory: str) -> bool:
        return os.path.isfile(self.path(directory))

    def command(self, directory: str) -> str:
        return self.make.format(directory=directory)

    def _absent(self, directory: str, reason: str) -> str:
        return f"No {self.what} in {directory} ({reason}); make one with {self.command(directory)}."

    def _again(self, directory: str) -> str:
        return f"make the {self.what} again with {self.command(directory)}"

    def read(self, directory: str) -> dict:
        """The manifest of `directory`, refused unless it is there, JSON, of this format and
        version, and holds every key."""
        if not os.path.isdir(directory):
            raise UserError(self._absent(directory, "no such directory"))
        path, again = self.path(directory), self._again(directory)
        manifest = read_json(path, f"The {self.what} manifest", again,
                             missing=self._absent(directory, f"no {self.filename}"))
        if self.format is not None and (manifest.get("format"), manifest.get("version")) != (self.format, self.version):
            raise UserError(f"{directory} holds a {manifest.get('format')} v{manifest.get('version')}, not a "
                            f"{self.format} v{self.version}; {again} (this version of cm3jax).")
        missing = [key for key in self.keys if not _has(manifest, key)]
        if missing:
            raise UserError(f"The {self.what} manifest {path} lacks {', '.join(missing)}; {again}.")
        return manifest

    def write(self, directory: str, body: dict) -> dict:
        """Writes `body` (with this spec's format and version first) as the manifest of
        `directory`, atomically; returns what was written."""
        header = {"format": self.format, "version": self.version} if self.format is not None else {}
        manifest = {**header, **body}
        atomic_write_text(self.path(directory), json.dumps(manifest, indent=2) + "\n")
        return manifest

    def check_empty(self, directory: str) -> None:
        """Raises unless `directory` is absent or empty (a place to build a new one)."""
        if not is_empty_or_absent(directory):
            raise UserError(f"{directory} is not empty; choose a new directory for the {self.what} or delete "
                            f"that one.")

    def made_already(self, directory: str, manifest: dict) -> bool:
        """True if `directory` already holds exactly `manifest`; False if it is absent or empty
        (build there); raises if it holds anything else, naming every difference."""
        if not self.exists(directory):
            self.check_empty(directory)
            return False
        existing = self.read(directory)
        if existing == manifest:
            return True
        detail = "; ".join(differences(existing, manifest))
        raise UserError(f"{directory} already holds a different {self.what} ({detail}); choose a new directory "
                        f"or delete that one.")

    def check_files(self, directory: str, files: dict) -> None:
        """Raises unless every file of `files` ({name: file_record}) is in `directory` as recorded."""
        again = self._again(directory)
        for name, record in files.items():
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                raise UserError(f"The {self.what} in {directory} is missing {name}; {again}.")
            if os.path.getsize(path) != record["bytes"] or sha256_file(path) != record["sha256"]:
                raise UserError(f"The {self.what} in {directory} is corrupt: {name} differs from its manifest "
                                f"(size or SHA-256); {again}.")


def read_json(path: str, what: str, fix: str, missing: str | None = None) -> dict:
    """The JSON object in `path`. Errors name it as `what` ("The CLIP config") and end with
    `fix`; `missing` replaces the message for a file that does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        raise UserError(missing or f"{what} {path} does not exist; {fix}.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what} {path} is not valid JSON ({e}); {fix}.") from None
    except OSError as e:
        raise UserError(f"Cannot read {what} {path} ({e}); {fix}.") from None
    if not isinstance(value, dict):
        raise UserError(f"{what} {path} holds no JSON object; {fix}.")
    return value


def _has(manifest: dict, key: str) -> bool:
    node = manifest
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def differences(there, asked, prefix: str = "") -> list[str]:
    """'key: <there> there, <asked> asked' for every leaf where two JSON values differ
    (nested objects are compared key by key, `a.b` naming key b under a)."""
    if isinstance(there, dict) and isinstance(asked, dict):
        return [line for key in sorted(there.keys() | asked.keys())
                for line in differences(there.get(key), asked.get(key), f"{prefix}{key}.")]
    if there == asked:
        return []
    return [f"{prefix.rstrip('.')}: {json.dumps(there)} there, {json.dumps(asked)} asked"]


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str) -> dict:
    """What a manifest records of a file: its size and SHA-256."""
    return {"bytes": os.path.getsize(path), "sha256": sha256_file(path)}


def record_files(directory: str) -> dict:
    """{name: file_record} of every file in `directory`, by name."""
    return {name: file_record(os.path.join(directory, name)) for name in sorted(os.listdir(directory))
            if os.path.isfile(os.path.join(directory, name))}


def fingerprint(value) -> str:
    """"sha256:<hex>" of a JSON value (keys sorted): equal values, equal fingerprints."""
    return "sha256:" + hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
