"""The main job's pipeline end to end at test size: every stage runs, writes what a person
looks at, and a second run resumes instead of redoing the work; then the inference commands
run on the checkpoint it trained."""

import contextlib
import json
import re

import numpy as np
import pytest
from PIL import Image

from cm3jax.cli import main
from cm3jax.demo import TUNED_TASKS, run_demo


def test_demo_runs_every_stage_and_resumes(demo, capsys):
    workdir, results = demo
    assert results["decoder"]["step"] == 6 and results["decoder"]["eval_nll"] > 0
    evaluation = results["evaluation"]
    assert evaluation["size"] == "smoke" and evaluation["checkpoint"]["step"] == 6
    assert {t for t, e in evaluation["tasks"].items() if e["status"] == "done"} >= {"retrieval", "emblems", "decoding"}
    emblems = evaluation["tasks"]["emblems"]["results"]
    assert set(emblems["by_retrieved"]) == {"0", "2"} and 0 <= emblems["first_document_is_the_emblem"]["rate"] <= 1
    assert results["retriever"]["finished"] and 0 <= results["retriever"]["text_to_image/recall@1"] <= 1
    assert (workdir / "decoder" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((workdir / "decoder" / "results.json").read_text())["step"] == 6
    report = (workdir / "report.html").read_text()
    pictures = re.findall(r"<img src='([^']+)'", report)
    assert {"eval/emblems.png", "eval/retrieval_plot.png", "vqgan/reconstructions.png"} <= set(pictures)
    assert all((workdir / p).exists() for p in pictures) and "emblems: first document is the emblem" in report
    assert (workdir / "eval" / "report.html").exists()
    assert results["tuning"]["step"] == 6 and results["tuning"]["eval_nll"] > 0
    tuned = results["tuned_evaluation"]
    assert tuned["checkpoint"]["step"] == 6 and set(tuned["trained_tasks"]) >= {"vqa", "edit", "caption_short"}
    assert {t for t, e in tuned["tasks"].items() if e["status"] == "done"} == set(TUNED_TASKS)
    assert "instruction-tuned decoder on every task" in report and "edit: exact match" in report
    assert {"sft_eval/edit.png", "sft_eval/structure.png", "sft/loss.png"} <= set(pictures)
    capsys.readouterr()
    run_demo(str(workdir), "quick")
    assert capsys.readouterr().out.count("already done") == 12


def test_time_left_scales_the_reference_by_this_machines_pace():
    from cm3jax.demo import REFERENCE_SECONDS, time_left
    reference = {"a": 10.0, "b": 30.0, "c": 60.0}  # a tenth of the whole, 10 s, counts as run at pace 1
    assert time_left(reference, {}, ["a", "b", "c"]) == 100.0  # nothing run yet: the reference itself
    assert time_left(reference, {"a": 30.0, "b": 0.0}, ["b", "c"]) == 180.0  # (10 + 30) / (10 + 10); b skipped
    assert time_left(reference, {"a": 5.0, "b": 15.0}, ["c"]) == pytest.approx(60.0 * 30 / 50)
    for profile, seconds in REFERENCE_SECONDS.items():
        assert set(seconds) == {"shapes", "text_tokenizer", "image_tokenizer", "pretokenize", "clip", "bank", "index",
                                "neighbours", "decoder", "evaluation", "instruction_tuning",
                                "tuned_evaluation"}, profile


def test_training_neighbours_never_hold_an_unseen_emblem(demo):
    from cm3jax.retrieval.bank import load_bank
    from cm3jax.retrieval.neighbours import load_neighbours, unseen_emblem_rows
    workdir, _ = demo
    bank = load_bank(str(workdir / "bank"))
    held_out = unseen_emblem_rows(bank, str(workdir / "shapes"))
    assert len(held_out) == 16  # the tiny world's memory split holds all 32 emblems
    train = load_neighbours(str(workdir / "neighbours"), "train", bank)
    unseen = load_neighbours(str(workdir / "neighbours"), "emblems_unseen", bank)
    assert not set(train.reshape(-1).tolist()) & held_out and (train >= 0).any()
    assert set(unseen.reshape(-1).tolist()) & held_out  # at evaluation they are in the bank as any document


def test_inference_commands_run_end_to_end(demo, tmp_path, capsys):
    workdir, _ = demo
    checkpoint = str(workdir / "decoder")
    out = tmp_path / "grid.png"
    assert main(["generate", "--checkpoint", checkpoint, "--prompt", "a small red circle on a black background",
                 "--samples", "4", "--top-p", "0.9", "--cd-k", "0.1,8", "--cfg", "3", "--out", str(out)]) == 0
    record = json.loads((tmp_path / "grid.json").read_text())
    assert record["settings"]["strategy"] == "mix" and record["settings"]["cfg_scale"] == 3.0
    assert record["complete"] == [True] * 4 and len(record["images"]) == 4
    first = np.asarray(Image.open(record["images"][0]))
    assert first.shape == (32, 32, 3) and out.read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    for command in (["caption"], ["caption", "--detail", "short"],
                    ["answer", "--question", "what color is the circle?"]):
        assert main([*command, "--checkpoint", checkpoint, "--image", record["images"][0]]) == 0
    assert main(["infill", "--checkpoint", checkpoint, "--before", "a large", "--after", "circle"]) == 0
    assert capsys.readouterr().err == ""
    edited = tmp_path / "edit.png"
    assert main(["edit", "--checkpoint", checkpoint, "--image", record["images"][0], "--instruction", "make it blue",
                 "--out", str(edited)]) == 0
    assert edited.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("arguments, message", [
    (["--top-p", "1.5"], "top-p must lie in"),
    (["--cfg", "-1"], "guidance scale cfg_scale must be >= 0"),
    (["--samples", "0"], "--samples must be at least 1"),
    (["--prompt", "red " * 300], "prompts may be at most 192 tokens"),
    (["--checkpoint", "/nonexistent/run"], "no checkpoint workdir at /nonexistent/run"),
])
def test_generate_refuses_bad_input_with_the_fix(demo, tmp_path, capsys, arguments, message):
    workdir, _ = demo
    base = {"--checkpoint": str(workdir / "decoder"), "--prompt": "a red circle", "--out": str(tmp_path / "g.png")}
    base.update(zip(arguments[::2], arguments[1::2]))
    try:
        code = main(["generate"] + [x for pair in base.items() for x in pair])
    except SystemExit as e:  # refused by the parser
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_caption_names_an_unreadable_image(demo, tmp_path, capsys):
    workdir, _ = demo
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    assert main(["caption", "--checkpoint", str(workdir / "decoder"), "--image", str(bad)]) == 2
    assert f"{bad} is not an image file" in capsys.readouterr().err


def test_generate_with_retrieved_documents_and_clip_reranking(demo, tmp_path, capsys):
    workdir, _ = demo
    out = tmp_path / "grid.png"
    prompt = "the flag of vexland"
    assert main(["generate", "--checkpoint", str(workdir / "decoder"), "--prompt", prompt, "--samples", "3",
                 "--retrieve", "1", "--index", str(workdir / "index"), "--clip", str(workdir / "clip"),
                 "--out", str(out)]) == 0
    record = json.loads((tmp_path / "grid.json").read_text())
    assert len(record["retrieved"]) == 1 and record["retrieved"][0]["score"] > 0
    assert len(record["rerank_scores"]) == 3 and len(record["images"]) == 1  # the best of 3 by CLIP
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(workdir / "decoder"), "--prompt", prompt, "--retrieve", "1",
                 "--out", str(out)]) == 2
    assert "--retrieve K needs --index DIR" in capsys.readouterr().err


def test_a_moved_run_loads_from_another_working_directory(demo, tmp_path, monkeypatch, capsys):
    """The run directory copied elsewhere and used from a third directory: the checkpoint's
    tokenizers and data, the index's bank and the bank's CLIP are found inside the copy."""
    import shutil

    from cm3jax.eval.suite import find_retriever
    from cm3jax.retrieval.embedder import ClipEmbedder
    from cm3jax.retrieval.retriever import Retriever
    from cm3jax.sampling.inference import TrainedDecoder
    workdir, _ = demo
    moved = tmp_path / "moved"
    shutil.copytree(workdir, moved, ignore=shutil.ignore_patterns("eval", "*.lock"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    trained = TrainedDecoder.load(str(moved / "decoder"))
    for key in ("shapes_dir", "codes_dir", "text_tokenizer", "image_tokenizer", "retrieval_bank", "neighbours"):
        assert trained.config.data[key].startswith(str(moved) + "/"), (key, trained.config.data[key])
    loaded_from = []
    load_clip = ClipEmbedder.load.__func__
    monkeypatch.setattr(ClipEmbedder, "load", classmethod(lambda cls, w: loaded_from.append(w) or load_clip(cls, w)))
    retriever = Retriever.load(str(moved / "index"))
    assert retriever.bank.directory == str(moved / "bank") and loaded_from == [str(moved / "clip")]
    assert find_retriever(trained.config.data.retrieval_bank, None)[0].directory == str(moved / "index")
    out = tmp_path / "grid.png"
    assert main(["generate", "--checkpoint", str(moved / "decoder"), "--prompt", "the flag of vexland",
                 "--samples", "1", "--retrieve", "1", "--index", str(moved / "index"), "--out", str(out)]) == 0
    assert json.loads((tmp_path / "grid.json").read_text())["retrieved"]


def test_a_run_of_another_profile_or_version_is_refused_before_any_work(demo, tmp_path):
    from cm3jax.errors import UserError
    workdir, _ = demo
    assert json.loads((workdir / "demo.json").read_text())["profile"] == "quick"
    with pytest.raises(UserError, match="holds a demo run of profile 'quick'.*not profile 'default'"):
        run_demo(str(workdir), "default")
    old = tmp_path / "old"
    old.mkdir()
    (old / "demo.json").write_text(json.dumps({"profile": "quick", "cm3jax": "0.0.1"}))
    with pytest.raises(UserError, match="made by cm3jax 0.0.1"):
        run_demo(str(old), "quick")
    assert sorted(p.name for p in old.iterdir()) == ["demo.json"]


@pytest.mark.parametrize("setup, message", [
    ("file", "is a file; give --workdir a directory"),
    ("strangers", "holds other things than a demo run \\(notes.txt\\)"),
    ("full disk", "The quick demo needs about 100 MB more disk but .* has 1 MB free"),
    ("in use", "is in use by another run"),
])
def test_a_bad_run_directory_is_refused_before_any_work(tmp_path, monkeypatch, setup, message):
    import shutil
    from collections import namedtuple

    from cm3jax.errors import UserError
    from cm3jax.workdir_lock import workdir_lock
    workdir = tmp_path / "run"
    if setup == "file":
        tmp_path.joinpath("file").write_text("")
        workdir = tmp_path / "file" / "run"
    elif setup == "strangers":
        workdir.mkdir()
        (workdir / "notes.txt").write_text("")
    elif setup == "full disk":
        usage = namedtuple("usage", "total used free")
        monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, (1 << 30) - (1 << 20), 1 << 20))
    with contextlib.ExitStack() as stack:
        if setup == "in use":
            stack.enter_context(workdir_lock(str(workdir), "cm3jax train --workdir run"))
        with pytest.raises(UserError, match=message):
            run_demo(str(workdir), "quick")
    assert not (workdir / "shapes").exists() and not (workdir / "demo.json").exists()


def test_a_changed_middle_stage_reruns_with_only_the_stages_after_it(demo, tmp_path, monkeypatch, capsys):
    import dataclasses
    import shutil

    import cm3jax.demo
    workdir, _ = demo
    copy = tmp_path / "copy"  # moved: the stages' hashes do not depend on where the run lies
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("*.lock"))
    capsys.readouterr()
    run_demo(str(copy), "quick")
    assert capsys.readouterr().out.count("already done") == 12
    monkeypatch.setattr(cm3jax.demo, "SELECTION", dataclasses.replace(cm3jax.demo.SELECTION, candidates=16))
    before = (copy / "vqgan").stat().st_mtime_ns, (copy / "decoder" / "results.json").stat().st_mtime_ns
    run_demo(str(copy), "quick")
    out = capsys.readouterr().out
    done = re.findall(r"\[demo\] (.+): already done", out)
    assert done == ["make the Shapes world", "train the text tokenizer", "train the VQ-GAN", "pretokenize every image",
                    "train the retriever's CLIP", "embed the memory bank", "index the memory bank"]
    for stage in ("retrieve every example's neighbours", "train the decoder", "score the decoder",
                  "instruction-tune the decoder", "score the tuned decoder"):
        assert re.search(rf"{stage}[^\n]*: its settings or an earlier stage's changed; running it again", out), stage
    assert re.search(r"\[demo\] train the decoder \(stage 9 of 12; about \d+ (s|min) left in all\) \.\.\.", out)
    after = (copy / "vqgan").stat().st_mtime_ns, (copy / "decoder" / "results.json").stat().st_mtime_ns
    assert after[0] == before[0] and after[1] != before[1]
    stages = json.loads((copy / "demo.json").read_text())["stages"]
    assert all(stage["done"] for stage in stages.values()) and len(stages) == 12
