"""The ask/tell interface shared by every meta-optimizer.

A meta-optimizer proposes step sizes (``ask``) and is told the meta-objective and
its meta-gradient at the step sizes that were actually evaluated (``tell``).
Its state is a pure function of the told history: :meth:`MetaOptimizer.ask`
recomputes the next proposal from :attr:`MetaOptimizer.history` alone. Anything
that can store the records (an Optuna study, a Ray checkpoint, a JSON file) can
therefore rebuild the optimizer with :meth:`MetaOptimizer.from_history` and get
the same next proposal, across processes and after crashes.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .._validation import check_positive, check_step_size

__all__ = ["MetaOptimizer", "MetaRecord", "NonFiniteMetaGradientWarning"]


class NonFiniteMetaGradientWarning(RuntimeWarning):
    """A told value or meta-gradient was NaN or infinite (a diverged inner run)."""


@dataclass(frozen=True)
class MetaRecord:
    """One evaluation of the meta-objective.

    Attributes:
        eta: The step size evaluated.
        value: The meta-objective there (may be ``inf`` for a diverged run).
        grad: Its derivative in ``eta`` (``None`` when not available).
        partial: The value is that of a run stopped early (a pruned trial's last
            intermediate value), not comparable with the values of finished runs.
    """

    eta: float
    value: float
    grad: float | None
    partial: bool = False

    @property
    def finite(self) -> bool:
        """Whether value and gradient are both finite numbers."""
        return math.isfinite(self.value) and self.grad is not None and math.isfinite(self.grad)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (``inf``/``nan`` kept as floats; ``partial`` only when set)."""
        out = asdict(self)
        if not self.partial:
            del out["partial"]
        return out


class MetaOptimizer(ABC):
    """Base class: a deterministic map from a told history to the next step size.

    Subclasses implement :meth:`_propose`, a pure function of ``self.history``
    (and of the constructor's arguments). Non-finite told values or gradients are
    kept in the history, flagged with a :class:`NonFiniteMetaGradientWarning`,
    and each subclass documents how it treats them; they never become a NaN
    step size.

    Args:
        eta0: First step size to propose, ``> 0``.
        bounds: Optional ``(low, high)`` the proposals are clipped to,
            ``0 ≤ low < high``.

    Raises:
        ValueError: for ``eta0 ≤ 0``, NaN or inf, or bad ``bounds``.
    """

    #: Registry name (see :func:`l2l_tune.meta.make_meta_optimizer`).
    name: str = ""
    #: Whether every told record needs a meta-gradient. Black-box adapters then pair
    #: evaluations for finite differences (:func:`l2l_tune.meta.propose`); a
    #: meta-optimizer that learns from values alone sets it to ``False``.
    needs_gradients: bool = True

    def __init__(self, eta0: float = 0.1, *, bounds: tuple[float, float] | None = None) -> None:
        self.eta0 = check_positive(eta0, "eta0")
        if bounds is not None:
            try:
                low, high = (float(b) for b in bounds)
            except (TypeError, ValueError):
                raise ValueError(f"bounds must be a pair (low, high), got {bounds!r}") from None
            check_step_size(low, "bounds[0]")
            check_positive(high, "bounds[1]")
            if not low < high:
                raise ValueError(f"bounds must satisfy low < high, got {bounds!r}")
            bounds = (low, high)
        self.bounds = bounds
        self.history: list[MetaRecord] = []

    # ------------------------------------------------------------------ ask/tell
    def ask(self, pending: Sequence[float] = ()) -> float:
        """The next step size to evaluate (the same until something is told).

        Args:
            pending: Step sizes already handed out and still being evaluated (by
                concurrent workers). The proposal avoids them, so that parallel
                workers do not repeat each other; see :meth:`_spread`.
        """
        candidate = self._clip(self._propose())
        pending_list = [float(p) for p in pending]
        if not any(_close(candidate, p) for p in pending_list):
            return candidate
        eta = self._clip(self._spread(candidate, pending_list))
        if any(_close(eta, p) for p in pending_list) and self.bounds is not None:
            # Spread against a bound: split the wider free gap next to the proposal.
            cuts = sorted({*self.bounds, *(p for p in pending_list if self._clip(p) == p)})
            gaps = [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if a <= eta <= b]
            if gaps:
                a, b = max(gaps, key=lambda g: math.log(g[1] / g[0]) if g[0] > 0 else g[1])
                eta = math.sqrt(a * b) if a > 0.0 else 0.5 * (a + b)
        return eta

    def tell(self, eta: float, value: float, grad: float | None, *, partial: bool = False) -> None:
        """Record the meta-objective ``value`` and meta-gradient ``grad`` at ``eta``.

        ``eta`` is the step size actually evaluated, which may differ from the
        last :meth:`ask` (for instance after clipping by a search space).
        ``partial=True`` marks the value of a run stopped early (a pruned trial):
        it is kept in the history but never taken as the best value.

        Raises:
            ValueError: if ``eta`` is negative, NaN or inf.
        """
        eta = check_step_size(eta)
        value = float(value)
        grad_f = None if grad is None else float(grad)
        record = MetaRecord(eta, value, grad_f, bool(partial))
        if not math.isfinite(value) or (grad_f is not None and not math.isfinite(grad_f)):
            warnings.warn(
                f"non-finite meta-objective or meta-gradient at eta={eta:.6g} "
                f"(value={value}, grad={grad_f}); {type(self).__name__} treats it as a "
                "diverged run",
                NonFiniteMetaGradientWarning,
                stacklevel=2,
            )
        self.history.append(record)

    @classmethod
    def from_history(
        cls, records: Iterable[MetaRecord | dict[str, Any]], **kwargs: Any
    ) -> MetaOptimizer:
        """Rebuild an optimizer from told records; its next ``ask`` equals the original's."""
        optimizer = cls(**kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
            for record in records:
                if isinstance(record, dict):
                    record = MetaRecord(
                        float(record["eta"]),
                        float(record["value"]),
                        record.get("grad"),
                        bool(record.get("partial", False)),
                    )
                optimizer.tell(record.eta, record.value, record.grad, partial=record.partial)
        return optimizer

    # ------------------------------------------------------------------ results
    @property
    def converged(self) -> bool:
        """Whether the optimizer considers the step size found (default: never)."""
        return False

    @property
    def best(self) -> MetaRecord | None:
        """The told record with the lowest finite value, if any (partial runs excluded)."""
        finite = [r for r in self.history if math.isfinite(r.value) and not r.partial]
        return min(finite, key=lambda r: r.value) if finite else None

    def estimate(self) -> float:
        """The current estimate of the optimal step size (default: the next proposal)."""
        return self.ask()

    # ------------------------------------------------------------------ internals
    @abstractmethod
    def _propose(self) -> float:
        """The next step size, from ``self.history`` only."""

    def _spread(self, candidate: float, pending: list[float]) -> float:
        """A proposal near ``candidate`` that no pending step size occupies.

        The default, for the sequential gradient-step optimizers, tries
        ``candidate · e^{±0.05 j}`` for ``j = 1, 2, …``; subclasses that keep a
        bracket split it instead.
        """
        for j in range(1, 200):
            for sign in (1.0, -1.0):
                eta = self._clip(candidate * math.exp(sign * 0.05 * j))
                if not any(_close(eta, p) for p in pending):
                    return eta
        return candidate

    def _clip(self, eta: float) -> float:
        eta = max(float(eta), 0.0)
        if self.bounds is not None:
            eta = min(max(eta, self.bounds[0]), self.bounds[1])
        return eta

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eta0={self.eta0:g}, told={len(self.history)})"


def _close(a: float, b: float, rtol: float = 1e-9) -> bool:
    """Whether two step sizes are the same up to ``rtol``."""
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-300)
