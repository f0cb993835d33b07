"""WORKDIR/metrics.jsonl of a training run (VQ-GAN, CLIP or decoder): one JSON record per
logged step, eval and run end. A resumed run first drops the records of steps its checkpoint
does not cover, so the file reads as one run."""

from __future__ import annotations

import json
import os

from cm3jax.fileio import atomic_write_text

FILENAME = "metrics.jsonl"


class RunLog:
    def __init__(self, workdir: str, resume_step: int, final_step: int, write: bool = True):
        """Keeps the records up to `resume_step`, except the closing eval and end of a run that
        had already reached `final_step` (they are made again). With `write` False (every
        process but the primary one) the records are read and kept in memory only."""
        self.path, self.write = os.path.join(workdir, FILENAME), write
        kept = [r for r in self.read(self.path)
                if r["step"] <= resume_step and r.get("kind") != "end"
                and not (r.get("kind") == "eval" and r["step"] >= final_step)]
        if write:
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.records = kept

    @staticmethod
    def read(path: str) -> list[dict]:
        if not os.path.exists(path):
            return []
        records = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a crash
                    break
        return records

    def append(self, record: dict) -> None:
        self.records.append(record)
        if self.write:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
