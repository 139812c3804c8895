"""The interface every task offers to tuners and adapters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..meta.vector import HyperparameterSpace

__all__ = ["HyperparameterTask", "MetaObjectiveTask", "SPLITS", "is_exact_task"]

#: Where a meta-loss is measured: the training set (train-by-train, TbT) or a
#: held-out validation set (train-by-validation, TbV); paper, Section 4.
SPLITS = ("train", "valid")


@runtime_checkable
class MetaObjectiveTask(Protocol):
    """A task (or batch of tasks) whose meta-objective can be differentiated in η.

    A task runs ``t`` steps of an inner optimizer at step size ``η`` and measures
    a meta-loss on ``split``; the meta-objective is that loss (``log=False``) or
    ``(1/t)·log`` of it (``log=True``, paper Theorem 4).

    A task may also declare a class attribute ``exact_meta_objective: bool`` (read by
    :func:`is_exact_task`; not part of the protocol, so a task without it still
    qualifies): ``True`` when its meta-objective and meta-gradient are deterministic,
    exact and smooth enough for Claim 1's single sign change to be trusted (the
    closed forms), ``False`` or absent for training runs (noisy, rugged at the kinks
    of a ReLU network, chaotic at large ``η``: Theorem 3). ``meta_optimizer="auto"``
    uses it to pick the bracketing search or the model-based one.

    ``log`` is keyword-only in every method of every task. Its default is ``False``
    (the meta-loss itself) in :class:`HyperparameterTask` methods and in the training
    tasks; :class:`~l2l_tune.tasks.Quadratic`'s scalar methods keep their historical
    ``True`` (its plain value underflows for moderate ``t``, Theorem 3), so pass
    ``log`` explicitly when a caller handles several tasks, as the tuners, the Optuna
    sampler and the Ray searcher do.

    Non-finite results, the same for every task and honoured the same way by
    :class:`~l2l_tune.StepSizeTuner`, the Optuna sampler and the Ray searcher:

    - a **value** is finite whenever the run is: a run that diverges is truncated
      (the paper's 40σ rule: its loss is replaced by the truncation bound) or
      reported as ``+inf``; ``NaN`` is never returned;
    - a **gradient** of ``+inf`` means the meta-gradient overflowed (the run is
      chaotic at this step size, Theorem 3: too large); tuners treat the point as
      diverged (the step size is shrunk, the value still counts as a value);
    - a **gradient** of ``0`` at a truncated run carries no information (the
      truncated objective is flat); the model-based search learns from the value.
    """

    def meta_objective(
        self, eta: float, t: int, *, split: str = "train", log: bool = True
    ) -> float:
        """The meta-objective at step size ``eta``."""
        ...

    def value_and_gradient(
        self, eta: float, t: int, *, split: str = "train", log: bool = True
    ) -> tuple[float, float]:
        """The meta-objective and its derivative in ``eta``."""
        ...

    def step_size_scale(self) -> float:
        """A natural scale for ``eta``: ``1/L``, with ``L`` the largest curvature."""
        ...


def is_exact_task(task: object) -> bool:
    """Whether ``task`` declares an exact, deterministic, smooth meta-objective.

    Reads the optional ``exact_meta_objective`` attribute (see
    :class:`MetaObjectiveTask`); a task that does not declare it is treated as a
    training run (noisy or rugged), the safe assumption.
    """
    return getattr(task, "exact_meta_objective", False) is True


@runtime_checkable
class HyperparameterTask(Protocol):
    """A task whose meta-objective is differentiated in several named hyperparameters.

    The vector form of :class:`MetaObjectiveTask`: the inner optimizer has a step
    size ``"lr"`` and possibly more continuous hyperparameters (``"momentum"``,
    ``"weight_decay"``, Adam's betas, a schedule's fractions, a step size per layer);
    the meta-objective is the same (the last loss on ``split``, or ``(1/t)·log`` of
    it, Theorem 4) and its gradient comes from the one tangent recursion of
    :mod:`l2l_tune.hypergrad` (paper Eqn 2 for a general rule) or a closed form.
    The scalar methods of :class:`MetaObjectiveTask` are the one-name case
    ``{"lr": eta}`` with the other hyperparameters at the task's values.

    Non-finite results follow :class:`MetaObjectiveTask`'s rules, per gradient entry.
    """

    def hyperparameter_space(self) -> HyperparameterSpace:
        """Every hyperparameter the task can differentiate in: name, bounds, scale."""
        ...

    def value_and_gradients(
        self,
        hyperparameters: Mapping[str, float],
        t: int,
        *,
        split: str = "train",
        log: bool = False,
    ) -> tuple[float, dict[str, float]]:
        """The meta-objective at ``hyperparameters`` and its gradient in each of them.

        ``hyperparameters`` names a subset of :meth:`hyperparameter_space`; the
        others keep the task's values. The gradients are keyed by the same names.
        """
        ...
