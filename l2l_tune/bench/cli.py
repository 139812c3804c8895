"""Command-line registration of ``l2l-tune bench`` (work in progress)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_bench_parser"]


def add_bench_parser(sub: Any) -> None:
    """Register ``bench`` on the ``l2l-tune`` sub-parsers."""
    parser = sub.add_parser("bench", help="compare tuners on one meta-objective")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    raise ValueError("l2l-tune bench is not available yet")
