import hashlib
import subprocess
import sys
from pathlib import Path

from cm3jax.shapes import spec
from cm3jax.shapes.emblems import EMBLEM_NAMES, SEEN_EMBLEMS, UNSEEN_EMBLEMS
from cm3jax.shapes.dataset import make_example
from cm3jax.shapes.render import render_many
from cm3jax.shapes.world import ALL_PAIRS, SPLITS, novel_pairs, sample_scene, sample_split


GOLDEN = "8d08490ca252131b"  # sha256 prefix of the first 60 train scenes and their pixels


def _fingerprint(split="train", num=60, seed=0) -> str:
    scenes = sample_split(split, num, seed)
    digest = hashlib.sha256("".join(s.dumps() for s in scenes).encode())
    digest.update(render_many(scenes).tobytes())
    return digest.hexdigest()


def test_same_seed_same_bytes_across_processes():
    here = _fingerprint()
    code = "from tests.shapes.test_world import _fingerprint; print(_fingerprint())"
    root = Path(__file__).resolve().parents[2]
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=root).stdout.strip()
    assert here == there
    assert _fingerprint(seed=1) != here
    assert sample_scene("train", 37) == sample_split("train", 40)[37], "a scene does not depend on how many are drawn"


def test_world_version_pins_the_bytes():
    # Changing what a (seed, version) draws must come with a new spec.WORLD_VERSION.
    assert spec.WORLD_VERSION == "1.0.0"
    assert _fingerprint()[:16] == GOLDEN



def test_novel_pairs_are_a_fixed_tenth_that_train_never_shows():
    pairs = novel_pairs()
    assert len(pairs) == 4 and len(ALL_PAIRS) == 40
    assert len({c for c, _ in pairs}) == 4 and len({s for _, s in pairs}) == 4
    for split in ("train", "eval", "memory"):
        for i in range(1500 if split == "train" else 300):
            example = make_example(split, i, 0, 32)
            for key in ("scene", "edit_scene", "grounding_scene"):
                text = example[key]
                for color, shape in pairs:
                    assert f'"shape": "{shape}", "color": "{color}"' not in text, (split, i, key)
    novel = sample_split("novel", 200)
    assert all((s.objects[0].color, s.objects[0].shape) in pairs for s in novel)


def test_unseen_emblems_live_only_in_memory_and_emblems_unseen():
    assert len(EMBLEM_NAMES) == 32 and len(set(EMBLEM_NAMES)) == 32 and len(SEEN_EMBLEMS) == 16
    shown = set()
    for split in ("train", "eval", "novel"):
        for i in range(2000 if split == "train" else 400):
            example = make_example(split, i, 0, 32)
            text = " ".join(str(v) for v in example.values() if isinstance(v, str))
            for name in UNSEEN_EMBLEMS:
                assert name not in text, (split, i)
            shown |= {n for n in SEEN_EMBLEMS if n in text}
    assert len(shown) == 16, "every seen emblem appears in training scenes"
    memory = sample_split("memory", 32)
    assert [s.emblem for s in memory] == list(EMBLEM_NAMES)
    assert {s.emblem for s in sample_split("emblems_unseen", 16)} == set(UNSEEN_EMBLEMS)


def test_every_split_samples():
    for split in SPLITS:
        scenes = sample_split(split, 40)
        assert len(scenes) == 40 and all(s.id.startswith(split) for s in scenes)
        assert all(1 <= len(s.objects) <= 3 or s.emblem for s in scenes)
