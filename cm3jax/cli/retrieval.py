"""`cm3jax retrieval clip | bank | build | query | neighbours`: the retriever."""

from __future__ import annotations

import argparse

from cm3jax.cli.common import add_config_argument, input_dir, input_file, print_json
from cm3jax.errors import UserError


def _clip(args, overrides) -> None:
    from cm3jax.config import load_config
    from cm3jax.retrieval.clip_train import train
    print_json(train(load_config(args.config, overrides), args.workdir, stop_at_step=args.stop_at_step))


def _bank(args, overrides) -> None:
    from cm3jax.retrieval.bank import ShapesBankOptions
    from cm3jax.retrieval.shapes_memory import make_bank
    bank, manifest = make_bank(args.clip, args.data, args.codes, args.text_tokenizer, args.image_tokenizer, args.out,
                               ShapesBankOptions(args.text_only, args.image_only, args.seed), args.batch_size)
    kinds = ", ".join(f"{n} {k}" for k, n in manifest["kinds"].items())
    print(f"embedded {len(bank)} memory documents ({kinds}) into {bank.dim}-d keys -> {args.out}")


def _build(args, overrides) -> None:
    import time
    from cm3jax.retrieval.index import ScannParams
    from cm3jax.retrieval.shapes_memory import make_index
    start = time.perf_counter()
    params = ScannParams(num_leaves=args.leaves, leaves_to_search=args.leaves_to_search, reorder=args.reorder)
    index, manifest = make_index(args.bank, args.out, args.backend, params)
    detail = ", ".join(f"{k} {v}" for k, v in manifest["params"].items())
    print(f"built {index.backend} index over {index.size} keys in {time.perf_counter() - start:.1f} s"
          f"{f' ({detail})' if detail else ''} -> {args.out}")


def _query(args, overrides) -> None:
    from cm3jax.retrieval.retriever import Retriever
    from cm3jax.shapes.preview import captioned_grid, save_png
    if args.text is None and args.image is None:
        raise UserError("Give a query: --text, --image or both.")
    if args.k < 1:
        raise UserError(f"-k must be at least 1, got {args.k}.")
    retriever = Retriever.load(args.index)
    image = retriever.load_query_image(args.image) if args.image is not None else None
    hits = retriever.query(args.text, image, args.k, heuristics=args.select)
    bank = retriever.bank
    print(f"{len(hits)} of {len(bank)} documents ({retriever.index.backend} index"
          f"{', CM3Leon selection' if args.select else ''}):")
    for rank, hit in enumerate(hits, 1):
        text = bank.texts[hit.row]
        print(f"{rank:3d}. {hit.score:.4f}  {bank.ids[hit.row]}  [{bank.kind(hit.row)}]  "
              f"{text if text is not None else '(image)'}")
    if args.out:
        tiles, captions = retriever.tiles(args.text, image, hits)
        save_png(captioned_grid(tiles, captions, columns=min(len(tiles), 6)), args.out)
        print(f"wrote a grid of the query and its {len(hits)} documents to {args.out}")


def _neighbours(args, overrides) -> None:
    from cm3jax.retrieval.select import QueryDropout, SelectionOptions
    from cm3jax.retrieval.shapes_memory import make_neighbours
    options = SelectionOptions(k=args.k, candidates=max(32, 4 * args.k), max_relevance=args.max_relevance,
                               skip_same_meaning=args.skip_same_meaning, share_objects=args.share_objects)
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


def add_parsers(sub) -> None:
    retrieval = sub.add_parser("retrieval", help="the retriever: train its CLIP, build the memory bank and index, query")
    commands = retrieval.add_subparsers(dest="retrieval_command", required=True)

    p = commands.add_parser("clip", help="train the retriever's CLIP on Shapes (resumes from the workdir)")
    add_config_argument(p, "retrieval/clip_shapes.py")
    p.add_argument("--workdir", required=True)
    p.add_argument("--stop-at-step", type=int, default=None, help="stop (as if killed) after this step")
    p.set_defaults(run=_clip)

    p = commands.add_parser("bank", help="embed the Shapes memory split into a memory bank")
    p.add_argument("--clip", required=True, type=input_dir("CLIP workdir"),
                   help="workdir of a trained CLIP (`cm3jax retrieval clip`)")
    p.add_argument("--data", required=True, type=input_dir("Shapes dataset"), help="a made Shapes dataset")
    p.add_argument("--codes", required=True, type=input_dir("image codes"),
                   help="its pretokenized image codes (`cm3jax tokenizer pretokenize`)")
    p.add_argument("--text-tokenizer", required=True, type=input_file("text tokenizer"),
                   help="the decoder's sentencepiece model")
    p.add_argument("--image-tokenizer", required=True, type=input_dir("image tokenizer workdir"),
                   help="workdir of the image tokenizer that made the codes")
    p.add_argument("--out", required=True)
    p.add_argument("--text-only", type=float, default=0.1, help="share of scenes kept as text-only documents")
    p.add_argument("--image-only", type=float, default=0.1, help="share of scenes kept as image-only documents")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.set_defaults(run=_bank)

    p = commands.add_parser("build", help="index a memory bank's keys (exact search or ScaNN)")
    p.add_argument("--bank", required=True, type=input_dir("memory bank"))
    p.add_argument("--out", required=True)
    p.add_argument("--backend", choices=("auto", "exact", "scann"), default="auto",
                   help="auto: exact search below 50,000 documents, else ScaNN")
    p.add_argument("--leaves", type=int, default=0, help="ScaNN partitions (0: about sqrt(N))")
    p.add_argument("--leaves-to-search", type=int, default=0, help="ScaNN partitions probed (0: a tenth)")
    p.add_argument("--reorder", type=int, default=100, help="ScaNN candidates re-scored exactly")
    p.set_defaults(run=_build)

    p = commands.add_parser("query", help="the documents nearest a text and/or image query")
    p.add_argument("--index", required=True, type=input_dir("retrieval index"))
    p.add_argument("--text", default=None)
    p.add_argument("--image", default=None, type=input_file("image file"), help="an image file")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--select", action="store_true", help="apply CM3Leon's selection heuristics")
    p.add_argument("--out", default=None, help="also draw the query and its documents as a PNG grid")
    p.set_defaults(run=_query)

    p = commands.add_parser("neighbours", help="each training example's documents by its text and by its image")
    p.add_argument("--index", required=True, type=input_dir("retrieval index"),
                   help="an index over the memory bank (`cm3jax retrieval build`)")
    p.add_argument("--data", required=True, type=input_dir("Shapes dataset"), help="a made Shapes dataset")
    p.add_argument("--split", nargs="+", default=["train", "eval", "emblems_unseen"])
    p.add_argument("--out", required=True)
    p.add_argument("-k", type=int, default=2, help="documents per query (by text, and again by image)")
    p.add_argument("--query-dropout", type=float, default=0.2, help="share of caption words dropped (train split)")
    p.add_argument("--max-relevance", type=max_relevance, default=0.9,
                   help="skip candidates scoring above this against the query (near copies; 'none': keep them)")
    p.add_argument("--skip-same-meaning", action="store_true",
                   help="skip documents of scenes that mean what the query's does (copies but for jitter); "
                        "emblems' documents are kept")
    p.add_argument("--share-objects", action="store_true",
                   help="train split: documents holding the example's own objects exactly (the same codes at the "
                        "same places), the retrieved neighbours filling the rest")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_neighbours)
