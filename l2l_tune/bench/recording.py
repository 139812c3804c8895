"""Recording every evaluation a tuner makes, at its cost in inner-run equivalents."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from ..tasks.base import is_exact_task
from .tasks import BenchTask

__all__ = [
    "CLAMP",
    "EvalPoint",
    "GradientView",
    "Recorder",
    "TunerRun",
    "ValueView",
    "check_objective",
    "clamp",
]

#: Objective values handed to black-box frameworks are clamped to ``±CLAMP`` (and NaN
#: becomes ``CLAMP``), so that no sampler sees a non-finite number.
CLAMP = 1e300


def clamp(value: float) -> float:
    """``value`` clipped to ``[−CLAMP, CLAMP]``; NaN (a failed run) becomes ``CLAMP``."""
    if math.isnan(value):
        return CLAMP
    return max(-CLAMP, min(CLAMP, value))


@dataclass(frozen=True)
class EvalPoint:
    """One evaluation of the objective by a tuner.

    Attributes:
        eta: Step size evaluated.
        objective: Objective value the tuner saw (before any clamping).
        log_loss: ``log F`` (natural log of the un-logged meta-loss).
        cost: Inner-run equivalents of this evaluation.
        end_s: Seconds from the start of the tuner's run to the end of this evaluation.
        gradient: Whether the meta-gradient was computed too.
    """

    eta: float
    objective: float
    log_loss: float
    cost: float
    end_s: float
    gradient: bool


@dataclass
class TunerRun:
    """One tuner on one task instance.

    Attributes:
        tuner: Tuner name.
        seed: Seed (task instance and tuner).
        points: Evaluations in the order they finished.
        wall_s: Wall time of the whole run (framework start-up included).
        extra: Tuner-specific facts (final estimate, convergence, errors, …).
        warnings: Distinct warning messages raised during the run, with counts.
    """

    tuner: str
    seed: int
    points: list[EvalPoint]
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)


class Recorder:
    """Evaluates a :class:`~l2l_tune.bench.tasks.BenchTask` and records each evaluation.

    Args:
        task: The benchmark instance.
        gradient_cost: Inner-run equivalents of one :meth:`value_and_gradient`.
    """

    def __init__(self, task: BenchTask, gradient_cost: float) -> None:
        self.task = task
        self.gradient_cost = gradient_cost
        self.points: list[EvalPoint] = []
        self.start = time.perf_counter()

    def _record(self, eta: float, value: float, cost: float, gradient: bool) -> None:
        self.points.append(
            EvalPoint(
                eta=float(eta),
                objective=float(value),
                log_loss=float(self.task.log_loss(value)),
                cost=cost,
                end_s=time.perf_counter() - self.start,
                gradient=gradient,
            )
        )

    def value(self, eta: float) -> float:
        """The objective at ``eta``; costs one inner run."""
        value = self.task.value(eta)
        self._record(eta, value, 1.0, False)
        return value

    def value_and_gradient(self, eta: float) -> tuple[float, float]:
        """The objective and meta-gradient at ``eta``; costs ``gradient_cost``."""
        value, grad = self.task.value_and_gradient(eta)
        self._record(eta, value, self.gradient_cost, True)
        return value, grad


def check_objective(asked: tuple[int, str, bool], own: tuple[int, str, bool]) -> None:
    """Refuse to evaluate another objective than the recorded one.

    Args:
        asked: ``(t, split, log)`` a tuner asked a task view for.
        own: ``(t, split, log)`` of the bench task (the objective its evaluations record).

    Raises:
        ValueError: naming the argument that differs from the bench task's.
    """
    for name, asked_value, own_value in zip(("t", "split", "log"), asked, own, strict=True):
        if asked_value != own_value:
            raise ValueError(
                f"{name} must be the bench task's {name}={own_value!r} (its recorded "
                f"objective); got {asked_value!r}"
            )


class ValueView:
    """A task view for gradient-free tuners: ``meta_objective`` is recorded at cost 1."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def _check(self, t: int, split: str, log: bool) -> None:
        task = self._recorder.task
        check_objective((t, split, log), (task.t, task.split, task.log))

    def meta_objective(
        self, eta: float, t: int, *, split: str = "train", log: bool = True
    ) -> float:
        """The recorded objective (``t``, ``split``, ``log`` must be the bench task's)."""
        self._check(t, split, log)
        return self._recorder.value(eta)

    def value_and_gradient(
        self, eta: float, t: int, *, split: str = "train", log: bool = True
    ) -> tuple[float, float]:
        """Not available to gradient-free tuners."""
        raise RuntimeError("a gradient-free tuner asked for a meta-gradient")

    def step_size_scale(self) -> float:
        """The task's ``1/L``."""
        return float(self._recorder.task.task.step_size_scale())

    @property
    def exact_meta_objective(self) -> bool:
        """The wrapped task's declaration (``meta_optimizer="auto"`` reads it)."""
        return is_exact_task(self._recorder.task.task)


class GradientView(ValueView):
    """A task view for meta-gradient tuners: ``value_and_gradient`` is recorded at its cost.

    ``meta_objective`` (which :class:`~l2l_tune.StepSizeTuner` calls once, at its final
    estimate, to report it) is not counted: it returns the recorded value where the
    step size was evaluated, and computes it unrecorded otherwise.
    """

    def meta_objective(
        self, eta: float, t: int, *, split: str = "train", log: bool = True
    ) -> float:
        """The objective at ``eta``, not counted as a tuning evaluation."""
        self._check(t, split, log)
        for point in reversed(self._recorder.points):
            if point.eta == eta:
                return point.objective
        return self._recorder.task.value(eta)

    def value_and_gradient(
        self, eta: float, t: int, *, split: str = "train", log: bool = True
    ) -> tuple[float, float]:
        """The recorded objective and meta-gradient."""
        self._check(t, split, log)
        return self._recorder.value_and_gradient(eta)
