"""The `cm3jax` command: subcommands call into the library."""

from __future__ import annotations

import argparse
import json
import sys

from cm3jax.errors import UserError


def _add_config_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--config", default=default,
                        help="experiments/NAME.py[:VARIANT]; override keys with --config.a.b=value")


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separates `--config.key=value` (and `--config.key value`) overrides from other arguments."""
    rest, overrides = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            if "=" not in arg and i + 1 < len(argv):
                arg, i = f"{arg}={argv[i + 1]}", i + 1
            overrides.append(arg)
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


# ----------------------------------------------------------------------------- shapes

def _shapes_sample(args, overrides) -> None:
    from cm3jax.shapes.scene import write_scenes
    from cm3jax.shapes.world import sample_split
    scenes = sample_split(args.split, args.num, args.seed, args.resolution)
    write_scenes(scenes, args.out)
    print(f"wrote {len(scenes)} {args.split} scenes to {args.out}")


def _shapes_render(args, overrides) -> None:
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


def _shapes_score(args, overrides) -> None:
    from cm3jax.fileio import atomic_write_text
    from cm3jax.shapes.image_files import read_images
    from cm3jax.shapes.scene import read_scenes
    from cm3jax.shapes.score import format_report, score
    report = score(read_scenes(args.scenes), read_images(args.images))
    print(format_report(report))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")


def _shapes_preview(args, overrides) -> None:
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


def _shapes_make(args, overrides) -> None:
    from cm3jax.config import load_config
    from cm3jax.shapes.dataset import WorldSpec, make
    config = load_config(args.config, overrides)
    world = dict(config.world)
    for key in ("num_train", "num_eval", "num_novel", "num_emblems_unseen", "num_memory", "seed", "resolution"):
        if getattr(args, key) is not None:
            world[key] = getattr(args, key)
    result = make(args.out, WorldSpec(**world), workers=args.workers or config.workers or None)
    if result["status"] == "exists":
        print(f"{args.out} already holds this exact dataset; nothing to do")
    else:
        print(f"made {result['scenes']} scenes in {result['seconds']:.1f} s "
              f"({result['scenes_per_second']:.0f} scenes/s) under {args.out}")


def _shapes_parser(sub) -> None:
    from cm3jax.shapes.world import SPLITS
    shapes = sub.add_parser("shapes", help="the Shapes world: sample, render, score, make, preview")
    commands = shapes.add_subparsers(dest="shapes_command", required=True)

    p = commands.add_parser("sample", help="write sampled scenes as JSONL")
    p.add_argument("--split", required=True, choices=SPLITS)
    p.add_argument("--num", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--out", required=True)
    p.set_defaults(run=_shapes_sample)

    p = commands.add_parser("render", help="render scenes to an .npz of uint8 images")
    p.add_argument("--scenes", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--resolution", type=int, default=None, help="default: each scene's own")
    p.set_defaults(run=_shapes_render)

    p = commands.add_parser("score", help="score images against the scenes they should show")
    p.add_argument("--scenes", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--json", default=None, help="also write the accuracies here")
    p.set_defaults(run=_shapes_score)

    p = commands.add_parser("make", help="write every split as a TFDS ArrayRecord dataset")
    p.add_argument("--out", required=True)
    _add_config_arguments(p, "experiments/shapes_world.py:default")
    for key in ("num_train", "num_eval", "num_novel", "num_emblems_unseen", "num_memory", "seed", "resolution"):
        p.add_argument("--" + key.replace("_", "-"), dest=key, type=int, default=None,
                       help=f"overrides config.world.{key}")
    p.add_argument("--workers", type=int, default=None, help="processes (default: the config's, else one per core)")
    p.set_defaults(run=_shapes_make)

    p = commands.add_parser("preview", help="draw a captioned grid PNG of scenes (or of given images)")
    p.add_argument("--scenes", required=True)
    p.add_argument("--images", default=None, help="show these images instead, marked OK/MISS by the scorer")
    p.add_argument("--out", required=True)
    p.add_argument("--columns", type=int, default=8)
    p.add_argument("--max", type=int, default=64)
    p.set_defaults(run=_shapes_preview)


# ----------------------------------------------------------------------------- tokenizers

def _tokenizer_text(args, overrides) -> None:
    from cm3jax.text_tokenizer import shapes_corpus, train_text_tokenizer
    if args.corpus == "shapes":
        corpus = shapes_corpus(args.shapes_scenes, args.seed)
    else:
        try:
            with open(args.corpus, encoding="utf-8") as f:
                corpus = f.read().splitlines()
        except (FileNotFoundError, UnicodeDecodeError) as e:
            raise UserError(f"Cannot read the corpus {args.corpus} ({e}); give a UTF-8 text file, one sentence "
                            f"per line, or 'shapes'.") from None
    tokenizer = train_text_tokenizer(corpus, args.vocab_size, args.model_type)
    tokenizer.save(args.out)
    print(f"trained a {tokenizer.vocab_size}-piece {args.model_type} tokenizer on {len(corpus)} lines -> {args.out} "
          f"(sha256 {tokenizer.fingerprint[:12]})")


def _tokenizer_image(args, overrides) -> None:
    from cm3jax.config import load_config
    from cm3jax.image_tokenizer.train import train
    results = train(load_config(args.config, overrides), args.workdir, stop_at_step=args.stop_at_step)
    print(json.dumps(results, indent=2, default=str))


def _tokenizer_pretokenize(args, overrides) -> None:
    from cm3jax.image_tokenizer.checkpoints import load_tokenizer
    from cm3jax.image_tokenizer.pretokenize import pretokenize
    model, _ = load_tokenizer(args.tokenizer)
    result = pretokenize(args.source, args.out, model, args.batch_size, resolution=args.resolution)
    if result["status"] == "exists":
        print(f"{args.out} already holds these codes; nothing to do")
    else:
        print(f"encoded {result['images']} images in {result['seconds']:.1f} s "
              f"({result['images_per_second']:.0f} images/s) into {args.out}")


def _tokenizer_convert_chameleon(args, overrides) -> None:
    from cm3jax.image_tokenizer.chameleon import config_from_taming_yaml, convert_taming_ckpt, load_safetensors
    conversion = convert_taming_ckpt(args.ckpt, args.out)
    print(f"wrote {conversion.tensors} tensors to {args.out} (dropped {len(conversion.dropped)} training-only)")
    if args.yaml:
        model = load_safetensors(args.out, config_from_taming_yaml(args.yaml))
        c = model.config
        print(f"checked: loads into the Flax VQ-GAN ({c.resolution}px -> {c.grid_size()}x{c.grid_size()} codes "
              f"of {c.codebook_size})")


def _tokenizer_parser(sub) -> None:
    tokenizer = sub.add_parser("tokenizer", help="build the text and image tokenizers")
    commands = tokenizer.add_subparsers(dest="tokenizer_command", required=True)
    p = commands.add_parser("text", help="train the sentencepiece text tokenizer (byte fallback)")
    p.add_argument("--corpus", default="shapes", help="a UTF-8 file with one sentence per line, or 'shapes'")
    p.add_argument("--shapes-scenes", type=int, default=20_000, help="training scenes whose texts form the corpus")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=512)
    p.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe")
    p.add_argument("--out", required=True)
    p.set_defaults(run=_tokenizer_text)

    p = commands.add_parser("image", help="train the VQ-GAN image tokenizer (resumes from the workdir)")
    _add_config_arguments(p, "tokenizers/vqgan_shapes.py:default")
    p.add_argument("--workdir", required=True)
    p.add_argument("--stop-at-step", type=int, default=None)
    p.set_defaults(run=_tokenizer_image)

    p = commands.add_parser("pretokenize", help="encode every image of a dataset into codes (ArrayRecord)")
    p.add_argument("--source", required=True, help="a made Shapes dataset or a folder of images")
    p.add_argument("--tokenizer", required=True, help="workdir of a trained image tokenizer")
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--resolution", type=int, default=None, help="for image folders (default: the tokenizer's)")
    p.set_defaults(run=_tokenizer_pretokenize)

    p = commands.add_parser("convert-chameleon",
                            help="Chameleon's taming vqgan.ckpt -> safetensors (weights-only load; needs torch)")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--yaml", default=None, help="vqgan.yaml: also load the result into the Flax model to check it")
    p.set_defaults(run=_tokenizer_convert_chameleon)


# ----------------------------------------------------------------------------- model

def _model_size(args, overrides) -> None:
    from cm3jax.config import load_config
    from cm3jax.experiment import decoder_config
    from cm3jax.model.size import bytes_per_device, count_params
    from cm3jax.sharding import MESH_AXES
    config = load_config(args.config, overrides)
    model = decoder_config(config)
    try:
        shape = dict(zip(MESH_AXES, (int(v) for v in args.mesh.split(","))))
    except ValueError:
        shape = {}
    if len(shape) != 3 or min(shape.values()) < 1:
        raise UserError(f"--mesh {args.mesh!r} must be three positive sizes data,fsdp,tensor, e.g. 1,256,1.")
    params = count_params(model)
    sizes = bytes_per_device(model, shape)
    nominal = config.paper_params
    print(f"parameters: {params:,} ({params / 1e9:.3f} B)" +
          (f", {100 * (params / nominal - 1):+.2f}% vs the paper's nominal {nominal / 1e9:g} B" if nominal else ""))
    print(f"mesh data x fsdp x tensor = {shape['data']} x {shape['fsdp']} x {shape['tensor']} "
          f"({sizes['devices']} devices), float32, AdamW")
    for key in ("params", "optimizer", "total"):
        print(f"  {key:<10} {sizes[key] / 2 ** 30:9.3f} GiB per device")


def _model_parser(sub) -> None:
    model = sub.add_parser("model", help="inspect decoder configs")
    commands = model.add_subparsers(dest="model_command", required=True)
    p = commands.add_parser("size", help="parameter count and bytes per device of params + optimizer state")
    _add_config_arguments(p, "experiments/cm3leon_7b.py")
    p.add_argument("--mesh", default="1,256,1", help="data,fsdp,tensor sizes")
    p.set_defaults(run=_model_size)


# ----------------------------------------------------------------------------- decoder training

def _train(args, overrides) -> None:
    from cm3jax.config import load_config
    from cm3jax.train.loop import Stopped, train
    config = load_config(args.config, overrides)
    try:
        results = train(config, args.workdir, stop_at_step=args.stop_at_step)
    except Stopped as e:
        print(e)
        return
    print(json.dumps(results, indent=2))


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train the decoder (resumes from the workdir's newest checkpoint)")
    _add_config_arguments(p, "experiments/shapes_tiny.py")
    p.add_argument("--workdir", required=True)
    p.add_argument("--stop-at-step", type=int, default=None, help="stop (as if killed) after this step")
    p.set_defaults(run=_train)


def _demo(args, overrides) -> None:
    from cm3jax.demo import run_demo
    run_demo(args.workdir, args.variant)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cm3jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _shapes_parser(sub)
    _tokenizer_parser(sub)
    _model_parser(sub)
    _train_parser(sub)
    p = sub.add_parser("demo", help="the main job: every stage on the Shapes world, resumable")
    p.add_argument("--workdir", default="runs/demo")
    p.add_argument("--variant", choices=("default", "test"), default="default", help="test: seconds, for CI")
    p.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    rest, overrides = _split_overrides(argv)
    parser = build_parser()
    args = parser.parse_args(rest)
    if overrides and not hasattr(args, "config"):
        parser.error(f"{overrides[0]}: this command takes no --config")
    try:
        args.run(args, overrides)
    except UserError as e:
        print(f"cm3jax: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
