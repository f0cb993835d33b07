"""`cm3jax generate | caption | answer | edit | infill`: a trained checkpoint, end to end."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from cm3jax.errors import UserError


def _cd_k(text: str) -> tuple[float, int]:
    try:
        alpha, k = text.split(",")
        return float(alpha), int(k)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--cd-k takes ALPHA,K such as 0.1,8; got {text!r}") from None


def _sampling_arguments(p: argparse.ArgumentParser, images: bool) -> None:
    p.add_argument("--checkpoint", required=True, help="workdir of a `cm3jax train` run")
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
    scales = {"cfg": "cfg_scale", "image_cfg": "image_scale", "text_cfg": "text_scale"}  # flag -> setting
    extra = {setting: getattr(args, flag) for flag, setting in scales.items() if getattr(args, flag, None) is not None}
    return SamplingSettings(strategy=strategy, temperature=args.temperature, top_p=1.0 if top_p is None else top_p,
                            top_k=args.top_k, cd_alpha=alpha, cd_k=k, **extra)


def _write_images(images: np.ndarray, labels: list[str], out: str) -> list[str]:
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


def _generate(args, overrides) -> None:
    import dataclasses
    from cm3jax.fileio import atomic_write_text
    from cm3jax.sampling.inference import Pipeline
    if args.samples < 1:
        raise UserError(f"--samples must be at least 1, got {args.samples}.")
    if args.retrieve and not args.index:
        raise UserError("--retrieve K needs --index DIR, an index built with `cm3jax retrieval build`.")
    settings = settings_from(args)
    pipeline = Pipeline.load(args.checkpoint)
    context, retrieved = [], []
    if args.retrieve:
        context, retrieved = retrieve_for_prompt(args.index, args.prompt, args.retrieve, pipeline.vocab)
    rerank = clip_scorer(args.clip) if args.clip else None
    images, generation, scores = pipeline.text_to_image(args.prompt, settings, args.samples, args.seed, context,
                                                        rerank)
    labels = ([f"best of {args.samples} by CLIP: {args.prompt}"] if rerank else
              [f"{i}: {args.prompt}" for i in range(len(images))])
    paths = _write_images(images, labels, args.out)
    record = {"prompt": args.prompt, "checkpoint": os.path.abspath(args.checkpoint), "step": pipeline.step,
              "seed": args.seed, "samples": args.samples, "settings": dataclasses.asdict(settings),
              "retrieved": retrieved, "rerank_scores": None if scores is None else scores.tolist(),
              "images": paths, "grid": args.out, "complete": generation.finished.tolist()}
    settings_path = args.out[:-len(".png")] + ".json"
    atomic_write_text(settings_path, json.dumps(record, indent=2) + "\n")
    print(f"wrote {len(paths)} images and the grid {args.out} (settings in {settings_path})")


def retrieve_for_prompt(index_dir: str, prompt: str, k: int, vocab) -> tuple[list[np.ndarray], list[dict]]:
    """Token ids of the k documents the retrieval heuristics pick for a text prompt, most relevant
    first, and a record of each (id, kind, text, score). Unlike at training time, documents
    matching the prompt closely are kept: there is no query document here to copy, and the
    closest match is what the prompt asks for."""
    from cm3jax.retrieval.bank import load_embedder
    from cm3jax.retrieval.index import load_bank_of, load_index
    from cm3jax.retrieval.select import SelectionOptions, retrieve
    index, manifest = load_index(index_dir)
    bank = load_bank_of(manifest, index_dir)
    vocab.check_matches(bank.vocab, f"the memory bank of {index_dir}")
    options = SelectionOptions(k=k, candidates=max(32, 4 * k), max_relevance=None)
    hits = retrieve(bank, index, load_embedder(bank.embedder_record), [prompt], [None], options)[0]
    records = [{"id": bank.ids[h.row], "kind": bank.kind(h.row), "text": bank.document(h.row).text,
                "score": h.score} for h in hits]
    return [bank.tokens(h.row) for h in hits], records


def clip_scorer(clip_workdir: str):
    """Scores images against a caption by the cosine of their CLIP embeddings."""
    from cm3jax.retrieval.embedder import ClipEmbedder
    embedder = ClipEmbedder.load(clip_workdir)
    return lambda caption, images: embedder.embed_images(images) @ embedder.embed_texts([caption])[0]


def _caption(args, overrides) -> None:
    from cm3jax.sampling.inference import Pipeline
    print(Pipeline.load(args.checkpoint).caption(args.image, settings_from(args), seed=args.seed))


def _answer(args, overrides) -> None:
    from cm3jax.sampling.inference import Pipeline
    print(Pipeline.load(args.checkpoint).answer(args.image, args.question, settings_from(args), seed=args.seed))


def _edit(args, overrides) -> None:
    from cm3jax.sampling.inference import Pipeline
    images, _ = Pipeline.load(args.checkpoint).edit(args.image, args.instruction, settings_from(args), args.samples,
                                                    args.seed)
    _write_images(images, [f"{i}: {args.instruction}" for i in range(len(images))], args.out)
    print(f"wrote {len(images)} edited images and the grid {args.out}")


def _infill(args, overrides) -> None:
    from cm3jax.sampling.inference import Pipeline
    print(Pipeline.load(args.checkpoint).infill(args.before, args.after, settings_from(args), seed=args.seed))


def add_parsers(sub) -> None:
    p = sub.add_parser("generate", help="draw images for a text prompt (CFG, top-p, CD-K, re-ranking)")
    _sampling_arguments(p, images=True)
    p.add_argument("--prompt", required=True)
    p.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance scale (1: none)")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--retrieve", type=int, default=0, metavar="K", help="put K retrieved documents before the prompt")
    p.add_argument("--index", default=None, help="the retrieval index to retrieve from (`cm3jax retrieval build`)")
    p.add_argument("--clip", default=None, help="a CLIP workdir: keep the sample it scores best against the prompt")
    p.add_argument("--out", required=True, help="the grid PNG; images and a settings JSON go beside it")
    p.set_defaults(run=_generate)

    p = sub.add_parser("caption", help="describe an image")
    _sampling_arguments(p, images=False)
    p.add_argument("--image", required=True)
    p.set_defaults(run=_caption)

    p = sub.add_parser("answer", help="answer a question about an image")
    _sampling_arguments(p, images=False)
    p.add_argument("--image", required=True)
    p.add_argument("--question", required=True)
    p.set_defaults(run=_answer)

    p = sub.add_parser("edit", help="edit an image by an instruction (3-stream instruct guidance)")
    _sampling_arguments(p, images=True)
    p.add_argument("--image", required=True)
    p.add_argument("--instruction", required=True)
    p.add_argument("--image-cfg", type=float, default=1.5)
    p.add_argument("--text-cfg", type=float, default=7.5)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--out", required=True)
    p.set_defaults(run=_edit)

    p = sub.add_parser("infill", help="fill the text between --before and --after (CM3 infilling)")
    _sampling_arguments(p, images=False)
    p.add_argument("--before", required=True)
    p.add_argument("--after", required=True)
    p.set_defaults(run=_infill)
