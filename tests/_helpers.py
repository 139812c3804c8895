"""Independent reference implementations the tests compare the library against.

Nothing here imports the library's numerics: the quadratic reference is a
50-digit mpmath evaluation of the closed forms of the paper's Section 3, and the
least-squares reference is a plain GD loop (with the 40σ truncation of
footnote 3 and the forward-mode tangent ``dw/dη``) on raw data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mpmath as mp
import numpy as np
from numpy.typing import NDArray

from l2l_tune import Quadratic
from l2l_tune.meta import Hyperparameter, HyperparameterSpace

FloatArray = NDArray[np.float64]

#: Working precision of the mpmath references (decimal digits).
DPS = 50

FLOAT_MAX = mp.mpf(float(np.finfo(np.float64).max))


# ---------------------------------------------------------------------- quadratic
@dataclass(frozen=True)
class QuadraticReference:
    """Exact (50-digit) values of the quadratic's meta-objective at one ``(η, t)``.

    Attributes:
        f: ``f(w_t) = ½ Σ c_i² λ_i (1 − ηλ_i)^{2t}``.
        df: ``f'(η) = −t Σ c_i² λ_i² (1 − ηλ_i)^{2t−1}``.
        df_abs: ``t Σ c_i² λ_i² |1 − ηλ_i|^{2t−1}`` (sum of the terms' magnitudes).
        t: The horizon.
    """

    f: mp.mpf
    df: mp.mpf
    df_abs: mp.mpf
    t: int

    @property
    def log_value(self) -> mp.mpf:
        """``(1/t)·log f``."""
        return mp.log(self.f) / self.t

    @property
    def log_grad(self) -> mp.mpf:
        """``(1/t)·f'/f``."""
        return self.df / self.f / self.t

    @property
    def log_grad_scale(self) -> mp.mpf:
        """Sum of the magnitudes of the terms of ``(1/t)·f'/f``."""
        return self.df_abs / self.f / self.t


def quadratic_reference(q: Quadratic, eta: float, t: int) -> QuadraticReference:
    """Evaluate the closed forms in 50-digit arithmetic from ``q``'s float data.

    The float eigenvalues, coefficients and ``eta`` are converted exactly, so the
    reference is the exact value for the same inputs the library sees.
    """
    with mp.workdps(DPS):
        e = mp.mpf(float(eta))
        f = mp.mpf(0)
        df = mp.mpf(0)
        df_abs = mp.mpf(0)
        for c_f, lam_f in zip(q.coefficients, q.eigenvalues, strict=True):
            c = mp.mpf(float(c_f))
            lam = mp.mpf(float(lam_f))
            factor = 1 - e * lam
            f += c**2 * lam * factor ** (2 * t) / 2
            term = t * c**2 * lam**2 * factor ** (2 * t - 1)
            df -= term
            df_abs += abs(term)
        return QuadraticReference(f=+f, df=+df, df_abs=+df_abs, t=t)


def quadratic_root(q: Quadratic, t: int, guess: float) -> mp.mpf:
    """The zero of the 50-digit log meta-gradient ``Σc²λ²q^{2t−1} / Σc²λq^{2t}`` near ``guess``."""
    with mp.workdps(DPS):
        lam = [mp.mpf(float(x)) for x in q.eigenvalues]
        c2 = [mp.mpf(float(x)) ** 2 for x in q.coefficients]

        def ratio(e: mp.mpf) -> mp.mpf:
            num = mp.fsum(
                ci * li**2 * (1 - e * li) ** (2 * t - 1) for ci, li in zip(c2, lam, strict=True)
            )
            den = mp.fsum(ci * li * (1 - e * li) ** (2 * t) for ci, li in zip(c2, lam, strict=True))
            return num / den

        g = mp.mpf(guess)
        bracket = (g * (1 - mp.mpf("1e-6")), g * (1 + mp.mpf("1e-6")))
        return +mp.findroot(ratio, bracket, solver="anderson")


def assert_close_mp(actual: float, expected: mp.mpf, scale: mp.mpf, rtol: float, what: str) -> None:
    """``|actual − expected| ≤ rtol · scale`` (plus one subnormal ulp), compared in mpmath."""
    with mp.workdps(DPS):
        err = abs(mp.mpf(actual) - expected)
        bound = rtol * abs(scale) + mp.mpf("1e-323")
        assert err <= bound, (
            f"{what}: got {actual!r}, expected {mp.nstr(expected, 20)}, "
            f"error {mp.nstr(err, 5)} > {mp.nstr(bound, 5)}"
        )


def assert_float_of_mp(
    actual: float, expected: mp.mpf, scale: mp.mpf, rtol: float, what: str
) -> None:
    """Check a float64 result against an exact value that may lie outside float64's range.

    Past the largest float the result must be ``±inf`` with the right sign; below
    half the smallest subnormal it must be (signed) zero; in between it must agree
    to ``rtol`` relative to ``scale``.
    """
    with mp.workdps(DPS):
        if abs(expected) > FLOAT_MAX:
            assert math.isinf(actual) and (actual > 0) == (expected > 0), (
                f"{what}: expected {'+' if expected > 0 else '-'}inf "
                f"(exact {mp.nstr(expected, 10)}), got {actual!r}"
            )
        elif abs(expected) < mp.mpf("1e-325"):
            assert actual == 0.0, (
                f"{what}: expected 0.0 (exact {mp.nstr(expected, 10)}), got {actual!r}"
            )
        else:
            assert math.isfinite(actual), f"{what}: got {actual!r}, exact {mp.nstr(expected, 20)}"
            assert_close_mp(actual, expected, scale, rtol, what)


# ---------------------------------------------------------------------- least squares
@dataclass(frozen=True)
class GDRun:
    """A plain GD run from 0 with its tangent in η."""

    w: FloatArray
    dw: FloatArray
    truncated: bool
    margin: float  # min over τ of |‖w_τ‖ − 40σ| / 40σ: how close the truncation test came


def gd_with_tangent(X: FloatArray, y: FloatArray, eta: float, t: int, sigma: float) -> GDRun:
    """``t`` steps of full-batch GD on ``(1/2n)‖y − Xw‖²`` from ``w = 0``, forward-mode in η.

    Footnote 3 of the paper: once ``‖w_τ‖ ≥ 40σ`` the run is frozen at ``40σ·u``
    with ``u = (1, …, 1)/√d``, which does not depend on η (tangent 0).
    """
    n, d = X.shape
    w = np.zeros(d)
    dw = np.zeros(d)
    radius = 40.0 * sigma
    u = np.ones(d) / math.sqrt(d)
    margin = math.inf
    for _ in range(t):
        grad = X.T @ (X @ w - y) / n
        dgrad = X.T @ (X @ dw) / n
        w, dw = w - eta * grad, dw - grad - eta * dgrad
        norm = float(np.linalg.norm(w))
        margin = min(margin, abs(norm - radius) / radius)
        if norm >= radius:
            return GDRun(radius * u, np.zeros(d), True, margin)
    return GDRun(w, dw, False, margin)


def loss_and_tangent(X: FloatArray, y: FloatArray, run: GDRun) -> tuple[float, float]:
    """``(1/2n)‖y − X w‖²`` and its derivative in η along the run's tangent."""
    r = y - X @ run.w
    n = len(y)
    return float(r @ r / (2 * n)), float(-(r @ (X @ run.dw)) / n)


@dataclass(frozen=True)
class TaskData:
    """Raw data of one least-squares task."""

    X: FloatArray
    y: FloatArray
    X_valid: FloatArray
    y_valid: FloatArray
    w_star: FloatArray


def draw_tasks(
    d: int, sigma: float, m: int, n_train: int, n_valid: int, seed: int
) -> list[TaskData]:
    """The draws :meth:`LeastSquares.sample` documents: per task ``w*``, then all samples."""
    rng = np.random.default_rng(seed)
    tasks = []
    for _ in range(m):
        w_star = rng.standard_normal(d)
        w_star /= np.linalg.norm(w_star)
        X = rng.standard_normal((n_train + n_valid, d))
        y = X @ w_star + sigma * rng.standard_normal(n_train + n_valid)
        tasks.append(TaskData(X[:n_train], y[:n_train], X[n_train:], y[n_train:], w_star))
    return tasks


# ---------------------------------------------------------------------- hyperparameter vectors
SPACE = HyperparameterSpace(
    (
        Hyperparameter("lr", 1e-5, 1.0),
        Hyperparameter("weight_decay", 1e-6, 1e-1),
        Hyperparameter("momentum", 0.0, 0.99, log=False),
    )
)
OPTIMUM = {"lr": 0.03, "weight_decay": 1e-3, "momentum": 0.8}


def bowl(values: dict[str, float]) -> tuple[float, dict[str, float]]:
    """A bowl in the internal scale: (log lr − log 0.03)² + ½(log wd − log 1e-3)² + 4(μ − 0.8)²,
    and its gradient in the hyperparameters' own units."""
    a = math.log(values["lr"] / OPTIMUM["lr"])
    b = math.log(values["weight_decay"] / OPTIMUM["weight_decay"])
    c = values["momentum"] - OPTIMUM["momentum"]
    value = a * a + 0.5 * b * b + 4 * c * c
    grads = {
        "lr": 2 * a / values["lr"],
        "weight_decay": b / values["weight_decay"],
        "momentum": 8 * c,
    }
    return value, grads
