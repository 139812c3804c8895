"""Meta-training the MLP optimizer by truncated backprop, train-by-train or train-by-validation.

The paper's Section 5 schedule (the authors' code): a trajectory is a new inner
problem (a sample of the training set, label noise, a new initialisation) trained
for ``10 + Exp(30)`` truncations of ``50 + Exp(100)`` steps each; after every
truncation the meta-parameters take one RMSProp step (learning rate 1e-2, decay
0.9) on its meta-gradient (:func:`~l2l_tune.learned.run_truncation`; a non-finite
entry is set to 0), and the inner parameters and optimizer state carry on to the
next truncation. The paper runs 100 problems × 3 trajectories one at a time; here
``problems`` of them are stacked and trained at once (each normalised on its own by
the optimizer's features) and their meta-losses averaged, so one meta-step sees a
meta-batch. The inner networks start as the authors' do: every tensor, biases
included, ``N(0, 1)·1.2/√fan_in``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._validation import check_choice
from ..hypergrad import mlp
from ..tasks.mnist import MNIST
from .optimizer import MetaParameters
from .truncation import ORDERS, init_states, run_truncation

__all__ = ["MetaTrainingRecord", "MetaTrainingSchedule", "meta_train"]


def _check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_non_negative(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class MetaTrainingSchedule:
    """How long and on what the MLP optimizer is meta-trained.

    Attributes:
        split: ``"train"`` (train-by-train: the meta-set is the training subset) or
            ``"valid"`` (train-by-validation).
        n_train, n_valid: Samples of each inner problem's training and validation
            subsets.
        label_noise: Fraction of those labels redrawn uniformly.
        problems: Inner problems trained at once (one meta-batch).
        trajectories: Trajectories (new problems) in all.
        min_truncations, mean_extra_truncations: Truncations per trajectory,
            ``min + round(Exp(mean))`` (the paper: 10 and 30).
        min_steps, mean_extra_steps: Steps per truncation (the paper: 50 and 100).
        order: ``"first"`` (the paper's) or ``"second"``.
        lr, decay: RMSProp's learning rate and decay (the paper: 1e-2 and 0.9).

    Raises:
        ValueError: for a value out of its range, naming it.
    """

    split: str = "valid"
    n_train: int = 1000
    n_valid: int = 1000
    label_noise: float = 0.0
    problems: int = 4
    trajectories: int = 3
    min_truncations: int = 10
    mean_extra_truncations: float = 30.0
    min_steps: int = 50
    mean_extra_steps: float = 100.0
    order: str = "first"
    lr: float = 1e-2
    decay: float = 0.9

    def __post_init__(self) -> None:
        check_choice(self.split, "split", ("train", "valid"))
        check_choice(self.order, "order", ORDERS)
        _check_positive_int(self.n_train, "n_train")
        _check_positive_int(self.n_valid, "n_valid", 1 if self.split == "valid" else 0)
        if not 0.0 <= float(self.label_noise) <= 1.0:
            raise ValueError(f"label_noise must be in [0, 1], got {self.label_noise!r}")
        for name in ("problems", "trajectories", "min_truncations", "min_steps"):
            _check_positive_int(getattr(self, name), name)
        for name in ("mean_extra_truncations", "mean_extra_steps"):
            _check_non_negative(getattr(self, name), name)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {self.decay!r}")


@dataclass(frozen=True)
class MetaTrainingRecord:
    """One meta-step: which trajectory and truncation, its steps and its meta-loss."""

    trajectory: int
    truncation: int
    steps: int
    meta_loss: float
    finite: bool


@dataclass
class _Progress:
    records: list[MetaTrainingRecord] = field(default_factory=list)


def meta_train(
    distribution: MNIST,
    schedule: MetaTrainingSchedule,
    *,
    seed: int = 0,
    meta: MetaParameters | None = None,
    callback: Callable[[MetaTrainingRecord], None] | None = None,
) -> tuple[MetaParameters, list[MetaTrainingRecord]]:
    """Meta-train the MLP optimizer on inner problems drawn from ``distribution``.

    Args:
        distribution: The MNIST (or digits) task distribution: its network sizes,
            batch size, dtype and device are the inner problems'.
        schedule: The :class:`MetaTrainingSchedule`.
        seed: Seed of the problems, initialisations, schedule lengths and (when
            ``meta`` is None) the meta-parameters' initialisation.
        meta: Meta-parameters to continue from (default: the authors' initialisation).
        callback: Called with every :class:`MetaTrainingRecord`.

    Returns:
        ``(meta-parameters, records)``.
    """
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    dtype, device = distribution.dtype, distribution.device
    if meta is None:
        meta = MetaParameters.initial(generator, dtype=dtype, device=device)
    meta = MetaParameters(*(t.detach().clone() for t in meta.tensors())).requires_grad_()
    optimizer = torch.optim.RMSprop(list(meta.tensors()), lr=schedule.lr, alpha=schedule.decay)
    progress = _Progress()
    for trajectory in range(schedule.trajectories):
        batch = distribution.sample(
            schedule.problems,
            schedule.n_train,
            schedule.n_valid,
            label_noise=schedule.label_noise,
            seed=int(rng.integers(2**62)),
        )
        params = mlp.init_params(distribution.sizes, schedule.problems, generator, dtype=dtype,
                                 device=device, scheme="paper")  # fmt: skip
        states = init_states(params)
        meta_set = batch.split_data(schedule.split)
        n_truncations = schedule.min_truncations + int(
            round(rng.exponential(schedule.mean_extra_truncations))
            if schedule.mean_extra_truncations
            else 0
        )
        step = 0
        for truncation in range(n_truncations):
            length = schedule.min_steps + int(
                round(rng.exponential(schedule.mean_extra_steps))
                if schedule.mean_extra_steps
                else 0
            )
            result = run_truncation(
                meta, params, states, batch.minibatches(step, step + length), meta_set,
                order=schedule.order,
            )  # fmt: skip
            optimizer.zero_grad()
            if result.meta_loss.requires_grad:
                result.meta_loss.backward()
            for tensor in meta.tensors():
                if tensor.grad is not None:
                    torch.nan_to_num_(tensor.grad, nan=0.0, posinf=0.0, neginf=0.0)
            optimizer.step()
            record = MetaTrainingRecord(
                trajectory, truncation, length, float(result.meta_loss.detach()), result.finite
            )
            progress.records.append(record)
            if callback is not None:
                callback(record)
            if not result.finite:
                break  # a diverged unroll ends its trajectory
            params, states = result.params, result.states
            step += length
    final = MetaParameters(*(t.detach().clone() for t in meta.tensors()))
    return final, progress.records
