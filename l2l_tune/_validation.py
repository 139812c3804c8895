"""Argument checks shared by the public API.

Every check raises :class:`ValueError` naming the argument and saying what is
accepted, so that bad input fails loudly at the call instead of turning into a
NaN deep inside a meta-gradient.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "check_int",
    "check_array",
    "check_choice",
    "check_horizon",
    "check_positive",
    "check_relative_step",
    "check_step_size",
]


def check_step_size(eta: Any, name: str = "eta") -> float:
    """Return ``eta`` as a float after checking it is a finite number ``≥ 0``.

    Raises:
        ValueError: if ``eta`` is not a real number, is NaN or infinite, or is negative.
    """
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real):
        raise ValueError(f"{name} must be a real number >= 0, got {eta!r}")
    value = float(eta)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def check_relative_step(value: Any, name: str = "fd_step") -> float:
    """Return a relative finite-difference step ``h ∈ (0, 1)`` as a float.

    Raises:
        ValueError: if ``value`` is not a real number strictly between 0 and 1.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number in (0, 1), got {value!r}")
    step = float(value)
    if not 0.0 < step < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {step!r}")
    return step


def check_positive(value: Any, name: str, *, allow_inf: bool = False) -> float:
    """Return ``value`` as a float after checking it is ``> 0`` (and finite).

    Raises:
        ValueError: if ``value`` is not a real number > 0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number > 0, got {value!r}")
    out = float(value)
    if math.isnan(out) or out <= 0.0 or (math.isinf(out) and not allow_inf):
        raise ValueError(f"{name} must be a finite number > 0, got {out!r}")
    return out


def check_horizon(t: Any, name: str = "t") -> int:
    """Return the unroll length ``t`` as an int after checking it is ``≥ 1``.

    Raises:
        ValueError: if ``t`` is not an integer ``≥ 1`` (floats with an integer
            value, such as ``80.0``, are accepted).
    """
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise ValueError(f"{name} must be an integer >= 1, got {t!r}")
    if isinstance(t, numbers.Integral):
        value = int(t)
    elif math.isfinite(float(t)) and float(t).is_integer():
        value = int(float(t))
    else:
        raise ValueError(f"{name} must be an integer >= 1, got {t!r}")
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value}")
    return value


def check_int(value: Any, name: str, minimum: int = 0) -> int:
    """Return ``value`` as an ``int`` after checking it is an integer ``>= minimum``.

    Raises:
        ValueError: naming ``name``, for a bool, a non-integer or a value below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """Return ``value`` after checking it is one of ``choices``.

    Raises:
        ValueError: naming the accepted choices.
    """
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        accepted = ", ".join(repr(c) for c in options)
        raise ValueError(f"{name} must be one of {accepted}; got {value!r}")
    return value


def check_array(value: Any, name: str, *, ndim: tuple[int, ...]) -> NDArray[np.float64]:
    """Return ``value`` as a float64 array after checking its rank and finiteness.

    Raises:
        ValueError: if the array has another number of dimensions, is empty, or
            holds NaN or infinite entries.
    """
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of real numbers: {exc}") from None
    if array.ndim not in ndim:
        dims = " or ".join(str(n) for n in ndim)
        raise ValueError(f"{name} must have {dims} dimensions, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must contain only finite values (found NaN or inf)")
    return array
