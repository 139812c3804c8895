"""A study worker that survives its storage going away for a while (``docs/production.md``).

``study.optimize`` stops at the first storage error: a PostgreSQL restart, a failover or
a dropped connection ends the worker although the database comes back seconds later.
:func:`optimize_resiliently` runs the worker's trials with Optuna's own ``optimize`` and,
on an error of the storage, waits (exponential back-off) and goes on with the trials it
still owes. What the error interrupted is handled by Optuna's own mechanisms and by the
sampler's outcome policy (``docs/trial_outcomes.md``):

* a trial whose result could not be stored stays RUNNING in the storage until a worker's
  heartbeat check (``RDBStorage(heartbeat_interval=..., grace_period=...)``) fails it;
  :class:`~l2l_tune.integrations.optuna.MetaGradientSampler` never counts such a trial
  (it was never evaluated as far as the study knows), so no meta-step is made from it
  and none is lost: every COMPLETE trial stays a record;
* its step size is re-proposed at most once more (the trial that repeats it), which is
  the bound ``docs/production.md`` gives for duplicates.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError

from l2l_tune._validation import check_horizon

__all__ = [
    "STORAGE_ERRORS",
    "check_journal",
    "is_storage_error",
    "journal_storage",
    "optimize_resiliently",
]

_logger = logging.getLogger(__name__)


def _storage_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [StorageInternalError, UpdateFinishedTrialError]
    try:
        from sqlalchemy.exc import DBAPIError, OperationalError
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency of Optuna
        pass
    else:
        errors += [OperationalError, DBAPIError]
    return tuple(errors)


#: What :func:`optimize_resiliently` treats as a passing storage failure: Optuna's
#: ``StorageInternalError`` (an RDB storage wraps SQLAlchemy's errors in it),
#: SQLAlchemy's ``OperationalError``/``DBAPIError`` raised outside that wrapper, and
#: ``UpdateFinishedTrialError`` (the heartbeat check of another worker failed this
#: worker's trial while the database was away).
STORAGE_ERRORS: tuple[type[BaseException], ...] = _storage_errors()


def is_storage_error(error: BaseException) -> bool:
    """Whether ``error`` is one of :data:`STORAGE_ERRORS`, or was raised while one was
    being handled or because of one (its ``__context__``/``__cause__`` chain).

    The chain matters: when the storage fails as a trial is told, Optuna 4–5's
    ``_run_trial`` replaces the storage error by an ``AssertionError("Should not
    reach.")`` or an ``UnboundLocalError`` raised in its ``finally`` clause, with the
    storage error as their context.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, STORAGE_ERRORS):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def optimize_resiliently(
    study: optuna.Study,
    objective: Callable[[optuna.trial.Trial], Any],
    n_trials: int,
    *,
    max_retries: int = 10,
    wait: float = 0.5,
    max_wait: float = 30.0,
    catch: Sequence[type[Exception]] = (),
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
) -> int:
    """Run ``n_trials`` finished trials of ``objective`` in this worker, riding out outages
    of the study's storage.

    Each call of Optuna's ``study.optimize`` that a storage error interrupts
    (:func:`is_storage_error`) is
    followed, after ``wait · 2^k`` seconds (at most ``max_wait``), by another for the
    trials still owed; after ``max_retries`` consecutive failures the last error is
    raised. Errors of the objective itself are Optuna's business (``catch``).

    Args:
        study: The study (any storage; worth it for an RDB or a journal on a server).
        objective: The objective, as for ``study.optimize``.
        n_trials: Trials this worker finishes (COMPLETE, PRUNED or FAIL as Optuna stored
            them); a trial an outage interrupted does not count.
        max_retries: Consecutive storage failures tolerated, ``≥ 0``.
        wait: First back-off in seconds, ``> 0``.
        max_wait: Longest back-off in seconds, ``≥ wait``.
        catch: Passed to ``study.optimize``.
        callbacks: Passed to ``study.optimize``.

    Returns:
        The storage failures ridden out.

    Raises:
        ValueError: for ``n_trials < 1``, ``max_retries < 0``, ``wait ≤ 0`` or
            ``max_wait < wait``.
    """
    n_trials = check_horizon(n_trials, "n_trials")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    if not wait > 0:
        raise ValueError(f"wait must be > 0 seconds, got {wait!r}")
    if not max_wait >= wait:
        raise ValueError(f"max_wait must be >= wait ({wait}), got {max_wait!r}")
    finished = 0

    def count(_: optuna.Study, __: optuna.trial.FrozenTrial) -> None:
        nonlocal finished
        finished += 1

    outages = 0
    consecutive = 0
    while finished < n_trials:
        before = finished
        try:
            study.optimize(
                objective,
                n_trials=n_trials - finished,
                catch=tuple(catch),
                callbacks=[count, *callbacks],
            )
        except Exception as error:
            if not is_storage_error(error):
                raise
            consecutive = 0 if finished > before else consecutive
            consecutive += 1
            outages += 1
            if consecutive > max_retries:
                raise
            pause = min(max_wait, wait * 2 ** (consecutive - 1))
            _logger.warning(
                "storage error (%s: %s); retrying in %.1f s (%d of %d in a row), %d trials left",
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
                pause,
                consecutive,
                max_retries,
                n_trials - finished,
            )
            time.sleep(pause)
    return outages


def check_journal(path: str | os.PathLike[str]) -> int:
    """Check that a journal file (Optuna's ``JournalFileBackend``) is whole; count its records.

    Optuna reads a journal line by line: a corrupted line in the middle stops it with a
    bare ``JSONDecodeError``, NUL bytes (a file system that lost a write) read as "no
    such study", and an incomplete last line (a writer killed mid-write) is skipped
    silently. This says which line is broken and what to do, before any study is loaded.
    A file cut exactly at a line boundary cannot be told from an earlier, shorter
    journal: keep backups (``docs/production.md``).

    Args:
        path: The journal file (a missing or empty file is a new journal: 0 records).

    Returns:
        The number of complete records.

    Raises:
        ValueError: for NUL bytes or a complete line that is not a JSON object, naming
            the line (1-based) and the byte offset.

    Warns:
        UserWarning: for an incomplete last line (Optuna ignores it; the trial it
            described stays as it was before that write).
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return 0
    nul = data.find(b"\x00")
    if nul >= 0:
        nul_line = data.count(b"\n", 0, nul) + 1
        raise ValueError(
            f"journal {os.fspath(path)!r} has NUL bytes at byte {nul} (line {nul_line}): the file "
            "is corrupted (a lost write on a network file system?); restore it from a backup"
        )
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    offset = 0
    for number, raw in enumerate(lines, start=1):
        record: Any
        try:
            record = json.loads(raw)
        except ValueError as error:
            record = error
        if not isinstance(record, dict):
            detail = str(record)[:80] if isinstance(record, Exception) else repr(raw[:40])
            raise ValueError(
                f"journal {os.fspath(path)!r}: line {number} (byte {offset}) is not a JSON "
                f"record ({detail}); "
                "the file is corrupted: restore it from a backup, or cut it before that line "
                "to keep the trials recorded until then"
            )
        offset += len(raw) + 1
    if tail:
        warnings.warn(
            f"journal {os.fspath(path)!r} ends with an incomplete record ({len(tail)} bytes "
            "after the last newline): a writer was interrupted mid-write; Optuna ignores it",
            UserWarning,
            stacklevel=2,
        )
    return len(lines)


def journal_storage(path: str | os.PathLike[str]) -> optuna.storages.JournalStorage:
    """Optuna's ``JournalStorage`` on a journal file, checked first (:func:`check_journal`).

    Raises:
        ValueError: for a corrupted journal (see :func:`check_journal`).
    """
    from optuna.storages.journal import JournalFileBackend

    check_journal(path)
    return optuna.storages.JournalStorage(JournalFileBackend(os.fspath(path)))
