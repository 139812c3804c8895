"""Command-line registration of ``l2l-tune reproduce`` (work in progress)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_reproduce_parser"]


def add_reproduce_parser(sub: Any) -> None:
    """Register ``reproduce`` on the ``l2l-tune`` sub-parsers."""
    parser = sub.add_parser("reproduce", help="reproduce the paper")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    raise ValueError("l2l-tune reproduce is not available yet")
