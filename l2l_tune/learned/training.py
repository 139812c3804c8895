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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._validation import check_choice, check_int
from ..tasks.mnist import MNIST, MNISTBatch
from .optimizer import META_INITS, MetaParameters
from .truncation import ORDERS, init_states, run_truncation

__all__ = [
    "LR_SCHEDULES",
    "GroupMetaGradient",
    "LocalProblemGroups",
    "MetaTrainingRecord",
    "MetaTrainingSchedule",
    "ProblemGroup",
    "combine",
    "meta_learning_rate",
    "meta_train",
    "evaluate_on_new_problems",
    "problem_slices",
    "sample_meta_batch",
]


def _check_non_negative(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


#: How the meta-learning rate moves over a run (:attr:`MetaTrainingSchedule.lr_schedule`).
LR_SCHEDULES = ("constant", "cosine")


def meta_learning_rate(schedule: MetaTrainingSchedule, progress: float) -> float:
    """RMSProp's learning rate at ``progress`` ∈ [0, 1) of the run.

    ``"constant"``: ``lr`` (the paper's). ``"cosine"``: ``lr·(1 + cos(π·progress))/2``.
    """
    if schedule.lr_schedule == "constant":
        return schedule.lr
    return schedule.lr * 0.5 * (1.0 + float(np.cos(np.pi * progress)))


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
        lr_schedule: ``"constant"`` (the paper's) or ``"cosine"``: the learning rate
            falls from ``lr`` to 0 along a half cosine over the run (by trajectory and
            truncation), so that the last trajectories run with nearly the final
            meta-parameters, as a test does (see :func:`meta_train`).
        meta_set_size: The meta-objective's loss on this many meta-set samples, a new
            random subset every truncation (``None``: the whole meta-set, the
            paper's; a budget for all of MNIST, whose meta-set is 60,000 or 10,000).
        init: The initial meta-parameters when :func:`meta_train` is given none:
            ``"authors"`` (the paper's) or ``"fan-in"`` (:data:`META_INITS`).

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
    meta_set_size: int | None = None
    lr_schedule: str = "constant"
    init: str = "authors"

    def __post_init__(self) -> None:
        check_choice(self.split, "split", ("train", "valid"))
        check_choice(self.order, "order", ORDERS)
        check_choice(self.lr_schedule, "lr_schedule", LR_SCHEDULES)
        check_choice(self.init, "init", META_INITS)
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
        if self.meta_set_size is not None:
            check_int(self.meta_set_size, "meta_set_size", 1)
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


@dataclass(frozen=True)
class GroupMetaGradient:
    """One problem group's share of a truncation's meta-gradient.

    Attributes:
        grads: The gradient of the group's meta-loss (the mean over its problems) in
            each meta-parameter tensor (``w1, b1, w2, b2``).
        meta_loss: That meta-loss.
        finite: Whether the group's unroll stayed finite.
        problems: Problems in the group (the weight of its share).
    """

    grads: tuple[Tensor, ...]
    meta_loss: float
    finite: bool
    problems: int


class ProblemGroup:
    """Some problems of a trajectory's meta-batch, trained together: their data and state.

    The problems are ``batch`` (their samples, initialisations and mini-batch orders);
    :meth:`truncation` runs the next truncation of all of them at once (stacked) and
    returns the meta-gradient of their mean meta-loss, the parameters and optimizer
    states carrying on to the next call. The unit both of the CPU's gradient
    accumulation and of a Ray worker's share (:mod:`l2l_tune.learned.distributed`).

    Args:
        batch: The group's problems (:meth:`~l2l_tune.tasks.mnist.MNISTBatch.select`).
        split: The meta-set: ``"train"`` or ``"valid"``.
        order: ``"first"`` or ``"second"``.
    """

    def __init__(self, batch: MNISTBatch, split: str, order: str) -> None:
        self.batch = batch
        self.split = split
        self.order = order
        self.params = batch.initial_params()
        self.states = init_states(self.params)

    def truncation(
        self,
        meta_tensors: tuple[Tensor, ...],
        start: int,
        length: int,
        positions: np.ndarray | None = None,
    ) -> GroupMetaGradient:
        """Steps ``start … start + length − 1``: the meta-gradient of the group's meta-loss.

        Args:
            meta_tensors: The meta-parameters' values (``w1, b1, w2, b2``).
            start, length: The truncation's first step and its number of steps.
            positions: Positions within the meta-set whose loss is the meta-objective
                (``None``: the whole meta-set, the paper's).
        """
        device, dtype = self.params[0].device, self.params[0].dtype
        meta = MetaParameters(
            *(t.detach().to(device=device, dtype=dtype) for t in meta_tensors)
        ).requires_grad_()
        result = run_truncation(
            meta, self.params, self.states, self.batch.minibatches(start, start + length),
            self.batch.split_data(self.split, positions), order=self.order,
        )  # fmt: skip
        leaves = meta.tensors()
        if result.meta_loss.requires_grad:
            grads = torch.autograd.grad(result.meta_loss, leaves, allow_unused=True)
            grads = tuple(
                torch.zeros_like(t) if g is None else g for g, t in zip(grads, leaves, strict=True)
            )
        else:
            grads = tuple(torch.zeros_like(t) for t in leaves)
        self.params, self.states = result.params, result.states
        return GroupMetaGradient(
            tuple(g.detach() for g in grads),
            float(result.meta_loss.detach()),
            result.finite,
            self.batch.m,
        )


def problem_slices(problems: int, parts: int) -> list[range]:
    """``range(problems)`` cut into ``parts`` contiguous, near-equal, non-empty pieces."""
    parts = min(parts, problems)
    bounds = np.linspace(0, problems, parts + 1).round().astype(int)
    return [range(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def sample_meta_batch(
    distribution: MNIST, schedule: MetaTrainingSchedule, sample_seed: int
) -> MNISTBatch:
    """A trajectory's ``schedule.problems`` inner problems: data, label noise, the paper's init."""
    return distribution.sample(
        schedule.problems,
        schedule.n_train,
        schedule.n_valid,
        label_noise=schedule.label_noise,
        seed=sample_seed,
        init="paper",
    )


class LocalProblemGroups:
    """A meta-batch trained in this process, ``group_size`` problems at a time.

    With ``group_size`` below ``schedule.problems`` the meta-gradient is accumulated
    over the groups, weighted by their sizes: the same meta-gradient as stacking every
    problem (up to rounding) while the unroll stays finite, with a graph
    ``problems / group_size`` times smaller (the CPU's route: stacking costs throughput
    there, ``benchmarks/results/learned.md``).

    Args:
        distribution: The task distribution.
        schedule: The schedule (its problems, sizes, split and order).
        group_size: Problems stacked per group (``None``: all of them).
    """

    def __init__(
        self, distribution: MNIST, schedule: MetaTrainingSchedule, group_size: int | None = None
    ) -> None:
        self.distribution = distribution
        self.schedule = schedule
        self.group_size = schedule.problems if group_size is None else group_size
        self.groups: list[ProblemGroup] = []

    def start(self, sample_seed: int, problems: range | None = None) -> None:
        """Begin a trajectory: sample its meta-batch and keep ``problems`` of it."""
        batch = sample_meta_batch(self.distribution, self.schedule, sample_seed)
        chosen = range(batch.m) if problems is None else problems
        parts = -(-len(chosen) // self.group_size)
        self.groups = [
            ProblemGroup(batch.select([chosen[i] for i in piece]), self.schedule.split,
                         self.schedule.order)
            for piece in problem_slices(len(chosen), parts)
        ]  # fmt: skip

    def truncation(
        self,
        meta_tensors: tuple[Tensor, ...],
        start: int,
        length: int,
        positions: np.ndarray | None,
    ) -> list[GroupMetaGradient]:
        """Every group's :meth:`ProblemGroup.truncation`, one after the other."""
        return [g.truncation(meta_tensors, start, length, positions) for g in self.groups]

    def close(self) -> None:
        """Nothing to release in this process."""
        self.groups = []


def combine(shares: Sequence[GroupMetaGradient]) -> GroupMetaGradient:
    """The meta-batch's meta-gradient: the groups' shares weighted by their problems."""
    total = sum(s.problems for s in shares)
    if len(shares) == 1:
        return shares[0]
    device = shares[0].grads[0].device
    grads = tuple(
        sum((s.problems / total) * s.grads[i].to(device) for s in shares)
        for i in range(len(shares[0].grads))
    )
    return GroupMetaGradient(
        tuple(torch.as_tensor(g) for g in grads),
        sum(s.problems / total * s.meta_loss for s in shares),
        all(s.finite for s in shares),
        total,
    )


def meta_train(
    distribution: MNIST,
    schedule: MetaTrainingSchedule,
    *,
    seed: int = 0,
    meta: MetaParameters | None = None,
    callback: Callable[[MetaTrainingRecord], None] | None = None,
    checkpoint: str | Path | None = None,
    group_size: int | None = None,
    workers: int = 0,
    worker_resources: Mapping[str, float] | None = None,
) -> tuple[MetaParameters, list[MetaTrainingRecord]]:
    """Meta-train the MLP optimizer on inner problems drawn from ``distribution``.

    Trajectory ``j`` draws its problems, initialisation, truncation lengths (and
    meta-set subsamples) from ``(seed, j)`` alone, so a run resumed from a checkpoint
    (written atomically after every trajectory) ends exactly where an uninterrupted
    one does. How the meta-batch is computed — stacked, in groups, on Ray workers —
    changes the meta-gradient by rounding only while the unroll stays finite (when a
    group's unroll turns non-finite, its meta-loss covers its finite steps, where a
    stack of every problem stops all of them at that step).

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
        group_size: Problems stacked at once; the meta-gradient is accumulated over
            the groups (``None``: every problem of the meta-batch, or of a worker's
            share, at once).
        workers: ``0``: train in this process; ``k ≥ 1``: on ``k`` Ray actors, each
            holding a contiguous share of the meta-batch (needs ``[ray]``;
            ``ray.init()`` is called when Ray is not running).
        worker_resources: Resources of each Ray actor (default ``{"num_cpus": 1}``;
            ``{"num_gpus": 1}`` for a GPU each, with the distribution's device
            ``"cuda"``).

    Returns:
        ``(meta-parameters, records)``: every record of the run, resumed ones included.

    Raises:
        ValueError: for a bad seed, group size or worker count, a ``meta_set_size``
            above the meta-set, or a checkpoint of another schedule or seed.
    """
    seed = check_int(seed, "seed")
    if group_size is not None:
        group_size = check_int(group_size, "group_size", 1)
    workers = check_int(workers, "workers")
    meta_set = schedule.n_train if schedule.split == "train" else schedule.n_valid
    if schedule.meta_set_size is not None and schedule.meta_set_size > meta_set:
        raise ValueError(
            f"meta_set_size must be at most the meta-set's {meta_set} samples, got "
            f"{schedule.meta_set_size}"
        )
    dtype, device = distribution.dtype, distribution.device
    if meta is None:
        meta = MetaParameters.initial(
            torch.Generator().manual_seed(seed), dtype=dtype, device=device, init=schedule.init
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
    if workers:
        from .distributed import RayProblemGroups

        groups: Any = RayProblemGroups(
            distribution, schedule, workers, group_size=group_size, resources=worker_resources
        )
    else:
        groups = LocalProblemGroups(distribution, schedule, group_size)
    try:
        for trajectory in range(first, schedule.trajectories):
            rng = np.random.default_rng([seed, trajectory])
            groups.start(int(rng.integers(2**62)))
            n_truncations = schedule.min_truncations + _exponential(
                rng, schedule.mean_extra_truncations
            )
            step = 0
            for truncation in range(n_truncations):
                length = schedule.min_steps + _exponential(rng, schedule.mean_extra_steps)
                positions = (
                    None
                    if schedule.meta_set_size is None
                    else np.sort(rng.choice(meta_set, size=schedule.meta_set_size, replace=False))
                )
                progress = (trajectory + truncation / n_truncations) / schedule.trajectories
                optimizer.param_groups[0]["lr"] = meta_learning_rate(schedule, progress)
                meta_tensors = tuple(t.detach() for t in meta.tensors())
                result = combine(groups.truncation(meta_tensors, step, length, positions))
                for tensor, grad in zip(meta.tensors(), result.grads, strict=True):
                    tensor.grad = torch.nan_to_num(
                        grad.to(device=device, dtype=dtype), nan=0.0, posinf=0.0, neginf=0.0
                    )
                optimizer.step()
                record = MetaTrainingRecord(
                    trajectory, truncation, length, result.meta_loss, result.finite
                )
                records.append(record)
                if callback is not None:
                    callback(record)
                if not result.finite:
                    break  # a diverged unroll ends its trajectory
                step += length
            if path is not None:
                _write_atomically(
                    _checkpoint_state(schedule, seed, trajectory + 1, meta, optimizer, records),
                    path,
                )
    finally:
        groups.close()
    final = MetaParameters(*(t.detach().clone() for t in meta.tensors()))
    return final, records


def _exponential(rng: np.random.Generator, mean: float) -> int:
    """``round(Exp(mean))`` (0 for a mean of 0)."""
    return int(round(rng.exponential(mean))) if mean else 0


def evaluate_on_new_problems(
    distribution: MNIST,
    optimizer: Any,
    eta: float | None,
    *,
    n_train: int,
    label_noise: float,
    runs: int,
    steps: int,
    eval_every: int,
    seed: int,
) -> dict[str, Any]:
    """Train ``runs`` new problems for ``steps`` steps with ``optimizer`` (Figs 4–5's test).

    New samples (label noise included), the authors' initialisation
    ``N(0, 1)·1.2/√fan_in`` and mini-batch orders, all drawn from ``seed``; test accuracy
    on the true test labels, training accuracy on the problem's own labels.

    Args:
        distribution: The MNIST (or digits) task distribution.
        optimizer: A :class:`~l2l_tune.learned.LearnedRule`, or ``"sgd"``.
        eta: SGD's step size (``None`` for a learned rule).
        n_train: Training samples per problem.
        label_noise: Fraction of those labels redrawn uniformly.
        runs: New problems.
        steps: Training steps of each.
        eval_every: Steps between points of the accuracy curves.
        seed: Seed of the problems.

    Returns:
        ``test`` (the evaluation's summary: accuracies and losses, mean and spread),
        ``curve_steps``, ``test_accuracy_curve``, ``train_accuracy_curve`` and
        ``test_accuracy_runs``.
    """
    batch = distribution.sample(
        runs, n_train, 0, label_noise, seed=seed, init="paper", optimizer=optimizer
    )
    evaluation = batch.evaluate(eta, steps, eval_every=eval_every)
    return {
        "test": evaluation.summary(),
        "curve_steps": evaluation.curve_steps.tolist(),
        "test_accuracy_curve": evaluation.test_accuracy_curve.tolist(),
        "train_accuracy_curve": evaluation.train_accuracy_curve.tolist(),
        "test_accuracy_runs": evaluation.test_accuracy.tolist(),
    }
