"""`cm3jax train`: train the decoder, then score what it draws."""

from __future__ import annotations

from cm3jax.cli.common import add_config_argument, print_json


def _train(args, overrides) -> None:
    import jax
    from cm3jax.config import load_config
    from cm3jax.eval.samples import evaluate_run
    from cm3jax.train.loop import train
    from cm3jax.training_loop import Stopped
    config = load_config(args.config, overrides)
    try:
        results = train(config, args.workdir, stop_at_step=args.stop_at_step)
    except Stopped as e:
        print(e)
        return
    if results["step"] == config.train.steps and jax.process_index() == 0:
        results.update(evaluate_run(args.workdir))
    print_json(results)


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="train the decoder (resumes from the workdir's newest checkpoint), then score "
                                     "its samples")
    add_config_argument(p, "experiments/shapes_tiny.py")
    p.add_argument("--workdir", required=True)
    p.add_argument("--stop-at-step", type=int, default=None, help="stop (as if killed) after this step")
    p.set_defaults(run=_train)
