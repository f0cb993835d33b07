"""`cm3jax shapes sample | render | score | make | preview`: the Shapes world."""

from __future__ import annotations

from cm3jax.cli.common import add_config_argument, input_file
from cm3jax.errors import UserError
from cm3jax.shapes.world import SPLITS

SCENES, IMAGES = input_file("scenes file (JSONL)"), input_file("images file (.npz)")
WORLD_KEYS = ("num_train", "num_eval", "num_novel", "num_emblems_unseen", "num_memory", "seed", "resolution")


def _sample(args, overrides) -> None:
    from cm3jax.shapes.scene import write_scenes
    from cm3jax.shapes.world import sample_split
    scenes = sample_split(args.split, args.num, args.seed, args.resolution)
    write_scenes(scenes, args.out)
    print(f"wrote {len(scenes)} {args.split} scenes to {args.out}")


def _render(args, overrides) -> None:
    from cm3jax.shapes.image_files import write_images
    from cm3jax.shapes.render import render_many
    from cm3jax.shapes.scene import read_scenes
    scenes = read_scenes(args.scenes)
    resolutions = {args.resolution or s.resolution for s in scenes}
    if len(resolutions) > 1:
        raise UserError(f"{args.scenes} mixes resolutions {sorted(resolutions)}; pass --resolution R "
                        f"to render them all at one.")
    images = render_many(scenes, args.resolution)
    write_images(args.out, images)
    print(f"rendered {len(images)} images of {images.shape[1]}x{images.shape[2]} to {args.out}")


def _score(args, overrides) -> None:
    import json
    from cm3jax.fileio import atomic_write_text
    from cm3jax.shapes.image_files import read_images
    from cm3jax.shapes.scene import read_scenes
    from cm3jax.shapes.score import format_report, score
    report = score(read_scenes(args.scenes), read_images(args.images))
    print(format_report(report))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")


def _preview(args, overrides) -> None:
    from cm3jax.shapes.image_files import read_images
    from cm3jax.shapes.preview import captioned_grid, save_png
    from cm3jax.shapes.render import render_many
    from cm3jax.shapes.scene import read_scenes
    from cm3jax.shapes.score import score_scene
    scenes = read_scenes(args.scenes)[: args.max]
    if args.images:
        images = read_images(args.images)[: args.max]
        if len(images) != len(scenes):
            raise UserError(f"{args.scenes} and {args.images} hold different numbers of items "
                            f"({len(scenes)} and {len(images)}).")
        captions = [("OK " if score_scene(s, im).exact else "MISS ") + s.caption for s, im in zip(scenes, images)]
    else:
        images, captions = render_many(scenes), [s.caption for s in scenes]
    save_png(captioned_grid(images, captions, args.columns), args.out)
    print(f"wrote a grid of {len(scenes)} to {args.out}")


def _make(args, overrides) -> None:
    from cm3jax.config import load_config
    from cm3jax.shapes.dataset import WorldSpec, make
    config = load_config(args.config, overrides)
    world = dict(config.world)
    world.update({key: getattr(args, key) for key in WORLD_KEYS if getattr(args, key) is not None})
    result = make(args.out, WorldSpec(**world), workers=args.workers or config.workers or None)
    if result["status"] == "exists":
        print(f"{args.out} already holds this exact dataset; nothing to do")
    else:
        print(f"made {result['scenes']} scenes in {result['seconds']:.1f} s "
              f"({result['scenes_per_second']:.0f} scenes/s) under {args.out}")


def add_parsers(sub) -> None:
    shapes = sub.add_parser("shapes", help="the Shapes world: sample, render, score, make, preview")
    commands = shapes.add_subparsers(dest="shapes_command", required=True)

    p = commands.add_parser("sample", help="write sampled scenes as JSONL")
    p.add_argument("--split", required=True, choices=SPLITS)
    p.add_argument("--num", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--out", required=True)
    p.set_defaults(run=_sample)

    p = commands.add_parser("render", help="render scenes to an .npz of uint8 images")
    p.add_argument("--scenes", required=True, type=SCENES)
    p.add_argument("--out", required=True)
    p.add_argument("--resolution", type=int, default=None, help="default: each scene's own")
    p.set_defaults(run=_render)

    p = commands.add_parser("score", help="score images against the scenes they should show")
    p.add_argument("--scenes", required=True, type=SCENES)
    p.add_argument("--images", required=True, type=IMAGES)
    p.add_argument("--json", default=None, help="also write the accuracies here")
    p.set_defaults(run=_score)

    p = commands.add_parser("make", help="write every split as a TFDS ArrayRecord dataset")
    p.add_argument("--out", required=True)
    add_config_argument(p, "experiments/shapes_world.py:default")
    for key in WORLD_KEYS:
        p.add_argument("--" + key.replace("_", "-"), dest=key, type=int, default=None,
                       help=f"overrides config.world.{key}")
    p.add_argument("--workers", type=int, default=None, help="processes (default: the config's, else one per core)")
    p.set_defaults(run=_make)

    p = commands.add_parser("preview", help="draw a captioned grid PNG of scenes (or of given images)")
    p.add_argument("--scenes", required=True, type=SCENES)
    p.add_argument("--images", default=None, type=IMAGES,
                   help="show these images instead, marked OK/MISS by the scorer")
    p.add_argument("--out", required=True)
    p.add_argument("--columns", type=int, default=8)
    p.add_argument("--max", type=int, default=64)
    p.set_defaults(run=_preview)
