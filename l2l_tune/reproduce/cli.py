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

from .._plotting import plotting_missing
from .._validation import check_choice
from .base import OptionSpec

__all__ = ["add_reproduce_parser", "resolve_targets"]


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
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--quick", action="store_true", help="small sizes (seconds) instead of the paper's"
    )
    budget.add_argument(
        "--full",
        action="store_true",
        help="the paper's whole schedule where the default is cut to fit a CPU (fig4, fig5: "
        "meta-training the MLP optimizer; hours, for a GPU)",
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
    for name, spec in _option_specs().items():
        parser.add_argument(
            _flag(name),
            dest=name,
            default=None,
            metavar=name.upper(),
            help=spec.help,
        )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_run)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _option_specs() -> dict[str, OptionSpec]:
    """Every option some target declares (plus described ones), with its description.

    An option a target declares without a :func:`~l2l_tune.reproduce.register_option`
    description becomes a plain string flag.
    """
    from . import OPTION_SPECS, TARGETS

    specs: dict[str, OptionSpec] = {}
    for target in TARGETS.values():
        for name in target.options:
            takers = ", ".join(t.name for t in TARGETS.values() if name in t.options)
            spec = OPTION_SPECS.get(name, OptionSpec(name, f"option of {takers}"))
            choices = f" (one of {', '.join(spec.choices)})" if spec.choices else ""
            specs.setdefault(name, OptionSpec(name, f"{spec.help}{choices}", spec.choices))
    return specs


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
    no_plot = plotting_missing("l2l-tune reproduce (its figures)")
    if no_plot is not None:
        raise ValueError(no_plot)
    if args.seed < 0:
        raise ValueError(f"--seed must be an integer >= 0, got {args.seed}")
    specs = _option_specs()
    options = {name: getattr(args, name, None) for name in specs}
    for name, value in options.items():
        choices = specs[name].choices
        if value is not None and choices is not None:
            check_choice(value, _flag(name), choices)
    if args.full and args.target != "all" and not TARGETS[names[0]].full:
        takers = ", ".join(t.name for t in TARGETS.values() if t.full)
        raise ValueError(f"--full applies to {takers} only, not to {names[0]!r}")
    if args.target != "all":
        for name, value in options.items():
            if value is not None and name not in TARGETS[names[0]].options:
                takers = ", ".join(t.name for t in TARGETS.values() if name in t.options)
                raise ValueError(f"{_flag(name)} applies to {takers} only, not to {names[0]!r}")
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
            full=args.full and target.full,
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
