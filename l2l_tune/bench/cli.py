"""Command-line registration of ``l2l-tune bench``.

Nothing heavy is imported here (no Optuna, Ray, PyTorch or Matplotlib): the
parser is built every time ``l2l-tune`` starts, and ``l2l-tune --help`` must stay
fast and work without the extras.
"""

from __future__ import annotations

import argparse
import functools
import shlex
from pathlib import Path
from typing import Any

from .settings import TASKS, TUNER_NAMES, USER_TASKS, USER_TUNER_NAMES, BenchSettings, parse_tuners

__all__ = ["add_bench_parser", "settings_from_args"]

_DESCRIPTION = """\
Compare step-size tuners on one meta-objective with the same budget of inner
training runs: ours with exact meta-gradients (l2l: the default bracketing
meta-optimizer; l2l-paper: the paper's projected meta-GD), ours as a black box
on finite differences (l2l-blackbox), grid and random search (ours and Optuna's),
Optuna's TPE, CMA-ES and GP samplers, our MetaGradientSampler in an Optuna study
with meta-gradients and as a black box (optuna-l2l, optuna-l2l-blackbox), and Ray
Tune's random search, TPE and MetaGradientSearch. A meta-gradient evaluation
counts at its measured cost in inner-run equivalents. Reports evaluations and
wall time to reach 1 % and 0.01 % of the optimal meta-loss, the final test
metric, curves, and whether l2l (or optuna-l2l, ray-l2l where l2l is not run)
needs 5x fewer inner runs than the best other tuner. Writes report.md,
results.json and PNG plots to --out.

--task digits-user / mnist-user is a user's study instead: every evaluation is
a fresh training run (new initialisation and batch order) returning its
validation loss; each tuner's recommended step size is scored by its expected
validation loss (regret against a dense grid averaged over fresh runs), with LR
range test, Prodigy and Schedule-Free SGD as one-run alternatives. Step sizes are
absolute there; writes report.md, results.json and regret.png
(docs/user_study.md).
"""


def add_bench_parser(sub: Any) -> None:
    """Register ``bench`` on the ``l2l-tune`` sub-parsers (sets ``func``)."""
    parser = sub.add_parser(
        "bench",
        help="compare tuners on one meta-objective with the same budget of inner runs",
        description=_DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--task", choices=(*TASKS, *USER_TASKS), default="quadratic", help="inner problem"
    )
    parser.add_argument(
        "--budget",
        type=int,
        help="inner-run equivalents per tuner and seed (default: 60; 40 for mnist)",
    )
    parser.add_argument("--seeds", type=int, help="number of seeds (default: 5; 3 for mnist)")
    parser.add_argument("--seed0", type=int, default=0, help="first seed")
    parser.add_argument(
        "--tuners",
        metavar="NAMES",
        help="comma-separated subset of: "
        + ", ".join(TUNER_NAMES)
        + "; for the user-study tasks: "
        + ", ".join(USER_TUNER_NAMES)
        + " (default: all)",
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="output directory (default: ./bench-<task>)"
    )
    parser.add_argument(
        "--objective",
        choices=("log", "last"),
        default="log",
        help="what every tuner minimises: (1/t)·log of the meta-loss, or the meta-loss",
    )
    parser.add_argument(
        "--eta-range",
        type=float,
        nargs=2,
        default=(1e-3, 10.0),
        metavar=("LOW", "HIGH"),
        help="step-size range searched (log scale), in units of the task's 1/L "
        "(user-study tasks: absolute step sizes)",
    )
    parser.add_argument(
        "--eta0",
        type=float,
        metavar="X",
        help="first step size of the meta-gradient tuners (l2l, l2l-paper, l2l-blackbox, "
        "optuna-l2l, optuna-l2l-blackbox, ray-l2l), in units of 1/L (default: the geometric "
        "mean of --eta-range)",
    )
    parser.add_argument(
        "--grad-cost",
        type=float,
        metavar="X",
        help="inner-run equivalents of one meta-gradient evaluation (default: measured)",
    )
    parser.add_argument(
        "--t", type=int, help="inner steps (default: 80 quadratic, 40 least squares, 200 mnist)"
    )
    parser.add_argument(
        "--d", type=int, help="dimension (default: 20 quadratic, 1000 least squares)"
    )
    parser.add_argument(
        "--variant",
        choices=("authors", "paper"),
        default="authors",
        help="quadratic instance: the authors' code's (Fig 1) or the text's",
    )
    parser.add_argument(
        "--m", type=int, help="tasks per batch (default: 50 least squares, 4 mnist)"
    )
    parser.add_argument(
        "--n-train",
        type=int,
        help="training samples per task (default: 250 least squares, 300 mnist)",
    )
    parser.add_argument(
        "--n-valid",
        type=int,
        help="validation samples per task (default: 250 least squares, 300 mnist)",
    )
    parser.add_argument("--sigma", type=float, default=1.0, help="least-squares label noise")
    parser.add_argument(
        "--split",
        choices=("train", "valid"),
        help="meta-loss on the training (TbT) or validation (TbV) samples (default: train for "
        "the quadratic, valid otherwise)",
    )
    parser.add_argument(
        "--m-test", type=int, default=10, help="new least-squares tasks for the test RMSE"
    )
    parser.add_argument(
        "--dataset", choices=("digits", "mnist"), default="digits", help="mnist task: data set"
    )
    parser.add_argument("--data-dir", help="mnist task: data directory")
    parser.add_argument(
        "--download", action="store_true", help="mnist task: allow downloading MNIST"
    )
    parser.add_argument(
        "--label-noise",
        type=float,
        help="mnist task: fraction of training and validation labels made random (default 0.2)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="mnist task: PyTorch CPU threads (tiny networks: more threads mostly contend)",
    )
    parser.add_argument(
        "--ray-workers", type=int, default=1, help="concurrent trials of the ray-* tuners"
    )
    parser.add_argument(
        "--ray-trial-seconds",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds each ray-* trial sleeps before reporting, so that concurrent trials "
        "overlap and finish out of order as long trials do",
    )
    parser.add_argument(
        "--grid-points",
        type=int,
        help="user-study tasks: points of the expected-loss grid (default 30)",
    )
    parser.add_argument(
        "--grid-seeds",
        type=int,
        help="user-study tasks: fresh runs averaged at each grid point (default 8)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    defaults = vars(parser.parse_args([]))
    parser.set_defaults(func=functools.partial(_run, defaults=defaults))


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """The :class:`~l2l_tune.bench.settings.BenchSettings` of parsed ``bench`` arguments.

    Raises:
        ValueError: for a bad ``--tuners`` list (other options are checked by
            :meth:`BenchSettings.resolved`).
    """
    return BenchSettings.from_args(args, parse_tuners(args.tuners))


#: Options the recorded command line writes last, after the others in the parser's order.
_WRITTEN_LAST = ("eta_range", "download")


def _command(args: argparse.Namespace, defaults: dict[str, Any]) -> str:
    """The ``l2l-tune bench`` command line of ``args``: the task and the options that differ
    from their ``defaults``."""
    parts = ["l2l-tune", "bench", "--task", args.task]
    for option, default in defaults.items():
        value = getattr(args, option)
        if option not in ("task", "no_progress", *_WRITTEN_LAST) and value != default:
            parts += [f"--{option.replace('_', '-')}", str(value)]
    if tuple(args.eta_range) != tuple(defaults["eta_range"]):
        parts += ["--eta-range", *(f"{x:g}" for x in args.eta_range)]
    if args.download:
        parts.append("--download")
    return " ".join(shlex.quote(p) for p in parts)


def _run(args: argparse.Namespace, defaults: dict[str, Any]) -> int:
    command = _command(args, defaults)
    if args.task in USER_TASKS:
        from .user_study import run_user_study, user_settings_from_args

        run_user_study(user_settings_from_args(args), command=command)
        return 0
    for option in ("grid_points", "grid_seeds"):
        if getattr(args, option, None) is not None:
            flag = "--" + option.replace("_", "-")
            raise ValueError(
                f"{flag} applies to the user-study tasks ({', '.join(USER_TASKS)}) only"
            )
    from .run import run_bench

    run_bench(settings_from_args(args), command=command)
    return 0
