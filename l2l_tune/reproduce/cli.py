"""Command-line registration of ``l2l-tune reproduce``.

``l2l-tune reproduce TARGET [--quick] [--out DIR] [--seed N]`` runs one target
of :data:`~l2l_tune.reproduce.TARGETS` (``all`` runs every one), prints its
claim, measured result and verdict, and writes its PNG, JSON and TXT files;
``l2l-tune reproduce --list`` lists the targets with the paper's claims.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["add_reproduce_parser", "resolve_targets"]

_OPTIONS = ("variant", "dataset", "data_dir", "device")


def add_reproduce_parser(sub: Any) -> None:
    """Register ``reproduce`` on the ``l2l-tune`` sub-parsers."""
    parser = sub.add_parser(
        "reproduce",
        help="reproduce the paper's figures and theorems",
        description=(
            "Rerun one of the paper's experiments or theorem checks, write its figure(s), "
            "<target>.json and <target>.txt into --out, and print the paper's claim, the "
            "measured result and a SUPPORTED / NOT SUPPORTED verdict decided by explicit "
            "checks on the measured numbers. The exit status is 0 whenever the run "
            "completes, whatever the verdict."
        ),
    )
    from . import TARGETS

    parser.add_argument(
        "target",
        nargs="?",
        default=None,
        metavar="TARGET",
        help=f"one of {', '.join(TARGETS)}, or 'all' (see --list)",
    )
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes (seconds) instead of the paper's"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output folder (default: ./reproduction/<target>; with 'all', DIR/<target>)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed of the instances (default: 0)"
    )
    parser.add_argument(
        "--variant",
        default=None,
        help="quadratic instance for fig1/thm3/thm4: 'authors' (X in R^{d x d}, Gaussian w0; "
        "fig1's default) or 'paper' (X in R^{d x 2d}, unit w0; thm3/thm4's default)",
    )
    parser.add_argument(
        "--dataset",
        choices=("mnist", "digits"),
        default=None,
        help="fig4/fig5: MNIST IDX files (default) or scikit-learn's 8x8 digits (--quick's)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="fig4/fig5: directory with the MNIST IDX files (default: $L2L_TUNE_DATA or the "
        "user cache)",
    )
    parser.add_argument("--device", default=None, help="fig4/fig5: cpu (default), cuda, cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_run)


def resolve_targets(name: str | None) -> list[str]:
    """The target names to run for the command-line ``TARGET`` (``all``: every one).

    Raises:
        ValueError: naming the accepted targets, for a missing or unknown name.
    """
    from . import TARGETS

    accepted = ", ".join([*TARGETS, "all"])
    if name is None:
        raise ValueError(f"TARGET is required: one of {accepted} (or use --list)")
    if name == "all":
        return list(TARGETS)
    if name not in TARGETS:
        raise ValueError(f"TARGET must be one of {accepted}; got {name!r}")
    return [name]


def _listing() -> str:
    from . import TARGETS

    lines = []
    for target in TARGETS.values():
        lines.append(f"{target.name:6s} {target.title}  [{target.reference}]")
        lines += textwrap.wrap(
            target.claim, width=96, initial_indent="       ", subsequent_indent="       "
        )
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from . import TARGETS, RunContext, run_target

    if args.list:
        print(_listing())
        return 0
    names = resolve_targets(args.target)
    if args.seed < 0:
        raise ValueError(f"--seed must be an integer >= 0, got {args.seed}")
    options = {key: getattr(args, key) for key in _OPTIONS}
    if args.variant is not None and args.variant not in ("paper", "authors"):
        raise ValueError(f"--variant must be one of 'paper', 'authors'; got {args.variant!r}")
    if args.target != "all":
        for key, value in options.items():
            if value is not None and key not in TARGETS[names[0]].options:
                takes = [t.name for t in TARGETS.values() if key in t.options]
                raise ValueError(f"--{key} applies to {', '.join(takes)} only, not to {names[0]!r}")
    outcomes = []
    for name in names:
        target = TARGETS[name]
        if args.out is None:
            out_dir = Path("reproduction") / name
        else:
            out_dir = args.out / name if args.target == "all" else args.out
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"--out must be a folder; {str(out_dir)!r} is a file")
        ctx = RunContext(
            out_dir=out_dir,
            quick=args.quick,
            seed=args.seed,
            progress=not args.no_progress,
            options={k: v for k, v in options.items() if k in target.options},
        )
        outcome = run_target(target, ctx)
        outcomes.append(outcome)
        print(outcome.text, flush=True)
        if len(names) > 1:
            print(flush=True)
    if len(outcomes) > 1:
        print("Summary:")
        for outcome in outcomes:
            verdict = "SUPPORTED" if outcome.supported else "NOT SUPPORTED"
            print(f"  {outcome.target.name:6s} {verdict:14s} ({outcome.seconds:.1f} s)")
    return 0
