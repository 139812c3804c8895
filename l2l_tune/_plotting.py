"""Matplotlib, imported lazily: the one place the library draws from.

Plotting is optional (the ``[plot]`` extra, pulled by ``[all]``): the core, the tuners and the
integrations never import Matplotlib. The CLI's ``--plot``, ``l2l-tune reproduce`` and the
plots of ``l2l-tune bench`` import it through :func:`pyplot`, which names the extra to install
when it is missing, and check :func:`plotting_missing` before a long run so that the run does
not fail at its end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._optional import install_hint, module_available

__all__ = ["PLOT_INSTALL_HINT", "plotting_missing", "pyplot", "save_figure"]

#: What to run when Matplotlib is missing.
PLOT_INSTALL_HINT = install_hint("plot")


def plotting_missing(what: str) -> str | None:
    """Why ``what`` cannot be drawn here, or ``None`` when Matplotlib is importable.

    Args:
        what: What needs the plot, for the message (e.g. ``"--plot"``).

    Returns:
        A one-line reason naming the extra to install, or ``None``.
    """
    if module_available("matplotlib"):
        return None
    return f"{what} needs matplotlib, which is not installed: {PLOT_INSTALL_HINT}"


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the non-interactive Agg backend selected.

    Raises:
        ImportError: Matplotlib is not installed (the message names the ``[plot]`` extra).
    """
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(
            f"plotting needs matplotlib, which is not installed: {PLOT_INSTALL_HINT}"
        ) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, save as PNG (110 dpi) and close ``fig``; return ``path``."""
    plt = pyplot()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
