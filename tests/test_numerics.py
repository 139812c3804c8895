"""Error-free transformations and the stable power sum of ``l2l_tune._numerics``."""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath as mp
import numpy as np
import pytest

from l2l_tune._numerics import (
    log_abs_one_minus_product,
    one_minus_product,
    power_sum,
    two_product,
    two_sum,
)

EPS = float(np.finfo(np.float64).eps)


def _random_floats(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 8, n)


def test_two_sum_is_exact() -> None:
    """TwoSum: a + b = s + e exactly, with s the rounded sum."""
    rng = np.random.default_rng(0)
    a, b = _random_floats(rng, 500), _random_floats(rng, 500)
    s, e = two_sum(a, b)
    for ai, bi, si, ei in zip(a, b, s, e, strict=True):
        assert si == ai + bi
        assert Fraction(si) + Fraction(ei) == Fraction(ai) + Fraction(bi)


def test_two_product_is_exact() -> None:
    """TwoProduct: a · b = p + e exactly, with p the rounded product."""
    rng = np.random.default_rng(1)
    a, b = _random_floats(rng, 500), _random_floats(rng, 500)
    p, e = two_product(a, b)
    for ai, bi, pi, ei in zip(a, b, p, e, strict=True):
        assert pi == ai * bi
        assert Fraction(pi) + Fraction(ei) == Fraction(ai) * Fraction(bi)


def test_one_minus_product_accurate_near_cancellation() -> None:
    """1 − ηλ keeps a few-ulp relative error even when ηλ ≈ 1 (naive: none)."""
    rng = np.random.default_rng(2)
    lam = rng.uniform(0.1, 100.0, 300)
    eta = 1.0 / lam[0]
    lam_near = lam[0] * (1.0 + rng.uniform(-1e-10, 1e-10, 300))
    for values in (lam, lam_near):
        q = one_minus_product(eta, values)
        for qi, li in zip(q, values, strict=True):
            exact = 1 - Fraction(eta) * Fraction(li)
            if exact == 0:
                assert qi == 0.0
            else:
                assert abs(Fraction(qi) - exact) <= 4 * EPS * abs(exact)


def test_log_abs_one_minus_product_accurate_near_two() -> None:
    """log|1 − ηλ| has a small relative error also where ηλ ≈ 2 (q ≈ −1) and ηλ ≈ 0."""
    rng = np.random.default_rng(3)
    lam = np.concatenate(
        [
            2.0 * (1.0 + rng.uniform(-1e-9, 1e-9, 100)),  # q ≈ −1
            rng.uniform(1e-12, 1e-6, 50),  # q ≈ 1
            rng.uniform(0.0, 5.0, 100),  # everything else
        ]
    )
    eta = 1.0
    out = log_abs_one_minus_product(eta, lam)
    for li, got in zip(lam, out, strict=True):
        exact = mp.log(abs(1 - mp.mpf(eta) * mp.mpf(float(li))))
        if exact == 0:
            assert got == 0.0
        else:
            assert abs(mp.mpf(got) - exact) <= 8 * EPS * abs(exact) + 1e-300, li
    assert log_abs_one_minus_product(0.5, np.array([2.0]))[0] == -math.inf


def _mp_power_sum(
    coef: np.ndarray, lam: np.ndarray, eta: float, power: int
) -> tuple[mp.mpf, mp.mpf, mp.mpf]:
    e = mp.mpf(eta)
    s = mp.mpf(0)
    ds = mp.mpf(0)
    ds_abs = mp.mpf(0)
    for c, li in zip(coef, lam, strict=True):
        c, li = mp.mpf(float(c)), mp.mpf(float(li))
        q = 1 - e * li
        s += c * q**power
        term = power * c * li * q ** (power - 1)
        ds -= term
        ds_abs += abs(term)
    return s, ds, ds_abs


@pytest.mark.parametrize("power", [2, 20, 2000, 2 * 10**6])
def test_power_sum_matches_mpmath(power: int) -> None:
    """log S and S'/S match 50-digit sums (batched, zero coefficients, a λ = 0 offset)."""
    rng = np.random.default_rng(power)
    m, r = 3, 12
    lam = np.sort(rng.uniform(0.0, 10.0, (m, r)), axis=1)
    lam[:, 0] = 0.0  # constant offset
    coef = rng.uniform(0.1, 2.0, (m, r))
    coef[1, 3] = 0.0  # a missing term
    with np.errstate(divide="ignore"):
        log_coef = np.log(coef)
    for eta in (0.0, 0.05, 0.1, 0.19, 0.2, 0.21, 0.5, 3.0):
        result = power_sum(log_coef, lam, eta, power)
        assert result.log_value.shape == (m,) and result.log_derivative.shape == (m,)
        for i in range(m):
            s, ds, ds_abs = _mp_power_sum(coef[i], lam[i], eta, power)
            assert abs(mp.mpf(float(result.log_value[i])) - mp.log(s)) <= 1e-12 * max(
                1, abs(mp.log(s))
            )
            assert (
                abs(mp.mpf(float(result.log_derivative[i])) - ds / s) <= 1e-12 * ds_abs / s + 1e-300
            )


def test_power_sum_all_terms_vanish() -> None:
    """Where every term is zero (S = 0) log S is −inf and S'/S is reported as 0."""
    result = power_sum(np.array([0.0, -np.inf]), np.array([2.0, 5.0]), 0.5, 4)
    assert result.log_value == -math.inf
    assert result.log_derivative == 0.0
