"""Optional dependencies: whether one is importable, and the extra that installs it.

The core needs NumPy, SciPy, tqdm and threadpoolctl only; everything else sits in an extra of
``setup.cfg`` (``[torch]``, ``[optuna]``, ``[ray]``, ``[plot]``, ``[bench]``, ``[all]``).
"""

from __future__ import annotations

import importlib.util

__all__ = ["install_hint", "module_available"]


def module_available(name: str) -> bool:
    """Whether ``import name`` can succeed here, without importing it.

    A module blocked with ``sys.modules[name] = None`` (Python's documented way to make an
    import fail) counts as missing, like one that is not installed.
    """
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a blocked module, or a parent that is not a package
        return False


def install_hint(extra: str) -> str:
    """The command that installs the ``extra`` of l2l-tune."""
    return f"pip install 'l2l-tune[{extra}]'"
