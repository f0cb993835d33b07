"""Paths that one saved artefact records to another (a decoder run's tokenizers and data, an
index's memory bank, a bank's CLIP): recorded both absolute and relative to the artefact that
records them, and found again by the relative one first. So a run directory loads from any
working directory, and still loads after being moved as a whole (the way `cm3jax demo` lays it
out); moved apart from its inputs, it finds them where they were."""

from __future__ import annotations

import os


def record_path(path: str, base: str) -> dict[str, str]:
    """{"path": absolute, "relative": from `base`} of `path` (relative to the working directory)."""
    absolute = os.path.abspath(path)
    return {"path": absolute, "relative": os.path.relpath(absolute, os.path.abspath(base))}


def find_path(record: dict | str, base: str | None) -> str:
    """Where a recorded path is now for the artefact at `base`: at its place relative to `base` when
    that exists, else the absolute path recorded (a plain string: a record that predates this)."""
    if isinstance(record, str):
        return record
    if base is not None and "relative" in record:
        beside = os.path.normpath(os.path.join(base, record["relative"]))
        if os.path.exists(beside):
            return beside
    return record["path"]
