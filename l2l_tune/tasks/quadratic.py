"""The quadratic task of the paper's Section 3: GD on ``f(w) = ½ wᵀHw``.

With ``H = Σ_i λ_i u_i u_iᵀ`` and ``c_i = ⟨w0, u_i⟩``, ``t`` steps of GD at step
size ``η`` give ``w_t = (I − ηH)^t w0`` and

    f(w_t) = ½ Σ_i c_i² λ_i (1 − ηλ_i)^{2t}.

The plain meta-objective ``f(w_t)`` has a meta-gradient that vanishes or explodes
exponentially in ``t`` (Theorem 3); the log meta-objective ``(1/t)·log f(w_t)``
has a polynomially bounded one (Theorem 4, Eqn 1), which backpropagation
nevertheless computes as a ratio of exponentially large or small numbers
(Corollary 1). :meth:`Quadratic.meta_gradient` computes it stably, in H's
eigenbasis and in log space (Eqn 2), at a cost independent of ``t``; the naive
unrolled autodiff is kept as ``method="backprop"`` for contrast.

Heavy-ball momentum (``torch.optim.SGD(lr=η, momentum=β)``) extends the closed
form: in H's eigenbasis each eigen-mode is a 2×2 linear recursion, whose
``t``-th power :meth:`Quadratic.value_and_gradients` computes by repeated
squaring, with its derivatives in ``η`` and ``β`` and a log scale per mode, at a
cost ``O(d log t)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import brentq

from .._numerics import power_sum, two_product, two_sum
from .._validation import check_array, check_choice, check_horizon, check_step_size
from ..meta.vector import Hyperparameter, HyperparameterSpace

__all__ = ["Quadratic"]

_METHODS = ("stable", "backprop")
_VARIANTS = ("paper", "authors")
#: The hyperparameters of heavy-ball GD that :meth:`Quadratic.value_and_gradients` accepts.
_HEAVY_BALL_NAMES = ("lr", "momentum")
_LN2 = math.log(2.0)


def _signed_exp(log_abs: float, sign: float) -> float:
    """``sign · exp(log_abs)``, saturating to ``±inf`` or ``0`` past float64's range."""
    if sign == 0.0 or log_abs == -math.inf:
        return 0.0
    if log_abs > 709.782712893384:  # log(float64 max)
        return math.copysign(math.inf, sign)
    return math.copysign(math.exp(log_abs), sign)


class Quadratic:
    """GD on the quadratic ``f(w) = ½ wᵀHw`` from ``w0`` (paper, Section 3).

    Args:
        H: Symmetric positive-definite ``(d, d)`` matrix.
        w0: Starting point, shape ``(d,)``; it must not be zero.

    Raises:
        ValueError: if ``H`` is not a finite square symmetric positive-definite
            matrix, or ``w0`` is not a finite nonzero vector of matching length.

    Attributes:
        H: The matrix, as a float64 array.
        w0: The starting point.
        eigenvalues: ``λ_1 ≤ … ≤ λ_d`` of ``H`` (ascending).
        eigenvectors: The matching orthonormal eigenvectors, as columns.
        coefficients: ``c_i = ⟨w0, u_i⟩``.
        exact_meta_objective: ``True``: deterministic closed form, Claim 1 holds.
    """

    exact_meta_objective = True

    def __init__(self, H: ArrayLike, w0: ArrayLike) -> None:
        H_arr = check_array(H, "H", ndim=(2,))
        if H_arr.shape[0] != H_arr.shape[1]:
            raise ValueError(f"H must be a square matrix, got shape {H_arr.shape}")
        scale = float(np.max(np.abs(H_arr)))
        if not np.allclose(H_arr, H_arr.T, rtol=0.0, atol=1e-12 * max(scale, 1e-300)):
            raise ValueError("H must be symmetric (H == H.T up to rounding)")
        w0_arr = check_array(w0, "w0", ndim=(1,))
        if w0_arr.shape[0] != H_arr.shape[0]:
            raise ValueError(
                f"w0 must have length d = {H_arr.shape[0]} to match H, got {w0_arr.shape[0]}"
            )
        H_sym = 0.5 * (H_arr + H_arr.T)
        eigenvalues, eigenvectors = np.linalg.eigh(H_sym)
        if eigenvalues[0] <= 0.0:
            raise ValueError(
                f"H must be positive definite; its smallest eigenvalue is {eigenvalues[0]:.3g}"
            )
        coefficients = eigenvectors.T @ w0_arr
        if not np.any(coefficients != 0.0):
            raise ValueError("w0 must be a nonzero vector")
        self.H = H_sym
        self.w0 = w0_arr
        self.eigenvalues = eigenvalues
        self.eigenvectors = eigenvectors
        self.coefficients = coefficients
        with np.errstate(divide="ignore"):
            # log of ½ c_i² λ_i: the weights of the power sum f(w_t) (Eqn 1).
            self._log_weights = (
                math.log(0.5) + 2.0 * np.log(np.abs(coefficients)) + np.log(eigenvalues)
            )

    # ------------------------------------------------------------------ construction
    @classmethod
    def random(
        cls,
        d: int = 20,
        seed: int | np.random.Generator | None = None,
        *,
        variant: Literal["paper", "authors"] = "paper",
    ) -> Quadratic:
        """A random instance as in the paper's experiments (Section 5, Fig 1).

        Args:
            d: Dimension.
            seed: Seed or generator for reproducibility.
            variant: ``"paper"`` (default) follows the text: ``H = XXᵀ`` with a
                Gaussian ``X ∈ R^{d×2d}`` and ``w0`` uniform on the unit sphere
                (footnote 2: then ``α`` and ``L − α`` are ``Ω(d)``).
                ``"authors"`` follows the authors' released code: ``X ∈ R^{d×d}``
                and a standard Gaussian ``w0`` (``L ≈ 60–70`` and ``η* ≈ 0.03`` at
                ``d = 20``, ``t = 80``).

        Raises:
            ValueError: if ``d < 1`` or ``variant`` is unknown.
        """
        d = check_horizon(d, "d")
        check_choice(variant, "variant", _VARIANTS)
        rng = np.random.default_rng(seed)
        if variant == "paper":
            X = rng.standard_normal((d, 2 * d))
            w0 = rng.standard_normal(d)
            w0 /= np.linalg.norm(w0)
        else:
            X = rng.standard_normal((d, d))
            w0 = rng.standard_normal(d)
        return cls(X @ X.T, w0)

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        """The dimension ``d``."""
        return int(self.w0.shape[0])

    @property
    def smoothness(self) -> float:
        """``L = λ_max(H)``."""
        return float(self.eigenvalues[-1])

    @property
    def strong_convexity(self) -> float:
        """``α = λ_min(H)``."""
        return float(self.eigenvalues[0])

    @property
    def c_min(self) -> float:
        """``min(|c_1|, |c_d|)`` of Theorem 4 (components of ``w0`` on the extreme eigenvectors)."""
        return float(min(abs(self.coefficients[0]), abs(self.coefficients[-1])))

    def step_size_scale(self) -> float:
        """``1/L``, the natural scale of the step size."""
        return 1.0 / self.smoothness

    def loss(self, w: ArrayLike) -> float:
        """``f(w) = ½ wᵀHw``."""
        w_arr = np.asarray(w, dtype=np.float64)
        return float(0.5 * w_arr @ (self.H @ w_arr))

    def iterate(self, eta: float, t: int) -> NDArray[np.float64]:
        """``w_t = (I − ηH)^t w0``, computed in the eigenbasis (entries may overflow to inf)."""
        eta = check_step_size(eta)
        t = check_horizon(t)
        with np.errstate(over="ignore", invalid="ignore"):
            factors = (1.0 - eta * self.eigenvalues) ** t
            return np.asarray(self.eigenvectors @ (factors * self.coefficients))

    # ------------------------------------------------------------------ meta-objective
    def _check_scale(self, eta: float, name: str) -> float:
        """``eta`` itself, refused when ``η·L`` overflows float64 (the closed forms would
        read a step that large as landing on the minimiser: value 0)."""
        if not math.isfinite(eta * self.smoothness):
            raise ValueError(
                f"{name}={eta!r} is too large: {name}·L overflows float64 (L = "
                f"{self.smoothness:.6g}); GD diverges far below it, past 2/L"
            )
        return eta

    def _check(self, eta: Any, t: Any, split: str) -> tuple[float, int]:
        eta = self._check_scale(check_step_size(eta), "eta")
        t = check_horizon(t)
        check_choice(split, "split", ("train",))
        return eta, t

    def meta_objective(
        self, eta: float, t: int, *, split: str = "train", log: bool = True
    ) -> float:
        """The meta-objective ``(1/t)·log f(w_t)`` (``log=True``) or ``f(w_t)``.

        Exact at any ``t`` and ``η ≥ 0``: the log objective is computed in log space;
        the plain value saturates to ``inf`` past float64's range (``> 1.8e308``)
        and to ``0.0`` below it (``< 5e-324``).

        Args:
            eta: Step size ``η ≥ 0``.
            t: Number of GD steps, ``≥ 1``.
            split: Only ``"train"``: a single quadratic has no validation set.
            log: Whether to take ``(1/t)·log`` of the last loss (Theorem 4).

        Raises:
            ValueError: for ``eta < 0`` or NaN, ``t < 1``, or another ``split``.
        """
        return self.value_and_gradient(eta, t, split=split, log=log)[0]

    def value_and_gradient(
        self, eta: float, t: int, *, split: str = "train", log: bool = True
    ) -> tuple[float, float]:
        """The meta-objective and its stable meta-gradient, in one pass.

        See :meth:`meta_objective` and :meth:`meta_gradient` (``method="stable"``).
        """
        eta, t = self._check(eta, t, split)
        result = power_sum(self._log_weights, self.eigenvalues, eta, 2 * t)
        log_f = float(result.log_value)
        dlog_f = float(result.log_derivative)  # d log f / dη = f'/f
        if log:
            return log_f / t, dlog_f / t
        value = _signed_exp(log_f, 1.0)
        if dlog_f == 0.0:
            return value, 0.0
        return value, _signed_exp(log_f + math.log(abs(dlog_f)), math.copysign(1.0, dlog_f))

    def meta_gradient(
        self,
        eta: float,
        t: int,
        *,
        log: bool = True,
        method: str = "stable",
        split: str = "train",
        dtype: Any = "float64",
    ) -> float:
        """The derivative of the meta-objective in ``η``.

        ``method="stable"`` evaluates Eqn (1) in H's eigenbasis with numerator and
        denominator divided by their dominant term (the idea of Eqn 2), in log
        space; the relative error stays near float64's precision for every
        ``t ≥ 1`` (checked to 10⁶) and ``η ≥ 0`` (checked to ``100/L``), and the
        cost is ``O(d)`` whatever ``t``. For ``log=False`` the exact derivative
        ``f'(η) = −t Σ c_i² λ_i² (1 − ηλ_i)^{2t−1}`` is returned as far as float64
        represents it: ``±inf`` past ``1.8e308`` in magnitude, ``0.0`` below ``5e-324``
        (Theorem 3: both happen for moderate ``t``). At a step size where GD lands
        exactly on the minimiser (``w_t = 0``, possible only when ``w0`` lies in one
        eigenspace), the log objective is ``-inf`` and its gradient is reported as 0.

        ``method="backprop"`` is the naive baseline of Corollary 1: it unrolls the
        ``t`` GD steps in PyTorch (``dtype`` ``"float64"`` or ``"float32"``) and
        backpropagates. It is real autodiff, memory and time ``O(t·d²)``, and it
        returns whatever autodiff gives, including ``inf``, ``NaN`` or ``0`` once
        the intermediate losses overflow or underflow (a non-finite one with a
        ``RuntimeWarning``). It is the library's one unrolled backprop,
        :func:`l2l_tune.hypergrad.hypergradients` with ``method="backprop"``.

        Args:
            eta: Step size ``η ≥ 0``.
            t: Number of GD steps, ``≥ 1``.
            log: Differentiate ``(1/t)·log f(w_t)`` (default) or ``f(w_t)``.
            method: ``"stable"`` or ``"backprop"``.
            split: Only ``"train"``.
            dtype: Floating type for ``method="backprop"``: ``"float64"`` or ``"float32"``
                (or the matching ``torch.dtype``).

        Raises:
            ValueError: for ``eta < 0`` or NaN, ``t < 1``, an unknown ``method``,
                ``split`` or ``dtype``.
            ImportError: for ``method="backprop"`` without PyTorch installed.
        """
        check_choice(method, "method", _METHODS)
        if method == "stable":
            return self.value_and_gradient(eta, t, split=split, log=log)[1]
        eta, t = self._check(eta, t, split)
        return _backprop_meta_gradient(self.H, self.w0, eta, t, log=log, dtype=dtype)

    def optimal_step_size(self, t: int, log: bool = True) -> float:
        """The unique minimiser ``η*`` of the meta-objective (Claim 1).

        The meta-gradient is negative on ``[0, η*)`` and positive on ``(η*, ∞)``
        (Claim 1), so ``η*`` is the root of the stable log meta-gradient, found by
        Brent's method to about 1e-15 relative. Since ``log`` is increasing, the
        plain and the log objective share the same minimiser; ``log`` is accepted
        for symmetry with :meth:`meta_objective`.

        Args:
            t: Number of GD steps, ``≥ 1``.
            log: Ignored (same ``η*`` for both objectives).

        Raises:
            ValueError: for ``t < 1``.
        """
        t = check_horizon(t)

        def grad(eta: float) -> float:
            return self.value_and_gradient(eta, t, log=True)[1]

        lo, hi = 0.0, 1.0 / self.smoothness
        while grad(hi) < 0.0:
            lo, hi = hi, 2.0 * hi
        if grad(hi) == 0.0:
            return hi
        root = brentq(grad, lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=1000)
        return float(root)

    # ------------------------------------------------------------------ heavy-ball momentum
    def hyperparameter_space(self) -> HyperparameterSpace:
        """The hyperparameters of heavy-ball GD on this quadratic: ``lr`` and ``momentum``.

        ``lr`` on a log scale in ``[1e-6/L, 4/L]`` (heavy ball is stable up to
        ``η < 2(1 + β)/L``), ``momentum`` on a linear scale in ``[0, 0.999]``.
        """
        L = self.smoothness
        return HyperparameterSpace(
            (
                Hyperparameter("lr", low=1e-6 / L, high=4.0 / L, log=True),
                Hyperparameter("momentum", 0.0, 0.999, log=False),
            )
        )

    def value_and_gradients(
        self,
        hyperparameters: Mapping[str, float],
        t: int,
        *,
        split: str = "train",
        log: bool = False,
    ) -> tuple[float, dict[str, float]]:
        """The meta-objective of ``t`` heavy-ball steps and its gradient in ``lr`` and ``momentum``.

        The inner optimizer is ``torch.optim.SGD(lr=η, momentum=β)`` (no dampening,
        no Nesterov): ``b_0 = g_0``, ``b_k = β b_{k−1} + g_k``, ``w_{k+1} = w_k − η b_k``,
        i.e. ``w_1 = w_0 − ηHw_0`` and ``w_{k+1} = w_k − ηHw_k + β(w_k − w_{k−1})``. At
        ``β = 0`` it is the GD of the paper's Section 3, whose meta-gradient is
        Eqn (1), computed stably as in Eqn (2) by :meth:`value_and_gradient`.

        Heavy ball is the extension: in H's eigenbasis each eigen-mode is a 2×2
        linear recursion, ``[x_{k+1}, x_k] = M_i [x_k, x_{k−1}]`` with
        ``M_i = [[1 + β − ηλ_i, −β], [1, 0]]`` from ``x_1 = (1 − ηλ_i) c_i``,
        ``x_0 = c_i``, so ``x_t = (M_i^{t−1} [x_1, x_0])_0`` and
        ``f(w_t) = ½ Σ_i λ_i x_{t,i}²``. ``M_i^{t−1}`` is computed by repeated
        squaring for all modes at once, its derivatives in ``η`` and ``β`` carried
        along by the product rule (``(A, Ȧ)(B, Ḃ) = (AB, ȦB + AḂ)``), and each product
        rescaled by a power of two (exactly) whose exponent is accumulated per mode;
        ``log f`` and its derivatives are then assembled in log space relative to the
        dominant mode. The powers are taken in the form ``M_i^n = S_i (C_n I + S_n J_i)
        S_i⁻¹`` (two numbers per mode instead of four, see :meth:`_heavy_ball`), which
        does not cancel near critical damping, where ``M_i`` is close to a Jordan block.
        Nothing overflows or underflows, for any ``t`` (checked to 10¹⁸), ``η`` past
        the stable range ``2(1 + β)/L`` or ``β`` near 1; the cost is ``O(d log t)``.
        Rounding errors grow like ``t·ε`` relative in ``f`` and in the derivatives
        (``ε`` the float64 epsilon; measured 2e-11 at ``t = 10⁵``, also at critical
        damping), so the log objective keeps near-full accuracy.

        Args:
            hyperparameters: ``{"lr": η}`` or ``{"lr": η, "momentum": β}`` with
                ``η ≥ 0`` and ``0 ≤ β < 1``. ``"lr"`` is required (a quadratic has no
                natural step size); a missing ``"momentum"`` means ``β = 0`` (plain GD).
            t: Number of steps, ``≥ 1``.
            split: Only ``"train"``: a single quadratic has no validation set.
            log: ``(1/t)·log f(w_t)`` (Theorem 4) or ``f(w_t)`` (default, as the
                :class:`~l2l_tune.tasks.base.HyperparameterTask` protocol has it).

        Returns:
            The meta-objective and ``{name: derivative}`` for exactly the names
            passed. For ``log=False`` value and derivatives saturate to ``±inf`` past
            float64's range and to ``0.0`` below it, as in :meth:`value_and_gradient`.
            When ``w_t = 0`` exactly (``w0`` in one eigenspace, ``η = 1/λ`` at
            ``β = 0``), the log objective is ``-inf`` and every derivative ``0.0``.
            At ``β = 0`` the value and the ``lr`` derivative are those of
            :meth:`value_and_gradient`; the ``momentum`` derivative comes from the
            closed form above.

        Raises:
            ValueError: for something other than a mapping, a name other than
                ``"lr"`` and ``"momentum"``, a missing ``"lr"``, ``lr`` negative or
                not finite, ``momentum`` outside ``[0, 1)``, ``t < 1``, or a
                ``split`` other than ``"train"``.
        """
        eta, beta, t = self._check_hyperparameters(hyperparameters, t, split)
        names = list(hyperparameters)
        gradients: dict[str, float] = {}
        if beta == 0.0:
            value, gradients["lr"] = self.value_and_gradient(eta, t, split=split, log=log)
            if "momentum" in names:
                gradients["momentum"] = self._heavy_ball(eta, beta, t, log=log)[1][1]
        else:
            value, (gradients["lr"], gradients["momentum"]) = self._heavy_ball(
                eta, beta, t, log=log
            )
        return value, {name: gradients[name] for name in names}

    def _check_hyperparameters(
        self, hyperparameters: Any, t: Any, split: str
    ) -> tuple[float, float, int]:
        if not isinstance(hyperparameters, Mapping):
            raise ValueError(
                "hyperparameters must be a mapping {name: value} with 'lr' and optionally "
                f"'momentum', got {hyperparameters!r}"
            )
        unknown = [name for name in hyperparameters if name not in _HEAVY_BALL_NAMES]
        if unknown:
            accepted = ", ".join(repr(n) for n in _HEAVY_BALL_NAMES)
            raise ValueError(
                f"hyperparameters has unknown names {unknown}; Quadratic accepts {accepted}"
            )
        if "lr" not in hyperparameters:
            raise ValueError(
                "hyperparameters must name 'lr' (the step size, a finite number >= 0); "
                f"got {sorted(hyperparameters)}"
            )
        eta = self._check_scale(check_step_size(hyperparameters["lr"], "lr"), "lr")
        beta = _check_momentum(hyperparameters.get("momentum", 0.0))
        t = check_horizon(t)
        check_choice(split, "split", ("train",))
        return eta, beta, t

    def _heavy_ball(
        self, eta: float, beta: float, t: int, *, log: bool
    ) -> tuple[float, tuple[float, float]]:
        """The closed form of :meth:`value_and_gradients` (any ``β``, including 0).

        ``M = [[τ, −β], [1, 0]]`` (``τ = 1 + β − ηλ``) is ``S (mI + J) S⁻¹`` with
        ``m = τ/2``, ``J = [[0, 1], [D, 0]]``, ``D = m² − β`` (the discriminant) and
        ``S = [[m, 1], [1, 0]]``; since ``J² = D·I``, ``M^n = S (C_n I + S_n J) S⁻¹``
        where ``C_n + √D S_n = (m + √D)^n`` in ``R[√D]``. Those two numbers are
        powered by repeated squaring; unlike the entries of ``M^n`` they do not
        cancel near critical damping (``D ≈ 0``, a Jordan block), and ``D`` is formed
        in double-double arithmetic, so the relative error stays ``O(t·ε)`` there.
        Then ``x_t / c = (M^{t−1} [1 − ηλ, 1])_0 = C_n q + S_n (m q − β)``.
        """
        lam = self.eigenvalues
        d = lam.shape[0]
        # q = 1 − ηλ and τ = q + β as double-doubles (hi + lo).
        p, p_err = two_product(np.float64(eta), lam)
        one_minus_p, one_minus_p_err = two_sum(np.ones(d), -p)
        q, q_err = two_sum(one_minus_p, -p_err)
        q_lo = q_err + one_minus_p_err
        tau, tau_err = two_sum(q, np.full(d, beta))
        tau_lo = tau_err + q_lo
        # Divide by s = 2^k ≥ 1 (exactly) so that |m|, √β ≤ 1: a huge η cannot overflow D.
        _, k = np.frexp(np.maximum(0.5 * np.abs(tau), math.sqrt(beta)))
        k = np.maximum(k, 0)
        m = np.ldexp(tau, -k - 1)  # m/s
        m_lo = np.ldexp(tau_lo, -k - 1)
        b = np.ldexp(np.full(d, beta), -2 * k)  # β/s²
        q_s = np.ldexp(q, -k)  # q/s
        lam_s = np.ldexp(lam, -k)  # λ/s
        inv_s = np.ldexp(np.ones(d), -k)
        m2, m2_err = two_product(m, m)
        disc = ((m2 - b) + m2_err) + 2.0 * m * m_lo  # D/s², small relative error
        # Tangents in (η, β), shape (d, 2).
        dm = np.stack([-0.5 * lam_s, 0.5 * inv_s], axis=1)
        db = np.stack([np.zeros(d), inv_s * inv_s], axis=1)
        dq = np.stack([-lam_s, np.zeros(d)], axis=1)
        ddisc = 2.0 * m[:, None] * dm - db
        C, S, dC, dS, exponent = _ring_power(m, dm, disc, ddisc, t - 1)
        r = m * q_s - b  # (m q − β)/s²
        dr = dm * q_s[:, None] + m[:, None] * dq - db
        x = C * q_s + S * r  # x_t / (c_i s^t 2^exponent)
        dx = dC * q_s[:, None] + C[:, None] * dq + dS * r[:, None] + S[:, None] * dr
        exponent = exponent + float(t) * k
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            # log of ½ c_i² λ_i 4^exponent: f = Σ_i exp(log_w_i) x_i².
            log_w = self._log_weights + (2.0 * _LN2) * exponent
            log_abs_x = np.log(np.abs(x))
            log_terms = log_w + 2.0 * log_abs_x
            log_terms = np.where(np.isnan(log_terms), -np.inf, log_terms)
            top = float(np.max(log_terms))
            if top == -math.inf:  # w_t = 0: every mode is exactly at the minimiser
                return (-math.inf if log else 0.0), (0.0, 0.0)
            log_f = top + math.log(float(np.sum(np.exp(log_terms - top))))
            # d log f = Σ_i exp(log_w_i) 2 x_i dx_i / f, each term formed in log space.
            log_grad_terms = (log_w + log_abs_x + _LN2 - log_f)[:, None] + np.log(np.abs(dx))
            log_grad_terms = np.where(np.isnan(log_grad_terms), -np.inf, log_grad_terms)
            signs = np.sign(x)[:, None] * np.sign(dx)
            dlog_f = np.sum(signs * np.exp(log_grad_terms), axis=0)
        # inf − inf could only come from a derivative past 1e308 of both signs: report
        # it as overflowed (+inf, MetaObjectiveTask's rule) rather than NaN.
        dlog = tuple(math.inf if math.isnan(g) else float(g) for g in dlog_f)
        if log:
            return log_f / t, (dlog[0] / t, dlog[1] / t)
        value = _signed_exp(log_f, 1.0)
        grads = tuple(
            0.0 if g == 0.0 else _signed_exp(log_f + math.log(abs(g)), math.copysign(1.0, g))
            for g in dlog
        )
        return value, (grads[0], grads[1])

    def __repr__(self) -> str:
        return (
            f"Quadratic(d={self.dim}, L={self.smoothness:.4g}, alpha={self.strong_convexity:.4g})"
        )


def _check_momentum(value: Any) -> float:
    """Return the momentum ``β`` as a float after checking ``0 ≤ β < 1``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"momentum must be a real number in [0, 1), got {value!r}")
    beta = float(value)
    if not (math.isfinite(beta) and 0.0 <= beta < 1.0):
        raise ValueError(f"momentum must be a finite number in [0, 1), got {beta!r}")
    return beta


FloatArray = NDArray[np.float64]


def _ring_power(
    m: FloatArray, dm: FloatArray, disc: FloatArray, ddisc: FloatArray, n: int
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """``(m + √D)^n = C + √D S`` per mode, with tangents, by repeated squaring in ``R[√D]``.

    ``(C₁ + √D S₁)(C₂ + √D S₂) = (C₁C₂ + D S₁S₂) + √D (C₁S₂ + S₁C₂)``, differentiated
    by the product rule (``D`` depends on the parameters too). After each product
    the four quantities of a mode are divided by a power of two (exact) that brings
    their peak below 1, and its exponent is accumulated, so nothing overflows or
    underflows whatever ``n``.

    Args:
        m: ``(d,)`` the rational parts.
        dm: ``(d, k)`` their derivatives in ``k`` parameters.
        disc: ``(d,)`` the discriminants ``D``.
        ddisc: ``(d, k)`` their derivatives.
        n: Exponent ``≥ 0``.

    Returns:
        ``(C, S, dC, dS, e)`` with ``(m + √D)^n = 2^e (C + √D S)`` and the same for
        the tangents; ``e`` holds integers, as floats.
    """
    d, k = dm.shape

    def product(
        a: tuple[FloatArray, ...], b: tuple[FloatArray, ...]
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
        C1, S1, dC1, dS1, e1 = a
        C2, S2, dC2, dS2, e2 = b
        C = C1 * C2 + disc * (S1 * S2)
        S = C1 * S2 + S1 * C2
        dC = (
            dC1 * C2[:, None]
            + C1[:, None] * dC2
            + ddisc * (S1 * S2)[:, None]
            + disc[:, None] * (dS1 * S2[:, None] + S1[:, None] * dS2)
        )
        dS = dC1 * S2[:, None] + C1[:, None] * dS2 + dS1 * C2[:, None] + S1[:, None] * dC2
        return _rescale(C, S, dC, dS, e1 + e2)

    result = (np.ones(d), np.zeros(d), np.zeros((d, k)), np.zeros((d, k)), np.zeros(d))
    base = _rescale(m.copy(), np.ones(d), dm.copy(), np.zeros((d, k)), np.zeros(d))
    while n:
        if n & 1:
            result = product(result, base)
        n >>= 1
        if n:
            base = product(base, base)
    return result


def _rescale(
    C: FloatArray, S: FloatArray, dC: FloatArray, dS: FloatArray, exponent: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Divide each mode's four quantities by a power of two (exact) so their peak is < 1."""
    peak = np.maximum(
        np.maximum(np.abs(C), np.abs(S)),
        np.maximum(np.max(np.abs(dC), axis=1), np.max(np.abs(dS), axis=1)),
    )
    _, shift = np.frexp(peak)  # peak = f·2^shift, f ∈ [0.5, 1); shift = 0 for a zero peak
    return (
        np.ldexp(C, -shift),
        np.ldexp(S, -shift),
        np.ldexp(dC, -shift[:, None]),
        np.ldexp(dS, -shift[:, None]),
        exponent + shift,
    )


def _torch_dtype(dtype: Any) -> Any:
    import torch

    names = {"float64": torch.float64, "float32": torch.float32}
    if isinstance(dtype, str):
        check_choice(dtype, "dtype", tuple(names))
        return names[dtype]
    if dtype in (torch.float64, torch.float32):
        return dtype
    raise ValueError(f"dtype must be one of 'float64', 'float32'; got {dtype!r}")


def _backprop_meta_gradient(
    H: NDArray[np.float64], w0: NDArray[np.float64], eta: float, t: int, *, log: bool, dtype: Any
) -> float:
    """Naive reverse-mode meta-gradient through ``t`` unrolled GD steps (Corollary 1).

    The library's one unrolled backprop (:func:`l2l_tune.hypergrad.hypergradients`
    with ``method="backprop"``) on ``f(w) = ½ wᵀHw``, plain SGD, full batch.
    """
    try:
        import torch

        from ..hypergrad import hypergradients
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise ImportError("method='backprop' needs PyTorch: pip install 'l2l-tune[torch]'") from exc
    torch_dtype = _torch_dtype(dtype)
    H_t = torch.as_tensor(H, dtype=torch_dtype)

    def loss(w: Any, batch: Any = None) -> Any:
        return 0.5 * torch.dot(w, H_t @ w)

    def meta_loss(w: Any) -> Any:
        return torch.log(loss(w)) / t if log else loss(w)

    result = hypergradients(
        loss,
        torch.as_tensor(w0, dtype=torch_dtype),
        [None] * t,
        meta_loss,
        hparams={"lr": eta},
        method="backprop",
    )
    gradient = result.gradients["lr"]
    assert isinstance(gradient, float)  # one shared step size, not per group
    return gradient
