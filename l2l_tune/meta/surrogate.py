"""A Gaussian-process surrogate that learns from values *and* gradients.

The meta-objective of a step-size search comes with its meta-gradient when it is
cheap (the stable closed form of Eqn 2, forward-mode differentiation) and without
it for a black box. A Gaussian process treats both as joint observations of one
latent function ``f``: the covariances between values and derivatives are the
derivatives of the kernel,

* ``cov(f(x), f(x')) = k(x, x')``,
* ``cov(f(x), ∂_b f(x')) = ∂k/∂x'_b``,
* ``cov(∂_a f(x), ∂_b f(x')) = ∂²k/∂x_a ∂x'_b``,

so a record with a gradient pins down the local slope as well as the level.

**Kernel.** Matérn-5/2 with one lengthscale per input dimension (ARD). It is
twice differentiable in mean square, the least smoothness that derivative
observations need, and, unlike the squared exponential, it does not force the
posterior to be analytic: a squared-exponential fit to a meta-objective with a
steep wall (the divergence threshold ``η ≈ 2/L``, Theorem 3) shrinks its
lengthscale globally and rings everywhere, a Matérn fit degrades gracefully. It
is also the default of Optuna's ``GPSampler`` and of most Bayesian optimisation.

**Noise.** Values and gradients carry separate Gaussian noise variances (a
stochastic objective's gradients are typically far noisier than its values, as
finite differences or sampled tasks make them). Both are learned, with the
signal variance and the lengthscales, by maximising the log marginal likelihood
(plus weak log-normal priors) with L-BFGS-B on log-hyperparameters, from a few
fixed starting points; the gradient of the objective is analytic. The noise
bounds start at a small jitter floor, so an exact objective is fitted as exact.
The gradient noise is searched as an excess over ``(5/3)·σ_v²/ℓ²``, the slope
variance of a noise no smoother than the signal (see
:func:`_gradient_noise_floor`): noisy values with exact gradients on a short
lengthscale are not a fit this model can choose.

**Mean.** A constant mean: values are standardised (centred on their mean,
divided by their standard deviation) and gradients divided by the same scale.

The module is numpy/scipy only and self-contained:
:func:`fit_gaussian_process` returns a :class:`GaussianProcess` whose
:meth:`~GaussianProcess.predict` and :meth:`~GaussianProcess.mean_gradient` are
vectorised over query points, and whose :meth:`~GaussianProcess.condition_on`
adds (fantasy) value observations with the hyperparameters kept.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import scipy.optimize
from numpy.typing import ArrayLike, NDArray
from scipy.linalg.lapack import dpotrf as _dpotrf
from scipy.linalg.lapack import dpotrs as _dpotrs
from scipy.linalg.lapack import dtrtri as _dtrtri
from scipy.linalg.lapack import dtrtrs as _dtrtrs

__all__ = [
    "fit_convex_quadratic_trend",
    "GaussianProcess",
    "GPHyperparameters",
    "clear_fit_cache",
    "fit_gaussian_process",
    "matern52_covariance",
]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

_SQRT5 = math.sqrt(5.0)
#: Smallest noise variance, relative to the standardised signal (the jitter floor).
NOISE_FLOOR = 1e-10
#: Largest value-noise variance (standardised units: the whole spread is noise).
_NOISE_CEILING = 10.0


@dataclass(frozen=True)
class GPHyperparameters:
    """Kernel and noise hyperparameters, in standardised units.

    Attributes:
        lengthscales: One per input dimension, shape ``(d,)``.
        signal_variance: Prior variance of the standardised latent function.
        value_noise: Noise variance of a standardised value observation.
        gradient_noise: Noise variance of a standardised gradient component.
    """

    lengthscales: FloatArray
    signal_variance: float
    value_noise: float
    gradient_noise: float

    def to_log(self) -> FloatArray:
        """``[log ℓ_1..ℓ_d, log σ², log σ_v², log σ_g²]``, the vector L-BFGS-B sees."""
        return np.log(
            np.concatenate(
                [self.lengthscales, [self.signal_variance, self.value_noise, self.gradient_noise]]
            )
        )

    @classmethod
    def from_log(cls, theta: FloatArray) -> GPHyperparameters:
        """Inverse of :meth:`to_log`."""
        values = np.exp(np.asarray(theta, dtype=np.float64))
        return cls(values[:-3].copy(), float(values[-3]), float(values[-2]), float(values[-1]))


# ---------------------------------------------------------------------- kernel
def _radial(
    x1: FloatArray, x2: FloatArray, lengthscales: FloatArray, variance: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Pairwise pieces of the Matérn-5/2 kernel written as ``k = g(s)``, ``s = r²``.

    Returns ``(w, q, r, g, g1, g2, e)`` with ``u = x1_i − x2_j``, ``w = u/ℓ²``,
    ``q = u²/ℓ²`` (both ``(n1, n2, d)``), ``s = Σ q``, ``r = √s``, and ``g, g' =
    dg/ds, g'' = d²g/ds²`` (``(n1, n2)``), ``e = e^{−√5 r}``. ``g'`` and ``g''``
    are smooth at ``r = 0``, which is why the kernel is written in ``s``.
    """
    u = x1[:, None, :] - x2[None, :, :]
    inv_sq = 1.0 / (lengthscales * lengthscales)
    w = u * inv_sq
    q = u * w
    s = q.sum(axis=-1)
    r = np.sqrt(s)
    e = np.exp(-_SQRT5 * r)
    g = variance * (1.0 + _SQRT5 * r + (5.0 / 3.0) * s) * e
    g1 = -(5.0 / 6.0) * variance * (1.0 + _SQRT5 * r) * e
    g2 = (25.0 / 12.0) * variance * e
    return w, q, r, g, g1, g2, e


def matern52_covariance(
    x1: FloatArray,
    x2: FloatArray,
    grad_mask1: BoolArray | None,
    grad_mask2: BoolArray | None,
    lengthscales: FloatArray,
    variance: float,
    *,
    values1: bool = True,
) -> FloatArray:
    """Joint covariance of values and gradients between two sets of points.

    The rows are ``[f(x1_i) for all i] + [∂_a f(x1_i) for i in mask1, a = 1..d]``
    (gradient rows point-major) and the columns likewise for ``x2``.

    Args:
        x1: Points, shape ``(n1, d)``.
        x2: Points, shape ``(n2, d)``.
        grad_mask1: Which points of ``x1`` contribute gradient rows (``None``: none).
        grad_mask2: Which points of ``x2`` contribute gradient columns (``None``: none).
        lengthscales: Shape ``(d,)``.
        variance: Signal variance ``σ²``.
        values1: Whether ``x1`` contributes value rows (``False`` for the gradient
            of the posterior mean, which needs only the gradient rows).

    Returns:
        The covariance matrix.
    """
    d = x1.shape[1]
    m1 = np.zeros(len(x1), bool) if grad_mask1 is None else np.asarray(grad_mask1, bool)
    m2 = np.zeros(len(x2), bool) if grad_mask2 is None else np.asarray(grad_mask2, bool)
    if d == 1:
        return _covariance_1d(x1[:, 0], x2[:, 0], m1, m2, float(lengthscales[0]), variance, values1)
    return _covariance_nd(x1, x2, m1, m2, lengthscales, variance, values1)


def _covariance_nd(
    x1: FloatArray,
    x2: FloatArray,
    m1: BoolArray,
    m2: BoolArray,
    lengthscales: FloatArray,
    variance: float,
    values1: bool = True,
) -> FloatArray:
    """:func:`matern52_covariance` for any ``d`` (4-D intermediate arrays)."""
    d = x1.shape[1]
    w, _, _, g, g1, g2, _ = _radial(x1, x2, lengthscales, variance)
    inv_sq = 1.0 / (lengthscales * lengthscales)
    rows = []
    if values1:
        kvg = (-2.0 * g1[:, :, None] * w)[:, m2, :].reshape(len(x1), -1)
        rows.append(np.hstack([g, kvg]))
    if m1.any():
        wa, g1a, g2a = w[m1], g1[m1], g2[m1]
        kgv = (2.0 * g1a[:, :, None] * wa).transpose(0, 2, 1).reshape(-1, len(x2))
        kgg = -4.0 * g2a[:, :, None, None] * wa[:, :, :, None] * wa[:, :, None, :]
        kgg = kgg - 2.0 * g1a[:, :, None, None] * np.diag(inv_sq)[None, None, :, :]
        kgg = kgg[:, m2].transpose(0, 2, 1, 3).reshape(int(m1.sum()) * d, -1)
        rows.append(np.hstack([kgv, kgg]))
    return np.vstack(rows) if rows else np.zeros((0, len(x2) + int(m2.sum()) * d))


def _radial_1d(
    x1: FloatArray, x2: FloatArray, lengthscale: float, variance: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """:func:`_radial` for ``d = 1`` on flat arrays: ``(w, r, g, g', g'', e)``, ``(n1, n2)``."""
    u = x1[:, None] - x2[None, :]
    w = u / (lengthscale * lengthscale)
    r = np.abs(u) / lengthscale
    e = np.exp(-_SQRT5 * r)
    a = _SQRT5 * r
    g = variance * (1.0 + a + (5.0 / 3.0) * r * r) * e
    g1 = -(5.0 / 6.0) * variance * (1.0 + a) * e
    g2 = (25.0 / 12.0) * variance * e
    return w, r, g, g1, g2, e


def _value_cross_1d(
    xq: FloatArray, x: FloatArray, m: BoolArray, lengthscale: float, variance: float
) -> FloatArray:
    """The value rows of :func:`_covariance_1d` (what :meth:`GaussianProcess.predict` needs)."""
    u = xq[:, None] - x[None, :]
    a = np.abs(u) * (_SQRT5 / lengthscale)
    e = np.exp(-a)
    g = variance * (1.0 + a + a * a / 3.0) * e
    if not m.any():
        return g
    # cov(f(x_q), f'(x_j)) = −2 g'(s) u/ℓ² with g' = −(5/6)σ²(1 + a)e^{−a}.
    kvg = (5.0 / 3.0) * variance * (1.0 + a[:, m]) * e[:, m] * u[:, m] / (lengthscale * lengthscale)
    return np.hstack([g, kvg])


def _covariance_1d(
    x1: FloatArray,
    x2: FloatArray,
    m1: BoolArray,
    m2: BoolArray,
    lengthscale: float,
    variance: float,
    values1: bool = True,
) -> FloatArray:
    """:func:`matern52_covariance` for ``d = 1`` (the meta-optimizer's case), without 4-D arrays."""
    w, _, g, g1, g2, _ = _radial_1d(x1, x2, lengthscale, variance)
    rows = []
    if values1:
        rows.append(np.hstack([g, (-2.0 * g1 * w)[:, m2]]))
    if m1.any():
        w1, g11, g21 = w[m1], g1[m1], g2[m1]
        kgg = -4.0 * g21 * w1 * w1 - 2.0 * g11 / (lengthscale * lengthscale)
        rows.append(np.hstack([2.0 * g11 * w1, kgg[:, m2]]))
    return np.vstack(rows) if len(rows) > 1 else rows[0] if rows else np.zeros((0, 0))


def _train_covariance_1d(
    x: FloatArray, m: BoolArray, lengthscale: float, variance: float
) -> tuple[FloatArray, list[FloatArray]]:
    """:func:`_train_covariance` for ``d = 1`` (there ``ψ·q = −(25√5/24) σ² e^{−√5 r} r``).

    Built on the full ``2n × 2n`` value-and-gradient layout, then restricted to
    the observed gradients (one fancy index instead of many masked blocks).
    """
    n = len(x)
    if not m.any():
        # Values only: K = σ²(1 + a + a²/3)e^{−a} with a = √5 r,
        # ∂K/∂log ℓ = (5/3)σ²(1 + a)e^{−a} r².
        r = np.abs(x[:, None] - x[None, :]) * (1.0 / lengthscale)
        a = _SQRT5 * r
        base = variance * np.exp(-a)
        return base * (1.0 + a + a * a / 3.0), [(5.0 / 3.0) * base * (1.0 + a) * (r * r)]
    w, r, g, g1, g2, e = _radial_1d(x, x, lengthscale, variance)
    inv_sq = 1.0 / (lengthscale * lengthscale)
    q = r * r
    full = np.empty((2 * n, 2 * n))
    dfull = np.empty((2 * n, 2 * n))
    kvg = -2.0 * g1 * w
    ww = w * w
    full[:n, :n] = g
    full[:n, n:] = kvg
    full[n:, :n] = -kvg
    full[n:, n:] = -4.0 * g2 * ww - 2.0 * g1 * inv_sq
    g2q_g1 = g2 * q + g1
    dvg = 4.0 * g2q_g1 * w
    psi_q = -(25.0 * _SQRT5 / 24.0) * variance * e * r
    dfull[:n, :n] = -2.0 * g1 * q
    dfull[:n, n:] = dvg
    dfull[n:, :n] = -dvg
    dfull[n:, n:] = (8.0 * psi_q + 16.0 * g2) * ww + 4.0 * g2q_g1 * inv_sq
    if m.all():
        return full, [dfull]
    index = np.concatenate([np.arange(n), n + np.flatnonzero(m)])
    selector = np.ix_(index, index)
    return full[selector], [dfull[selector]]


def _train_covariance(
    x: FloatArray, grad_mask: BoolArray, lengthscales: FloatArray, variance: float
) -> tuple[FloatArray, list[FloatArray]]:
    """The training covariance (noise-free) and its derivatives in each ``log ℓ_c``.

    With ``ψ = g'''(s) = −(25√5/24) σ² e^{−√5 r}/r`` (its ``1/r`` is always met by a
    factor ``q_c ≤ r²``), differentiating the blocks of
    :func:`matern52_covariance` in ``θ_c = log ℓ_c`` (``∂q_a = −2 q_c δ_ac``,
    ``∂w_a = −2 w_a δ_ac``, ``∂s = −2 q_c``) gives

    * ``∂K_vv = −2 g' q_c``,
    * ``∂K_vg,b = 4 g'' q_c w_b + 4 g' w_b δ_bc``,
    * ``∂K_gg,ab = 8 ψ q_c w_a w_b + 8 g'' (δ_ac + δ_bc) w_a w_b
      + 4 g'' q_c δ_ab/ℓ_a² + 4 g' δ_ab δ_ac/ℓ_a²``.
    """
    if x.shape[1] == 1:
        m = np.asarray(grad_mask, bool)
        return _train_covariance_1d(x[:, 0], m, float(lengthscales[0]), variance)
    return _train_covariance_nd(x, grad_mask, lengthscales, variance)


def _train_covariance_nd(
    x: FloatArray, grad_mask: BoolArray, lengthscales: FloatArray, variance: float
) -> tuple[FloatArray, list[FloatArray]]:
    """:func:`_train_covariance` for any ``d``."""
    n, d = x.shape
    w, q, r, g, g1, g2, e = _radial(x, x, lengthscales, variance)
    inv_sq = 1.0 / (lengthscales * lengthscales)
    m = np.asarray(grad_mask, bool)
    k_full = _covariance_nd(x, x, m, m, lengthscales, variance)
    with np.errstate(divide="ignore", invalid="ignore"):
        q_over_r = np.where(r[:, :, None] > 0.0, q / r[:, :, None], 0.0)
    psi_q = -(25.0 * _SQRT5 / 24.0) * variance * e[:, :, None] * q_over_r  # ψ·q_c, (n, n, d)
    eye = np.eye(d)
    derivatives = []
    ng = int(m.sum())
    for c in range(d):
        qc = q[:, :, c]
        dvv = -2.0 * g1 * qc
        if ng == 0:
            derivatives.append(dvv)
            continue
        dvg = 4.0 * (g2 * qc)[:, :, None] * w + 4.0 * (g1[:, :, None] * w) * eye[c]
        dgv = -dvg  # the same form with u ↦ −u
        wm = w[m][:, m]
        ww = wm[:, :, :, None] * wm[:, :, None, :]
        delta_c = eye[c][:, None] + eye[c][None, :]
        dgg = (
            8.0 * psi_q[m][:, m][:, :, c, None, None] * ww
            + 8.0 * g2[m][:, m][:, :, None, None] * delta_c * ww
            + 4.0 * (g2 * qc)[m][:, m][:, :, None, None] * np.diag(inv_sq)
            + 4.0 * g1[m][:, m][:, :, None, None] * (np.diag(eye[c]) * inv_sq)
        )
        top = np.hstack([dvv, dvg[:, m, :].reshape(n, ng * d)])
        bottom = np.hstack(
            [
                dgv[m].transpose(0, 2, 1).reshape(ng * d, n),
                dgg.transpose(0, 2, 1, 3).reshape(ng * d, ng * d),
            ]
        )
        derivatives.append(np.vstack([top, bottom]))
    return k_full, derivatives


def _cholesky(matrix: FloatArray) -> FloatArray:
    """Lower Cholesky factor, adding jitter ``10⁻¹⁰…10⁻⁴ × mean diag`` only if needed.

    Points closer than the lengthscale by many orders make the derivative
    covariance numerically singular; the smallest jitter that factorises is
    used (deterministically), so that exact data stay (almost) interpolated.
    """
    factor, info = _dpotrf(matrix, lower=1, clean=1)
    if info == 0:
        return factor
    scale = float(np.mean(np.diag(matrix))) or 1.0
    diagonal = np.diag_indices(len(matrix))
    for jitter in (1e-10, 1e-8, 1e-6, 1e-4, 1e-2):
        trial = matrix.copy()
        trial[diagonal] += jitter * scale
        factor, info = _dpotrf(trial, lower=1, clean=1)
        if info == 0:
            return factor
    raise np.linalg.LinAlgError("covariance matrix is not positive definite")


def _cho_solve(chol: FloatArray, b: FloatArray) -> FloatArray:
    """``K⁻¹ b`` from the lower Cholesky factor of ``K`` (LAPACK, without scipy's checks)."""
    solution, info = _dpotrs(chol, b, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError("invalid Cholesky solve")
    return np.asarray(solution)


def _inverse_from_cholesky(chol: FloatArray) -> FloatArray:
    """``K⁻¹ = L⁻ᵀ L⁻¹`` from the lower Cholesky factor ``L`` of ``K``.

    LAPACK's triangular inverse and one product: for the small matrices here
    this is about ten times faster than ``potri``.
    """
    inverse_factor, info = _dtrtri(chol, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError("singular Cholesky factor")
    return inverse_factor.T @ inverse_factor


# ---------------------------------------------------------------------- fit cache
#: Most memoised hyperparameter fits (least recently used dropped first).
FIT_CACHE_SIZE = 512
_FIT_CACHE: OrderedDict[bytes, FloatArray] = OrderedDict()
_FIT_CACHE_LOCK = threading.Lock()


def clear_fit_cache() -> None:
    """Forget every memoised fit of :func:`fit_gaussian_process` (results do not change)."""
    with _FIT_CACHE_LOCK:
        _FIT_CACHE.clear()


def _fit_key(
    x: FloatArray,
    y: FloatArray,
    grads: FloatArray,
    restarts: int,
    max_iter: int,
    lengthscale_prior: tuple[float, float] | None,
    max_lengthscale: float | None,
    trend: str = "constant",
) -> bytes:
    """A digest of everything the optimisation of :func:`fit_gaussian_process` depends on.

    The raw bytes of the arrays (a different NaN payload is only a miss) and the
    ``repr`` of the options (exact for floats).
    """
    digest = hashlib.blake2b(digest_size=20)
    options = (x.shape, restarts, max_iter, lengthscale_prior, max_lengthscale)
    digest.update(repr(options if trend == "constant" else (*options, trend)).encode())
    for array in (x, y, grads):
        digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return digest.digest()


# ---------------------------------------------------------------------- model
@dataclass(frozen=True)
class GaussianProcess:
    """A fitted GP: training data in standardised units, hyperparameters, factor.

    Build one with :func:`fit_gaussian_process`. All query methods take points of
    shape ``(m, d)`` and return arrays in the *original* units of the values.

    Attributes:
        x: Training points, ``(n, d)``.
        grad_mask: Which training points have a gradient observation, ``(n,)``.
        targets: Standardised observation vector ``[values, gradients]``.
        params: The hyperparameters.
        mean: Constant mean (original units): the intercept of the prior mean.
        scale: Standard deviation used to standardise (original units).
        noise_diag: Per-observation noise variances (standardised).
        chol: Lower Cholesky factor of the noisy training covariance.
        alpha: ``K⁻¹ (targets)``.
        trend: ``None`` (a constant prior mean) or ``(b, c)``, each ``(d,)``: the prior
            mean is ``mean + Σ_j b_j x_j + c_j x_j²`` (original units, ``c ≥ 0``).
    """

    x: FloatArray
    grad_mask: BoolArray
    targets: FloatArray
    params: GPHyperparameters
    mean: float
    scale: float
    noise_diag: FloatArray
    chol: FloatArray
    alpha: FloatArray
    trend: tuple[FloatArray, FloatArray] | None = None

    def prior_mean(self, xq: FloatArray) -> FloatArray:
        """The prior mean at ``xq`` (``(m, d)``), original units."""
        if self.trend is None:
            return np.full(len(xq), self.mean)
        b, c = self.trend
        return self.mean + xq @ b + (xq * xq) @ c

    def prior_mean_gradient(self, xq: FloatArray) -> FloatArray:
        """The gradient of the prior mean at ``xq``, ``(m, d)``, original units."""
        if self.trend is None:
            return np.zeros(xq.shape)
        b, c = self.trend
        return b[None, :] + 2.0 * xq * c[None, :]

    @property
    def value_noise(self) -> float:
        """Learned noise variance of a value, in original units squared."""
        return self.params.value_noise * self.scale**2

    @property
    def gradient_noise(self) -> float:
        """Learned noise variance of a gradient component, in original units squared."""
        return self.params.gradient_noise * self.scale**2

    def _cross(self, xq: FloatArray, *, values: bool = True, grads: bool = False) -> FloatArray:
        mask = np.ones(len(xq), bool) if grads else None
        return matern52_covariance(
            xq,
            self.x,
            mask,
            self.grad_mask,
            self.params.lengthscales,
            self.params.signal_variance,
            values1=values,
        )

    def predict(self, xq: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Posterior mean and variance of the latent ``f`` (noise-free) at ``xq``.

        Args:
            xq: Query points, ``(m, d)``.

        Returns:
            ``(mean, variance)``, each ``(m,)``, in original units.
        """
        xq = np.atleast_2d(np.asarray(xq, dtype=np.float64))
        if xq.shape[1] == 1:
            cross = _value_cross_1d(
                xq[:, 0],
                self.x[:, 0],
                self.grad_mask,
                float(self.params.lengthscales[0]),
                self.params.signal_variance,
            )
        else:
            cross = self._cross(xq)
        mean = cross @ self.alpha
        v, info = _dtrtrs(self.chol, cross.T, lower=1)
        if info != 0:
            raise np.linalg.LinAlgError("singular Cholesky factor")
        var = np.maximum(self.params.signal_variance - np.einsum("ij,ij->j", v, v), 0.0)
        if self.trend is not None:
            return self.prior_mean(xq) + self.scale * mean, self.scale**2 * var
        return self.mean + self.scale * mean, self.scale**2 * var

    def mean_gradient(self, xq: ArrayLike) -> FloatArray:
        """Gradient of the posterior mean at ``xq``, shape ``(m, d)``, original units."""
        xq = np.atleast_2d(np.asarray(xq, dtype=np.float64))
        cross = self._cross(xq, values=False, grads=True)
        out = self.scale * (cross @ self.alpha).reshape(len(xq), -1)
        return out if self.trend is None else out + self.prior_mean_gradient(xq)

    def condition_on(self, x_new: ArrayLike, y_new: ArrayLike) -> GaussianProcess:
        """The same GP with extra value observations (fantasies) at the jitter noise.

        The hyperparameters, mean and scale are kept (no refit): this is the
        "kriging believer" update used to spread parallel proposals.

        Args:
            x_new: New points, ``(k, d)``.
            y_new: Their values, ``(k,)``, original units.
        """
        x_new = np.atleast_2d(np.asarray(x_new, dtype=np.float64))
        y_std = (np.asarray(y_new, dtype=np.float64).ravel() - self.prior_mean(x_new)) / self.scale
        n = len(self.x)
        x = np.vstack([self.x, x_new])
        mask = np.concatenate([self.grad_mask, np.zeros(len(x_new), bool)])
        targets = np.concatenate([self.targets[:n], y_std, self.targets[n:]])
        noise = np.concatenate(
            [self.noise_diag[:n], np.full(len(x_new), NOISE_FLOOR), self.noise_diag[n:]]
        )
        k = matern52_covariance(
            x, x, mask, mask, self.params.lengthscales, self.params.signal_variance
        )
        chol = _cholesky(k + np.diag(noise))
        alpha = _cho_solve(chol, targets)
        return GaussianProcess(
            x, mask, targets, self.params, self.mean, self.scale, noise, chol, alpha, self.trend
        )


#: ``−k''(0)/k(0)·ℓ²`` of the Matérn-5/2 kernel: the variance of its derivative is
#: ``(5/3)·σ²/ℓ²``.
_MATERN52_SLOPE_VARIANCE = 5.0 / 3.0


def _gradient_noise_floor(lengthscales: FloatArray, value_noise: float) -> float:
    """The least gradient-noise variance a value-noise variance implies: ``(5/3)·σ_v²/ℓ²``.

    The noise of a run is a random function of the step size too (a fresh seed's
    loss curve over ``η``), and it is no smoother than the meta-objective itself:
    its correlation length is at most the signal's lengthscale ``ℓ`` (the longest,
    for several inputs), so its slope has at least the variance a Matérn-5/2
    process of variance ``σ_v²`` and lengthscale ``ℓ`` gives its derivative. Without
    this floor a noisy objective (fresh SGD runs: values scattered, hypergradients
    scattered more, Theorem 3) can be fitted as noisy values with *exact* gradients
    on a short lengthscale, a posterior that wiggles through every hypergradient and
    dips wherever a lucky run happened to be (measured: a digits study whose
    recommendation jumped to ``η = 0.73``, at 15 % above the optimal expected loss).
    Exact objectives (``σ_v²`` at the jitter floor) are unaffected.
    """
    return _MATERN52_SLOPE_VARIANCE * value_noise / float(np.max(lengthscales)) ** 2


def _gradient_noise_floors(lengthscales: FloatArray, value_noise: float) -> FloatArray:
    """The floor of :func:`_gradient_noise_floor` per input: ``(5/3)·σ_v²/ℓ_c²``.

    With several inputs the noise's slope along input ``c`` varies on that input's
    lengthscale, so each gradient component gets its own floor; the shared
    ``gradient_noise`` parameter is the longest lengthscale's (the smallest floor) plus
    the learned excess, and a component along a shorter lengthscale adds the
    difference. Without it a fit on several inputs could again take noisy
    hypergradients as exact along its short direction (measured: AdamW on digits, a
    study parked at the edge of stability, where single runs' slopes in ``log lr``
    ranged from −14 to +6, was fitted with ``ℓ_lr = 0.12`` and a gradient noise
    floored by ``ℓ_wd = 5``). In one dimension it is the same floor.
    """
    return _MATERN52_SLOPE_VARIANCE * value_noise / (lengthscales * lengthscales)


def _to_search_space(params: GPHyperparameters) -> FloatArray:
    """``θ`` of :func:`_negative_log_posterior` for ``params`` (gradient noise as excess)."""
    floor = _gradient_noise_floor(params.lengthscales, params.value_noise)
    theta = params.to_log()
    theta[-1] = math.log(max(params.gradient_noise - floor, 1e-300))
    return theta


def _from_search_space(theta: FloatArray) -> GPHyperparameters:
    """Inverse of :func:`_to_search_space`."""
    excess = GPHyperparameters.from_log(theta)
    floor = _gradient_noise_floor(excess.lengthscales, excess.value_noise)
    return GPHyperparameters(
        excess.lengthscales,
        excess.signal_variance,
        excess.value_noise,
        floor + excess.gradient_noise,
    )


def _noise_diag(n: int, n_grad_entries: int, params: GPHyperparameters) -> FloatArray:
    """Per-observation noise variances: values, then gradient components point by point."""
    floors = _gradient_noise_floors(params.lengthscales, params.value_noise)
    extra = np.tile(floors - floors.min(), n_grad_entries // len(floors))
    return np.concatenate([np.full(n, params.value_noise), params.gradient_noise + extra])


def _negative_log_posterior(
    theta: FloatArray,
    x: FloatArray,
    mask: BoolArray,
    targets: FloatArray,
    prior_mean: FloatArray,
    prior_sd: FloatArray,
) -> tuple[float, FloatArray]:
    """``−log p(targets | θ) − log prior(θ)`` and its gradient in ``θ`` (log-hyperparameters).

    ``θ = [log ℓ_1..ℓ_d, log σ², log σ_v², log e]`` with the gradient-noise variance
    of component ``c`` ``σ_g,c² = (5/3)·σ_v²/ℓ_c² + e`` (:func:`_gradient_noise_floors`).

    ``∂ log p/∂θ = ½ tr((αα^T − K⁻¹) ∂K/∂θ)``; for ``log σ²`` the derivative of
    ``K`` is its signal part, for the noise variances their diagonal blocks.
    """
    n, d = x.shape
    size = len(targets)
    hyper = np.exp(theta)
    variance, value_noise, excess = float(hyper[d]), float(hyper[d + 1]), float(hyper[d + 2])
    floors = _gradient_noise_floors(hyper[:d], value_noise)
    n_grad = (size - n) // d
    k_signal, dk_length = _train_covariance(x, mask, hyper[:d], variance)
    k_noisy = k_signal.copy()
    diagonal = k_noisy.reshape(-1)  # a view: k_signal is C-contiguous
    diagonal[: n * (size + 1) : size + 1] += value_noise
    diagonal[n * (size + 1) :: size + 1] += excess + np.tile(floors, n_grad)
    try:
        chol = _cholesky(k_noisy)
        inv = _inverse_from_cholesky(chol)
    except np.linalg.LinAlgError:
        return 1e25, np.zeros_like(theta)
    alpha = inv @ targets
    nll = (
        0.5 * float(targets @ alpha)
        + float(np.log(chol.diagonal()).sum())
        + 0.5 * size * math.log(2 * math.pi)
    )
    inner = np.outer(alpha, alpha)
    inner -= inv  # ∂(log p)/∂K, up to the ½; symmetric
    grad = np.empty_like(theta)
    for c in range(d):
        grad[c] = -0.5 * float(np.vdot(inner, dk_length[c]))
    grad[d] = -0.5 * float(np.vdot(inner, k_signal))
    trace = inner.diagonal()
    grad[d + 1] = -0.5 * value_noise * float(trace[:n].sum())
    # Component c's gradient noise is ``floor_c(ℓ_c, σ_v²) + e^θ_g``: its derivative
    # reaches log σ_v² (``∂floor_c/∂log σ_v² = floor_c``) and log ℓ_c (``−2·floor_c``).
    per_component = -0.5 * trace[n:].reshape(n_grad, d).sum(axis=0)
    grad[d + 2] = float(per_component.sum()) * excess
    grad[d + 1] += float(per_component @ floors)
    grad[:d] -= 2.0 * per_component * floors
    z = (theta - prior_mean) / prior_sd
    nll += 0.5 * float(z @ z)
    grad += z / prior_sd
    if not math.isfinite(nll):
        return 1e25, np.zeros_like(theta)
    return nll, grad


def fit_gaussian_process(
    x: ArrayLike,
    values: ArrayLike,
    gradients: ArrayLike | None = None,
    *,
    restarts: int = 2,
    max_iter: int = 60,
    lengthscale_prior: tuple[float, float] | None = None,
    max_lengthscale: float | None = None,
    hyperparameters: GPHyperparameters | None = None,
    trend: str = "constant",
) -> GaussianProcess:
    """Fit a GP to values and (optional, per point) gradients by maximum a posteriori.

    The optimisation is deterministic, and its result is memoised (see
    :func:`clear_fit_cache`) under a digest of exactly what it depends on: the
    arrays ``x``, ``values``, ``gradients`` and the options. A memoised fit is
    therefore the fit itself, never an approximation of it.

    Args:
        x: Points, ``(n, d)`` (or ``(n,)`` for ``d = 1``), finite.
        values: Observed values, ``(n,)``, finite.
        gradients: Observed gradients, ``(n, d)`` (or ``(n,)``); a row with any
            NaN is "no gradient at this point". ``None``: no gradients at all.
        restarts: Number of deterministic L-BFGS-B starting points (1 to 3):
            a moderate-lengthscale/low-noise start, a short-lengthscale/noisy one,
            and a long-lengthscale/exact one.
        max_iter: L-BFGS-B iterations per start.
        lengthscale_prior: ``(median, sd of log)`` of a log-normal prior on every
            lengthscale, in the units of ``x``; default ``(0.3·span, 3)``, with
            ``span`` the extent of the points (a weak prior).
        max_lengthscale: Upper bound of every lengthscale (default ``20·span``).
        hyperparameters: Skip the optimisation and condition on these (clipped to
            the bounds above), e.g. those fitted to an earlier, smaller data set.
        trend: The prior mean: ``"constant"`` (the values' mean) or
            ``"quadratic"``, a separable convex quadratic ``a + Σ b_j x_j + c_j x_j²``
            (``c ≥ 0``) fitted by least squares to the values and gradients (each
            block normalised by its spread) before the GP models the residuals
            (plug-in universal kriging, see :func:`fit_convex_quadratic_trend`).
            Far from the data the posterior mean then rises instead of returning to
            a constant, so expected improvement stops paying for the edges of the
            domain. Falls back to a constant with fewer observations than
            coefficients.

    Returns:
        The fitted :class:`GaussianProcess`.

    Raises:
        ValueError: for mismatched shapes, no points, non-finite ``x``/``values``,
            or an unknown ``trend``.
    """
    if trend not in ("constant", "quadratic"):
        raise ValueError(f"trend must be 'constant' or 'quadratic', got {trend!r}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    y = np.asarray(values, dtype=np.float64).ravel()
    n, d = x.shape
    if n == 0 or len(y) != n:
        raise ValueError(f"x and values must hold the same number (>= 1) of points: {n}, {len(y)}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x and values must be finite")
    if gradients is None:
        grads = np.full((n, d), np.nan)
    else:
        grads = np.asarray(gradients, dtype=np.float64).reshape(n, d)
    if not 1 <= restarts <= 3:
        raise ValueError(f"restarts must be 1, 2 or 3, got {restarts!r}")
    mask = np.all(np.isfinite(grads), axis=1)

    mean = float(y.mean())
    spread = float(y.std())
    scale = spread if spread > 1e-12 * max(1.0, abs(mean)) else max(1.0, abs(mean)) * 1e-6
    coefficients = (
        fit_convex_quadratic_trend(x, y, grads) if trend == "quadratic" and n > 1 else None
    )
    if coefficients is None:
        y_std = (y - mean) / scale
        g_std = grads[mask] / scale
    else:
        mean, b, c = coefficients
        y_std = (y - (mean + x @ b + (x * x) @ c)) / scale
        g_std = (grads[mask] - (b[None, :] + 2.0 * x[mask] * c[None, :])) / scale
    targets = np.concatenate([y_std, g_std.ravel()])

    span = np.ptp(x, axis=0) if n > 1 else np.ones(d)
    span = np.where(span > 0.0, span, 1.0)
    grad_scale = float(np.mean(g_std**2)) if mask.any() else 1.0
    grad_scale = grad_scale if grad_scale > 0.0 else 1.0
    # Weak log-normal priors (sd 3 in log: a factor 20 per sd) around the starts below;
    # the bounds keep the noise above the jitter floor and the lengthscales finite.
    if lengthscale_prior is None:
        ls_mean, ls_sd = np.log(0.3 * span), np.full(d, 3.0)
    else:
        ls_mean, ls_sd = (
            np.full(d, math.log(lengthscale_prior[0])),
            np.full(d, lengthscale_prior[1]),
        )
    prior_mean = np.concatenate([ls_mean, [0.0, math.log(1e-8), math.log(1e-8 * grad_scale)]])
    prior_sd = np.concatenate([ls_sd, [2.0, 6.0, 6.0]])
    top = 20.0 * span if max_lengthscale is None else np.full(d, max_lengthscale)
    bounds = [
        (math.log(min(1e-4 * s, 0.5 * t)), math.log(t)) for s, t in zip(span, top, strict=True)
    ]
    bounds += [
        (math.log(1e-3), math.log(1e3)),
        (math.log(NOISE_FLOOR), math.log(_NOISE_CEILING)),
        (math.log(NOISE_FLOOR * grad_scale), math.log(1e3 * grad_scale)),
    ]
    starts = [
        np.concatenate([ls_mean, [0.0, math.log(1e-6), math.log(1e-6 * grad_scale)]]),
        np.concatenate([ls_mean - 1.0, [0.0, math.log(0.1), math.log(0.1 * grad_scale)]]),
        np.concatenate([ls_mean + 1.0, [0.0, math.log(1e-9), math.log(1e-9 * grad_scale)]]),
    ][:restarts]
    lower = np.array([b[0] for b in bounds])
    upper = np.array([b[1] for b in bounds])
    if hyperparameters is not None:
        theta = np.clip(_to_search_space(hyperparameters), lower, upper)
    else:
        key = _fit_key(x, y, grads, restarts, max_iter, lengthscale_prior, max_lengthscale, trend)
        with _FIT_CACHE_LOCK:
            cached = _FIT_CACHE.get(key)
            if cached is not None:
                _FIT_CACHE.move_to_end(key)
        if cached is not None:
            theta = cached.copy()
        else:
            best: tuple[float, FloatArray] | None = None
            args = (x, mask, targets, prior_mean, prior_sd)
            for start in starts:
                result = scipy.optimize.minimize(
                    _negative_log_posterior,
                    np.clip(start, lower, upper),
                    args=args,
                    jac=True,
                    method="L-BFGS-B",
                    bounds=bounds,
                    options={"maxiter": max_iter},
                )
                if best is None or result.fun < best[0]:
                    best = (float(result.fun), np.asarray(result.x))
            assert best is not None
            theta = best[1]
            with _FIT_CACHE_LOCK:
                _FIT_CACHE[key] = theta.copy()
                while len(_FIT_CACHE) > FIT_CACHE_SIZE:
                    _FIT_CACHE.popitem(last=False)
    params = _from_search_space(theta)
    noise = _noise_diag(n, len(targets) - n, params)
    k = matern52_covariance(x, x, mask, mask, params.lengthscales, params.signal_variance)
    k.reshape(-1)[:: len(k) + 1] += noise
    chol = _cholesky(k)
    return GaussianProcess(
        x,
        mask,
        targets,
        params,
        mean,
        scale,
        noise,
        chol,
        _cho_solve(chol, targets),
        None if coefficients is None else (coefficients[1], coefficients[2]),
    )


def fit_convex_quadratic_trend(
    x: FloatArray, values: FloatArray, gradients: FloatArray
) -> tuple[float, FloatArray, FloatArray] | None:
    """``(a, b, c)`` of the separable quadratic ``a + Σ_j b_j x_j + c_j x_j²``, ``c ≥ 0``.

    Bounded linear least squares (:func:`scipy.optimize.lsq_linear`) on the values
    and the finite gradient components, each block divided by its root-mean-square
    spread so that neither sets the fit alone. The convexity bound encodes what is
    known of a step-size objective at the coarse scale (too small: slow; too
    large: unstable; Claim 1 and Theorem 3); the GP models everything finer.

    Args:
        x: Points, ``(n, d)``.
        values: ``(n,)``.
        gradients: ``(n, d)``, NaN where missing.

    Returns:
        The coefficients, or ``None`` when there are fewer observations than the
        ``1 + 2d`` coefficients (a constant mean is then used).
    """
    n, d = x.shape
    finite = np.isfinite(gradients)
    n_grad = int(finite.sum())
    if n + n_grad < 1 + 2 * d + 1:
        return None
    rows = [np.hstack([np.ones((n, 1)), x, x * x])]
    y_spread = float(np.sqrt(np.mean((values - values.mean()) ** 2)))
    y_spread = y_spread if y_spread > 0.0 else 1.0
    targets = [values / y_spread]
    weights = [np.full(n, 1.0 / y_spread)]
    if n_grad:
        g = gradients[finite]
        g_spread = float(np.sqrt(np.mean(g * g)))
        g_spread = g_spread if g_spread > 0.0 else 1.0
        point, dim = np.nonzero(finite)
        block = np.zeros((n_grad, 1 + 2 * d))
        block[np.arange(n_grad), 1 + dim] = 1.0
        block[np.arange(n_grad), 1 + d + dim] = 2.0 * x[point, dim]
        rows.append(block)
        targets.append(g / g_spread)
        weights.append(np.full(n_grad, 1.0 / g_spread))
    w = np.concatenate(weights)
    a = np.vstack(rows) * w[:, None]
    lower = np.concatenate([[-np.inf], np.full(d, -np.inf), np.zeros(d)])
    result = scipy.optimize.lsq_linear(a, np.concatenate(targets), bounds=(lower, np.inf))
    if not result.success or not np.all(np.isfinite(result.x)):
        return None
    return float(result.x[0]), result.x[1 : 1 + d].copy(), result.x[1 + d :].copy()
