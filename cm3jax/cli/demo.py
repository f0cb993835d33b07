"""`cm3jax demo`: the main job, every stage on the Shapes world."""

from __future__ import annotations


def _demo(args, overrides) -> None:
    from cm3jax.demo import run_demo
    run_demo(args.workdir, args.profile)


def add_parsers(sub) -> None:
    p = sub.add_parser("demo", help="the main job: every stage on the Shapes world, resumable")
    p.add_argument("--workdir", default="runs/demo")
    p.add_argument("--profile", choices=("default", "quick"), default="default",
                   help="default: the reported run; quick: every stage at toy size, in minutes")
    p.set_defaults(run=_demo)
