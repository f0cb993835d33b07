"""`cm3jax eval`: score a trained checkpoint on every task of a suite (cm3jax.eval.suite)."""

from __future__ import annotations

from cm3jax.cli.common import input_dir


def _tasks(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _eval(args, overrides) -> None:
    from cm3jax.eval.report import summary
    from cm3jax.eval.suite import SuiteErrors, run_suite
    try:
        results = run_suite(args.checkpoint, args.size, _tasks(args.tasks), args.out, args.split, args.index,
                            args.clip, args.seed, args.suite)
    except SuiteErrors as e:
        print(summary(e.results))
        raise
    print(summary(results))


def add_parsers(sub) -> None:
    p = sub.add_parser("eval", help="score a checkpoint on every task of a suite: results.json and report.html")
    p.add_argument("--checkpoint", required=True, type=input_dir("checkpoint workdir"),
                   help="workdir of a `cm3jax train` run")
    p.add_argument("--suite", default="shapes")
    p.add_argument("--size", default="quick", help="smoke (4 prompts per set), quick (128; < 10 min for the "
                                                   "demo's model on a 2-core CPU) or full (1,068: 95%% intervals "
                                                   "within +-3 points)")
    p.add_argument("--tasks", default=None, help="comma-separated, e.g. text_to_image,retrieval (default: all)")
    p.add_argument("--split", default="eval", help="eval (report once) or dev (choose recipes on it)")
    p.add_argument("--out", default=None, help="default: CHECKPOINT/eval/SUITE-SIZE-SPLIT")
    p.add_argument("--index", default=None, type=input_dir("retrieval index"),
                   help="retrieval index (default: the one beside the run's memory bank)")
    p.add_argument("--clip", default=None, type=input_dir("CLIP workdir"),
                   help="CLIP run that re-ranks samples (default: the retriever's)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_eval)
