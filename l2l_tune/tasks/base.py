"""The interface every task offers to tuners and adapters."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["MetaObjectiveTask", "SPLITS"]

#: Where a meta-loss is measured: the training set (train-by-train, TbT) or a
#: held-out validation set (train-by-validation, TbV); paper, Section 4.
SPLITS = ("train", "valid")


@runtime_checkable
class MetaObjectiveTask(Protocol):
    """A task (or batch of tasks) whose meta-objective can be differentiated in η.

    A task runs ``t`` steps of an inner optimizer at step size ``η`` and measures
    a meta-loss on ``split``; the meta-objective is that loss (``log=False``) or
    ``(1/t)·log`` of it (``log=True``, paper Theorem 4).
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
