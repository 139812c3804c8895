"""Where the MNIST files are looked for.

The directory is, in order of precedence: the ``data_dir`` argument, the
``L2L_TUNE_DATA`` environment variable, and the per-user cache directory
(``$XDG_CACHE_HOME/l2l-tune/mnist``, else ``~/.cache/l2l-tune/mnist``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV_VAR", "default_data_dir", "resolve_data_dir"]

#: Environment variable naming the directory that holds (or receives) the MNIST files.
DATA_ENV_VAR = "L2L_TUNE_DATA"


def _cache_dir() -> Path:
    """The per-user cache directory for MNIST (ignores ``L2L_TUNE_DATA``)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "l2l-tune" / "mnist"


def default_data_dir() -> Path:
    """The directory used when no ``data_dir`` is passed.

    Returns:
        ``$L2L_TUNE_DATA`` if that variable is set and non-empty, else
        ``$XDG_CACHE_HOME/l2l-tune/mnist`` if ``XDG_CACHE_HOME`` is set, else
        ``~/.cache/l2l-tune/mnist``. A leading ``~`` is expanded. The directory
        need not exist.
    """
    env = os.environ.get(DATA_ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return _cache_dir()


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """Resolve the ``data_dir`` argument to a directory and say where it came from.

    Args:
        data_dir: A directory, or ``None`` for :func:`default_data_dir`.

    Returns:
        The directory (``~`` expanded) and a short phrase naming its origin, for
        error messages: ``"the data_dir argument"``, ``"$L2L_TUNE_DATA"`` or
        ``"the default cache directory"``.

    Raises:
        ValueError: if ``data_dir`` is neither ``None`` nor a non-empty ``str`` or
            ``os.PathLike``.
    """
    if data_dir is None:
        if os.environ.get(DATA_ENV_VAR, "").strip():
            return default_data_dir(), f"${DATA_ENV_VAR}"
        return _cache_dir(), "the default cache directory"
    if not isinstance(data_dir, (str, os.PathLike)):
        raise ValueError(
            f"data_dir must be a path (str or os.PathLike) or None, got {type(data_dir).__name__}"
        )
    text = os.fspath(data_dir)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"data_dir must be a non-empty path or None, got {data_dir!r}")
    return Path(text).expanduser(), "the data_dir argument"
