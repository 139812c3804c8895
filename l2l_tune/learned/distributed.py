"""Meta-training the MLP optimizer on Ray workers: the meta-batch's problems split over actors.

The paper meta-trains on 100 problems × 3 trajectories; a meta-step's cost is the
unroll of every problem of the meta-batch. :class:`RayProblemGroups` gives each of
``k`` Ray actors a contiguous share of the meta-batch (its problems' data, parameters
and optimizer states stay on the actor for the whole trajectory); per truncation the
driver sends the meta-parameters (about a thousand numbers), every actor runs its
share (:class:`~l2l_tune.learned.training.LocalProblemGroups`, itself in groups of
``group_size``) and returns its meta-gradient, and the driver averages them weighted
by problems (:func:`~l2l_tune.learned.training.combine`) before its RMSProp step: the
meta-gradient of the whole meta-batch, as one process computes it, up to rounding.

Each actor draws the trajectory's meta-batch from the same seed (sampling is cheap:
indices and labels) and keeps its share, so nothing but the seed, the
meta-parameters and the meta-gradients travels. The dataset travels once, through
Ray's object store. Used by :func:`~l2l_tune.learned.meta_train` with ``workers=k``
and by ``l2l-tune learn --workers K``. Needs ``pip install 'l2l-tune[ray]'``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import Tensor

from .._validation import check_int
from ..tasks.mnist import MNIST
from .training import GroupMetaGradient, LocalProblemGroups, MetaTrainingSchedule, problem_slices

__all__ = ["RayProblemGroups"]


class _GroupWorker:
    """A Ray actor's share of the meta-batch (wrapped by ``ray.remote`` on first use)."""

    def __init__(
        self,
        data: Any,
        distribution_args: dict[str, Any],
        schedule: MetaTrainingSchedule,
        group_size: int | None,
    ) -> None:
        # Ray's object store hands out read-only arrays; PyTorch wants writable ones.
        arrays = ("train_images", "train_labels", "test_images", "test_labels")
        data = dataclasses.replace(data, **{k: np.array(getattr(data, k)) for k in arrays})
        distribution = MNIST(data, **distribution_args)
        self.groups = LocalProblemGroups(distribution, schedule, group_size)

    def start(self, sample_seed: int, problems: range) -> None:
        self.groups.start(sample_seed, problems)

    def truncation(self, *args: Any) -> list[GroupMetaGradient]:
        """:meth:`LocalProblemGroups.truncation`'s shares, on the CPU for the trip back."""
        shares = self.groups.truncation(*args)
        return [
            GroupMetaGradient(tuple(g.cpu() for g in s.grads), s.meta_loss, s.finite, s.problems)
            for s in shares
        ]


class RayProblemGroups:
    """A meta-batch split over ``workers`` Ray actors (the interface of ``LocalProblemGroups``).

    Args:
        distribution: The task distribution (its dataset, dtype, network sizes and
            batch size go to the actors; the device is ``"cuda"`` on actors with
            ``num_gpus`` and ``"cpu"`` otherwise).
        schedule: The meta-training schedule.
        workers: Actors, ``≥ 1`` (at most ``schedule.problems`` are used).
        group_size: Problems each actor stacks at once (``None``: its whole share).
        resources: Each actor's Ray resources (default ``{"num_cpus": 1}``).

    Raises:
        ValueError: for ``workers < 1`` or resources that are not a mapping.
        ImportError: without Ray.
    """

    def __init__(
        self,
        distribution: MNIST,
        schedule: MetaTrainingSchedule,
        workers: int,
        *,
        group_size: int | None = None,
        resources: Mapping[str, float] | None = None,
    ) -> None:
        import ray

        workers = check_int(workers, "workers", 1)
        if resources is not None and not isinstance(resources, Mapping):
            raise ValueError(f"resources must be a mapping of Ray resources, got {resources!r}")
        options = dict(resources or {"num_cpus": 1})
        if not ray.is_initialized():
            ray.init()
        device = "cuda" if options.get("num_gpus") else "cpu"
        distribution_args = {
            "dtype": distribution.dtype,
            "device": device,
            "hidden": tuple(distribution.sizes[1:-1]),
            "batch_size": distribution.batch_size,
        }
        data = ray.put(distribution.data)
        actor = ray.remote(_GroupWorker).options(**options)
        self._ray = ray
        self.shares = problem_slices(schedule.problems, workers)
        self.actors: list[Any] = [
            actor.remote(data, distribution_args, schedule, group_size) for _ in self.shares
        ]

    def start(self, sample_seed: int) -> None:
        """Every actor samples the trajectory's meta-batch and keeps its share."""
        self._ray.get(
            [a.start.remote(sample_seed, share) for a, share in zip(self.actors, self.shares,
                                                                    strict=True)]
        )  # fmt: skip

    def truncation(
        self,
        meta_tensors: tuple[Tensor, ...],
        start: int,
        length: int,
        positions: np.ndarray | None,
    ) -> list[GroupMetaGradient]:
        """Every actor's groups' shares of the truncation's meta-gradient."""
        cpu = tuple(t.detach().cpu() for t in meta_tensors)
        results = self._ray.get(
            [a.truncation.remote(cpu, start, length, positions) for a in self.actors]
        )
        return [share for shares in results for share in shares]

    def close(self) -> None:
        """End the actors."""
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []
