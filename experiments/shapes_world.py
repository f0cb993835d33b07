"""The Shapes world data set (docs/shapes.md): how many scenes of each split, seed, resolution.

    cm3jax shapes make --config experiments/shapes_world.py:default --out data/shapes
    cm3jax shapes make --config experiments/shapes_world.py:bench --out /tmp/shapes100k --config.workers=2

Variants: `default` (10k train scenes), `tiny` (tests), `bench` (100k train scenes, the
make benchmark).
"""

import ml_collections

SIZES = {
    "tiny": dict(num_train=64, num_eval=32, num_novel=16, num_emblems_unseen=16, num_memory=48),
    "default": dict(num_train=10_000, num_eval=1_000, num_novel=500, num_emblems_unseen=160, num_memory=20_000),
    "bench": dict(num_train=100_000, num_eval=0, num_novel=0, num_emblems_unseen=0, num_memory=0),
}


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    if variant not in SIZES:
        raise ValueError(f"Unknown variant {variant!r}; choose one of {', '.join(SIZES)}.")
    config = ml_collections.ConfigDict()
    config.world = ml_collections.ConfigDict(dict(SIZES[variant], seed=0, resolution=32))
    config.workers = 0  # 0: one per core
    return config
