"""The quadratic task (paper, Section 3) against 50-digit references and the theorems."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from _helpers import (
    assert_close_mp,
    assert_float_of_mp,
    quadratic_reference,
    quadratic_root,
)

from l2l_tune import Quadratic

HORIZONS = [1, 10, 80, 1000, 10**5, 10**6]
INSTANCES = [("paper", 0), ("paper", 1), ("authors", 0), ("authors", 1)]
RTOL = 1e-9


def step_grid(q: Quadratic) -> list[float]:
    """The step sizes of the accuracy grid: 0, 0.5/L, 1/L, 1.9/L, 2/L, 2/(L+α), 3/L, 100/L."""
    L, a = q.smoothness, q.strong_convexity
    return [0.0, 0.5 / L, 1 / L, 1.9 / L, 2 / L, 2 / (L + a), 3 / L, 100 / L]


def check_against_reference(q: Quadratic, eta: float, t: int) -> None:
    """Stable value and meta-gradient, log and plain, against the 50-digit closed forms."""
    ref = quadratic_reference(q, eta, t)
    where = f"eta*L={eta * q.smoothness:.6g}, t={t}"
    # log=True: (1/t) log f is always in range; its error is measured relative to
    # max(|ref|, 1/t), i.e. an absolute error of log f relative to max(|log f|, 1).
    value, grad = q.value_and_gradient(eta, t, log=True)
    assert math.isfinite(value) and math.isfinite(grad), where
    assert_close_mp(
        value, ref.log_value, max(abs(ref.log_value), mp.mpf(1) / t), RTOL, f"log value {where}"
    )
    assert_close_mp(
        grad, ref.log_grad, max(abs(ref.log_grad), ref.log_grad_scale), RTOL, f"log grad {where}"
    )
    assert q.meta_gradient(eta, t, log=True) == grad
    assert q.meta_objective(eta, t, log=True) == value
    # log=False: saturate to ±inf / 0.0 outside float64's range.
    value, grad = q.value_and_gradient(eta, t, log=False)
    assert_float_of_mp(value, ref.f, ref.f, RTOL, f"value {where}")
    assert_float_of_mp(grad, ref.df, max(abs(ref.df), ref.df_abs), RTOL, f"grad {where}")
    assert not math.isnan(value) and not math.isnan(grad), where
    assert q.meta_gradient(eta, t, log=False) == grad


@pytest.mark.parametrize("t", HORIZONS)
@pytest.mark.parametrize(("variant", "seed"), INSTANCES)
def test_stable_matches_mpmath(variant: str, seed: int, t: int) -> None:
    """Stable value and meta-gradient match a 50-digit reference to 1e-9 (t ≤ 10⁶, η ≤ 100/L)."""
    q = Quadratic.random(20, seed, variant=variant)
    for eta in step_grid(q):
        check_against_reference(q, eta, t)


def test_plain_objective_saturates_with_sign(quad: Quadratic) -> None:
    """log=False returns +inf past float64's range (η > 2/L, long t) and 0.0 below it (η < 2/L)."""
    L = quad.smoothness
    value, grad = quad.value_and_gradient(3 / L, 1000, log=False)
    assert value == math.inf and grad == math.inf
    value, grad = quad.value_and_gradient(1 / L, 10**6, log=False)
    assert value == 0.0 and grad == 0.0
    # Below η*, the exact derivative is negative; it overflows to -inf only if huge,
    # so check the sign at a point where it is representable.
    assert quad.meta_gradient(0.5 / L, 10, log=False) < 0.0


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["paper", "authors"])
def test_stable_matches_mpmath_dense(variant: str) -> None:
    """Same 1e-9 agreement on a denser grid: 6 seeds, 40 step sizes in [0, 100/L], 9 horizons."""
    for seed in range(2, 8):
        q = Quadratic.random(20, seed, variant=variant)
        L = q.smoothness
        etas = list(np.concatenate([np.linspace(0.0, 3.0, 31), [5.0, 10.0, 30.0, 100.0]]) / L)
        etas += [q.optimal_step_size(t) for t in (80, 10**4)]
        for t in (1, 2, 10, 80, 500, 1000, 10**4, 10**5, 10**6):
            for eta in etas:
                check_against_reference(q, float(eta), t)


# ---------------------------------------------------------------------- backprop (Corollary 1)
@pytest.mark.parametrize(("variant", "seed"), INSTANCES)
def test_backprop_equals_stable_short_unroll(variant: str, seed: int) -> None:
    """Unrolled float64 autodiff equals the stable formula to 1e-10 relative for t ≤ 20."""
    q = Quadratic.random(20, seed, variant=variant)
    L = q.smoothness
    for t in (1, 2, 5, 13, 20):
        for eta in (0.0, 0.3 / L, 1 / L, 1.9 / L, 2 / L, 3 / L):
            for log in (True, False):
                stable = q.meta_gradient(eta, t, log=log)
                backprop = q.meta_gradient(eta, t, log=log, method="backprop")
                assert stable != 0.0
                assert abs(backprop - stable) <= 1e-10 * abs(stable), (t, eta * L, log)


def test_backprop_float32_fails_at_fig1_setting(fig1_quad: Quadratic) -> None:
    """At the Fig-1 setting (t = 80, η = 0.1) float32 backprop is non-finite; stable is not."""
    backprop = fig1_quad.meta_gradient(0.1, 80, method="backprop", dtype="float32")
    stable = fig1_quad.meta_gradient(0.1, 80)
    assert not math.isfinite(backprop)
    assert math.isfinite(stable) and stable > 0.0  # 0.1 lies above η* ≈ 0.03
    ref = quadratic_reference(fig1_quad, 0.1, 80)
    assert_close_mp(stable, ref.log_grad, ref.log_grad_scale, RTOL, "stable at Fig-1 setting")


def test_backprop_torch_dtype_accepted(fig1_quad: Quadratic) -> None:
    """dtype may be a torch dtype; float32 short unrolls match float64 to float32 precision."""
    torch = pytest.importorskip("torch")
    g32 = fig1_quad.meta_gradient(0.01, 5, method="backprop", dtype=torch.float32)
    g64 = fig1_quad.meta_gradient(0.01, 5, method="backprop", dtype=torch.float64)
    assert abs(g32 - g64) <= 1e-4 * abs(g64)


@pytest.mark.parametrize(("variant", "seed"), INSTANCES)
def test_backprop_float64_breaks_past_overflow_threshold(variant: str, seed: int) -> None:
    """At η = 3/L float64 backprop is right well before (ηL−1)^{2t} overflows, broken after.

    The loss grows like (ηL − 1)^{2t} = 2^{2t}, which passes float64's maximum at
    t ≈ 709.78 / (2 log 2) ≈ 512; the stable gradient stays finite and exact.
    """
    q = Quadratic.random(20, seed, variant=variant)
    L = q.smoothness
    eta = 3 / L
    t_overflow = math.log(np.finfo(np.float64).max) / (2 * math.log(eta * L - 1))
    assert 500 < t_overflow < 520
    for t in (int(0.6 * t_overflow), int(0.85 * t_overflow)):
        stable = q.meta_gradient(eta, t)
        backprop = q.meta_gradient(eta, t, method="backprop")
        assert abs(backprop - stable) <= 1e-10 * abs(stable), t
    for t in (int(1.2 * t_overflow), 1000):
        backprop = q.meta_gradient(eta, t, method="backprop")
        assert not math.isfinite(backprop) or backprop == 0.0, (t, backprop)
        stable = q.meta_gradient(eta, t)
        ref = quadratic_reference(q, eta, t)
        assert_close_mp(stable, ref.log_grad, ref.log_grad_scale, RTOL, f"stable t={t}")
        assert stable > 0.0


# ---------------------------------------------------------------------- Theorem 3
def _abs_plain_grad(q: Quadratic, eta: float, t: int) -> mp.mpf:
    """|f'(η)| from the log outputs, so that it is available past float64's range."""
    value, grad = q.value_and_gradient(eta, t, log=True)
    return mp.exp(mp.mpf(value) * t) * abs(t * mp.mpf(grad))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_theorem3_vanishing_below_2_over_L(seed: int) -> None:
    """For 0 < η < 2/L: |F'(η)| ≤ t L² max(|1−ηα|, |1−ηL|)^{2t−1} (unit-norm w0)."""
    q = Quadratic.random(20, seed, variant="paper")
    assert abs(np.linalg.norm(q.w0) - 1.0) < 1e-12
    L, a = q.smoothness, q.strong_convexity
    for t in (1, 10, 80, 1000, 10**5):
        for k in (0.01, 0.1, 0.5, 1.0, 1.5, 1.9, 1.99):
            eta = k / L
            e = mp.mpf(eta)
            bound = t * mp.mpf(L) ** 2 * max(abs(1 - e * a), abs(1 - e * L)) ** (2 * t - 1)
            lhs = _abs_plain_grad(q, eta, t)
            assert lhs <= bound * (1 + RTOL), (t, k)
            plain = q.meta_gradient(eta, t, log=False)
            if bound < mp.mpf("1e300"):
                assert abs(plain) <= float(bound) * (1 + RTOL), (t, k)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_theorem3_exploding_above_2_over_L(seed: int) -> None:
    """For η > 2/L: |F'(η)| ≥ c_1² L² t (ηL−1)^{2t−1} − L² t, with c_1 on the top eigenvector."""
    q = Quadratic.random(20, seed, variant="paper")
    L = q.smoothness
    c_top = mp.mpf(float(q.coefficients[-1]))
    nontrivial = 0
    for t in (1, 10, 80, 1000, 10**5):
        for k in (2.01, 2.1, 2.5, 3.0, 10.0, 100.0):
            eta = k / L
            bound = (
                c_top**2 * mp.mpf(L) ** 2 * t * (mp.mpf(eta) * L - 1) ** (2 * t - 1)
                - mp.mpf(L) ** 2 * t
            )
            if bound <= 0:
                continue
            nontrivial += 1
            # The bound is tight to ~1e-20 relative here (the top term dominates), so
            # allow float rounding.
            assert _abs_plain_grad(q, eta, t) >= bound * (1 - RTOL), (t, k)
            plain = q.meta_gradient(eta, t, log=False)
            assert plain > 0.0
            if bound > mp.mpf(float(np.finfo(np.float64).max)):
                assert plain == math.inf
    assert nontrivial >= 15


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_theorem4_log_gradient_bounded(seed: int) -> None:
    """Claim 2 / Theorem 4: |F'_log(η)| ≤ 4L³/(c_min² α (L−α)) for η ∈ [0, 100/L], any t."""
    q = Quadratic.random(20, seed, variant="paper")
    L, a = q.smoothness, q.strong_convexity
    bound = 4 * L**3 / (q.c_min**2 * a * (L - a))
    etas = np.concatenate([np.linspace(0.0, 100.0 / L, 401), [2 / (L + a), 2 / L, 1 / a]])
    for t in (1, 10, 80, 1000, 10**5, 10**6):
        grads = np.array([q.meta_gradient(float(eta), t) for eta in etas])
        assert np.all(np.isfinite(grads)), t
        assert np.max(np.abs(grads)) <= bound, t


# ---------------------------------------------------------------------- Claim 1
@pytest.mark.parametrize("t", [1, 80, 1000])
@pytest.mark.parametrize(("variant", "seed"), INSTANCES)
def test_claim1_sign_change_at_optimum(variant: str, seed: int, t: int) -> None:
    """The meta-gradient is < 0 just below η* and > 0 just above (log and plain objectives)."""
    q = Quadratic.random(20, seed, variant=variant)
    eta_star = q.optimal_step_size(t)
    for log in (True, False):
        assert q.meta_gradient(eta_star * (1 - 1e-6), t, log=log) < 0.0
        assert q.meta_gradient(eta_star * (1 + 1e-6), t, log=log) > 0.0
    # Far from η*, the signs persist (Claim 1: a single stationary point).
    L = q.smoothness
    for eta in np.linspace(0.0, eta_star, 20, endpoint=False):
        assert q.meta_gradient(float(eta), t) < 0.0
    for eta in np.linspace(eta_star * 1.01, 100 / L, 20):
        assert q.meta_gradient(float(eta), t) > 0.0


@pytest.mark.parametrize("t", [1, 80, 1000])
@pytest.mark.parametrize(("variant", "seed"), INSTANCES)
def test_optimal_step_size_matches_mpmath_root(variant: str, seed: int, t: int) -> None:
    """η* matches a 50-digit root of Eqn (1) to 1e-12; log=False gives the same η*."""
    q = Quadratic.random(20, seed, variant=variant)
    eta_star = q.optimal_step_size(t)
    root = quadratic_root(q, t, eta_star)
    assert abs(mp.mpf(eta_star) - root) <= 1e-12 * root
    assert q.optimal_step_size(t, log=False) == eta_star


def test_optimal_step_size_fig1_value(fig1_quad: Quadratic) -> None:
    """The authors' Fig-1 instance has η* ≈ 0.03 at t = 80 (as quoted in Quadratic.random)."""
    assert 0.02 < fig1_quad.optimal_step_size(80) < 0.04


def test_optimal_step_size_long_horizon_approaches_2_over_L_plus_alpha() -> None:
    """For long unrolls η* tends to 2/(L+α), where the extreme factors balance (Section 3)."""
    q = Quadratic.random(20, 0)
    L, a = q.smoothness, q.strong_convexity
    target = 2 / (L + a)
    gaps = [abs(q.optimal_step_size(t) - target) / target for t in (10, 1000, 10**5)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-3


# ---------------------------------------------------------------------- other behaviour
def test_iterate_and_loss_agree_with_meta_objective(quad: Quadratic) -> None:
    """iterate() is (I − ηH)^t w0 and loss(iterate()) equals the closed-form plain objective."""
    L = quad.smoothness
    for eta, t in ((0.5 / L, 3), (1.5 / L, 10), (2.5 / L, 4)):
        w = quad.w0.copy()
        for _ in range(t):
            w = w - eta * (quad.H @ w)
        assert np.allclose(quad.iterate(eta, t), w, rtol=1e-10, atol=1e-14)
        expected = quad.loss(w)
        assert abs(quad.meta_objective(eta, t, log=False) - expected) <= 1e-10 * expected


def test_properties(quad: Quadratic) -> None:
    """L, α, c_min, dim and 1/L scale are read off H's spectrum and w0's coefficients."""
    evals = np.linalg.eigvalsh(quad.H)
    assert quad.dim == 20
    assert quad.smoothness == pytest.approx(evals[-1], rel=1e-12)
    assert quad.strong_convexity == pytest.approx(evals[0], rel=1e-12)
    assert quad.step_size_scale() == pytest.approx(1 / evals[-1], rel=1e-12)
    c = quad.eigenvectors.T @ quad.w0
    assert quad.c_min == pytest.approx(min(abs(c[0]), abs(c[-1])), rel=1e-12)
    assert np.all(np.diff(quad.eigenvalues) >= 0.0)
    assert "d=20" in repr(quad)


def test_random_variants_differ_as_documented() -> None:
    """Variant "paper": unit-norm w0, X ∈ R^{d×2d}; "authors": Gaussian w0, L ≈ 60–70."""
    paper = Quadratic.random(20, 3, variant="paper")
    authors = Quadratic.random(20, 3, variant="authors")
    assert abs(np.linalg.norm(paper.w0) - 1.0) < 1e-12
    assert np.linalg.norm(authors.w0) > 1.5
    assert 40 < authors.smoothness < 100 < paper.smoothness
    # Seeded instances are reproducible.
    again = Quadratic.random(20, 3, variant="paper")
    assert np.array_equal(again.H, paper.H) and np.array_equal(again.w0, paper.w0)


def test_exact_landing_on_minimiser() -> None:
    """w0 in one eigenspace, η = 1/λ: GD lands on 0; log objective −inf, gradient 0; plain 0."""
    q = Quadratic(np.diag([1.0, 2.0, 4.0]), np.array([0.0, 3.0, 0.0]))
    value, grad = q.value_and_gradient(0.5, 7, log=True)
    assert value == -math.inf and grad == 0.0
    value, grad = q.value_and_gradient(0.5, 7, log=False)
    assert value == 0.0 and grad == 0.0
    # Nearby, the one-term objective is exact: (1/t) log(½·9·2·(1 − 2η)^{2t}).
    t, eta = 7, 0.3
    value, grad = q.value_and_gradient(eta, t, log=True)
    assert value == pytest.approx(math.log(9.0 * 0.4 ** (2 * t)) / t, rel=1e-13)
    assert grad == pytest.approx(-2 * 2 / 0.4, rel=1e-13)
