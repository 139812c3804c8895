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

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validation import check_choice, check_int
from ..hypergrad import mlp
from ..tasks.mnist import MNIST
from .optimizer import MetaParameters
from .truncation import ORDERS, init_states, run_truncation

__all__ = ["MetaTrainingRecord", "MetaTrainingSchedule", "meta_train"]


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
        check_int(self.n_train, "n_train", 1)
        check_int(self.n_valid, "n_valid", 1 if self.split == "valid" else 0)
        if (
            isinstance(self.label_noise, bool)
            or not isinstance(self.label_noise, int | float)
            or not 0.0 <= self.label_noise <= 1.0
        ):
            raise ValueError(f"label_noise must be in [0, 1], got {self.label_noise!r}")
        for name in ("problems", "trajectories", "min_truncations", "min_steps"):
            check_int(getattr(self, name), name, 1)
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


def _checkpoint_state(
    schedule: MetaTrainingSchedule,
    seed: int,
    next_trajectory: int,
    meta: MetaParameters,
    optimizer: torch.optim.Optimizer,
    records: list[MetaTrainingRecord],
) -> dict[str, Any]:
    return {
        "schedule": asdict(schedule),
        "seed": seed,
        "next_trajectory": next_trajectory,
        "meta": meta.state_dict(),
        "optimizer": optimizer.state_dict(),
        "records": [asdict(r) for r in records],
    }


def _write_atomically(state: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def meta_train(
    distribution: MNIST,
    schedule: MetaTrainingSchedule,
    *,
    seed: int = 0,
    meta: MetaParameters | None = None,
    callback: Callable[[MetaTrainingRecord], None] | None = None,
    checkpoint: str | Path | None = None,
) -> tuple[MetaParameters, list[MetaTrainingRecord]]:
    """Meta-train the MLP optimizer on inner problems drawn from ``distribution``.

    Trajectory ``j`` draws its problems, initialisation and truncation lengths from
    ``(seed, j)`` alone, so a run resumed from a checkpoint (written atomically after
    every trajectory) ends exactly where an uninterrupted one does.

    Args:
        distribution: The MNIST (or digits) task distribution: its network sizes,
            batch size, dtype and device are the inner problems'.
        schedule: The :class:`MetaTrainingSchedule`.
        seed: Seed of everything random (a non-negative integer).
        meta: Meta-parameters to start from (default: the authors' initialisation,
            drawn from ``seed``). Ignored when resuming.
        callback: Called with every :class:`MetaTrainingRecord`.
        checkpoint: A file to resume from when it exists (it must come from the same
            schedule and seed) and to write after every trajectory.

    Returns:
        ``(meta-parameters, records)``: every record of the run, resumed ones included.

    Raises:
        ValueError: for a bad seed, or a checkpoint of another schedule or seed.
    """
    seed = check_int(seed, "seed")
    dtype, device = distribution.dtype, distribution.device
    if meta is None:
        meta = MetaParameters.initial(
            torch.Generator().manual_seed(seed), dtype=dtype, device=device
        )
    meta = MetaParameters(*(t.detach().clone() for t in meta.tensors())).requires_grad_()
    optimizer = torch.optim.RMSprop(list(meta.tensors()), lr=schedule.lr, alpha=schedule.decay)
    records: list[MetaTrainingRecord] = []
    first = 0
    path = None if checkpoint is None else Path(checkpoint)
    if path is not None and path.exists():
        state = torch.load(path, weights_only=True)
        if state.get("schedule") != asdict(schedule) or state.get("seed") != seed:
            raise ValueError(
                f"checkpoint {path} is of another run (schedule {state.get('schedule')}, seed "
                f"{state.get('seed')}); use another path or delete it"
            )
        loaded = MetaParameters.from_state_dict(state["meta"])
        with torch.no_grad():
            for tensor, value in zip(meta.tensors(), loaded.tensors(), strict=True):
                tensor.copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        records = [MetaTrainingRecord(**r) for r in state["records"]]
        first = int(state["next_trajectory"])
    for trajectory in range(first, schedule.trajectories):
        rng = np.random.default_rng([seed, trajectory])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
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
        n_truncations = schedule.min_truncations + _exponential(
            rng, schedule.mean_extra_truncations
        )
        step = 0
        for truncation in range(n_truncations):
            length = schedule.min_steps + _exponential(rng, schedule.mean_extra_steps)
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
            records.append(record)
            if callback is not None:
                callback(record)
            if not result.finite:
                break  # a diverged unroll ends its trajectory
            params, states = result.params, result.states
            step += length
        if path is not None:
            _write_atomically(
                _checkpoint_state(schedule, seed, trajectory + 1, meta, optimizer, records), path
            )
    final = MetaParameters(*(t.detach().clone() for t in meta.tensors()))
    return final, records


def _exponential(rng: np.random.Generator, mean: float) -> int:
    """``round(Exp(mean))`` (0 for a mean of 0)."""
    return int(round(rng.exponential(mean))) if mean else 0
