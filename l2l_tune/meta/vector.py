"""Meta-optimizers over several hyperparameters at once: Adam on log-hyperparameters, projected GD.

The scalar meta-optimizers of :mod:`l2l_tune.meta` tune one step size ``η``. A
training run has more continuous hyperparameters (weight decay, momentum, Adam's
betas, per-layer step sizes), and :mod:`l2l_tune.hypergrad` differentiates the run
in all of them at once. These meta-optimizers take a
:class:`HyperparameterSpace` (names, bounds, log or linear scale) and the same
ask/tell protocol with mappings: ``ask() -> {name: value}``,
``tell(values, value, gradients)``, their state a pure function of the told
history (rebuilt by :meth:`VectorMetaOptimizer.from_history`), so an Optuna
study or a Ray checkpoint rebuilds them exactly.

Each coordinate is searched in an internal scale ``θ``: ``log x`` for a log-scale
hyperparameter, ``(x − low)/(high − low)`` for a linear one, so a meta-step of a
given size is relative for step sizes and decays and a fraction of the range for
momenta; the chain rule turns ``∂M/∂x`` into ``∂M/∂θ`` (``x·∂M/∂x`` on the log
scale, Theorem 4's step on ``log η`` in several dimensions). Proposals are
projected onto the bounds.

The scalar :class:`~l2l_tune.meta.LogAdamMetaOptimizer` and
:class:`~l2l_tune.meta.ProjectedMetaGD` run the same iterations
(:func:`adam_iterate`, :func:`projected_gd_iterate`) in one dimension.
"""

from __future__ import annotations

import math
import numbers
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._validation import check_positive
from .base import NonFiniteMetaGradientWarning

__all__ = [
    "Hyperparameter",
    "HyperparameterSpace",
    "VectorLogAdam",
    "VectorMetaOptimizer",
    "VectorProjectedGD",
    "VectorRecord",
    "adam_iterate",
    "check_names",
    "check_start",
    "log_objective_records",
    "projected_gd_iterate",
]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Hyperparameter:
    """One continuous hyperparameter: its name, bounds and scale.

    Attributes:
        name: The name (``"lr"``, ``"weight_decay"``, ``"momentum"``…).
        low: Lower bound (``> 0`` on a log scale).
        high: Upper bound, ``> low``.
        log: Search ``log x`` (step sizes, decays) rather than ``x`` (momenta).

    Raises:
        ValueError: for bounds that are not finite numbers with ``low < high``, or
            ``low ≤ 0`` on a log scale.
    """

    name: str
    low: float
    high: float
    log: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a hyperparameter's name must be a non-empty str, got {self.name!r}")
        low, high = float(self.low), float(self.high)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(
                f"{self.name}: bounds must be finite with low < high, got ({self.low!r}, "
                f"{self.high!r})"
            )
        if self.log and low <= 0.0:
            raise ValueError(f"{self.name}: a log-scale hyperparameter needs low > 0, got {low!r}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def to_internal(self, x: float) -> float:
        """``θ``: ``log x``, or ``x`` as a fraction of the range."""
        x = min(max(float(x), self.low), self.high)
        if self.log:
            return math.log(x)
        return (x - self.low) / (self.high - self.low)

    def from_internal(self, theta: float) -> float:
        """The value at ``θ``, projected onto the bounds."""
        x = math.exp(min(theta, 690.0)) if self.log else self.low + theta * (self.high - self.low)
        return min(max(x, self.low), self.high)

    def internal_gradient(self, x: float, grad: float) -> float:
        """``∂M/∂θ`` from ``∂M/∂x`` at ``x``."""
        return grad * x if self.log else grad * (self.high - self.low)

    def default(self) -> float:
        """The geometric mean of the bounds (log scale) or their midpoint."""
        return math.sqrt(self.low * self.high) if self.log else 0.5 * (self.low + self.high)


@dataclass(frozen=True)
class HyperparameterSpace:
    """An ordered set of :class:`Hyperparameter` s with distinct names.

    Raises:
        ValueError: for no hyperparameter or a repeated name.
    """

    parameters: tuple[Hyperparameter, ...]

    def __post_init__(self) -> None:
        params = tuple(self.parameters)
        if not params or not all(isinstance(p, Hyperparameter) for p in params):
            raise ValueError("a HyperparameterSpace needs at least one Hyperparameter")
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise ValueError(f"hyperparameter names must be distinct, got {names}")
        object.__setattr__(self, "parameters", params)

    @property
    def names(self) -> tuple[str, ...]:
        """The names, in order."""
        return tuple(p.name for p in self.parameters)

    def subset(self, names: str | Sequence[str]) -> HyperparameterSpace:
        """The hyperparameters named, in the order given.

        Raises:
            ValueError: for a name not in this space, a repeat or no name.
        """
        wanted = check_names(names, "names")
        by_name = {p.name: p for p in self.parameters}
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            raise ValueError(f"names {unknown} are not in the space; accepted: {list(by_name)}")
        return HyperparameterSpace(tuple(by_name[n] for n in wanted))

    def to_internal(self, values: Mapping[str, float]) -> FloatArray:
        """``θ`` of a mapping that names every hyperparameter.

        Raises:
            ValueError: for a missing name or a value that is not a finite number.
        """
        missing = [p.name for p in self.parameters if p.name not in values]
        if missing:
            raise ValueError(f"values must name every hyperparameter; missing {missing}")
        out = []
        for p in self.parameters:
            x = float(values[p.name])
            if not math.isfinite(x):
                raise ValueError(f"{p.name} must be a finite number, got {values[p.name]!r}")
            out.append(p.to_internal(x))
        return np.array(out)

    def from_internal(self, theta: FloatArray) -> dict[str, float]:
        """The values at ``θ``, each projected onto its bounds."""
        return {
            p.name: p.from_internal(float(t)) for p, t in zip(self.parameters, theta, strict=True)
        }

    def internal_gradient(
        self, values: Mapping[str, float], gradients: Mapping[str, float]
    ) -> FloatArray:
        """``∂M/∂θ`` from the gradients in the hyperparameters' own units."""
        return np.array(
            [
                p.internal_gradient(float(values[p.name]), float(gradients[p.name]))
                for p in self.parameters
            ]
        )


@dataclass(frozen=True)
class VectorRecord:
    """One evaluation: the hyperparameters, the meta-objective and its gradients.

    Attributes:
        values: ``{name: value}`` evaluated.
        value: The meta-objective (``inf`` for a diverged run).
        gradients: ``{name: ∂M/∂value}``, or ``None`` when not available.
        partial: The value of a run stopped early (never taken as the best).
    """

    values: Mapping[str, float]
    value: float
    gradients: Mapping[str, float] | None
    partial: bool = False

    @property
    def finite(self) -> bool:
        """Whether the value and every gradient are finite numbers."""
        return (
            math.isfinite(self.value)
            and self.gradients is not None
            and all(math.isfinite(float(g)) for g in self.gradients.values())
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        out: dict[str, Any] = {
            "values": dict(self.values),
            "value": self.value,
            "gradients": None if self.gradients is None else dict(self.gradients),
        }
        if self.partial:
            out["partial"] = True
        return out


def check_names(params: str | Sequence[str], name: str = "params") -> tuple[str, ...]:
    """The names of tuned hyperparameters as a tuple (one string is one name).

    Raises:
        ValueError: for no name, a name that is not a non-empty string, or a repeat.
    """
    names = (params,) if isinstance(params, str) else tuple(params)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{name} must name at least one parameter, got {params!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{name} must be distinct names, got {list(names)}")
    return names


def check_start(start: Mapping[str, Any] | None, names: Sequence[str]) -> dict[str, float] | None:
    """A first point naming exactly ``names`` with finite numbers (``None`` stays ``None``).

    Raises:
        ValueError: for something that is not a mapping, a missing or unknown name, or a
            value that is not a finite real number.
    """
    if start is None:
        return None
    if not isinstance(start, Mapping):
        raise ValueError(f"start must be a mapping {{name: value}}, got {start!r}")
    if set(start) != set(names):
        raise ValueError(f"start must give a value for each of {list(names)}, got {sorted(start)}")
    out = {}
    for name in names:
        value = start[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
        ):
            raise ValueError(f"start[{name!r}] must be a finite number, got {value!r}")
        out[name] = float(value)
    return out


def log_objective_records(records: Sequence[VectorRecord]) -> list[VectorRecord]:
    """The records on ``log(value)`` when every finite value is positive (else unchanged).

    The paper's log meta-objective (Theorem 4, up to ``1/t``): ``∂ log M/∂x =
    (∂M/∂x)/M``; diverged records stay as they are.
    """
    finite = [r.value for r in records if math.isfinite(r.value)]
    if not finite or any(v <= 0 for v in finite):
        return list(records)
    return [
        r
        if not math.isfinite(r.value)
        else VectorRecord(
            r.values,
            math.log(r.value),
            None if r.gradients is None else {n: g / r.value for n, g in r.gradients.items()},
            r.partial,
        )
        for r in records
    ]


def adam_iterate(
    steps: Iterable[tuple[FloatArray, FloatArray | None]],
    theta0: FloatArray,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    on_diverged: Callable[[FloatArray, float], FloatArray],
) -> FloatArray:
    """Adam with a ``lr/√k`` rate, replayed over a told history: the next ``θ``.

    Args:
        steps: For each told record in order, ``(θ evaluated, ∂M/∂θ)``, the gradient
            ``None`` when the run diverged (a non-finite value or gradient).
        theta0: ``θ`` before any record.
        lr: Rate at ``k = 1``.
        beta1, beta2, eps: Adam's moments and denominator guard.
        on_diverged: ``θ`` after a diverged record at ``θ`` with rate ``r`` (the
            moments are not touched).

    Returns:
        The next ``θ``. Gradients are capped at ``1e150`` in magnitude (Adam uses
        only ``m/√v``, so the direction is kept and ``g²`` cannot overflow on an
        exploding meta-gradient, Theorem 3).
    """
    theta = np.array(theta0, dtype=float)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    n_moments = 0
    for k, (at, grad) in enumerate(steps, start=1):
        theta = np.array(at, dtype=float)
        rate = lr / math.sqrt(k)
        if grad is None:
            theta = on_diverged(theta, rate)
            continue
        g = np.clip(np.asarray(grad, dtype=float), -1e150, 1e150)
        n_moments += 1
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**n_moments)
        v_hat = v / (1 - beta2**n_moments)
        theta = theta - rate * m_hat / (np.sqrt(v_hat) + eps)
    return theta


def projected_gd_iterate(at: FloatArray, grad: FloatArray | None, k: int, lr: float) -> FloatArray:
    """One step of projected meta-GD, ``θ − (μ0/√k)·g`` (Theorem 4; the caller projects).

    A diverged record (``grad`` is ``None``) leaves ``θ`` where it is, as in the
    authors' baseline.
    """
    if grad is None:
        return np.array(at, dtype=float)
    return np.asarray(at, dtype=float) - lr / math.sqrt(k) * np.asarray(grad, dtype=float)


class VectorMetaOptimizer(ABC):
    """Base class: a deterministic map from a told history of mappings to the next mapping.

    Args:
        space: The hyperparameters (a :class:`HyperparameterSpace` or a sequence of
            :class:`Hyperparameter`).
        start: First proposal (default: each hyperparameter's :meth:`~Hyperparameter.default`).

    Raises:
        ValueError: for a bad space or a start that does not name every hyperparameter.
    """

    name: str = ""

    def __init__(
        self,
        space: HyperparameterSpace | Sequence[Hyperparameter],
        *,
        start: Mapping[str, float] | None = None,
    ) -> None:
        self.space = (
            space if isinstance(space, HyperparameterSpace) else HyperparameterSpace(tuple(space))
        )
        defaults = {p.name: p.default() for p in self.space.parameters}
        self.start = self.space.from_internal(self.space.to_internal(dict(start or defaults)))
        self.history: list[VectorRecord] = []

    def ask(self) -> dict[str, float]:
        """The next hyperparameters to evaluate (the same until something is told)."""
        return self.space.from_internal(self._propose())

    def tell(
        self,
        values: Mapping[str, float],
        value: float,
        gradients: Mapping[str, float] | None,
        *,
        partial: bool = False,
    ) -> None:
        """Record the meta-objective and its gradients at the evaluated ``values``.

        Raises:
            ValueError: for values or gradients that do not name every hyperparameter.
        """
        self.space.to_internal(values)  # validates the names and values
        grads = None
        if gradients is not None:
            missing = [n for n in self.space.names if n not in gradients]
            if missing:
                raise ValueError(f"gradients must name every hyperparameter; missing {missing}")
            grads = {n: float(gradients[n]) for n in self.space.names}
        record = VectorRecord(
            {n: float(values[n]) for n in self.space.names}, float(value), grads, bool(partial)
        )
        if not math.isfinite(record.value) or (grads is not None and not record.finite):
            warnings.warn(
                f"non-finite meta-objective or meta-gradient at {record.values} "
                f"(value={record.value}, gradients={grads}); {type(self).__name__} treats it as "
                "a diverged run",
                NonFiniteMetaGradientWarning,
                stacklevel=2,
            )
        self.history.append(record)

    @classmethod
    def from_history(
        cls, records: Iterable[VectorRecord | Mapping[str, Any]], **kwargs: Any
    ) -> VectorMetaOptimizer:
        """Rebuild from told records; the next ``ask`` equals the original's."""
        optimizer = cls(**kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
            for record in records:
                if not isinstance(record, VectorRecord):
                    record = VectorRecord(
                        dict(record["values"]),
                        float(record["value"]),
                        record.get("gradients"),
                        bool(record.get("partial", False)),
                    )
                optimizer.tell(
                    record.values, record.value, record.gradients, partial=record.partial
                )
        return optimizer

    @property
    def best(self) -> VectorRecord | None:
        """The told record with the lowest finite value (partial runs excluded)."""
        finite = [r for r in self.history if math.isfinite(r.value) and not r.partial]
        return min(finite, key=lambda r: r.value) if finite else None

    def estimate(self) -> dict[str, float]:
        """The current estimate: the next proposal (the last iterate, Theorem 4)."""
        return self.ask()

    def _steps(self) -> list[tuple[FloatArray, FloatArray | None]]:
        """Each record as ``(θ, ∂M/∂θ or None)``; value-only records are left out."""
        out: list[tuple[FloatArray, FloatArray | None]] = []
        for record in self.history:
            if record.gradients is None and math.isfinite(record.value):
                continue  # a value without gradient: nothing for a gradient step
            theta = self.space.to_internal(record.values)
            if not record.finite:
                out.append((theta, None))
                continue
            assert record.gradients is not None
            out.append((theta, self.space.internal_gradient(record.values, record.gradients)))
        return out

    @abstractmethod
    def _propose(self) -> FloatArray:
        """The next ``θ``, from ``self.history`` only."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.space.names)}, told={len(self.history)})"


def _check_beta(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


class VectorLogAdam(VectorMetaOptimizer):
    """Adam on the internal scale (``log`` for step sizes and decays), rate ``lr/√k``.

    The vector form of :class:`~l2l_tune.meta.LogAdamMetaOptimizer`: noisy
    meta-gradients of sampled tasks are normalised per coordinate (their scales
    differ by orders of magnitude between a step size and a weight decay). A
    diverged run (a non-finite value or gradient) sends ``θ`` back to the last
    finite record; when there is none (the start diverged) or the divergence
    happened there, every log-scale hyperparameter shrinks by ``e^{lr/√k}`` (the
    scalar optimizer's rule: divergence comes from steps too large, Theorem 3). The
    rates keep decaying, so one blow-up never leaves the search there.

    Args:
        space: The hyperparameters.
        start: First proposal.
        lr: Step on the internal scale at ``k = 1`` (0.5: a factor ``e^{0.5}`` on a
            log scale, half the range on a linear one; the steps ``lr/√k`` add up to
            ``≈ 2·lr·√n`` after ``n`` records, a factor ``e^{5.5}`` in 30: enough to
            cross two decades from a poor start).
        beta1, beta2, eps: Adam's.

    Raises:
        ValueError: for ``lr ≤ 0``, ``eps ≤ 0`` or betas outside ``[0, 1)``.
    """

    name = "adam"

    def __init__(
        self,
        space: HyperparameterSpace | Sequence[Hyperparameter],
        *,
        start: Mapping[str, float] | None = None,
        lr: float = 0.5,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(space, start=start)
        self.lr = check_positive(lr, "lr")
        self.beta1 = _check_beta(beta1, "beta1")
        self.beta2 = _check_beta(beta2, "beta2")
        self.eps = check_positive(eps, "eps")

    def _propose(self) -> FloatArray:
        theta0 = self.space.to_internal(self.start)
        steps = self._steps()
        shrink = np.array([1.0 if p.log else 0.0 for p in self.space.parameters])
        last_finite: list[FloatArray | None] = []  # at each diverged record, in order
        finite: FloatArray | None = None
        for theta, grad in steps:
            if grad is None:
                last_finite.append(finite)
            else:
                finite = theta
        fallback = iter(last_finite)

        def after_divergence(theta: FloatArray, rate: float) -> FloatArray:
            previous = next(fallback)
            if previous is not None and not np.array_equal(previous, theta):
                return previous
            # the start (or the fallback itself) diverged: smaller step sizes and decays
            # (Theorem 3: divergence comes from steps too large for the curvature)
            return theta - rate * shrink

        return adam_iterate(
            steps,
            theta0,
            lr=self.lr,
            beta1=self.beta1,
            beta2=self.beta2,
            eps=self.eps,
            on_diverged=after_divergence,
        )


class VectorProjectedGD(VectorMetaOptimizer):
    """Projected meta-gradient descent on the internal scale, ``θ − (μ0/√k)·g`` (Theorem 4).

    Args:
        space: The hyperparameters.
        start: First proposal.
        lr: ``μ0``.

    Raises:
        ValueError: for ``lr ≤ 0``.
    """

    name = "paper"

    def __init__(
        self,
        space: HyperparameterSpace | Sequence[Hyperparameter],
        *,
        start: Mapping[str, float] | None = None,
        lr: float = 0.01,
    ) -> None:
        super().__init__(space, start=start)
        self.lr = check_positive(lr, "lr")

    def _propose(self) -> FloatArray:
        steps = self._steps()
        if not steps:
            return self.space.to_internal(self.start)
        theta, grad = steps[-1]
        return projected_gd_iterate(theta, grad, len(steps), self.lr)
