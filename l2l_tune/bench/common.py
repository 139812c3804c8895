"""What every measurement of the harness shares: the machine it ran on, its JSON, its tables,
its thread limits, its evaluations-to-tolerance counts, its timers and its output files.

One copy of each, used by ``l2l-tune bench`` (:mod:`l2l_tune.bench`), ``l2l-tune reproduce``
(:mod:`l2l_tune.reproduce`) and the scripts of ``benchmarks/``. Nothing here imports PyTorch,
Optuna or Ray unless the caller already has (their versions are read from the installed
distributions).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
from numpy.typing import ArrayLike

from .._optional import module_available

__all__ = [
    "Column",
    "command_line",
    "dumps_json",
    "evals_within",
    "first_index_within",
    "limit_threads",
    "machine_info",
    "machine_line",
    "markdown_table",
    "medians",
    "records_table",
    "relative_error",
    "sync_device",
    "text_table",
    "time_interleaved",
    "to_jsonable",
    "torch_threads",
    "write_results",
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


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """PyTorch's intra-op threads set to ``threads`` inside the block, restored after.

    Args:
        threads: Threads for the block; ``None`` leaves PyTorch untouched (and unimported).
    """
    if threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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


def sync_device(device: str) -> None:
    """Wait for the work queued on a CUDA ``device`` (:func:`torch.cuda.synchronize`), so that a
    timer measures it; nothing to wait for on the CPU."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_interleaved(
    calls: Mapping[str, Callable[[], object]], rounds: int, *, per: int = 1, device: str = "cpu"
) -> dict[str, list[float]]:
    """Seconds per unit of each call, the calls timed in turn in every round.

    Interleaving makes a change of machine load during the run hit every call alike, so their
    ratios stay fair. Each timing is bracketed by :func:`sync_device`.

    Args:
        calls: Name → zero-argument callable.
        rounds: Timed rounds, ``≥ 1``.
        per: Units (steps, tasks) one call runs: every time is divided by it, ``≥ 1``.
        device: Where the calls run.

    Returns:
        Name → its ``rounds`` times in seconds per unit, in the order taken.

    Raises:
        ValueError: ``rounds`` or ``per`` is below 1.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1; got {rounds}")
    if per < 1:
        raise ValueError(f"per must be an integer >= 1; got {per}")
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            sync_device(device)
            start = time.perf_counter()
            call()
            sync_device(device)
            times[name].append((time.perf_counter() - start) / per)
    return times


def medians(samples: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """The median of every entry of ``samples`` (for instance of :func:`time_interleaved`)."""
    return {name: statistics.median(values) for name, values in samples.items()}


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """How ``script`` (its path from the repository's root) ran, for its report: ``python``,
    ``script`` and its arguments ``argv`` (``sys.argv[1:]`` by default)."""
    return " ".join(["python", script, *(sys.argv[1:] if argv is None else argv)])


def write_results(
    json_path: Path, payload: Any, markdown: str, markdown_path: Path | None = None
) -> Path:
    """Write ``payload`` to ``json_path`` (:func:`dumps_json`) and ``markdown`` to
    ``markdown_path`` (by default beside it, suffix ``.md``), creating folders; print and return
    the report's path."""
    markdown_path = json_path.with_suffix(".md") if markdown_path is None else markdown_path
    for path, text in ((json_path, dumps_json(payload) + "\n"), (markdown_path, markdown)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {json_path} and {markdown_path}")
    return markdown_path


#: A column of :func:`records_table`: a format string over a record's keys
#: (:meth:`str.format_map`, e.g. ``"{seconds[plain]:.3f}"``) or a function of the record.
Column: TypeAlias = str | Callable[[Mapping[str, Any]], str]


def records_table(
    columns: Mapping[str, Column],
    records: Iterable[Mapping[str, Any]],
    *,
    style: Literal["markdown", "text"] = "markdown",
) -> str:
    """A table with a row per record and a :data:`Column` under each header.

    Args:
        columns: Header → how to show a record in that column.
        records: The rows' data.
        style: ``"markdown"`` (:func:`markdown_table`) or ``"text"`` (:func:`text_table`).

    Raises:
        ValueError: ``style`` is neither.
    """
    if style not in ("markdown", "text"):
        raise ValueError(f"style must be 'markdown' or 'text'; got {style!r}")
    rows = [
        [
            column.format_map(record) if isinstance(column, str) else column(record)
            for column in columns.values()
        ]
        for record in records
    ]
    return (markdown_table if style == "markdown" else text_table)(list(columns), rows)


def relative_error(value: float, reference: float, *, nonfinite: float = math.inf) -> float:
    """``|value − reference| / |reference|`` of a computed number against its reference.

    Args:
        value: The computed number.
        reference: The reference (a closed form, a high-precision value).
        nonfinite: What a non-finite ``value`` gives (``inf``: it fails every tolerance;
            ``nan``: it is marked as not comparable).

    Returns:
        The relative error: 0 when both are 0, ``inf`` when only ``reference`` is.
    """
    if not math.isfinite(value):
        return nonfinite
    if reference == 0.0:
        return 0.0 if value == 0.0 else math.inf
    return abs(value - reference) / abs(reference)
