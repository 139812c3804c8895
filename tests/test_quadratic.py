"""The quadratic task (paper, Section 3) against 50-digit references and the theorems."""

from __future__ import annotations

import math
from typing import Any

import mpmath as mp
import numpy as np
import pytest
from _helpers import (
    DPS,
    FLOAT_MAX,
    assert_close_mp,
    assert_float_of_mp,
    quadratic_reference,
    quadratic_root,
)

from l2l_tune import Quadratic
from l2l_tune.tasks.base import HyperparameterTask

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
    with pytest.warns(RuntimeWarning, match="non-finite hypergradient"):
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


# ---------------------------------------------------------------------- heavy-ball momentum
HB_QUAD_SEED = 0
HB_STEPS = (0.5, 1.0, 1.9, 2.5, 4.0, 5.0)  # η·L; heavy ball is stable for ηL < 2(1 + β)
HB_MOMENTA = (0.0, 0.5, 0.9, 0.99)
HB_FD_STEP = mp.mpf("1e-20")


@pytest.fixture
def hb_quad() -> Quadratic:
    """A small "paper"-variant instance (d = 5) for the 50-digit heavy-ball references."""
    return Quadratic.random(5, HB_QUAD_SEED)


def _modes_mp(q: Quadratic) -> list[tuple[mp.mpf, mp.mpf]]:
    """``(λ_i, c_i)`` converted exactly from the float data the library sees."""
    return [
        (mp.mpf(float(lam)), mp.mpf(float(c)))
        for lam, c in zip(q.eigenvalues, q.coefficients, strict=True)
    ]


def heavy_ball_loss_unrolled(q: Quadratic, eta: mp.mpf, beta: mp.mpf, t: int) -> mp.mpf:
    """``f(w_t)`` after ``t`` steps of ``torch.optim.SGD(momentum=β)``, unrolled in mpmath.

    Per eigen-mode (the modes do not interact): ``b_0 = g_0``, ``b_k = β b_{k−1} + g_k``,
    ``x_{k+1} = x_k − η b_k`` with ``g_k = λ x_k``; then ``f = ½ Σ λ x_t²``.
    """
    total = mp.mpf(0)
    for lam, c in _modes_mp(q):
        x, buf = c, mp.mpf(0)
        for k in range(t):
            buf = lam * x if k == 0 else beta * buf + lam * x
            x = x - eta * buf
        total += lam * x * x / 2
    return total


def heavy_ball_loss_two_roots(q: Quadratic, eta: mp.mpf, beta: mp.mpf, t: int) -> mp.mpf:
    """The same ``f(w_t)`` from ``x_t = A μ₁^t + B μ₂^t`` (roots of ``μ² − τμ + β``), any ``t``.

    Not an unroll: cheap at ``t = 10⁵``. The roots may be complex; near critical
    damping ``A`` and ``B`` cancel, which 50 digits absorb for ``|μ₁ − μ₂| ≳ 1e-20``.
    """
    total = mp.mpf(0)
    for lam, c in _modes_mp(q):
        tau = 1 + beta - eta * lam
        root = mp.sqrt(mp.mpc(tau * tau - 4 * beta))
        mu1, mu2 = (tau + root) / 2, (tau - root) / 2
        x0, x1 = c, (1 - eta * lam) * c
        B = (x1 - mu1 * x0) / (mu2 - mu1)
        A = x0 - B
        x = mp.re(A * mu1**t + B * mu2**t)
        total += lam * x * x / 2
    return total


def heavy_ball_reference(
    q: Quadratic, eta: float, beta: float, t: int, *, loss: Any = heavy_ball_loss_unrolled
) -> tuple[mp.mpf, mp.mpf, mp.mpf]:
    """``(f, ∂f/∂η, ∂f/∂β)`` in 50 digits, the derivatives by central differences.

    The steps (1e-20, relative for η) leave ~30 correct digits, ample for 1e-9.
    """
    with mp.workdps(DPS):
        e, b = mp.mpf(eta), mp.mpf(beta)
        he = e * HB_FD_STEP
        hb = HB_FD_STEP
        f = loss(q, e, b, t)
        df_eta = (loss(q, e + he, b, t) - loss(q, e - he, b, t)) / (2 * he)
        df_beta = (loss(q, e, b + hb, t) - loss(q, e, b - hb, t)) / (2 * hb)
        return f, df_eta, df_beta


def _rel_err(actual: float, expected: mp.mpf, scale: mp.mpf | None = None) -> float:
    """``|actual − expected| / scale`` (scale ``|expected|``; exact 0 must be met exactly)."""
    scale = abs(expected) if scale is None else scale
    if scale == 0:
        return 0.0 if actual == 0.0 else math.inf
    return float(abs(mp.mpf(actual) - expected) / scale)


def check_heavy_ball(
    q: Quadratic, eta: float, beta: float, t: int, ref: tuple[mp.mpf, mp.mpf, mp.mpf]
) -> float:
    """Log and plain value and both gradients against ``ref``; returns the largest error."""
    f, df_eta, df_beta = ref
    where = f"eta*L={eta * q.smoothness:.6g}, beta={beta}, t={t}"
    hp = {"lr": eta, "momentum": beta}
    errors = []
    # log=True: (1/t) log f, error relative to max(|·|, 1/t) as for plain GD.
    value, grads = q.value_and_gradients(hp, t, log=True)
    assert set(grads) == {"lr", "momentum"}
    log_value = mp.log(f) / t
    errors.append(_rel_err(value, log_value, max(abs(log_value), mp.mpf(1) / t)))
    errors.append(_rel_err(grads["lr"], df_eta / f / t))
    errors.append(_rel_err(grads["momentum"], df_beta / f / t))
    # log=False: relative where float64 represents the exact value, saturated past it.
    value, grads = q.value_and_gradients(hp, t, log=False)
    for got, exact in ((value, f), (grads["lr"], df_eta), (grads["momentum"], df_beta)):
        assert not math.isnan(got), where
        if abs(exact) > FLOAT_MAX:
            assert math.isinf(got) and (got > 0) == (exact > 0), (where, got)
        elif exact == 0 or abs(exact) > mp.mpf("1e-300"):
            errors.append(_rel_err(got, exact))
    worst = max(errors)
    assert worst <= RTOL, (where, errors)
    return worst


@pytest.mark.parametrize("t", [1, 2, 10])
def test_heavy_ball_matches_mpmath_unroll(hb_quad: Quadratic, t: int) -> None:
    """Value and both gradients match a 50-digit unroll of SGD with momentum to 1e-9."""
    L = hb_quad.smoothness
    for k in HB_STEPS:
        for beta in HB_MOMENTA:
            ref = heavy_ball_reference(hb_quad, k / L, beta, t)
            check_heavy_ball(hb_quad, k / L, beta, t, ref)


@pytest.mark.parametrize("beta", HB_MOMENTA)
def test_heavy_ball_matches_mpmath_unroll_t1000(hb_quad: Quadratic, beta: float) -> None:
    """Same at t = 1000, in the stable range and past it (f beyond float64's range)."""
    L = hb_quad.smoothness
    for k in (1.0, 4.0):
        eta = k / L
        check_heavy_ball(hb_quad, eta, beta, 1000, heavy_ball_reference(hb_quad, eta, beta, 1000))


def test_heavy_ball_long_horizon(hb_quad: Quadratic) -> None:
    """t = 10⁵ at β = 0.9: finite log objective, ≈ log β once every mode is underdamped.

    At t = 2000 the closed form matches a 50-digit unroll (10⁵ steps are not unrolled).
    """
    L, a = hb_quad.smoothness, hb_quad.strong_convexity
    beta = 0.9
    for k in (0.5, 1.0, 3.0, 5.0):
        eta = k / L
        value, grads = hb_quad.value_and_gradients({"lr": eta, "momentum": beta}, 10**5, log=True)
        assert all(math.isfinite(x) for x in (value, *grads.values())), k
        # Every mode underdamped: |μ| = √β, so (1/t) log f → log β up to O(log(t)/t).
        if all(abs(1 + beta - eta * lam) < 2 * math.sqrt(beta) for lam in (a, L)):
            assert abs(value - math.log(beta)) < 1e-3, k
        plain, plain_grads = hb_quad.value_and_gradients(
            {"lr": eta, "momentum": beta}, 10**5, log=False
        )
        assert not any(math.isnan(x) for x in (plain, *plain_grads.values()))
        if k == 5.0:  # past 2(1 + β)/L: the loss grows like |μ|^{2t}
            assert value > 1.0 and plain == math.inf and plain_grads["lr"] == math.inf
    for k in (1.0, 5.0):
        eta = k / L
        check_heavy_ball(hb_quad, eta, beta, 2000, heavy_ball_reference(hb_quad, eta, beta, 2000))


@pytest.mark.parametrize("beta", [0.5, 0.9, 0.99])
def test_heavy_ball_critical_damping_t_1e5(hb_quad: Quadratic, beta: float) -> None:
    """t = 10⁵ near critical damping of the top mode (a Jordan block) and elsewhere.

    Reference: the 50-digit two-root form. The log objective keeps 1e-9 relative accuracy
    (rounding errors grow like t·ε, not t²·ε, near the double root).
    """
    L = hb_quad.smoothness
    sb = math.sqrt(beta)
    steps = [1.0, (1 - sb) ** 2 * (1 + 1e-9), (1 + sb) ** 2 * (1 - 1e-12), 2 * (1 + beta) + 0.5]
    for k in steps:
        eta = k / L
        f, df_eta, df_beta = heavy_ball_reference(
            hb_quad, eta, beta, 10**5, loss=heavy_ball_loss_two_roots
        )
        value, grads = hb_quad.value_and_gradients({"momentum": beta, "lr": eta}, 10**5, log=True)
        assert list(grads) == ["momentum", "lr"]
        log_value = mp.log(f) / 10**5
        assert _rel_err(value, log_value, max(abs(log_value), mp.mpf("1e-5"))) <= RTOL, k
        assert _rel_err(grads["lr"], df_eta / f / 10**5) <= RTOL, k
        assert _rel_err(grads["momentum"], df_beta / f / 10**5) <= RTOL, k


def test_heavy_ball_matches_torch_sgd(hb_quad: Quadratic) -> None:
    """f(w_50) equals torch.optim.SGD(lr, momentum) run in float64, to 1e-10 relative."""
    torch = pytest.importorskip("torch")
    L = hb_quad.smoothness
    H = torch.as_tensor(hb_quad.H, dtype=torch.float64)
    t = 50
    for k in (0.5, 1.0, 3.0):
        for beta in HB_MOMENTA:
            w = torch.nn.Parameter(torch.as_tensor(hb_quad.w0, dtype=torch.float64).clone())
            opt = torch.optim.SGD([w], lr=k / L, momentum=beta)
            for _ in range(t):
                opt.zero_grad()
                loss = 0.5 * (w @ (H @ w))
                loss.backward()
                opt.step()
            expected = float(0.5 * (w @ (H @ w)).detach())
            value, _ = hb_quad.value_and_gradients({"lr": k / L, "momentum": beta}, t)
            assert abs(value - expected) <= 1e-10 * expected, (k, beta, value, expected)


@pytest.mark.parametrize("t", [1, 2, 10, 80, 1000, 10**5])
def test_heavy_ball_at_zero_momentum_is_gd(quad: Quadratic, t: int) -> None:
    """β = 0 (or absent) gives value_and_gradient's value and lr gradient; ∂/∂β from the
    closed form matches the 50-digit ``−2(t−1)η Σ c²λ² q^{2t−2} / Σ c²λ q^{2t}`` (q = 1 − ηλ).
    """
    L = quad.smoothness
    for k in (0.5, 1.0, 1.9, 2.0, 3.0, 100.0):
        eta = k / L
        for log in (True, False):
            value, grad = quad.value_and_gradient(eta, t, log=log)
            assert quad.value_and_gradients({"lr": eta}, t, log=log) == (value, {"lr": grad})
            v0, g0 = quad.value_and_gradients({"lr": eta, "momentum": 0.0}, t, log=log)
            assert v0 == value and g0["lr"] == grad and list(g0) == ["lr", "momentum"]
            if log:
                with mp.workdps(DPS):
                    e = mp.mpf(eta)
                    modes = _modes_mp(quad)
                    num = mp.fsum(c**2 * lam**2 * (1 - e * lam) ** (2 * t - 2) for lam, c in modes)
                    den = mp.fsum(c**2 * lam * (1 - e * lam) ** (2 * t) for lam, c in modes)
                    expected = -2 * (t - 1) * e * num / den / t
                assert _rel_err(g0["momentum"], expected) <= RTOL, (k, t)


def test_heavy_ball_exact_landing() -> None:
    """w0 in one eigenspace, η = 1/λ, β = 0: w_t = 0, log objective −inf, gradients 0."""
    q = Quadratic(np.diag([1.0, 2.0, 4.0]), np.array([0.0, 3.0, 0.0]))
    for t in (1, 2, 7):
        value, grads = q.value_and_gradients({"lr": 0.5, "momentum": 0.0}, t, log=True)
        assert value == -math.inf and grads == {"lr": 0.0, "momentum": 0.0}
        value, grads = q.value_and_gradients({"lr": 0.5, "momentum": 0.0}, t, log=False)
        assert value == 0.0 and grads == {"lr": 0.0, "momentum": 0.0}
    # With momentum the iterate overshoots: x_2 = −β x_0, f = ½·2·(1.5)² at β = 0.5.
    value, grads = q.value_and_gradients({"lr": 0.5, "momentum": 0.5}, 2, log=False)
    assert value == pytest.approx(2.25, rel=1e-15)
    assert all(math.isfinite(g) for g in grads.values())


def test_heavy_ball_extreme_inputs_finite(hb_quad: Quadratic) -> None:
    """Huge t and η, β → 0 or → 1: the log objective is a number, nothing is NaN."""
    L = hb_quad.smoothness
    for t in (10**9, 10**18):
        for eta in (1e-6 / L, 1 / L, 100 / L, 1e300):
            for beta in (1e-300, 0.5, 1 - 2**-53):
                value, grads = hb_quad.value_and_gradients(
                    {"lr": eta, "momentum": beta}, t, log=True
                )
                assert math.isfinite(value), (t, eta, beta)
                assert not any(math.isnan(g) for g in grads.values()), (t, eta, beta)


def test_heavy_ball_hyperparameter_space(hb_quad: Quadratic) -> None:
    """lr on a log scale in [1e-6/L, 4/L], momentum linear in [0, 0.999]; the protocol holds."""
    space = hb_quad.hyperparameter_space()
    assert space.names == ("lr", "momentum")
    lr, momentum = space.parameters
    L = hb_quad.smoothness
    assert (lr.low, lr.high, lr.log) == (1e-6 / L, 4.0 / L, True)
    assert (momentum.low, momentum.high, momentum.log) == (0.0, 0.999, False)
    assert isinstance(hb_quad, HyperparameterTask)


@pytest.mark.parametrize(
    ("hyperparameters", "t", "split", "match"),
    [
        ({"lr": -0.1}, 10, "train", "lr must be"),
        ({"lr": math.nan}, 10, "train", "lr must be"),
        ({"lr": math.inf}, 10, "train", "lr must be"),
        ({"lr": "0.1"}, 10, "train", "lr must be"),
        ({"momentum": 0.5}, 10, "train", "must name 'lr'"),
        ({}, 10, "train", "must name 'lr'"),
        ({"lr": 0.01, "momentum": 1.0}, 10, "train", r"momentum must be .*\[0, 1\)"),
        ({"lr": 0.01, "momentum": -0.1}, 10, "train", "momentum must be"),
        ({"lr": 0.01, "momentum": math.nan}, 10, "train", "momentum must be"),
        ({"lr": 0.01, "momentum": True}, 10, "train", "momentum must be"),
        ({"lr": 0.01, "weight_decay": 0.1}, 10, "train", r"unknown names \['weight_decay'\]"),
        ([("lr", 0.01)], 10, "train", "hyperparameters must be a mapping"),
        ({"lr": 0.01}, 0, "train", "t must be"),
        ({"lr": 0.01}, 2.5, "train", "t must be"),
        ({"lr": 0.01, "momentum": 0.5}, 10, "valid", "split must be"),
    ],
)
def test_heavy_ball_bad_input(
    hb_quad: Quadratic, hyperparameters: Any, t: Any, split: str, match: str
) -> None:
    """Each bad argument raises ValueError naming it and what is accepted."""
    with pytest.raises(ValueError, match=match):
        hb_quad.value_and_gradients(hyperparameters, t, split=split)


@pytest.mark.parametrize("call", ["scalar", "vector"])
def test_a_step_size_whose_product_with_L_overflows_is_refused(call: str) -> None:
    """η·L = inf would read as landing on the minimiser (value 0): refused, naming η."""
    q = Quadratic.random(5, seed=0)
    with pytest.raises(ValueError, match="too large"):
        if call == "scalar":
            q.value_and_gradient(1e308, 10)
        else:
            q.value_and_gradients({"lr": 1e308, "momentum": 0.5}, 10)
