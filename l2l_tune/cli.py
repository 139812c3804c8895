"""The ``l2l-tune`` command line.

``l2l-tune tune --task least-squares`` (the default job) reproduces the paper's
central comparison on an embedded, generated data set: the step size learned
train-by-train (TbT) against train-by-validation (TbV) on the same samples, with
the test RMSE of each (the plan of ``l2l-tune reproduce fig2``/``fig3``,
:func:`~l2l_tune.reproduce.least_squares.compare_tbt_tbv`, tuned by
:class:`StepSizeTuner` instead of the paper's grid). ``l2l-tune tune --task
quadratic`` tunes GD on the Section 3 quadratic and reports the distance to the
exact optimum ``η*``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._plotting import plotting_missing, pyplot
from ._validation import check_int
from .bench.common import dumps_json, text_table
from .meta import META_OPTIMIZER_CHOICES, VECTOR_META_OPTIMIZERS
from .reproduce.least_squares import TEST_SEED_OFFSET, compare_tbt_tbv
from .tasks import INNER_OPTIMIZERS, LeastSquares, LeastSquaresBatch, Quadratic
from .tuner import HyperparameterTuner, StepSizeTuner

__all__ = ["build_parser", "main"]

#: Each task's defaults: (t, n_train, n_valid, m, m_test).
_DEFAULTS = {
    "quadratic": (80, 250, 250, 300, 10),
    "least-squares": (40, 250, 250, 300, 10),
    "mnist": (1000, 1000, 1000, 4, 5),
}


@dataclass
class _Run:
    """One tuning run and what the summary, JSON and plot need of it."""

    label: str
    split: str
    task: Any
    tuner: StepSizeTuner | HyperparameterTuner
    seconds: float
    #: Added to the run's JSON entry.
    extra: dict[str, Any] = field(default_factory=dict)
    #: The task's own summary columns: header → cell.
    cells: dict[str, str] = field(default_factory=dict)

    @property
    def step_tuner(self) -> StepSizeTuner:
        """The tuner of a step-size run (every run but ``--tune`` with several names)."""
        assert isinstance(self.tuner, StepSizeTuner)
        return self.tuner

    def row(self) -> list[str]:
        """The summary's row: label, what was picked, ``× L``, the meta-objective,
        evaluations, converged, seconds, then :attr:`cells`."""
        tuner = self.tuner
        if isinstance(tuner, HyperparameterTuner):
            picked = ", ".join(f"{k}={v:.4g}" for k, v in tuner.hyperparameters_.items())
            fit = [picked, "-", f"{tuner.meta_objective_:.6g}", str(len(tuner.history_)), "-"]
        else:
            fit = [
                f"{tuner.step_size_:.6g}",
                f"{tuner.step_size_ / self.task.step_size_scale():.3g}",
                f"{tuner.meta_objective_:.6g}",
                str(tuner.n_evals_),
                "yes" if tuner.converged_ else "no",
            ]
        return [self.label, *fit, f"{self.seconds:.2f}", *self.cells.values()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``l2l-tune`` (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="l2l-tune",
        description=(
            "Tune the step size of gradient descent by meta-gradient descent, with stable "
            "meta-gradients (Wang, Yuan, Wu, Ge; ICML 2021)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tune = sub.add_parser(
        "tune",
        help="tune the step size on a task and report it",
        description=(
            "Tune the step size of t GD steps on a task. With --task least-squares and "
            "--split both (its default) the step size is learned train-by-train on all "
            "n-train + n-valid samples and train-by-validation on the split, and both are "
            "tested on new tasks (the paper's Fig 2 setting)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    tune.set_defaults(func=_cmd_tune)
    tune.add_argument(
        "--task", choices=tuple(_DEFAULTS), default="least-squares", help="inner problem"
    )
    tune.add_argument(
        "--t",
        type=int,
        help="inner GD/SGD steps (default: 80 quadratic, 40 least squares, 1000 mnist)",
    )
    tune.add_argument("--d", type=int, help="dimension (default: 20 quadratic, 1000 least squares)")
    tune.add_argument(
        "--variant",
        choices=("paper", "authors"),
        default="authors",
        help="quadratic instance: the text's (X in R^{d x 2d}, unit w0) or the authors' code's "
        "(X in R^{d x d}, Gaussian w0; the Fig 1 instance)",
    )
    tune.add_argument("--sigma", type=float, default=1.0, help="least-squares label noise")
    tune.add_argument(
        "--n-train",
        type=int,
        help="training samples per task (default: 250 least squares, 1000 mnist, 500 digits)",
    )
    tune.add_argument(
        "--n-valid",
        type=int,
        help="validation samples per task, for TbV (default: 250 least squares, 1000 mnist, "
        "500 digits)",
    )
    tune.add_argument("--m", type=int, help="training tasks (default: 300 least squares, 4 mnist)")
    tune.add_argument(
        "--m-test",
        type=int,
        help="new tasks for the test metric (default: 10 least squares, 5 mnist)",
    )
    mnist = tune.add_argument_group("mnist task (paper Section 5)")
    mnist.add_argument(
        "--dataset",
        choices=("mnist", "digits"),
        default="mnist",
        help="MNIST IDX files, or scikit-learn's bundled 8x8 digits (no download)",
    )
    mnist.add_argument(
        "--data-dir",
        type=Path,
        help="directory with the MNIST IDX files (default: $L2L_TUNE_DATA or the user cache)",
    )
    mnist.add_argument(
        "--download", action="store_true", help="download missing MNIST files (sha256-checked)"
    )
    mnist.add_argument(
        "--label-noise",
        type=float,
        default=0.0,
        help="fraction of training and validation labels replaced by random labels",
    )
    mnist.add_argument(
        "--optimizer",
        choices=INNER_OPTIMIZERS,
        default="sgd",
        help="inner optimizer (default sgd, the paper's; momentum and nesterov use momentum 0.9)",
    )
    mnist.add_argument(
        "--tune",
        default="lr",
        metavar="NAMES",
        help="comma-separated hyperparameters tuned jointly with their gradients, e.g. "
        "lr,weight_decay or lr[0],lr[1],lr[2] (per layer); default lr (the step size alone)",
    )
    mnist.add_argument(
        "--start",
        metavar="NAME=VALUE,...",
        help="first values of the --tune names (default: the middle of each search range)",
    )
    mnist.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    mnist.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    mnist.add_argument(
        "--threads",
        type=int,
        help="PyTorch CPU threads (default: 1 for digits, whose 64-wide network only loses "
        "to threading overhead; PyTorch's default for mnist)",
    )
    tune.add_argument(
        "--split",
        choices=("train", "valid", "both"),
        help="meta-loss on the training set (TbT), the validation set (TbV), or both "
        "(default: both for least squares, train for the quadratic)",
    )
    tune.add_argument(
        "--objective",
        choices=("log", "last"),
        default="log",
        help="meta-objective: (1/t) log of the last loss (Theorem 4) or the last loss",
    )
    tune.add_argument(
        "--meta-optimizer",
        choices=META_OPTIMIZER_CHOICES,
        default="auto",
        help="meta-optimizer (default auto: the bracket on the exact closed forms, the "
        "model-based search on MNIST training runs and with several --tune names)",
    )
    tune.add_argument("--eta0", type=float, help="initial step size (default: 1/L)")
    tune.add_argument(
        "--max-evals",
        type=int,
        help="meta-gradient evaluations (default: 200; 1000 for paper; 30 for mnist)",
    )
    tune.add_argument(
        "--tol",
        type=float,
        help="meta-optimizer tolerance (default: the meta-optimizer's own; 1e-3 for the "
        "bracket on mnist, whose meta-objective is only piecewise smooth)",
    )
    tune.add_argument("--seed", type=int, default=0, help="random seed")
    tune.add_argument("--json", type=Path, metavar="PATH", help="write results as JSON")
    tune.add_argument("--plot", type=Path, metavar="PATH", help="write a PNG plot")
    tune.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    # Sub-commands living in their own packages register themselves and set ``func``.
    from ._learn_cli import add_learn_parser
    from .bench.cli import add_bench_parser
    from .reproduce.cli import add_reproduce_parser

    add_bench_parser(sub)
    add_reproduce_parser(sub)
    add_learn_parser(sub)
    return parser


def _fit(
    task: Any,
    args: argparse.Namespace,
    t: int,
    split: str,
    label: str,
    names: Sequence[str] = ("lr",),
    start: dict[str, float] | None = None,
) -> _Run:
    """Tune ``task`` with the command's settings and a progress bar, timed: the step size
    (:class:`StepSizeTuner`), or several hyperparameters ``names`` from ``start`` with their
    gradients (:class:`HyperparameterTuner`)."""
    from tqdm.auto import tqdm

    tuner: StepSizeTuner | HyperparameterTuner
    if tuple(names) == ("lr",):
        tol = args.tol
        if tol is None and args.task == "mnist" and args.meta_optimizer == "bracket":
            tol = 1e-3
        max_evals = args.max_evals or (
            1000 if args.meta_optimizer == "paper" else 30 if args.task == "mnist" else 200
        )
        tuner = StepSizeTuner(
            meta_optimizer=args.meta_optimizer, eta0=args.eta0, max_evals=max_evals, tol=tol
        )
    else:
        meta_optimizer = "model" if args.meta_optimizer == "auto" else args.meta_optimizer
        tuner = HyperparameterTuner(
            names, meta_optimizer=meta_optimizer, start=start, max_evals=args.max_evals or 30
        )
    bar = tqdm(
        total=tuner.max_evals, desc=label, unit="eval", disable=args.no_progress, leave=False
    )

    def update(record: Any) -> None:
        step_size = isinstance(tuner, StepSizeTuner)
        bar.set_postfix_str(
            f"eta={record.eta:.4g}" if step_size else f"loss={record.value:.4g}", refresh=False
        )
        bar.update()

    tuner.callback = update
    started = time.perf_counter()
    try:
        tuner.fit(task, t=t, split=split, log=args.objective == "log")
    finally:
        bar.close()
    return _Run(label, split, task, tuner, time.perf_counter() - started)


def _tuned_names(args: argparse.Namespace) -> tuple[str, ...]:
    """``--tune`` as names (``("lr",)`` for the step size alone)."""
    names = tuple(n.strip() for n in str(args.tune).split(",") if n.strip())
    if not names or len(set(names)) != len(names):
        raise ValueError(f"--tune must list distinct hyperparameter names; got {args.tune!r}")
    return names


def _start_values(args: argparse.Namespace, names: Sequence[str]) -> dict[str, float] | None:
    """``--start name=value,...`` as a mapping over exactly ``names``."""
    if args.start is None:
        return None
    try:
        pairs = (item.split("=") for item in str(args.start).split(","))
        values = {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise ValueError(f"--start must be NAME=VALUE,... ; got {args.start!r}") from None
    if set(values) != set(names):
        raise ValueError(f"--start must give a value for each --tune name {list(names)}")
    return values


def _check_n_valid(args: argparse.Namespace, split: str) -> None:
    """Train-by-validation (``split`` ``"valid"`` or ``"both"``) needs validation samples."""
    if split != "train" and args.n_valid < 1:
        raise ValueError("--n-valid must be >= 1 for train-by-validation")


def _run_quadratic(args: argparse.Namespace, t: int) -> list[_Run]:
    if (args.split or "train") != "train":
        raise ValueError(
            "--split must be 'train' for the quadratic task (it has no validation set)"
        )
    task = Quadratic.random(args.d or 20, seed=args.seed, variant=args.variant)
    run = _fit(task, args, t, "train", "quadratic")
    eta_star = task.optimal_step_size(t)
    error = abs(run.step_tuner.step_size_ - eta_star) / eta_star
    run.extra = {
        "optimal_step_size": eta_star,
        "relative_error": error,
        "smoothness": task.smoothness,
        "strong_convexity": task.strong_convexity,
    }
    run.cells = {"eta*": f"{eta_star:.12g}", "rel. error": f"{error:.2e}"}
    return [run]


def _run_least_squares(args: argparse.Namespace, t: int) -> list[_Run]:
    """TbT vs TbV (:func:`~l2l_tune.reproduce.least_squares.compare_tbt_tbv`), tuned by
    :class:`StepSizeTuner` with the command's settings; test tasks from ``seed + 10_000``."""
    split = args.split or "both"
    sides = {"train": ("TbT",), "valid": ("TbV",), "both": ("TbT", "TbV")}[split]
    check_int(args.n_train, "--n-train", 1)
    _check_n_valid(args, split)
    # TbT alone learns on the --n-train samples; beside TbV, on all of TbV's samples.
    n = args.n_train if split == "train" else args.n_train + args.n_valid

    def tune(batch: LeastSquaresBatch, which: str, label: str) -> dict[str, Any]:
        run = _fit(batch, args, t, which, label)
        return {"eta": run.step_tuner.step_size_, "run": run}

    dist = LeastSquares(args.d or 1000, sigma=args.sigma)
    compared = compare_tbt_tbv(dist, n, tune, m=args.m, t=t, seed=args.seed,
                               n_valid=args.n_valid, m_test=args.m_test, sides=sides)  # fmt: skip
    runs: list[_Run] = []
    for side in compared.sides.values():
        run, test = side.tuned["run"], side.test.summary()
        run.extra = {
            "test": test,
            "n_train": side.n_train,
            "n_valid": side.n_valid,
            "test_rmse": test["test_rmse"],
        }
        run.cells = {
            "train RMSE": f"{test['train_rmse']:.4f}",
            "test RMSE": f"{test['test_rmse']:.4f}",
            "test RMSE range": f"[{test['test_rmse_min']:.3f}, {test['test_rmse_max']:.3f}]",
        }
        runs.append(run)
    return runs


def _run_mnist(args: argparse.Namespace, t: int) -> list[_Run]:
    from .tasks.mnist import MNIST

    split = args.split or "both"
    if args.threads is not None:
        check_int(args.threads, "--threads", 1)
    _check_n_valid(args, split)
    names = _tuned_names(args)
    start = _start_values(args, names)
    vector = names != ("lr",)
    if vector:
        for flag, value in (("--eta0", args.eta0), ("--tol", args.tol)):
            if value is not None:
                raise ValueError(f"{flag} applies to the step-size search; with --tune use --start")
        meta_optimizer = "model" if args.meta_optimizer == "auto" else args.meta_optimizer
        if meta_optimizer not in VECTOR_META_OPTIMIZERS:
            raise ValueError(
                f"--meta-optimizer must be auto, model, adam or paper with several --tune names; "
                f"got {args.meta_optimizer!r}"
            )
        if args.plot is not None:
            raise ValueError(
                "--plot draws the step-size search: use --json with several --tune names"
            )
    elif start is not None:
        if args.eta0 is not None:
            raise ValueError("give the first step size once: --eta0 or --start lr=VALUE")
        args.eta0 = start["lr"]
    threads = args.threads if args.threads is not None else (1 if args.dataset == "digits" else 0)
    if threads:
        import torch

        torch.set_num_threads(threads)
    distribution = MNIST(
        args.dataset,
        data_dir=args.data_dir,
        download=args.download,
        dtype=args.dtype,
        device=args.device,
    )
    tbt = (f"TbT({args.n_train})", "train", 0)
    tbv = (f"TbV({args.n_train}+{args.n_valid})", "valid", args.n_valid)
    plan = {"train": [tbt], "valid": [tbv], "both": [tbt, tbv]}[split]  # label, split, n_valid
    noise, optimizer = args.label_noise, args.optimizer
    # The chosen step size trains new tasks on n_train samples (the paper's Fig 4 setting).
    test_batch = distribution.sample(
        args.m_test, args.n_train, 0, noise, seed=args.seed + TEST_SEED_OFFSET, optimizer=optimizer
    )
    # Sample every batch first: bad sizes fail before any training.
    batches = [distribution.sample(args.m, args.n_train, nv, noise, seed=args.seed,
                                   optimizer=optimizer)
               for _, _, nv in plan]  # fmt: skip
    runs: list[_Run] = []
    for (label, which, n_valid), batch in zip(plan, batches, strict=True):
        run = _fit(batch, args, t, which, label, names, start)
        tuner = run.tuner
        tuned = (
            tuner.hyperparameters_ if isinstance(tuner, HyperparameterTuner) else tuner.step_size_
        )
        test = test_batch.evaluate(tuned, t).summary()
        run.extra = {
            "test": test,
            "test_accuracy": test["test_accuracy"],
            "test_loss": test["test_loss"],
            "n_train": args.n_train,
            "n_valid": n_valid,
            "label_noise": noise,
            "dataset": distribution.name,
            "optimizer": optimizer,
        }
        run.cells = {
            "train acc.": f"{test['train_accuracy']:.4f}",
            "test acc.": f"{test['test_accuracy']:.4f} ± {test['test_accuracy_std']:.4f}",
            "test loss": f"{test['test_loss']:.4f}",
        }
        runs.append(run)
    return runs


def _summary(args: argparse.Namespace, runs: list[_Run], t: int) -> str:
    """The console report: a title line and a table with one row per run."""
    picked = "step size" if all(isinstance(r.tuner, StepSizeTuner) for r in runs) else "tuned"
    header = ["run", picked, "x L", "meta-objective", "evals", "converged", "seconds"]
    objective = "(1/t) log loss" if args.objective == "log" else "last loss"
    title = (
        f"l2l-tune: task={args.task}, t={t}, meta-objective={objective}, "
        f"meta-optimizer={args.meta_optimizer}"
    )
    if args.meta_optimizer == "auto":
        title += f" ({', '.join(sorted({r.tuner.meta_optimizer_.name for r in runs}))})"
    table = text_table([*header, *runs[0].cells], [run.row() for run in runs])
    return f"{title}\n{table}"


def _to_json(args: argparse.Namespace, runs: list[_Run], t: int) -> dict[str, Any]:
    """The ``--json`` document: version, task, the settings (defaults filled) and each run."""
    settings = {k: v for k, v in vars(args).items() if k != "func"} | {"t": t}
    results = [
        {
            "label": run.label,
            "split": run.split,
            "seconds": run.seconds,
            **run.tuner.result_dict(),
            **run.extra,
        }
        for run in runs
    ]
    return {"version": __version__, "task": args.task, "settings": settings, "results": results}


def _plot(path: Path, args: argparse.Namespace, runs: list[_Run], t: int) -> None:
    """The ``--plot`` figure: each run's step sizes during meta-training, and its
    meta-objective over a log grid of step sizes with the tuned one dashed."""
    plt = pyplot()
    fig, (ax_iter, ax_obj) = plt.subplots(1, 2, figsize=(11, 4))
    log = args.objective == "log"
    for run in runs:
        etas = [r.eta for r in run.step_tuner.history_]
        (line,) = ax_iter.plot(range(1, len(etas) + 1), etas, marker=".", label=run.label)
        scale = run.task.step_size_scale()
        # Each MNIST point is a full training run: a coarser grid.
        grid = np.geomspace(scale * 1e-3, scale * 10.0, 13 if args.task == "mnist" else 120)
        values = [run.task.meta_objective(float(e), t, split=run.split, log=log) for e in grid]
        ax_obj.plot(grid, values, color=line.get_color(), label=run.label)
        ax_obj.axvline(
            run.step_tuner.step_size_, color=line.get_color(), linestyle="--", linewidth=1
        )
        if "optimal_step_size" in run.extra:
            ax_iter.axhline(run.extra["optimal_step_size"], color="k", linestyle=":", label="η*")
    ax_iter.set(
        xlabel="meta-gradient evaluation k",
        ylabel="η_k",
        yscale="log",
        title="step size during meta-training",
    )
    ax_iter.legend()
    ax_obj.set(
        xscale="log",
        xlabel="η",
        ylabel="(1/t) log meta-loss" if log else "meta-loss",
        yscale="linear" if log else "log",
        title=f"meta-objective (t={t}); dashed: tuned η",
    )
    ax_obj.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cmd_tune(args: argparse.Namespace) -> int:
    """``l2l-tune tune``: fill the task's defaults, check them, run, report."""
    t, n_train, n_valid, m, m_test = _DEFAULTS[args.task]
    if args.task == "mnist" and args.dataset == "digits":
        n_train, n_valid = 500, 500  # of its 1500 training images
    for name, value in (("n_train", n_train), ("n_valid", n_valid), ("m", m), ("m_test", m_test)):
        if getattr(args, name) is None:
            setattr(args, name, value)
    t = t if args.t is None else args.t
    if not 0.0 <= args.label_noise <= 1.0:
        raise ValueError(f"--label-noise must be a fraction in [0, 1]; got {args.label_noise}")
    if args.label_noise and args.task != "mnist":
        raise ValueError("--label-noise applies to --task mnist only")
    no_plot = plotting_missing("--plot") if args.plot is not None else None
    if no_plot is not None:  # before the run, not after it
        raise ValueError(no_plot)
    run_task = {"quadratic": _run_quadratic, "least-squares": _run_least_squares}
    runs = run_task.get(args.task, _run_mnist)(args, t)
    print(_summary(args, runs, t))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(dumps_json(_to_json(args, runs, t)) + "\n")
        print(f"wrote {args.json}")
    if args.plot is not None:
        _plot(args.plot, args, runs, t)
        print(f"wrote {args.plot}")
    return 0


def _name_the_option(
    parser: argparse.ArgumentParser, args: argparse.Namespace, message: str
) -> str:
    """``message`` of a library ``ValueError``, prefixed with the option it is about.

    The library names its arguments (``t must be an integer >= 1``); on the command line
    the user typed ``--t``. When the message starts with the name of an option of the
    command that was run, it reads ``argument --t: t must be …``, as argparse's own
    errors do.
    """
    name = re.match(r"[A-Za-z_][A-Za-z0-9_]*", message)
    if name is None:
        return message
    option = "--" + name.group(0).replace("_", "-")
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = commands.choices[args.command]
    options = {o for action in command._actions for o in action.option_strings}
    return f"argument {option}: {message}" if option in options else message


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``l2l-tune`` console script.

    Returns:
        The exit status: 0 on success, 2 on bad arguments (the message names the
        argument and what is accepted), 1 when data files are missing or cannot be
        downloaded (the message says where they were looked for and how to fix it) or
        an optional dependency is not installed (the message names its extra).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:
        parser.exit(2, f"l2l-tune: error: {_name_the_option(parser, args, str(exc))}\n")
    # Missing data files, failed downloads; an optional dependency (the message names its extra).
    except (OSError, ImportError) as exc:
        parser.exit(1, f"l2l-tune: error: {exc}\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
