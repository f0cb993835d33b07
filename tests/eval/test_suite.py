"""The suite on the tiny model the test demo trains: every task scored or reported "not
trained", the same figures for the same seed, prompt sets apart from train, and bad requests
refused with the fix named and everything measured kept."""

import json
from pathlib import Path

import pytest

from cm3jax.config import load_config
from cm3jax.errors import UserError
from cm3jax.eval.prompt_sets import draw, trained_meanings
from cm3jax.eval.suite import SuiteErrors, run_suite
from cm3jax.shapes.captions import meaning
from cm3jax.shapes.dataset import load_spec
from cm3jax.train.loop import train

ROOT = Path(__file__).resolve().parents[2]
DONE = {"text_to_image", "likelihood", "retrieval", "emblems", "cfg", "decoding", "caption", "infill"}
NOT_TRAINED = {"caption_short", "caption_long", "vqa", "edit", "grounding", "structure"}


def _figures(results: dict) -> dict:
    """Every task's figures, without the timings."""
    return {name: entry.get("results") for name, entry in results["tasks"].items()}


@pytest.fixture(scope="module")
def smoke(demo):
    """The demo's last stage: the suite at smoke size on the decoder it trained."""
    workdir, results = demo
    return workdir, workdir / "eval", results["evaluation"]


def test_the_suite_scores_every_trained_task_and_names_the_rest(smoke):
    workdir, out, results = smoke
    statuses = {name: entry["status"] for name, entry in results["tasks"].items()}
    assert {n for n, s in statuses.items() if s == "done"} == DONE
    assert {n for n, s in statuses.items() if s == "not trained"} == NOT_TRAINED
    assert "not trained for vqa" in results["tasks"]["vqa"]["reason"]
    assert results["checkpoint"]["step"] == 6 and results["machine"]["cores"] >= 1
    retrieval = results["tasks"]["retrieval"]["results"]["eval"]["by_retrieved"]
    assert set(retrieval) == {"0", "1", "2"} and retrieval["2"]["retrieved"] == 2
    assert retrieval["1"]["fingerprint"] == results["prompt_sets"]["main"]["fingerprint"]
    read = results["tasks"]["likelihood"]["results"]["eval"]["with_2_retrieved"]
    assert read["retrieved"] == 2 and 0.0 <= read["drawn_token_accuracy"] <= 1.0
    assert set(results["tasks"]["decoding"]["results"]) == {"top_p", "cd_k", "mix", "top_p_unguided"}
    assert set(results["tasks"]["cfg"]["results"]["greedy"]) == {str(s) for s in range(1, 8)}
    assert json.loads((out / "results.json").read_text()) == results
    report = (out / "report.html").read_text()
    for picture in ("retrieval_plot.png", "cfg_plot.png", "decoding_plot.png", "emblems.png", "caption.png"):
        assert f"src='{picture}'" in report and (out / picture).read_bytes()[:4] == b"\x89PNG"
    assert "vqa: not trained" in report


def test_the_same_seed_gives_the_same_figures(smoke, tmp_path):
    workdir, _, results = smoke
    again = run_suite(str(workdir / "decoder"), "smoke", tasks=["decoding", "caption", "infill"], out=str(tmp_path),
                      progress=False)
    for name in ("decoding", "caption", "infill"):
        assert again["tasks"][name]["results"] == results["tasks"][name]["results"], name
    other = run_suite(str(workdir / "decoder"), "smoke", tasks=["decoding"], out=str(tmp_path / "seed1"), seed=1,
                      progress=False)
    assert other["tasks"]["decoding"]["results"]["mix"]["8"]["seed"] == 1


def test_the_prompt_sets_never_overlap_the_training_split(smoke):
    workdir, _, results = smoke
    world = load_spec(str(workdir / "shapes"))
    train = trained_meanings(world)
    for role, split in (("main", "eval"), ("novel", "novel"), ("emblems", "emblems_unseen")):
        prompts = draw(world, split, results["prompts_per_set"], train)
        assert prompts.fingerprint == results["prompt_sets"][role]["fingerprint"]
        assert not {meaning(s) for s in prompts.scenes} & train


@pytest.fixture(scope="module")
def plain_run(demo, tmp_path_factory):
    """A decoder trained without retrieval, captions or caption dropout: text -> image only."""
    workdir, _ = demo
    config = load_config(f"{ROOT}/experiments/shapes_tiny.py:test", [
        f"--config.data.shapes_dir={workdir / 'shapes'}", f"--config.data.codes_dir={workdir / 'codes'}",
        f"--config.data.text_tokenizer={workdir / 'text.model'}", f"--config.data.image_tokenizer={workdir / 'vqgan'}",
        "--config.data.image_to_text=0.0", "--config.data.cfg_dropout=0.0"])
    run = tmp_path_factory.mktemp("plain")
    train(config, str(run), progress=False)
    return run


def test_retrieval_asked_of_a_checkpoint_without_a_retriever_is_refused_keeping_the_rest(plain_run, tmp_path):
    with pytest.raises(SuiteErrors) as caught:
        run_suite(str(plain_run), "smoke", tasks=["text_to_image", "retrieval", "caption", "cfg"], out=str(tmp_path),
                  progress=False)
    message = str(caught.value)
    assert "retrieval: unavailable: it retrieves documents, and this checkpoint was trained without retrieval" in message
    assert "pass --index DIR" in message and "caption: not trained" in message and "cfg: unavailable" in message
    kept = json.loads((tmp_path / "results.json").read_text())
    assert kept["tasks"]["text_to_image"]["status"] == "done"
    assert kept["tasks"]["text_to_image"]["results"]["eval"]["num_scenes"] == 4
    assert "retrieval: unavailable" in (tmp_path / "report.html").read_text()


def test_an_unknown_task_is_refused_by_the_library_too():
    with pytest.raises(UserError, match="Unknown task"):
        run_suite("/nonexistent/run", tasks=["nope"])
