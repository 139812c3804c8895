"""Gradient-step meta-optimizers: the paper's projected meta-GD, and Adam on log η."""

from __future__ import annotations

import math

import numpy as np

from .._validation import check_positive
from .base import MetaOptimizer
from .vector import adam_iterate, projected_gd_iterate

__all__ = ["LogAdamMetaOptimizer", "ProjectedMetaGD"]


class ProjectedMetaGD(MetaOptimizer):
    """Projected meta-gradient descent, ``η_{k+1} = max(0, η_k − μ_k g_k)`` (Theorem 4).

    ``μ_k = μ0/√k`` with ``k = 1, 2, …`` the number of told records; the paper's
    experiments use ``μ0 = 1/100`` (Section 5, Fig 1). ``η_k`` is the step size
    actually told. A non-finite meta-gradient (a diverged inner run, or the
    overflow of unrolled backprop, Corollary 1) is skipped: ``η`` stays where it
    is, as in the authors' TensorFlow baseline, and a warning is issued.

    Args:
        eta0: First step size, ``> 0``.
        lr: ``μ0``, the meta step size at ``k = 1``, ``> 0``.
        tol: The run has converged once ``|η_{k+1} − η_k| ≤ tol · η_k``.
        bounds: Optional ``(low, high)`` limits of the step size.

    Raises:
        ValueError: for ``eta0 ≤ 0``, ``lr ≤ 0``, ``tol ≤ 0`` or bad ``bounds``.
    """

    name = "paper"

    def __init__(
        self,
        eta0: float = 0.1,
        *,
        lr: float = 0.01,
        tol: float = 1e-10,
        bounds: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(eta0, bounds=bounds)
        self.lr = check_positive(lr, "lr")
        self.tol = check_positive(tol, "tol")

    def _propose(self) -> float:
        if not self.history:
            return self.eta0
        record = self.history[-1]
        grad = None
        if record.grad is not None and math.isfinite(record.grad):
            grad = np.array([record.grad])
        step = projected_gd_iterate(np.array([record.eta]), grad, len(self.history), self.lr)
        return self._clip(float(step[0]))

    @property
    def converged(self) -> bool:
        """True once the last meta-step moved ``η`` by at most ``tol`` (relative)."""
        if not self.history:
            return False
        last = self.history[-1].eta
        return abs(self.ask() - last) <= self.tol * max(last, 1e-300)

    def estimate(self) -> float:
        """The last iterate ``η_{k+1}``, as in Theorem 4."""
        return self.ask()


class LogAdamMetaOptimizer(MetaOptimizer):
    """Adam on ``θ = log η`` with a ``1/√k`` decaying rate, for noisy meta-gradients.

    When each meta-step samples new tasks, the meta-gradient is a noisy estimate.
    Adam normalises its scale (which varies by orders of magnitude across ``η``),
    working in ``log η`` keeps ``η > 0`` and makes steps relative, and the decay
    ``lr/√k`` lets the iterates settle. A non-finite value or meta-gradient
    (diverged run) shrinks ``η`` by ``exp(lr/√k)`` without touching the moments.

    Args:
        eta0: First step size, ``> 0``.
        lr: Step in ``log η`` at ``k = 1``.
        beta1: First-moment decay, in ``[0, 1)``.
        beta2: Second-moment decay, in ``[0, 1)``.
        eps: Adam's denominator guard.
        tol: Converged once the last step moved ``log η`` by at most ``tol``.
        bounds: Optional ``(low, high)`` limits of the step size.

    Raises:
        ValueError: for non-positive ``eta0``/``lr``/``eps``/``tol``, betas outside
            ``[0, 1)``, or bad ``bounds``.
    """

    name = "adam"

    def __init__(
        self,
        eta0: float = 0.1,
        *,
        lr: float = 0.2,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        tol: float = 1e-10,
        bounds: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(eta0, bounds=bounds)
        self.lr = check_positive(lr, "lr")
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            if not (isinstance(beta, (int, float)) and 0.0 <= float(beta) < 1.0):
                raise ValueError(f"{name} must be in [0, 1), got {beta!r}")
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.eps = check_positive(eps, "eps")
        self.tol = check_positive(tol, "tol")

    def _propose(self) -> float:
        if not self.history:
            return self.eta0
        steps = [
            (
                np.array([math.log(max(record.eta, 1e-300))]),
                np.array([(record.grad or 0.0) * record.eta]) if record.finite else None,
            )
            for record in self.history
        ]
        theta = adam_iterate(
            steps,
            np.array([math.log(self.eta0)]),
            lr=self.lr,
            beta1=self.beta1,
            beta2=self.beta2,
            eps=self.eps,
            on_diverged=lambda theta, rate: theta - rate,  # a diverged run: shrink η
        )
        return self._clip(math.exp(min(float(theta[0]), 690.0)))

    @property
    def converged(self) -> bool:
        """True once the last step moved ``log η`` by at most ``tol``."""
        if not self.history:
            return False
        last = max(self.history[-1].eta, 1e-300)
        return abs(math.log(max(self.ask(), 1e-300)) - math.log(last)) <= self.tol

    def estimate(self) -> float:
        """The last iterate."""
        return self.ask()
