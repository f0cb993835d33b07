"""`cm3jax generate | caption | answer | edit | infill`: a trained checkpoint, end to end."""

from __future__ import annotations

import argparse
import os

from cm3jax.cli.common import input_dir, input_file
from cm3jax.errors import UserError
from cm3jax.prompts import CAPTION_INSTRUCTIONS

GUIDANCE_FLAGS = {"cfg": "cfg_scale", "image_cfg": "image_scale", "text_cfg": "text_scale"}  # flag -> setting


def _cd_k(text: str) -> tuple[float, int]:
    try:
        alpha, k = text.split(",")
        return float(alpha), int(k)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--cd-k takes ALPHA,K such as 0.1,8; got {text!r}") from None


def _sampling_arguments(p: argparse.ArgumentParser, images: bool) -> None:
    p.add_argument("--checkpoint", required=True, type=input_dir("checkpoint workdir"),
                   help="workdir of a `cm3jax train` run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0 if images else 0.0, help="0: greedy")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling (with --cd-k: the paper's mix)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--cd-k", type=_cd_k, default=None, metavar="ALPHA,K", help="contrastive decoding, top-k variant")


def settings_from(args):
    """Sampling settings from the command's flags: --top-p and --cd-k together give the mix."""
    from cm3jax.sampling.strategies import SamplingSettings
    top_p, cd = args.top_p, args.cd_k
    strategy = "mix" if top_p is not None and cd else "cd_k" if cd else "sample" if args.temperature > 0 else "greedy"
    alpha, k = cd or (SamplingSettings.cd_alpha, SamplingSettings.cd_k)
    scales = {setting: getattr(args, flag) for flag, setting in GUIDANCE_FLAGS.items()
              if getattr(args, flag, None) is not None}
    return SamplingSettings(strategy=strategy, temperature=args.temperature, top_p=1.0 if top_p is None else top_p,
                            top_k=args.top_k, cd_alpha=alpha, cd_k=k, **scales)


def _write_images(images, labels: list[str], out: str) -> list[str]:
    """Each image as out_stem-i.png, and the grid at `out`."""
    from PIL import Image
    from cm3jax.shapes.preview import captioned_grid, save_png
    if not out.endswith(".png"):
        raise UserError(f"--out {out!r} must name a .png file (the grid); the single images go beside it.")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    stem, paths = out[:-len(".png")], []
    for i, image in enumerate(images):
        paths.append(f"{stem}-{i}.png")
        save_png(Image.fromarray(image), paths[-1])
    save_png(captioned_grid(images, labels), out)
    return paths


def _load(args):
    from cm3jax.sampling.inference import TrainedDecoder
    return TrainedDecoder.load(args.checkpoint)


def _generate(args, overrides) -> None:
    import dataclasses
    import json
    from cm3jax.fileio import atomic_write_text
    from cm3jax.retrieval.retriever import Retriever, clip_image_scorer
    if args.samples < 1:
        raise UserError(f"--samples must be at least 1, got {args.samples}.")
    if args.retrieve and not args.index:
        raise UserError("--retrieve K needs --index DIR, an index built with `cm3jax retrieval build`.")
    settings = settings_from(args)
    trained = _load(args)
    context, retrieved = [], []
    if args.retrieve:
        context, retrieved = Retriever.load(args.index).for_prompt(args.prompt, args.retrieve, trained.vocab)
    rerank = clip_image_scorer(args.clip) if args.clip else None
    images, generation, scores = trained.text_to_image(args.prompt, settings, args.samples, args.seed, context,
                                                       rerank)
    labels = ([f"best of {args.samples} by CLIP: {args.prompt}"] if rerank else
              [f"{i}: {args.prompt}" for i in range(len(images))])
    paths = _write_images(images, labels, args.out)
    record = {"prompt": args.prompt, "checkpoint": os.path.abspath(args.checkpoint), "step": trained.step,
              "seed": args.seed, "samples": args.samples, "settings": dataclasses.asdict(settings),
              "retrieved": retrieved, "rerank_scores": None if scores is None else scores.tolist(),
              "images": paths, "grid": args.out, "complete": generation.finished.tolist()}
    settings_path = args.out[:-len(".png")] + ".json"
    atomic_write_text(settings_path, json.dumps(record, indent=2) + "\n")
    print(f"wrote {len(paths)} images and the grid {args.out} (settings in {settings_path})")


def _caption(args, overrides) -> None:
    print(_load(args).caption(args.image, settings_from(args), seed=args.seed, detail=args.detail))


def _answer(args, overrides) -> None:
    print(_load(args).answer(args.image, args.question, settings_from(args), seed=args.seed))


def _edit(args, overrides) -> None:
    images, _ = _load(args).edit(args.image, args.instruction, settings_from(args), args.samples, args.seed)
    _write_images(images, [f"{i}: {args.instruction}" for i in range(len(images))], args.out)
    print(f"wrote {len(images)} edited images and the grid {args.out}")


def _infill(args, overrides) -> None:
    print(_load(args).infill(args.before, args.after, settings_from(args), seed=args.seed))


def _command(sub, name: str, help: str, run, images: bool, *required: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help)
    _sampling_arguments(p, images)
    for flag in required:
        p.add_argument(flag, required=True, **({"type": input_file("image file")} if flag == "--image" else {}))
    p.set_defaults(run=run)
    return p


def add_parsers(sub) -> None:
    p = _command(sub, "generate", "draw images for a text prompt (CFG, top-p, CD-K, re-ranking)", _generate, True,
                 "--prompt")
    p.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance scale (1: none)")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--retrieve", type=int, default=0, metavar="K", help="put K retrieved documents before the prompt")
    p.add_argument("--index", default=None, type=input_dir("retrieval index"),
                   help="the retrieval index to retrieve from (`cm3jax retrieval build`)")
    p.add_argument("--clip", default=None, type=input_dir("CLIP workdir"),
                   help="a CLIP workdir: keep the sample it scores best against the prompt")
    p.add_argument("--out", required=True, help="the grid PNG; images and a settings JSON go beside it")

    p = _command(sub, "caption", "describe an image", _caption, False, "--image")
    p.add_argument("--detail", choices=tuple(CAPTION_INSTRUCTIONS), default="full",
                   help="full: as pretraining captions; short, long: as instruction tuning asks for them")
    _command(sub, "answer", "answer a question about an image", _answer, False, "--image", "--question")
    p = _command(sub, "edit", "edit an image by an instruction (3-stream instruct guidance)", _edit, True,
                 "--image", "--instruction", "--out")
    p.add_argument("--image-cfg", type=float, default=1.5)
    p.add_argument("--text-cfg", type=float, default=7.5)
    p.add_argument("--samples", type=int, default=1)
    _command(sub, "infill", "fill the text between --before and --after (CM3 infilling)", _infill, False,
             "--before", "--after")
