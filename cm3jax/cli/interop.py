"""`cm3jax import chameleon` and `cm3jax export chameleon`: Hugging Face Chameleon / Anole weights."""

from __future__ import annotations

from cm3jax.cli.common import input_dir, input_path, print_json


def _import(args, overrides) -> None:
    from cm3jax.chameleon.convert import import_chameleon
    from cm3jax.cli.model import mesh_sizes
    mesh = tuple(mesh_sizes(args.mesh).values()) if args.mesh else None
    record = import_chameleon(args.source, args.out, args.vqgan, mesh)
    print_json(record)
    if not record["image_decoder"]:
        print(f"note: no --vqgan given, so {args.out} encodes images but cannot draw them; import again with "
              f"--vqgan DIR (Chameleon's tokenizer folder: vqgan.yaml and vqgan.ckpt) to decode image tokens")


def _export(args, overrides) -> None:
    from cm3jax.chameleon.convert import export_chameleon
    print_json(export_chameleon(args.checkpoint, args.out, int(args.max_shard_gib * 2 ** 30)))


def add_parsers(sub) -> None:
    p = sub.add_parser("import", help="import open weights as a cm3jax run directory")
    commands = p.add_subparsers(dest="import_command", required=True)
    p = commands.add_parser("chameleon", help="a Hugging Face Chameleon or Anole checkpoint")
    p.add_argument("--from", dest="source", required=True, type=input_dir("Chameleon checkpoint directory"),
                   help="config.json, safetensors (sharded or not) and tokenizer.json")
    p.add_argument("--out", required=True, help="the run directory to write (must not exist)")
    p.add_argument("--vqgan", default=None, type=input_path("VQ-GAN (a folder or vqgan.ckpt)"),
                   help="Chameleon's tokenizer folder (vqgan.yaml, vqgan.ckpt) or its vqgan.ckpt: the full VQ-GAN, so "
                        "image tokens become pixels (the Hugging Face files hold only its encoder)")
    p.add_argument("--mesh", default=None, help="data,fsdp,tensor: place each tensor sharded over the devices as "
                                                "training would (default: all on the first device)")
    p.set_defaults(run=_import)

    p = sub.add_parser("export", help="write a cm3jax decoder in another ecosystem's format")
    commands = p.add_subparsers(dest="export_command", required=True)
    p = commands.add_parser("chameleon", help="as a Hugging Face Chameleon checkpoint (transformers loads it)")
    p.add_argument("--checkpoint", required=True, type=input_dir("decoder run directory"),
                   help="a run trained with the Chameleon switches (RMSNorm, SwiGLU, RoPE, QK-norm), or an import")
    p.add_argument("--out", required=True, help="the directory to write (must not exist)")
    p.add_argument("--max-shard-gib", type=float, default=5.0, help="largest safetensors shard")
    p.set_defaults(run=_export)
