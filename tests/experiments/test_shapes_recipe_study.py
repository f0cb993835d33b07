"""The recipe study end to end on the test demo's run: a tiny recipe trained in two segments,
each scored on the dev split, tabulated and plotted; a rerun does nothing twice."""

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

from cm3jax.demo import SELECTION

ROOT = Path(__file__).resolve().parents[2]


def _study():
    spec = importlib.util.spec_from_file_location("shapes_recipe_study", ROOT / "experiments" / "shapes_recipe_study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_study_trains_in_segments_scores_each_on_dev_and_tabulates(demo, tmp_path, monkeypatch):
    study = _study()
    monkeypatch.setitem(study.RECIPES, "tiny", study.Recipe("the test decoder", "test_retrieval"))
    argv = ["--run", str(demo[0]), "--out", str(tmp_path), "--recipes", "tiny", "--steps", "4", "--score-every", "2",
            "--size", "smoke"]
    study.main(argv)
    rows = json.loads((tmp_path / "study.json").read_text())["rows"]
    assert [r["step"] for r in rows] == [2, 4]
    assert rows[1]["tokens"] > rows[0]["tokens"] > 0 and rows[1]["seconds"] > rows[0]["seconds"] > 0
    for row in rows:
        assert 0.0 <= row["dev_exact"] <= 1.0 and 0.0 <= row["caption_exact"] <= 1.0
        assert {"emblems_0", "emblems_2"} <= set(row), "a retrieval recipe scores the unseen emblems both ways"
        assert row["tokenizer"]["code_bits_given_patch"] >= 0.0
    results = json.loads((tmp_path / "runs" / "tiny-seed0" / "eval" / "step4" / "results.json").read_text())
    assert results["split"] == "dev" and results["checkpoint"]["step"] == 4
    table = (tmp_path / "study.md").read_text()
    assert "| tiny | 0 | 4 |" in table and "the test decoder" in table
    assert (tmp_path / "study.png").stat().st_size > 0
    before = (tmp_path / "runs" / "tiny-seed0" / "metrics.jsonl").read_text()
    study.main(argv)
    assert (tmp_path / "runs" / "tiny-seed0" / "metrics.jsonl").read_text() == before, "done points are not redone"


def test_a_recipe_with_more_training_scenes_and_memory_trains_on_its_own_world_and_bank(demo, tmp_path, monkeypatch):
    study = _study()
    monkeypatch.setitem(study.RECIPES, "more", study.Recipe("more scenes", "test_retrieval", scenes=80, memory=64))
    study.main(["--run", str(demo[0]), "--out", str(tmp_path), "--recipes", "more", "--steps", "4",
                "--score-every", "4", "--size", "smoke"])
    world = tmp_path / "worlds" / "80-num_memory=64"
    config = json.loads((world / "shapes" / "cm3jax_shapes.json").read_text())
    assert config["num_train"] == 80 and config["num_memory"] == 64
    assert json.loads((world / "bank" / "cm3jax_bank.json").read_text())["size"] == 64
    assert (world / "codes").is_dir() and (world / "neighbours").is_dir() and (world / "index").is_dir()
    recipe = study.RECIPES["more"]
    trained = study.decoder_config(str(demo[0]), study._dirs(str(demo[0]), str(tmp_path), recipe), recipe, 0, 4)
    assert trained.data.retrieval_bank == str(world / "bank") and trained.data.shapes_dir == str(world / "shapes")
    results = json.loads((tmp_path / "runs" / "more-seed0" / "eval" / "step4" / "results.json").read_text())
    assert results["checkpoint"]["step"] == 4
    row = json.loads((tmp_path / "study.json").read_text())["rows"][0]
    assert row["recipe"] == "more" and row["tokens"] > 0


def test_every_recipe_overrides_only_keys_the_decoder_config_has(tmp_path):
    study = _study()
    dirs = {k: str(tmp_path / k) for k in ("shapes", "codes", "vqgan", "bank", "neighbours")}
    for name, recipe in study.RECIPES.items():
        config = study.decoder_config(str(tmp_path), dirs, recipe, seed=1, steps=7)
        for key, value in dict(recipe.decoder).items():  # a later override of a key wins
            section, field = key.split(".")
            assert config[section][field] == value, f"{name}: {key}"
        assert config.train.steps == 7 and config.train.seed == 1
        options = study._dirs(str(tmp_path / "run"), str(tmp_path), recipe)["selection"]
        assert options == dataclasses.replace(SELECTION, **dict(recipe.selection)), name


def test_neighbours_chosen_otherwise_than_a_recipe_asks_give_way_to_its_own(tmp_path, monkeypatch):
    study = _study()
    run, recipe = str(tmp_path / "run"), study.RECIPES["no_twins"]
    asked = dataclasses.asdict(dataclasses.replace(SELECTION, **dict(recipe.selection)))
    monkeypatch.setattr(study, "_chosen_by", lambda directory: asked)
    assert study._dirs(run, str(tmp_path), recipe)["neighbours"] == str(tmp_path / "run" / "neighbours")
    monkeypatch.setattr(study, "_chosen_by", lambda directory: dataclasses.asdict(SELECTION))
    own = study._dirs(run, str(tmp_path), recipe)
    assert own["neighbours"].startswith(str(tmp_path / "neighbours")) and own["bank"] == str(tmp_path / "run" / "bank")
    assert study._dirs(run, str(tmp_path), study.RECIPES["default"])["neighbours"] == str(tmp_path / "run" / "neighbours")
