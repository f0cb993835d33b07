"""`cm3jax model size`: inspect decoder configs without building them."""

from __future__ import annotations

from cm3jax.cli.common import add_config_argument
from cm3jax.errors import UserError


def mesh_sizes(text: str) -> dict[str, int]:
    """--mesh data,fsdp,tensor -> {axis: size}."""
    from cm3jax.sharding import MESH_AXES
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        sizes = []
    if len(sizes) != len(MESH_AXES) or min(sizes) < 1:
        raise UserError(f"--mesh {text!r} must be three positive sizes data,fsdp,tensor, e.g. 1,256,1.")
    return dict(zip(MESH_AXES, sizes))


def _size(args, overrides) -> None:
    from cm3jax.config import decoder_config, load_config
    from cm3jax.model.size import bytes_per_device, count_params, decode_roofline
    config = load_config(args.config, overrides)
    model = decoder_config(config)
    shape = mesh_sizes(args.mesh)
    params = count_params(model)
    sizes = bytes_per_device(model, shape)
    nominal = config.paper_params
    print(f"parameters: {params:,} ({params / 1e9:.3f} B)" +
          (f", {100 * (params / nominal - 1):+.2f}% vs the paper's nominal {nominal / 1e9:g} B" if nominal else ""))
    print(f"mesh data x fsdp x tensor = {shape['data']} x {shape['fsdp']} x {shape['tensor']} "
          f"({sizes['devices']} devices), float32, AdamW")
    for key in ("params", "optimizer", "total"):
        print(f"  {key:<10} {sizes[key] / 2 ** 30:9.3f} GiB per device")
    if args.decode_bandwidth:
        context = args.decode_context or model.max_seq_len
        roof = decode_roofline(model, args.decode_batch, context, args.decode_bandwidth * 1e9, devices=shape["tensor"])
        print(f"decode step, batch {args.decode_batch}, {context} cached tokens, bfloat16, over {shape['tensor']} "
              f"tensor-parallel device(s): reads {roof['weights'] / 1e9:.2f} GB of weights + "
              f"{roof['kv_cache'] / 1e9:.2f} GB of K/V cache = {roof['bytes_per_device'] / 1e9:.2f} GB per device")
        print(f"  at {args.decode_bandwidth:g} GB/s per device: at most {roof['steps_per_second']:.1f} steps/s, "
              f"{roof['tokens_per_second_per_device']:.1f} tokens/s per device")


def add_parsers(sub) -> None:
    model = sub.add_parser("model", help="inspect decoder configs")
    commands = model.add_subparsers(dest="model_command", required=True)
    p = commands.add_parser("size", help="parameter count and bytes per device of params + optimizer state")
    add_config_argument(p, "experiments/cm3leon_7b.py")
    p.add_argument("--mesh", default="1,256,1", help="data,fsdp,tensor sizes")
    p.add_argument("--decode-bandwidth", type=float, default=0.0, metavar="GB/S",
                   help="also the decode step's bandwidth roofline at this memory bandwidth per device")
    p.add_argument("--decode-batch", type=int, default=1)
    p.add_argument("--decode-context", type=int, default=0, help="cached tokens per row (default: max_seq_len)")
    p.set_defaults(run=_size)
