"""Numerically stable power sums of the form ``S(η) = Σ_j c_j (1 − η λ_j)^p``.

Every closed form in this package reduces to such a sum: the quadratic's loss
after ``t`` GD steps is ``½ Σ c_i² λ_i (1 − ηλ_i)^{2t}`` (paper, Section 3) and the
training loss of a least-squares task is the same expression in the spectrum of
its design matrix (paper, Section 4). Computed naively these sums are ratios of
exponentially large or small numbers (Corollary 1 of the paper); here they are
computed in log space *relative to the dominant term*, the idea of the paper's
Eqn (2), with one more refinement: the ratio ``|q_j / q_m|`` of two factors
``q = 1 − ηλ`` is formed from their *difference*, computed with error-free
transformations (Dekker's TwoProduct, Knuth's TwoSum). Its logarithm then has a
small *relative* error, so multiplying it by ``p = 2t`` does not amplify rounding
errors with ``t``: the relative error of ``S'/S`` stays near machine precision for
``t`` up to 10⁶ and beyond, for any ``η ≥ 0``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "PowerSum",
    "log_abs_one_minus_product",
    "one_minus_product",
    "power_sum",
    "two_product",
    "two_sum",
]

FloatArray = NDArray[np.float64]

_SPLITTER = 134217729.0  # 2**27 + 1, Dekker's splitting constant for float64.


def two_sum(a: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Knuth's TwoSum: ``a + b = s + e`` exactly, with ``s = fl(a + b)``.

    Args:
        a: First summand (array or scalar).
        b: Second summand.

    Returns:
        The rounded sum ``s`` and its rounding error ``e``.
    """
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def _split(a: FloatArray) -> tuple[FloatArray, FloatArray]:
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def two_product(a: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Dekker's TwoProduct: ``a · b = p + e`` exactly, with ``p = fl(a · b)``.

    Valid while ``|a|, |b| < 1e290`` (no overflow in the splitting), which holds
    for every step size and eigenvalue this package handles.

    Args:
        a: First factor (array or scalar).
        b: Second factor.

    Returns:
        The rounded product ``p`` and its rounding error ``e``.
    """
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def one_minus_product(eta: float, lam: FloatArray) -> FloatArray:
    """``1 − η λ`` with a relative error of a few ulps, even when ``ηλ ≈ 1``.

    The naive ``1 - eta * lam`` loses all relative accuracy near ``ηλ = 1``,
    exactly where a GD contraction factor is smallest and matters most.

    Args:
        eta: Step size.
        lam: Eigenvalues.

    Returns:
        The contraction factors ``q = 1 − ηλ``, elementwise.
    """
    p, e = two_product(np.float64(eta), lam)
    return (1.0 - p) - e


def log_abs_one_minus_product(eta: float, lam: FloatArray) -> FloatArray:
    """``log|1 − ηλ|`` with a small *relative* error, also where ``ηλ ≈ 2``.

    Raising ``q = 1 − ηλ`` to the power ``2t`` multiplies the relative error of
    ``log|q|`` by ``2t``; near ``q = −1`` (``η = 2/λ``), ``q`` itself cannot be stored
    accurately enough, so ``log|q| = log1p(|q| − 1)`` is formed from
    ``|q| − 1 = −ηλ`` (``q ≥ 0``) or ``ηλ − 2`` (``q < 0``), computed with TwoProduct.

    Args:
        eta: Step size.
        lam: Eigenvalues.

    Returns:
        ``log|1 − ηλ|`` elementwise (``-inf`` where ``ηλ = 1`` exactly).
    """
    p, e = two_product(np.float64(eta), lam)
    q = (1.0 - p) - e
    with np.errstate(divide="ignore", invalid="ignore"):
        near_one = np.where(q >= 0.0, np.log1p(-(p + e)), np.log1p((p - 2.0) + e))
        return np.where(np.abs(q) <= 0.5, np.log(np.abs(q)), near_one)


def _abs_factor_difference(
    eta: float, lam: FloatArray, q: FloatArray, lam_ref: FloatArray, q_ref: FloatArray
) -> FloatArray:
    """``|q| − |q_ref|`` accurately, from ``λ`` and ``λ_ref`` rather than from ``q``.

    With ``q = 1 − ηλ`` the four sign cases are ``±η(λ_ref − λ)`` (same signs) and
    ``±(η(λ + λ_ref) − 2)`` (opposite signs); each is formed with TwoSum and
    TwoProduct so that the result has a small relative error. This matters most
    near ``η = 2/(λ + λ_ref)``, where ``q ≈ −q_ref`` — the optimal step size of a
    long unroll lies there (paper, Section 3).
    """
    pos = q >= 0.0
    pos_ref = q_ref >= 0.0
    # Same sign: |q| - |q_ref| = ±η(λ_ref − λ); λ_ref − λ via TwoSum is exact enough.
    dl, dl_err = two_sum(lam_ref, -lam)
    same = eta * dl + eta * dl_err
    same = np.where(pos, same, -same)
    # Opposite signs: |q| - |q_ref| = ±(η(λ + λ_ref) − 2).
    sl, sl_err = two_sum(lam, lam_ref)
    p, p_err = two_product(np.float64(eta), sl)
    opposite = (p - 2.0) + (p_err + eta * sl_err)
    opposite = np.where(pos, -opposite, opposite)
    return np.where(pos == pos_ref, same, opposite)


class PowerSum(NamedTuple):
    """Result of :func:`power_sum`.

    Attributes:
        log_value: ``log S(η)`` (``-inf`` where ``S = 0``).
        log_derivative: ``S'(η) / S(η)``, the derivative of ``log S`` in ``η``
            (``0.0`` where ``S = 0``; see :func:`power_sum`).
    """

    log_value: FloatArray
    log_derivative: FloatArray


def power_sum(log_coef: FloatArray, lam: FloatArray, eta: float, power: int) -> PowerSum:
    """Stable ``log S`` and ``S'/S`` for ``S(η) = Σ_j c_j (1 − ηλ_j)^power``.

    ``power`` must be even (``2t``), so every term is non-negative. Terms with
    ``c_j = 0`` are given as ``log_coef = -inf``; a constant offset is a term with
    ``λ_j = 0``. The sum runs over the last axis, so a batch of ``m`` independent
    sums is passed as ``(m, r)`` arrays.

    The derivative is ``S'/S = −power · Σ_j w_j λ_j / q_j`` with softmax weights
    ``w_j = c_j q_j^power / S`` (paper, Eqn 2: numerator and denominator divided by
    the dominant term). Each weight is formed in log space from
    ``log|q_j / q_m| = log1p((|q_j| − |q_m|) / |q_m|)`` with the difference computed
    accurately (:func:`_abs_factor_difference`), so the relative error does not
    grow with ``power``. Where every term vanishes (``S = 0``: GD reached the
    minimiser exactly), ``log S = -inf`` and ``S'/S`` is reported as ``0.0``: the
    step size is then an exact minimiser of ``S``.

    Args:
        log_coef: ``log c_j``, shape ``(..., r)``.
        lam: ``λ_j ≥ 0``, same shape.
        eta: Step size ``η ≥ 0``.
        power: Even exponent ``p = 2t ≥ 2``.

    Returns:
        :class:`PowerSum` with arrays of shape ``(...)``.
    """
    log_coef = np.asarray(log_coef, dtype=np.float64)
    lam = np.asarray(lam, dtype=np.float64)
    with np.errstate(all="ignore"):
        q = one_minus_product(eta, lam)
        abs_q = np.abs(q)
        log_abs_q = np.log(abs_q)
        # Pick the dominant term of each sum. Any near-dominant term works: the
        # relative exponents below are then at most slightly positive.
        approx = log_coef + power * log_abs_q
        approx = np.where(np.isnan(approx), -np.inf, approx)
        dominant = np.argmax(approx, axis=-1)[..., None]
        empty = np.take_along_axis(approx, dominant, axis=-1)[..., 0] == -np.inf
        is_dominant = np.arange(lam.shape[-1]) == dominant

        q_m = np.take_along_axis(q, dominant, axis=-1)
        lam_m = np.take_along_axis(lam, dominant, axis=-1)
        c_m = np.take_along_axis(log_coef, dominant, axis=-1)
        abs_q_m = np.abs(q_m)
        safe_abs_q_m = np.where(abs_q_m > 0.0, abs_q_m, 1.0)
        diff = _abs_factor_difference(eta, lam, q, lam_m, q_m)
        log_ratio = np.log1p(np.maximum(diff / safe_abs_q_m, -1.0))
        rel = (log_coef - c_m) + power * log_ratio
        rel = np.where(np.isnan(rel) | (log_coef == -np.inf), -np.inf, rel)
        rel = np.where(is_dominant, 0.0, rel)
        others = np.where(is_dominant, -np.inf, rel)
        log_norm = np.log1p(np.sum(np.exp(others), axis=-1))
        log_abs_q_m = log_abs_one_minus_product(eta, lam_m[..., 0])
        log_value = c_m[..., 0] + power * np.where(empty, 0.0, log_abs_q_m) + log_norm
        # log of w_j λ_j / |q_j|; q_j = 0 gives a zero term (power − 1 ≥ 1).
        log_term = rel - log_norm[..., None] + np.log(lam) - np.where(abs_q > 0.0, log_abs_q, 0.0)
        log_term = np.where((abs_q == 0.0) | np.isnan(log_term), -np.inf, log_term)
        terms = np.sign(q) * np.exp(log_term)
        log_derivative = -power * np.sum(terms, axis=-1)
    log_value = np.where(empty, -np.inf, log_value)
    log_derivative = np.where(empty, 0.0, log_derivative)
    return PowerSum(log_value=np.asarray(log_value), log_derivative=np.asarray(log_derivative))
