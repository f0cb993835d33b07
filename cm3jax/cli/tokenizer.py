"""`cm3jax tokenizer text | image | pretokenize | convert-chameleon`: the text and image tokenizers."""

from __future__ import annotations

from cm3jax.cli.common import add_config_argument, input_dir, input_file, print_json
from cm3jax.errors import UserError


def _text(args, overrides) -> None:
    from cm3jax.shapes.corpus import shapes_corpus
    from cm3jax.text_tokenizer import train_text_tokenizer
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


def _image(args, overrides) -> None:
    from cm3jax.config import load_config
    from cm3jax.image_tokenizer.train import train
    print_json(train(load_config(args.config, overrides), args.workdir, stop_at_step=args.stop_at_step))


def _pretokenize(args, overrides) -> None:
    from cm3jax.image_tokenizer.checkpoints import load_tokenizer
    from cm3jax.image_tokenizer.pretokenize import pretokenize
    model, _ = load_tokenizer(args.tokenizer)
    result = pretokenize(args.source, args.out, model, args.batch_size, resolution=args.resolution)
    if result["status"] == "exists":
        print(f"{args.out} already holds these codes; nothing to do")
    else:
        print(f"encoded {result['images']} images in {result['seconds']:.1f} s "
              f"({result['images_per_second']:.0f} images/s) into {args.out}")


def _convert_chameleon(args, overrides) -> None:
    from cm3jax.image_tokenizer.chameleon import config_from_taming_yaml, convert_taming_ckpt, load_safetensors
    conversion = convert_taming_ckpt(args.ckpt, args.out)
    print(f"wrote {conversion.tensors} tensors to {args.out} (dropped {len(conversion.dropped)} training-only)")
    if args.yaml:
        c = load_safetensors(args.out, config_from_taming_yaml(args.yaml)).config
        print(f"checked: loads into the Flax VQ-GAN ({c.resolution}px -> {c.grid_size()}x{c.grid_size()} codes "
              f"of {c.codebook_size})")


def add_parsers(sub) -> None:
    tokenizer = sub.add_parser("tokenizer", help="build the text and image tokenizers")
    commands = tokenizer.add_subparsers(dest="tokenizer_command", required=True)
    p = commands.add_parser("text", help="train the sentencepiece text tokenizer (byte fallback)")
    p.add_argument("--corpus", default="shapes", type=input_file("corpus file", ("shapes",)),
                   help="a UTF-8 file with one sentence per line, or 'shapes'")
    p.add_argument("--shapes-scenes", type=int, default=20_000, help="training scenes whose texts form the corpus")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=512)
    p.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe")
    p.add_argument("--out", required=True)
    p.set_defaults(run=_text)

    p = commands.add_parser("image", help="train the VQ-GAN image tokenizer (resumes from the workdir)")
    add_config_argument(p, "tokenizers/vqgan_shapes.py:default")
    p.add_argument("--workdir", required=True)
    p.add_argument("--stop-at-step", type=int, default=None)
    p.set_defaults(run=_image)

    p = commands.add_parser("pretokenize", help="encode every image of a dataset into codes (ArrayRecord)")
    p.add_argument("--source", required=True, type=input_dir("dataset or image folder"),
                   help="a made Shapes dataset or a folder of images")
    p.add_argument("--tokenizer", required=True, type=input_dir("image tokenizer workdir"),
                   help="workdir of a trained image tokenizer")
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--resolution", type=int, default=None, help="for image folders (default: the tokenizer's)")
    p.set_defaults(run=_pretokenize)

    p = commands.add_parser("convert-chameleon",
                            help="Chameleon's taming vqgan.ckpt -> safetensors (weights-only load; needs torch)")
    p.add_argument("--ckpt", required=True, type=input_file("Chameleon tokenizer checkpoint"))
    p.add_argument("--out", required=True)
    p.add_argument("--yaml", default=None, type=input_file("vqgan.yaml"),
                   help="vqgan.yaml: also load the result into the Flax model to check it")
    p.set_defaults(run=_convert_chameleon)
