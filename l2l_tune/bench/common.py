"""What every measurement of the harness shares: the machine it ran on, its JSON, its tables,
its thread limits and its evaluations-to-tolerance counts.

One copy of each, used by ``l2l-tune bench`` (:mod:`l2l_tune.bench`), ``l2l-tune reproduce``
(:mod:`l2l_tune.reproduce`) and the scripts of ``benchmarks/``. Nothing here imports PyTorch,
Optuna or Ray unless the caller already has (their versions are read from the installed
distributions).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import math
import os
import platform
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from .._optional import module_available

__all__ = [
    "dumps_json",
    "evals_within",
    "first_index_within",
    "limit_threads",
    "machine_info",
    "machine_line",
    "markdown_table",
    "text_table",
    "to_jsonable",
]

#: Distributions whose versions a measurement records when they are installed.
RECORDED_PACKAGES = ("numpy", "scipy", "torch", "optuna", "cmaes", "ray", "matplotlib")


def machine_info(packages: Sequence[str] = RECORDED_PACKAGES) -> dict[str, Any]:
    """Platform, CPU count, versions of the installed ``packages`` and the thread pools.

    Call it before limiting threads (:func:`limit_threads`) to record the libraries' defaults.

    Returns:
        ``platform``, ``processor``, ``python``, ``cpu_count``, ``l2l_tune``, ``packages``
        (name → version, installed ones only), ``torch_threads`` (when PyTorch is already
        imported) and ``blas`` (threadpoolctl's pools: API, threads, version, architecture).
    """
    from threadpoolctl import threadpool_info

    from .. import __version__

    versions: dict[str, str] = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "l2l_tune": __version__,
        "packages": versions,
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
    info["blas"] = [
        {k: pool.get(k) for k in ("internal_api", "num_threads", "version", "architecture")}
        for pool in threadpool_info()
    ]
    return info


def machine_line(info: Mapping[str, Any] | None = None) -> str:
    """:func:`machine_info` in one line (for a report's header)."""
    info = machine_info() if info is None else info
    parts = [info["platform"], f"{info['cpu_count']} CPUs", f"Python {info['python']}"]
    parts += [f"{name} {version}" for name, version in info["packages"].items()]
    return ", ".join(parts)


#: threadpoolctl limiters kept alive for the process (a limiter lifts its limit when freed).
_THREAD_LIMITERS: list[Any] = []


def limit_threads(threads: int) -> dict[str, Any]:
    """Limit BLAS (through threadpoolctl) and PyTorch, when installed, to ``threads`` threads.

    Args:
        threads: Threads per pool; ``0`` leaves the libraries' defaults.

    Returns:
        What was limited: ``requested``, ``torch_threads`` (when PyTorch is installed) and a
        one-line ``description``.

    Raises:
        ValueError: ``threads`` is negative.
    """
    from threadpoolctl import threadpool_limits

    if threads < 0:
        raise ValueError(f"threads must be an integer >= 0 (0: library defaults); got {threads}")
    if threads == 0:
        return {"requested": 0, "description": "library default threads"}
    _THREAD_LIMITERS.append(threadpool_limits(limits=threads))
    info: dict[str, Any] = {"requested": threads}
    torch = importlib.import_module("torch") if module_available("torch") else None
    if torch is not None:
        torch.set_num_threads(threads)
        info["torch_threads"] = torch.get_num_threads()
    limited = "BLAS and torch" if torch is not None else "BLAS"
    info["description"] = f"{limited} limited to {threads} thread(s)"
    return info


def to_jsonable(obj: Any, *, nonfinite: Literal["string", "null"] = "string") -> Any:
    """Plain JSON types, recursively: dataclasses, mappings, sequences, NumPy values, paths.

    Args:
        obj: What to convert.
        nonfinite: A non-finite float becomes its name (``"inf"``, ``"-inf"``, ``"nan"``:
            ``"string"``, the default, which keeps which one it was) or ``None`` (``"null"``).

    Returns:
        An object :func:`json.dumps` writes with ``allow_nan=False``.
    """
    if nonfinite not in ("string", "null"):
        raise ValueError(f"nonfinite must be 'string' or 'null'; got {nonfinite!r}")
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj), nonfinite=nonfinite)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, nonfinite=nonfinite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, nonfinite=nonfinite) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), nonfinite=nonfinite)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        if math.isfinite(value):
            return value
        return str(value) if nonfinite == "string" else None
    return obj


def dumps_json(payload: Any, *, nonfinite: Literal["string", "null"] = "string") -> str:
    """:func:`to_jsonable` as indented JSON, with flat lists (numbers, strings) on one line."""
    text = json.dumps(
        to_jsonable(payload, nonfinite=nonfinite), indent=1, ensure_ascii=False, allow_nan=False
    )
    return re.sub(
        r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with aligned columns and a rule under the header, for the console."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(out)


def first_index_within(errors: ArrayLike, tol: float, *, stay: bool = False) -> int | None:
    """The first index ``k`` at which ``errors[k] ≤ tol`` (``stay=False``), or from which every
    later error is within ``tol`` too (``stay=True``); ``None`` if there is none.

    One convention for every count of the harness: with ``errors[k]`` the error of the k-th
    iterate (``η_0`` first), ``k`` is the number of meta-steps taken; with ``errors[k]`` the
    error after ``k + 1`` evaluations, the evaluations needed are ``k + 1``. A NaN error counts
    as outside ``tol``.
    """
    values = np.asarray(errors, dtype=float)
    if not stay:
        hits = np.flatnonzero(values <= tol)
        return int(hits[0]) if hits.size else None
    bad = np.flatnonzero(~(values <= tol))
    if bad.size == 0:
        return 0 if values.size else None
    if bad[-1] == values.size - 1:
        return None
    return int(bad[-1]) + 1


def evals_within(errors: ArrayLike, tol: float, *, stay: bool = False) -> int | None:
    """:func:`first_index_within` as a count, for ``errors[k]`` measured after ``k + 1``
    evaluations: the evaluations until the error is (``stay``: and remains) within ``tol``."""
    index = first_index_within(errors, tol, stay=stay)
    return None if index is None else index + 1
