import json

import pytest

from cm3jax.shapes.scene import Scene, ShapeObject, read_scenes, write_scenes
from cm3jax.shapes.spec import ShapesError
from cm3jax.shapes.world import sample_split


def test_json_round_trip_keeps_everything_including_extra_keys(tmp_path):
    scenes = sample_split("train", 50) + sample_split("memory", 40)
    tagged = Scene.from_json(dict(scenes[0].to_json(), score=0.5))
    write_scenes(scenes + [tagged], tmp_path / "s.jsonl")
    back = read_scenes(tmp_path / "s.jsonl")
    assert back == scenes + [tagged]
    assert back[-1].to_json()["score"] == 0.5


def test_the_spec_example_reads():
    data = {"id": "eval-000042", "resolution": 32, "background": "black",
            "objects": [{"shape": "circle", "color": "red", "size": "large",
                         "position": "top left", "center": [6, 4]}],
            "emblem": None, "caption": "a large red circle in the top left on a black background"}
    scene = Scene.from_json(data)
    assert scene.objects[0].box() == (2, 0, 10, 8)
    assert scene.to_json() == data


@pytest.mark.parametrize("key,value,word", [("color", "magenta", "magenta"), ("shape", "hexagon", "hexagon"),
                                            ("size", "huge", "huge"), ("position", "upper left", "upper left")])
def test_unknown_words_in_a_scene_are_named(key, value, word):
    obj = {"shape": "circle", "color": "red", "size": "large", "position": "top left", "center": [6, 4]}
    obj[key] = value
    with pytest.raises(ShapesError, match=f"Unknown {key} '{word}'"):
        Scene.from_json({"id": "x", "objects": [obj]})


def test_bad_lines_name_the_file_and_line(tmp_path):
    path = tmp_path / "s.jsonl"
    good = sample_split("eval", 1)[0].dumps()
    path.write_text(good + "\n" + good.replace('"blue"', '"navy"').replace('"red"', '"navy"')
                    .replace('"green"', '"navy"').replace('"yellow"', '"navy"').replace('"purple"', '"navy"')
                    .replace('"orange"', '"navy"').replace('"cyan"', '"navy"').replace('"pink"', '"navy"') + "\n")
    with pytest.raises(ShapesError, match=r"s.jsonl:2: Unknown color 'navy'"):
        read_scenes(path)
    path.write_text("{not json\n")
    with pytest.raises(ShapesError, match=r"s.jsonl:1: not valid JSON"):
        read_scenes(path)


def test_an_emblem_scene_cannot_hold_objects():
    with pytest.raises(ShapesError, match="emblem and objects"):
        Scene("x", objects=(ShapeObject.at_cell("circle", "red", "large", "center"),),
              emblem=json.loads('"the flag of jormark"'))
