"""The `cm3jax` command: subcommands call into the library."""

from __future__ import annotations

import argparse
import json
import sys

from cm3jax.errors import UserError
from cm3jax.hostmem import restart_with_reusing_malloc
from cm3jax.sampling import commands as sampling_commands


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
    from cm3jax.config import decoder_config
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
    import jax
    from cm3jax.eval.samples import evaluate_run
    from cm3jax.train.loop import Stopped, train
    config = load_config(args.config, overrides)
    try:
        results = train(config, args.workdir, stop_at_step=args.stop_at_step)
    except Stopped as e:
        print(e)
        return
    if results["step"] == config.train.steps and jax.process_index() == 0:
        results.update(evaluate_run(args.workdir))
    print(json.dumps(results, indent=2))


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train the decoder (resumes from the workdir's newest checkpoint)")
    _add_config_arguments(p, "experiments/shapes_tiny.py")
    p.add_argument("--workdir", required=True)
    p.add_argument("--stop-at-step", type=int, default=None, help="stop (as if killed) after this step")
    p.set_defaults(run=_train)


# ----------------------------------------------------------------------------- retrieval

def _retrieval_clip(args, overrides) -> None:
    from cm3jax.config import load_config
    from cm3jax.retrieval.clip_train import train
    results = train(load_config(args.config, overrides), args.workdir, stop_at_step=args.stop_at_step)
    print(json.dumps(results, indent=2))


def _retrieval_bank(args, overrides) -> None:
    from cm3jax.retrieval.bank import ShapesBankOptions
    from cm3jax.retrieval.shapes_memory import make_bank
    bank, manifest = make_bank(args.clip, args.data, args.codes, args.text_tokenizer, args.image_tokenizer, args.out,
                               ShapesBankOptions(args.text_only, args.image_only, args.seed), args.batch_size)
    kinds = ", ".join(f"{n} {k}" for k, n in manifest["kinds"].items())
    print(f"embedded {len(bank)} memory documents ({kinds}) into {bank.dim}-d keys -> {args.out}")


def _retrieval_build(args, overrides) -> None:
    import time
    from cm3jax.retrieval.index import ScannParams
    from cm3jax.retrieval.shapes_memory import make_index
    start = time.perf_counter()
    index, manifest = make_index(args.bank, args.out, args.backend,
                                 ScannParams(num_leaves=args.leaves, leaves_to_search=args.leaves_to_search,
                                             reorder=args.reorder))
    detail = ", ".join(f"{k} {v}" for k, v in manifest["params"].items())
    print(f"built {index.backend} index over {index.size} keys in {time.perf_counter() - start:.1f} s"
          f"{f' ({detail})' if detail else ''} -> {args.out}")


def _retrieval_query(args, overrides) -> None:
    import numpy as np
    from cm3jax.image_tokenizer.preprocess import load_image, resize_and_centre_crop, to_rgb
    from cm3jax.retrieval.bank import load_embedder
    from cm3jax.retrieval.index import load_bank_of, load_index
    from cm3jax.retrieval.select import Hit, SelectionOptions, select
    if args.text is None and args.image is None:
        raise UserError("Give a query: --text, --image or both.")
    if args.k < 1:
        raise UserError(f"-k must be at least 1, got {args.k}.")
    index, manifest = load_index(args.index)
    bank = load_bank_of(manifest, args.index)
    resolution = bank.image_resolution or 224
    image = None
    if args.image is not None:
        image = np.asarray(resize_and_centre_crop(to_rgb(load_image(args.image)), resolution), np.uint8)
    key = load_embedder(bank.embedder_record).embed_documents([args.text], [image])
    if args.select:
        options = SelectionOptions(k=args.k, candidates=max(32, 4 * args.k))
        hits = select(bank, *(a[0] for a in index.search(key, options.candidates)), options)
    else:
        ids, scores = index.search(key, args.k)
        hits = [Hit(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
    print(f"{len(hits)} of {len(bank)} documents ({index.backend} index"
          f"{', CM3Leon selection' if args.select else ''}):")
    for rank, hit in enumerate(hits, 1):
        doc = bank.document(hit.row)
        print(f"{rank:3d}. {hit.score:.4f}  {doc.id}  [{doc.kind}]  {doc.text if doc.text is not None else '(image)'}")
    if args.out:
        from cm3jax.shapes.preview import captioned_grid, save_png
        blank = np.full((resolution, resolution, 3), 255, np.uint8)
        tiles = [image if image is not None else blank]
        captions = [f"query: {args.text or '(image)'}"]
        for hit in hits:
            doc = bank.document(hit.row)
            tiles.append(doc.image if doc.image is not None else blank)
            captions.append(f"{hit.score:.3f} {doc.id}: {doc.text or '(image)'}")
        save_png(captioned_grid(np.stack(tiles), captions, columns=min(len(tiles), 6)), args.out)
        print(f"wrote a grid of the query and its {len(hits)} documents to {args.out}")


def _retrieval_neighbours(args, overrides) -> None:
    from cm3jax.retrieval.select import QueryDropout, SelectionOptions
    from cm3jax.retrieval.shapes_memory import make_neighbours
    options = SelectionOptions(k=args.k, candidates=max(32, 4 * args.k), max_relevance=args.max_relevance)
    found = make_neighbours(args.index, args.data, args.split, args.out, options, QueryDropout(args.query_dropout),
                            args.seed)
    for split, n in found.items():
        print(f"{split}: {n['examples']} examples, {n['neighbours_per_example']:.2f} neighbours each -> {args.out}")


def max_relevance(value: str) -> float | None:
    """--max-relevance: a score, or 'none' to keep near copies."""
    if value.lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {value!r}") from None


def _retrieval_parser(sub) -> None:
    retrieval = sub.add_parser("retrieval", help="the retriever: train its CLIP, build the memory bank and index, query")
    commands = retrieval.add_subparsers(dest="retrieval_command", required=True)

    p = commands.add_parser("clip", help="train the retriever's CLIP on Shapes (resumes from the workdir)")
    _add_config_arguments(p, "retrieval/clip_shapes.py")
    p.add_argument("--workdir", required=True)
    p.add_argument("--stop-at-step", type=int, default=None, help="stop (as if killed) after this step")
    p.set_defaults(run=_retrieval_clip)

    p = commands.add_parser("bank", help="embed the Shapes memory split into a memory bank")
    p.add_argument("--clip", required=True, help="workdir of a trained CLIP (`cm3jax retrieval clip`)")
    p.add_argument("--data", required=True, help="a made Shapes dataset")
    p.add_argument("--codes", required=True, help="its pretokenized image codes (`cm3jax tokenizer pretokenize`)")
    p.add_argument("--text-tokenizer", required=True, help="the decoder's sentencepiece model")
    p.add_argument("--image-tokenizer", required=True, help="workdir of the image tokenizer that made the codes")
    p.add_argument("--out", required=True)
    p.add_argument("--text-only", type=float, default=0.1, help="share of scenes kept as text-only documents")
    p.add_argument("--image-only", type=float, default=0.1, help="share of scenes kept as image-only documents")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.set_defaults(run=_retrieval_bank)

    p = commands.add_parser("build", help="index a memory bank's keys (exact search or ScaNN)")
    p.add_argument("--bank", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--backend", choices=("auto", "exact", "scann"), default="auto",
                   help="auto: exact search below 50,000 documents, else ScaNN")
    p.add_argument("--leaves", type=int, default=0, help="ScaNN partitions (0: about sqrt(N))")
    p.add_argument("--leaves-to-search", type=int, default=0, help="ScaNN partitions probed (0: a tenth)")
    p.add_argument("--reorder", type=int, default=100, help="ScaNN candidates re-scored exactly")
    p.set_defaults(run=_retrieval_build)

    p = commands.add_parser("query", help="the documents nearest a text and/or image query")
    p.add_argument("--index", required=True)
    p.add_argument("--text", default=None)
    p.add_argument("--image", default=None, help="an image file")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--select", action="store_true", help="apply CM3Leon's selection heuristics")
    p.add_argument("--out", default=None, help="also draw the query and its documents as a PNG grid")
    p.set_defaults(run=_retrieval_query)

    p = commands.add_parser("neighbours", help="each training example's documents by its text and by its image")
    p.add_argument("--index", required=True, help="an index over the memory bank (`cm3jax retrieval build`)")
    p.add_argument("--data", required=True, help="a made Shapes dataset")
    p.add_argument("--split", nargs="+", default=["train", "eval", "emblems_unseen"])
    p.add_argument("--out", required=True)
    p.add_argument("-k", type=int, default=2, help="documents per query (by text, and again by image)")
    p.add_argument("--query-dropout", type=float, default=0.2, help="share of caption words dropped (train split)")
    p.add_argument("--max-relevance", type=max_relevance, default=0.9,
                   help="skip candidates scoring above this against the query (near copies; 'none': keep them)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_retrieval_neighbours)


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
    _retrieval_parser(sub)
    sampling_commands.add_parsers(sub)
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


def console_main() -> None:
    """The `cm3jax` command: main() in a process whose malloc keeps freed memory for reuse (cm3jax.hostmem)."""
    restart_with_reusing_malloc()
    sys.exit(main())


if __name__ == "__main__":
    console_main()
