"""RunLog, a run's metrics.jsonl: a resumed run keeps the records its checkpoint covers (minus
the closing eval and end of a run that had finished), a line cut short by a crash ends the read,
and processes other than the primary one keep their records in memory only."""

import json
import os

from cm3jax.run_log import FILENAME, RunLog


def _write(workdir, records, tail: str = "") -> str:
    path = os.path.join(workdir, FILENAME)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


FINISHED = [{"kind": "train", "step": s, "loss": 1.0 / s} for s in (1, 2, 3, 4)] + [
    {"kind": "eval", "step": 2, "exact_match": 0.5},
    {"kind": "eval", "step": 4, "exact_match": 0.9},
    {"kind": "end", "step": 4, "seconds": 1.0},
]


def test_a_fresh_run_starts_an_empty_file(tmp_path):
    log = RunLog(str(tmp_path), resume_step=0, final_step=10)
    assert log.records == []
    assert (tmp_path / FILENAME).read_text() == ""
    log.append({"kind": "train", "step": 1, "loss": 2.0})
    assert RunLog.read(str(tmp_path / FILENAME)) == [{"kind": "train", "step": 1, "loss": 2.0}]


def test_resume_keeps_records_up_to_the_resume_step(tmp_path):
    path = _write(str(tmp_path), FINISHED)
    log = RunLog(str(tmp_path), resume_step=2, final_step=4)
    expected = [FINISHED[0], FINISHED[1], FINISHED[4]]  # train 1, 2 and the eval at 2
    assert log.records == expected
    assert RunLog.read(path) == expected, "the file is rewritten to match"
    log.append({"kind": "train", "step": 3, "loss": 0.3})
    assert RunLog.read(path) == expected + [{"kind": "train", "step": 3, "loss": 0.3}]


def test_a_finished_run_drops_its_closing_eval_and_end(tmp_path):
    path = _write(str(tmp_path), FINISHED)
    log = RunLog(str(tmp_path), resume_step=4, final_step=4)
    assert log.records == FINISHED[:5], "train 1-4 and the eval at 2; not the eval at 4 nor the end"
    assert RunLog.read(path) == FINISHED[:5]


def test_a_line_cut_short_by_a_crash_ends_the_read(tmp_path):
    path = _write(str(tmp_path), FINISHED[:3], tail='{"kind": "train", "st')
    assert RunLog.read(path) == FINISHED[:3]
    log = RunLog(str(tmp_path), resume_step=10, final_step=20)
    assert log.records == FINISHED[:3]
    assert open(path).read().endswith("}\n"), "the broken line is gone from the file"


def test_a_missing_file_reads_as_empty(tmp_path):
    assert RunLog.read(str(tmp_path / "nothing.jsonl")) == []


def test_write_false_keeps_records_in_memory_only(tmp_path):
    path = _write(str(tmp_path), FINISHED)
    before = open(path).read()
    log = RunLog(str(tmp_path), resume_step=2, final_step=4, write=False)
    assert log.records == [FINISHED[0], FINISHED[1], FINISHED[4]]
    log.append({"kind": "train", "step": 3, "loss": 0.3})
    assert log.records[-1] == {"kind": "train", "step": 3, "loss": 0.3}
    assert open(path).read() == before, "the file is untouched"
    RunLog(str(tmp_path / "elsewhere"), resume_step=0, final_step=1, write=False).append({"step": 1})
    assert not (tmp_path / "elsewhere").exists()
