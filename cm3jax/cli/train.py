"""`cm3jax train`: train the decoder (score it afterwards with `cm3jax eval`)."""

from __future__ import annotations

from cm3jax.cli.common import add_config_argument, input_dir, print_json


def _train(args, overrides) -> None:
    from cm3jax.config import load_config
    _run(load_config(args.config, overrides), args)


def _finetune(args, overrides) -> None:
    from cm3jax.config import load_config
    from cm3jax.train.finetune import finetune_config
    _run(finetune_config(load_config(args.config, overrides), args.base), args)


def _run(config, args) -> None:
    from cm3jax.train.loop import train
    from cm3jax.training_loop import Stopped
    try:
        results = train(config, args.workdir, stop_at_step=args.stop_at_step)
    except Stopped as e:
        print(e)
        return
    print_json(results)
    if results["step"] == config.train.steps:
        print(f"score it on every task: cm3jax eval --checkpoint {args.workdir}")


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="train the decoder (resumes from the workdir's newest checkpoint)")
    add_config_argument(p, "experiments/shapes_tiny.py")
    p.add_argument("--workdir", required=True)
    p.add_argument("--stop-at-step", type=int, default=None, help="stop (as if killed) after this step")
    p.set_defaults(run=_train)

    p = sub.add_parser("finetune", help="instruction-tune a trained decoder on the task templates (resumes too)")
    add_config_argument(p, "experiments/shapes_sft.py")
    p.add_argument("--from", dest="base", required=True, type=input_dir("decoder workdir"),
                   help="workdir of the `cm3jax train` run to start from (its newest checkpoint)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--stop-at-step", type=int, default=None, help="stop (as if killed) after this step")
    p.set_defaults(run=_finetune)
