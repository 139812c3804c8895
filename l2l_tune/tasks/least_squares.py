"""The least-squares task distribution of the paper's Section 4 (TbT and TbV).

A task draws ``w*`` uniformly from the unit sphere, inputs ``x ~ N(0, I_d)`` and
labels ``y = ⟨w*, x⟩ + ξ`` with ``ξ ~ N(0, σ²)``. The inner optimizer runs ``t``
steps of full-batch GD from ``w_0 = 0`` on ``(1/2n) Σ (y − ⟨w, x⟩)²``; the
meta-loss is the training loss at ``w_t`` (train-by-train, Eqn 3) or the loss on
a held-out validation set (train-by-validation, Eqn 4), averaged over ``m`` tasks.

Everything is computed in closed form from each task's SVD ``X = U S Vᵀ``: with
``λ_j = s_j²/n``, ``q_j = 1 − ηλ_j`` and the minimum-norm least-squares solution
``β = S⁻¹Uᵀy`` (in V's basis), GD gives ``Vᵀw_t = (1 − q^t) ∘ β``, so

* training loss ``= (1/2n) (‖y_⊥‖² + Σ_j (Uᵀy)_j² q_j^{2t})``: the power sum of
  :mod:`l2l_tune._numerics`, evaluated in log space;
* validation loss ``= (1/2n_v) ‖e + M (β ∘ q^t)‖²`` with ``M = X_v V`` and ``e`` the
  validation residual of ``β``, stored as a QR-reduced factor.

An evaluation costs ``O(m·r)`` (TbT) or ``O(m·r·min(r, n_v))`` (TbV), ``r = min(n, d)``,
with no loop over the ``t`` GD steps.

Truncation (paper, footnote 3): once ``‖w_τ‖ ≥ 40σ`` for some ``τ ≤ t``, the run is
frozen at ``40σ·u`` with the fixed unit vector ``u = (1, …, 1)/√d``. A truncated
task's meta-loss is the loss at ``40σ·u`` and its derivative in ``η`` is 0 (the
frozen point does not depend on ``η``). Whether a task is truncated is decided by
a cheap bound on ``‖w_τ‖``; only tasks the bound cannot clear get an exact scan of
``‖w_τ‖`` over ``τ`` (a norm of an ``r``-vector per step, no products with data).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp

from .._numerics import log_abs_one_minus_product, power_sum
from .._validation import (
    check_array,
    check_choice,
    check_horizon,
    check_positive,
    check_step_size,
)
from .base import SPLITS

__all__ = ["LeastSquares", "LeastSquaresBatch", "LeastSquaresEvaluation", "TRUNCATION_RADIUS"]

FloatArray = NDArray[np.float64]

#: A run is frozen once ``‖w_τ‖ ≥ TRUNCATION_RADIUS·σ`` (paper, footnote 3).
TRUNCATION_RADIUS = 40.0

#: Largest noise level (and data magnitude) accepted: the labels, the squared 40σ radius,
#: ``XᵀX`` and the losses of a frozen run (``∝ (40σ)²·‖x‖²``) must stay finite in float64
#: (found by fuzzing: at ``σ ≈ 1e152`` they overflow to ``inf − inf = NaN``).
MAX_SIGMA = 1e100


def _check_sigma(sigma: Any) -> float:
    """``σ`` as a float in ``(0, MAX_SIGMA]``.

    Raises:
        ValueError: naming ``sigma`` otherwise.
    """
    value = check_positive(sigma, "sigma")
    if value > MAX_SIGMA:
        raise ValueError(
            f"sigma must be <= {MAX_SIGMA:g}, got {sigma!r}: larger noise overflows the "
            "losses and the 40σ truncation radius in float64"
        )
    return value


_SCAN_CHUNK = 512


@dataclass(frozen=True)
class LeastSquaresEvaluation:
    """Errors of GD with one step size on a batch of least-squares tasks.

    Attributes:
        eta: The step size evaluated.
        t: The number of GD steps.
        test_rmse: Per task, the population RMSE ``sqrt(‖w_t − w*‖² + σ²)``: the
            exact expectation over fresh samples of the same ``w*`` (Figs 2–3).
        sq_error: Per task, ``‖w_t − w*‖²`` (Theorems 5–6).
        train_rmse: Per task, ``sqrt(2 · training loss)``.
        truncated: Per task, whether the run was frozen by the 40σ rule.
    """

    eta: float
    t: int
    test_rmse: FloatArray
    sq_error: FloatArray
    train_rmse: FloatArray
    truncated: NDArray[np.bool_]

    def summary(self) -> dict[str, float]:
        """Means and ranges, as the paper's figures report them."""
        return {
            "eta": self.eta,
            "test_rmse": float(np.mean(self.test_rmse)),
            "test_rmse_min": float(np.min(self.test_rmse)),
            "test_rmse_max": float(np.max(self.test_rmse)),
            "train_rmse": float(np.mean(self.train_rmse)),
            "sq_error": float(np.mean(self.sq_error)),
            "truncated_fraction": float(np.mean(self.truncated)),
        }


class LeastSquares:
    """The task distribution of Section 4: ``w* ~ Unif(S^{d−1})``, ``y = ⟨w*, x⟩ + N(0, σ²)``.

    Args:
        d: Input dimension.
        sigma: Label noise level ``σ > 0``; also sets the truncation radius ``40σ``.

    Raises:
        ValueError: if ``d < 1`` or ``sigma`` is not a finite number ``> 0``.
    """

    def __init__(self, d: int, sigma: float = 1.0) -> None:
        self.d = check_horizon(d, "d")
        self.sigma = _check_sigma(sigma)

    def sample(
        self,
        m: int,
        n_train: int,
        n_valid: int = 0,
        seed: int | np.random.Generator | None = None,
    ) -> LeastSquaresBatch:
        """Draw ``m`` tasks with ``n_train`` training and ``n_valid`` validation samples.

        Each task draws ``w*``, then ``n_train + n_valid`` samples, the first
        ``n_train`` for training. The same ``seed`` with the same total therefore
        gives the same data, split differently: ``sample(m, 500, 0, s)`` (TbT) and
        ``sample(m, 250, 250, s)`` (TbV) compare the two meta-objectives on
        identical samples, as in the paper's Fig 2.

        Args:
            m: Number of tasks, ``≥ 1``.
            n_train: Training samples per task, ``≥ 1``.
            n_valid: Validation samples per task, ``≥ 0`` (needed for ``split="valid"``).
            seed: Seed or generator.

        Raises:
            ValueError: for ``m < 1``, ``n_train < 1`` or ``n_valid < 0``.
        """
        m = check_horizon(m, "m")
        n_train = check_horizon(n_train, "n_train")
        if n_valid != 0:
            n_valid = check_horizon(n_valid, "n_valid")
        builder = _BatchBuilder(self.d, self.sigma, n_train, n_valid, m)
        for X, y, w_star in self.draw_tasks(m, n_train + n_valid, seed):
            builder.add(X[:n_train], y[:n_train], X[n_train:], y[n_train:], w_star)
        return builder.build()

    def draw_tasks(
        self, m: int, n: int, seed: int | np.random.Generator | None = None
    ) -> Iterator[tuple[FloatArray, FloatArray, FloatArray]]:
        """The raw data of ``m`` tasks, drawn as :meth:`sample` draws them (Section 4).

        Per task: ``w* = normal(d)`` normalised, ``X = normal((n, d))`` and
        ``y = X w* + σ·normal(n)``. :meth:`sample` with ``n_train + n_valid = n`` and the same
        ``seed`` splits exactly these samples.

        Args:
            m: Number of tasks, ``≥ 1``.
            n: Samples per task, ``≥ 1``.
            seed: Seed or generator.

        Returns:
            An iterator of ``(X, y, w*)``, one task at a time (nothing is kept).

        Raises:
            ValueError: for ``m < 1`` or ``n < 1``.
        """
        m = check_horizon(m, "m")
        n = check_horizon(n, "n")
        rng = np.random.default_rng(seed)
        return (self._draw_task(rng, n) for _ in range(m))

    def _draw_task(
        self, rng: np.random.Generator, n: int
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        w_star = rng.standard_normal(self.d)
        w_star /= np.linalg.norm(w_star)
        X = rng.standard_normal((n, self.d))
        y = X @ w_star + self.sigma * rng.standard_normal(n)
        return X, y, w_star

    @staticmethod
    def from_data(
        X: ArrayLike,
        y: ArrayLike,
        X_valid: ArrayLike | None = None,
        y_valid: ArrayLike | None = None,
        sigma: float = 1.0,
        w_star: ArrayLike | None = None,
    ) -> LeastSquaresBatch:
        """Build a batch from explicit data: one task ``(n, d)`` or ``m`` tasks ``(m, n, d)``.

        Args:
            X: Training inputs, ``(n, d)`` or ``(m, n, d)``.
            y: Training labels, ``(n,)`` or ``(m, n)``.
            X_valid: Optional validation inputs, ``(n_v, d)`` or ``(m, n_v, d)``.
            y_valid: Validation labels matching ``X_valid``.
            sigma: Noise scale used for the truncation radius ``40σ``.
            w_star: Optional ground truth, ``(d,)`` or ``(m, d)``, used by
                :meth:`LeastSquaresBatch.evaluate`.

        Raises:
            ValueError: on NaN/inf entries or entries beyond ``1e100`` in magnitude (their
                squares overflow), mismatched shapes, or a validation set given without
                its labels.
        """
        sigma = _check_sigma(sigma)
        X_arr = check_array(X, "X", ndim=(2, 3))
        single = X_arr.ndim == 2
        X_arr = X_arr[None] if single else X_arr
        m, n, d = X_arr.shape
        y_arr = check_array(y, "y", ndim=(1,) if single else (2,))
        y_arr = y_arr[None] if single else y_arr
        if y_arr.shape != (m, n):
            raise ValueError(
                f"y must hold one label per row of X ({n} per task), got shape {np.shape(y)}"
            )
        if (X_valid is None) != (y_valid is None):
            raise ValueError("X_valid and y_valid must be given together")
        n_valid = 0
        Xv_arr = np.zeros((m, 0, d))
        yv_arr = np.zeros((m, 0))
        if X_valid is not None and y_valid is not None:
            Xv_arr = check_array(X_valid, "X_valid", ndim=(2,) if single else (3,))
            Xv_arr = Xv_arr[None] if single else Xv_arr
            n_valid = Xv_arr.shape[1]
            if Xv_arr.shape != (m, n_valid, d):
                raise ValueError(
                    f"X_valid must have {d} columns and {m} tasks to match X, got shape "
                    f"{Xv_arr.shape[1:] if single else Xv_arr.shape}"
                )
            yv_arr = check_array(y_valid, "y_valid", ndim=(1,) if single else (2,))
            yv_arr = yv_arr[None] if single else yv_arr
            if yv_arr.shape != (m, n_valid):
                raise ValueError(
                    f"y_valid must have one label per row of X_valid, got shape {yv_arr.shape}"
                )
        ws_arr = None
        if w_star is not None:
            ws_arr = check_array(w_star, "w_star", ndim=(1,) if single else (2,))
            ws_arr = ws_arr[None] if single else ws_arr
            if ws_arr.shape != (m, d):
                raise ValueError(
                    f"w_star must have shape {(m, d)[1 if single else 0 :]}, got {ws_arr.shape}"
                )
        for name, array in (("X", X_arr), ("y", y_arr), ("X_valid", Xv_arr), ("y_valid", yv_arr)):
            largest = float(np.max(np.abs(array))) if array.size else 0.0
            if largest > MAX_SIGMA:
                raise ValueError(
                    f"{name} must have entries of magnitude <= {MAX_SIGMA:g}, got {largest:g}: "
                    "XᵀX and the losses would overflow float64; rescale the data"
                )
        builder = _BatchBuilder(d, sigma, n, n_valid, m)
        for i in range(m):
            builder.add(
                X_arr[i], y_arr[i], Xv_arr[i], yv_arr[i], None if ws_arr is None else ws_arr[i]
            )
        return builder.build()

    def evaluate(
        self,
        eta: float,
        t: int,
        n_train: int,
        m: int = 10,
        seed: int | np.random.Generator | None = None,
    ) -> LeastSquaresEvaluation:
        """Test a step size on ``m`` new tasks trained on ``n_train`` samples each.

        This is the paper's test protocol (Figs 2–3): the chosen ``η`` is applied to
        all ``n`` samples of a fresh task (for TbV, ``n = n_train + n_valid`` of the
        meta-training) and the error measured against the task's ``w*``.

        Raises:
            ValueError: as :meth:`sample` and :meth:`LeastSquaresBatch.evaluate`.
        """
        return self.sample(m, n_train, 0, seed=seed).evaluate(eta, t)

    def __repr__(self) -> str:
        return f"LeastSquares(d={self.d}, sigma={self.sigma:g})"


def _thin_svd(X: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Thin SVD ``X = U diag(s) Vt``, via the smaller Gram matrix when that is accurate.

    ``eigh`` of the ``min(n, d)``-square Gram matrix is about 5x faster than
    LAPACK's SVD at the paper's size (500 x 1000). Squaring ``X`` squares its
    condition number, so when ``s_min² < 1e-4 · s_max²`` (eigenvalue errors could
    then exceed ~1e-12 relative) the exact SVD is used instead.
    """
    n, d = X.shape
    gram = X @ X.T if n <= d else X.T @ X
    evals, evecs = np.linalg.eigh(gram)
    evals, evecs = evals[::-1], evecs[:, ::-1]
    if not evals[-1] > 1e-4 * evals[0]:
        U, s, Vt = np.linalg.svd(X, full_matrices=False)
        return U, s, Vt
    s = np.sqrt(evals)
    if n <= d:
        return evecs, s, (evecs.T @ X) / s[:, None]
    return (X @ evecs) / s, s, np.ascontiguousarray(evecs.T)


class _BatchBuilder:
    """Accumulates the spectral data of tasks one at a time (the raw data is dropped)."""

    def __init__(self, d: int, sigma: float, n_train: int, n_valid: int, m: int) -> None:
        self.d, self.sigma, self.n_train, self.n_valid, self.m = d, sigma, n_train, n_valid, m
        self.rank = min(n_train, d)
        self.parts: dict[str, list[Any]] = {}
        self.u = np.full(d, 1.0 / math.sqrt(d))

    def _append(self, **values: Any) -> None:
        for key, value in values.items():
            self.parts.setdefault(key, []).append(value)

    def add(
        self,
        X: FloatArray,
        y: FloatArray,
        X_valid: FloatArray,
        y_valid: FloatArray,
        w_star: FloatArray | None,
    ) -> None:
        n = self.n_train
        U, s, Vt = _thin_svd(X)
        keep = s > max(X.shape) * np.finfo(float).eps * (s[0] if s.size else 0.0)
        proj = U.T @ y
        resid = y - U[:, keep] @ proj[keep]
        lam = np.where(keep, s**2 / n, 0.0)
        beta = np.where(keep, proj / np.where(keep, s, 1.0), 0.0)
        radius = TRUNCATION_RADIUS * self.sigma
        frozen_train = float(np.sum((y - radius * (X @ self.u)) ** 2) / (2 * n))
        self._append(
            lam=lam,
            proj_sq=proj**2 * keep,
            resid_sq=float(resid @ resid),
            beta=beta,
            frozen_train=frozen_train,
        )
        if self.n_valid:
            M = X_valid @ Vt.T  # (n_v, r)
            e = y_valid - M @ beta
            if self.n_valid > M.shape[1]:
                Q, R = np.linalg.qr(M)
                h = Q.T @ e
                const = max(float(e @ e - h @ h), 0.0)
            else:
                R, h, const = M, e, 0.0
            frozen_valid = float(
                np.sum((y_valid - radius * (X_valid @ self.u)) ** 2) / (2 * self.n_valid)
            )
            self._append(valid_R=R, valid_h=h, valid_const=const, frozen_valid=frozen_valid)
        if w_star is not None:
            self._append(v_w=Vt @ w_star, u_w=float(self.u @ w_star), w_sq=float(w_star @ w_star))

    def build(self) -> LeastSquaresBatch:
        data = {key: np.asarray(value) for key, value in self.parts.items()}
        return LeastSquaresBatch(
            sigma=self.sigma,
            d=self.d,
            n_train=self.n_train,
            n_valid=self.n_valid,
            spectral=data,
        )


class LeastSquaresBatch:
    """``m`` least-squares tasks, held as spectral data (built by :class:`LeastSquares`).

    The meta-objective ``F̂(η) = (1/m) Σ_i Δ(η, P_i)`` (Eqns 3–4) and its exact
    derivative are computed in closed form; see the module docstring.

    Attributes:
        m: Number of tasks.
        d: Input dimension.
        n_train: Training samples per task.
        n_valid: Validation samples per task (0: only ``split="train"``).
        sigma: Noise level (sets the truncation radius ``40σ``).
        exact_meta_objective: ``True``: a deterministic closed form (Eqns 3–4); the
            40σ truncation makes jumps, which the bracketing search reads from values.
    """

    exact_meta_objective = True

    def __init__(
        self, *, sigma: float, d: int, n_train: int, n_valid: int, spectral: dict[str, FloatArray]
    ) -> None:
        self.sigma = sigma
        self.d = d
        self.n_train = n_train
        self.n_valid = n_valid
        self._s = spectral
        self.m = int(spectral["lam"].shape[0])
        self.has_truth = "v_w" in spectral
        with np.errstate(divide="ignore"):
            self._train_log_coef = np.log(
                np.concatenate([spectral["resid_sq"][:, None], spectral["proj_sq"]], axis=1)
                / (2 * n_train)
            )
            self._log_abs_beta = np.log(np.abs(spectral["beta"]))
        self._train_lam = np.concatenate([np.zeros((self.m, 1)), spectral["lam"]], axis=1)

    # ------------------------------------------------------------------ helpers
    @property
    def eigenvalues(self) -> FloatArray:
        """``(m, r)``: eigenvalues ``s_j²/n`` of each task's ``XᵀX/n``."""
        return np.asarray(self._s["lam"])

    def step_size_scale(self) -> float:
        """``1/L`` with ``L`` the largest eigenvalue over all tasks."""
        return 1.0 / float(np.max(self._s["lam"]))

    def _check(self, eta: Any, t: Any, split: str) -> tuple[float, int]:
        eta = check_step_size(eta)
        t = check_horizon(t)
        check_choice(split, "split", SPLITS)
        if split == "valid" and not self.n_valid:
            raise ValueError(
                "split='valid' needs validation samples: sample the batch with n_valid > 0 "
                "or pass X_valid and y_valid"
            )
        return eta, t

    def _scaled_powers(self, eta: float, t: int, power: int) -> tuple[FloatArray, FloatArray]:
        """``β ∘ q^power`` and ``log|q|`` (with the exact sign), overflow-safe."""
        lam = self._s["lam"]
        q_sign = np.sign(1.0 - eta * lam)
        log_abs_q = log_abs_one_minus_product(eta, lam)
        with np.errstate(all="ignore"):
            log_mag = self._log_abs_beta + power * log_abs_q
            mag = np.where(np.isnan(log_mag), 0.0, np.exp(np.minimum(log_mag, 709.0)))
            sign = np.sign(self._s["beta"]) * (q_sign if power % 2 else 1.0)
        return sign * mag, log_abs_q

    def truncated(self, eta: float, t: int) -> NDArray[np.bool_]:
        """Which tasks the 40σ rule freezes at step size ``eta`` within ``t`` steps.

        Raises:
            ValueError: for ``eta < 0`` or NaN, or ``t < 1``.
        """
        eta = check_step_size(eta)
        t = check_horizon(t)
        radius_sq = (TRUNCATION_RADIUS * self.sigma) ** 2
        lam = self._s["lam"]
        beta = self._s["beta"]
        q = 1.0 - eta * lam
        abs_q = np.abs(q)
        with np.errstate(over="ignore"):
            # |1 − q^τ| ≤ 1 (q ∈ [0,1]), ≤ 1 + |q| (q ∈ [−1,0)), ≤ 1 + |q|^t (|q| > 1).
            bound = np.where(q >= 0.0, np.where(abs_q <= 1.0, 1.0, 1.0 + abs_q**t), 1.0 + abs_q)
            bound = np.where((q < 0.0) & (abs_q > 1.0), 1.0 + abs_q**t, bound)
            bound_sq = np.sum((beta * bound) ** 2, axis=1)
        out = np.zeros(self.m, dtype=bool)
        for i in np.flatnonzero(~(bound_sq < radius_sq)):
            out[i] = self._scan_truncation(eta, t, int(i), radius_sq)
        return out

    def _scan_truncation(self, eta: float, t: int, i: int, radius_sq: float) -> bool:
        lam = self._s["lam"][i]
        beta = self._s["beta"][i]
        active = beta != 0.0
        q = 1.0 - eta * lam[active]
        b = beta[active]
        log_abs_q = np.log(np.abs(q)) if np.all(q != 0.0) else None
        for start in range(1, t + 1, _SCAN_CHUNK):
            taus = np.arange(start, min(start + _SCAN_CHUNK, t + 1))[:, None]
            with np.errstate(over="ignore", invalid="ignore"):
                if log_abs_q is None:
                    powers = q[None, :] ** taus
                else:
                    powers = np.sign(q) ** (taus % 2) * np.exp(np.minimum(taus * log_abs_q, 709.0))
                norms_sq = np.sum((b * (1.0 - powers)) ** 2, axis=1)
            if np.any(~(norms_sq < radius_sq)):
                return True
        return False

    # ------------------------------------------------------------------ per-task losses
    def _train_losses(
        self, eta: float, t: int, frozen: NDArray[np.bool_]
    ) -> tuple[FloatArray, FloatArray]:
        """Per task: ``log Δ_i`` and ``Δ_i'/Δ_i`` of the training loss."""
        result = power_sum(self._train_log_coef, self._train_lam, eta, 2 * t)
        log_loss = np.where(frozen, np.log(self._s["frozen_train"]), result.log_value)
        dlog = np.where(frozen, 0.0, result.log_derivative)
        return log_loss, dlog

    def _valid_losses(
        self, eta: float, t: int, frozen: NDArray[np.bool_]
    ) -> tuple[FloatArray, FloatArray]:
        """Per task: ``log Δ_i`` and ``Δ_i'/Δ_i`` of the validation loss."""
        lam = self._s["lam"]
        R = self._s["valid_R"]
        v, _ = self._scaled_powers(eta, t, t)  # β ∘ q^t
        v = np.where(frozen[:, None], 0.0, v)
        # dv/dη = −t λ β q^{t−1}
        if t == 1:
            dv = -lam * self._s["beta"]
        else:
            dv_base, _ = self._scaled_powers(eta, t, t - 1)
            # Frozen tasks' powers may be huge; they are discarded, never multiplied.
            dv_base = np.where(frozen[:, None], 0.0, dv_base)
            dv = -t * lam * dv_base
        dv = np.where(frozen[:, None], 0.0, dv)
        resid = self._s["valid_h"] + np.einsum("mkr,mr->mk", R, v)
        n_v = self.n_valid
        loss = (self._s["valid_const"] + np.sum(resid**2, axis=1)) / (2 * n_v)
        dloss = np.sum(resid * np.einsum("mkr,mr->mk", R, dv), axis=1) / n_v
        loss = np.where(frozen, self._s["frozen_valid"], loss)
        dloss = np.where(frozen, 0.0, dloss)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_loss = np.log(loss)
            dlog = np.where(loss > 0.0, dloss / loss, 0.0)
        return log_loss, dlog

    # ------------------------------------------------------------------ meta-objective
    def value_and_gradient(
        self, eta: float, t: int, *, split: str = "train", log: bool = False
    ) -> tuple[float, float]:
        """The averaged meta-loss ``F̂(η)`` (Eqn 3 or 4) and its exact derivative.

        Args:
            eta: Step size ``η ≥ 0``.
            t: GD steps, ``≥ 1``.
            split: ``"train"`` (train-by-train, Eqn 3) or ``"valid"`` (train-by-validation, Eqn 4).
            log: Return ``(1/t)·log F̂(η)`` and its derivative instead of ``F̂`` (same minimiser).

        Returns:
            ``(value, derivative)``, both finite for every ``η ≥ 0``.

        Raises:
            ValueError: for ``eta < 0`` or NaN, ``t < 1``, an unknown ``split``, or
                ``split="valid"`` on a batch without validation samples.
        """
        eta, t = self._check(eta, t, split)
        frozen = self.truncated(eta, t)
        if split == "train":
            log_loss, dlog = self._train_losses(eta, t, frozen)
        else:
            log_loss, dlog = self._valid_losses(eta, t, frozen)
        log_mean = float(logsumexp(log_loss)) - math.log(self.m)
        if log_mean == -math.inf:
            return (-math.inf if log else 0.0), 0.0
        weights = np.exp(log_loss - math.log(self.m) - log_mean)  # Δ_i / (m F̂)
        dlog_mean = float(np.sum(weights * dlog))  # F̂'/F̂
        if log:
            return log_mean / t, dlog_mean / t
        value = math.exp(log_mean)
        return value, value * dlog_mean

    def meta_objective(
        self, eta: float, t: int, *, split: str = "train", log: bool = False
    ) -> float:
        """``F̂(η)``, or ``(1/t)·log F̂(η)`` with ``log=True``; see :meth:`value_and_gradient`."""
        return self.value_and_gradient(eta, t, split=split, log=log)[0]

    def meta_gradient(
        self, eta: float, t: int, *, split: str = "train", log: bool = False
    ) -> float:
        """The exact derivative of :meth:`meta_objective` in ``η``.

        See :meth:`value_and_gradient` for the arguments and errors.
        """
        return self.value_and_gradient(eta, t, split=split, log=log)[1]

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, eta: float, t: int) -> LeastSquaresEvaluation:
        """Errors of ``t`` GD steps at ``eta`` on each task of this batch (training samples only).

        Raises:
            ValueError: for bad ``eta``/``t``, or a batch built without ``w_star``.
        """
        eta = check_step_size(eta)
        t = check_horizon(t)
        if not self.has_truth:
            raise ValueError(
                "evaluate needs the ground truth: pass w_star to LeastSquares.from_data"
            )
        frozen = self.truncated(eta, t)
        v, _ = self._scaled_powers(eta, t, t)
        v = np.where(frozen[:, None], 0.0, v)  # frozen tasks use 40σ·u below
        z = self._s["beta"] - v  # Vᵀ w_t
        radius = TRUNCATION_RADIUS * self.sigma
        sq_error = np.sum(z**2, axis=1) - 2 * np.sum(z * self._s["v_w"], axis=1) + self._s["w_sq"]
        sq_error_frozen = radius**2 - 2 * radius * self._s["u_w"] + self._s["w_sq"]
        sq_error = np.maximum(np.where(frozen, sq_error_frozen, sq_error), 0.0)
        log_train, _ = self._train_losses(eta, t, frozen)
        return LeastSquaresEvaluation(
            eta=eta,
            t=t,
            test_rmse=np.sqrt(sq_error + self.sigma**2),
            sq_error=sq_error,
            train_rmse=np.sqrt(2.0 * np.exp(log_train)),
            truncated=frozen,
        )

    def __repr__(self) -> str:
        return (
            f"LeastSquaresBatch(m={self.m}, d={self.d}, n_train={self.n_train}, "
            f"n_valid={self.n_valid}, sigma={self.sigma:g})"
        )
