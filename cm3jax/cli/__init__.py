"""The `cm3jax` command: one module per command group, each thin over the library.

Handlers import the library inside themselves so that `cm3jax --help` and the light commands
start without loading JAX, TensorFlow Datasets or ScaNN.
"""

from __future__ import annotations

import argparse
import sys

from cm3jax.cli import demo, evaluation, interop, model, retrieval, sampling, shapes, tokenizer, train
from cm3jax.cli.common import Parser, file_error_line, split_overrides
from cm3jax.errors import UserError
from cm3jax.hostmem import restart_with_reusing_malloc

GROUPS = (shapes, tokenizer, model, train, retrieval, sampling, evaluation, demo, interop)
# The commands the malloc settings were measured to speed up (cm3jax.hostmem): decoder training
# (bench-small step 6.7 -> 5.2 s on a Xeon, 4.1 -> 3.2 s on an EPYC). Not the demo: its VQ-GAN stage
# trains 30% slower with them (17 -> 12 steps/s on the Xeon).
MALLOC_MEASURED = ("train",)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cm3jax", description="CM3Leon in JAX/Flax on the Shapes world and beyond.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    rest, overrides = split_overrides(argv)
    parser = build_parser()
    args = parser.parse_args(rest)
    if overrides and not hasattr(args, "config"):
        parser.error(f"{overrides[0]}: this command takes no --config")
    try:
        args.run(args, overrides)
    except UserError as e:
        print(f"cm3jax: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file the library opened itself (a run's tokenizer, say): name it, in one line
        if e.filename is None:
            raise
        print(f"cm3jax: error: {file_error_line(e)}", file=sys.stderr)
        return 2
    return 0


def console_main() -> None:
    """The `cm3jax` command. Decoder training runs in a process whose malloc keeps freed memory for
    reuse (cm3jax.hostmem), which is what its speed was measured with."""
    if sys.argv[1:2] and sys.argv[1] in MALLOC_MEASURED:
        restart_with_reusing_malloc()
    sys.exit(main())
