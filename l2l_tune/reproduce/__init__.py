"""``l2l-tune reproduce``: the paper's figures and theorems, measured and checked.

Each target (``fig1``, ``fig2``, ``fig3``, ``thm3`` … ``thm6``) reruns one
experiment or theorem of Wang, Yuan, Wu and Ge (ICML 2021), writes its PNG
figure(s), ``<target>.json`` with the numbers and ``<target>.txt`` with the
paper's claim, the measured result and a ``SUPPORTED`` / ``NOT SUPPORTED``
verdict decided by explicit checks on the measured numbers.

Targets live in the modules of this package and register themselves with
:func:`~l2l_tune.reproduce.base.register`; every public module here is imported
below, so adding a target (the MNIST figures 4–5, say) is adding one module.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

from .base import (
    OPTION_SPECS,
    TARGETS,
    Check,
    Outcome,
    RunContext,
    Target,
    TargetReport,
    register,
    register_option,
    run_target,
)

__all__ = [
    "OPTION_SPECS",
    "TARGETS",
    "Check",
    "Outcome",
    "RunContext",
    "Target",
    "TargetReport",
    "register",
    "register_option",
    "run_target",
]

_NOT_TARGET_MODULES = frozenset({"base", "cli"})


def _import_target_modules() -> None:
    """Import every module of this package that may register targets."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name in _NOT_TARGET_MODULES:
            continue
        importlib.import_module(f"{__name__}.{info.name}")
    # Natural order (fig1, fig2, …, fig10, thm3, …), whatever the order of the modules.
    ordered = sorted(TARGETS.items(), key=lambda item: _natural_key(item[0]))
    TARGETS.clear()
    TARGETS.update(ordered)


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    return [(1, int(p)) if p.isdigit() else (0, p) for p in re.split(r"(\d+)", name) if p]


_import_target_modules()
