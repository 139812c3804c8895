"""The interface every task offers to tuners and adapters."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["MetaObjectiveTask", "SPLITS", "is_exact_task"]

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
