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
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import brentq

from .._numerics import power_sum
from .._validation import check_array, check_choice, check_horizon, check_step_size

__all__ = ["Quadratic"]

_METHODS = ("stable", "backprop")
_VARIANTS = ("paper", "authors")


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
    def _check(self, eta: Any, t: Any, split: str) -> tuple[float, int]:
        eta = check_step_size(eta)
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
        the intermediate losses overflow or underflow.

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

    def __repr__(self) -> str:
        return (
            f"Quadratic(d={self.dim}, L={self.smoothness:.4g}, alpha={self.strong_convexity:.4g})"
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
    """Naive reverse-mode meta-gradient through ``t`` unrolled GD steps (Corollary 1)."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise ImportError("method='backprop' needs PyTorch: pip install 'l2l-tune[torch]'") from exc
    torch_dtype = _torch_dtype(dtype)
    H_t = torch.as_tensor(H, dtype=torch_dtype)
    w = torch.as_tensor(w0, dtype=torch_dtype)
    eta_t = torch.tensor(eta, dtype=torch_dtype, requires_grad=True)
    for _ in range(t):
        w = w - eta_t * (H_t @ w)
    loss = 0.5 * torch.dot(w, H_t @ w)
    objective = torch.log(loss) / t if log else loss
    (grad,) = torch.autograd.grad(objective, eta_t)
    return float(grad)
