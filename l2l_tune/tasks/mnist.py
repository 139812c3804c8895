"""Tuning the SGD step size of a small network on MNIST (paper, Section 5, Figs 4–5).

A task trains a 784-100-20-10 ReLU network (cross entropy, mini-batches of 32,
pixels / 255) by ``t`` steps of SGD at step size ``η`` on a random subset of the
MNIST training set; its meta-loss is the final loss on the task's training
samples (train-by-train) or on held-out validation samples (train-by-validation),
averaged over ``m`` tasks,

    F̂(η) = (1/m) Σ_i ℓ_i(w_t(η)),

the counterpart of the paper's Eqns (3)–(4). Each task fixes its initialisation,
its sample and its mini-batch order, so ``F̂`` is a deterministic function of
``η`` (common random numbers across step sizes).

The meta-gradient is exact: forward mode carries ``∂w/∂η`` along the run with one
Hessian-vector product per step (:mod:`l2l_tune.hypergrad.mlp`), so its memory
does not grow with ``t``. Reverse mode through the unrolled run (``"backprop"``)
and central finite differences are kept for comparison and tests.

Divergence follows the paper's 40σ rule in spirit (Section 4): a task whose
mini-batch loss reaches ``40·ln C`` (forty times the loss of a uniform guess over
``C`` classes), or whose next weights would not be finite, is frozen there; its
meta-loss is that bound and its meta-gradient 0, so a diverging run never yields
NaN.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import (
    check_choice,
    check_horizon,
    check_int,
    check_relative_step,
    check_step_size,
)
from ..meta.base import NonFiniteMetaGradientWarning
from .base import SPLITS

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from ..data import ImageDataset
    from ..hypergrad.rules import UpdateRule
    from ..hypergrad.tangent import Direction
    from ..meta.vector import HyperparameterSpace

__all__ = [
    "MNIST",
    "MNISTBatch",
    "MNISTEvaluation",
    "META_GRADIENT_METHODS",
    "INNER_OPTIMIZERS",
    "TRUNCATION_FACTOR",
]

#: A task is frozen once its mini-batch loss reaches ``TRUNCATION_FACTOR · ln C``.
TRUNCATION_FACTOR = 40.0

#: How :meth:`MNISTBatch.meta_gradient` differentiates the meta-loss.
META_GRADIENT_METHODS = ("forward", "backprop", "finite-difference")

_DTYPES = ("float32", "float64")
# Rows of the inputs gathered at once when a split's loss is measured.
_CHUNK_ELEMENTS = 1 << 22
# A per-layer hyperparameter: ``name[i]``.
_LAYER_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\[(0|[1-9][0-9]*)\]")


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is in the [torch] extra
        raise ImportError(
            "the MNIST task needs PyTorch: pip install 'l2l-tune[torch]' "
            "(CPU build: pip install torch==2.13.0)"
        ) from exc
    return torch


def _resolve_dtype(dtype: Any) -> torch.dtype:
    torch = _torch()
    if isinstance(dtype, str) and dtype in _DTYPES:
        return getattr(torch, dtype)
    if dtype in (torch.float32, torch.float64):
        return dtype
    raise ValueError(
        f"dtype must be torch.float32 or torch.float64 (or their names); got {dtype!r}"
    )


def _resolve_device(device: Any) -> torch.device:
    torch = _torch()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {device!r}") from exc
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {device!r}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but no CUDA device is available")
    return resolved


@dataclass(frozen=True)
class MNISTEvaluation:
    """What ``t`` steps of the inner optimizer (at step size ``eta``) give on each task of a batch.

    Attributes:
        eta: The step size (``None`` for an optimizer without one, such as the
            learned one).
        t: Inner steps.
        test_accuracy: ``(m,)`` accuracy on the test set.
        test_loss: ``(m,)`` cross entropy on the test set.
        train_accuracy: ``(m,)`` accuracy on each task's training samples (their
            labels, noisy ones included).
        train_loss: ``(m,)`` cross entropy there.
        truncated: ``(m,)`` tasks frozen by the divergence rule.
        curve_steps: Steps at which the curves were measured (empty without
            ``eval_every``).
        test_accuracy_curve: ``(m, len(curve_steps))``.
        train_accuracy_curve: ``(m, len(curve_steps))``.
        hyperparameters: The hyperparameters evaluated, when given as a mapping.
        valid_loss: ``(m,)`` cross entropy on each task's validation samples (empty
            without them): the train-by-validation meta-loss of the same run.
        valid_accuracy: ``(m,)`` accuracy there.
    """

    eta: float | None
    t: int
    test_accuracy: np.ndarray
    test_loss: np.ndarray
    train_accuracy: np.ndarray
    train_loss: np.ndarray
    truncated: np.ndarray
    curve_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    test_accuracy_curve: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    train_accuracy_curve: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    hyperparameters: dict[str, float] = field(default_factory=dict)
    valid_loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    valid_accuracy: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def summary(self) -> dict[str, float]:
        """Means over tasks (and the number truncated), JSON-friendly."""
        return {
            "test_accuracy": float(np.mean(self.test_accuracy)),
            "test_accuracy_std": float(np.std(self.test_accuracy)),
            "test_loss": float(np.mean(self.test_loss)),
            "train_accuracy": float(np.mean(self.train_accuracy)),
            "train_loss": float(np.mean(self.train_loss)),
            "truncated": int(np.sum(self.truncated)),
            **(
                {
                    "valid_loss": float(np.mean(self.valid_loss)),
                    "valid_accuracy": float(np.mean(self.valid_accuracy)),
                }
                if self.valid_loss.size
                else {}
            ),
        }


class MNIST:
    """The distribution of MNIST tasks: random subsets of the training set.

    Args:
        dataset: ``"mnist"`` (the IDX files, see :mod:`l2l_tune.data`), ``"digits"``
            (scikit-learn's bundled 8×8 digits: no download) or an
            :class:`~l2l_tune.data.ImageDataset`.
        data_dir: Directory with the MNIST IDX files (default: ``$L2L_TUNE_DATA``
            or the user cache directory).
        download: Download missing MNIST files (sha256-verified).
        dtype: ``torch.float32`` or ``torch.float64`` (or their names).
        device: ``"cpu"`` or ``"cuda"``/``"cuda:N"``.
        hidden: Hidden-layer widths (the paper's ``(100, 20)``).
        batch_size: Mini-batch size of SGD (the paper's 32).

    Raises:
        ValueError: for an unknown ``dataset``, ``dtype`` or ``device``, a CUDA
            device when none is available, or bad ``hidden``/``batch_size``.
        FileNotFoundError: when the MNIST files are missing and ``download`` is False.
    """

    def __init__(
        self,
        dataset: str | ImageDataset = "mnist",
        data_dir: str | os.PathLike[str] | None = None,
        download: bool = False,
        dtype: Any = "float32",
        device: Any = "cpu",
        hidden: tuple[int, ...] = (100, 20),
        batch_size: int = 32,
    ) -> None:
        torch = _torch()
        self.dtype = _resolve_dtype(dtype)
        self.device = _resolve_device(device)
        self.batch_size = check_int(batch_size, "batch_size", 1)
        if not isinstance(hidden, (tuple, list)) or not all(
            isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h >= 1 for h in hidden
        ):
            raise ValueError(f"hidden must be a tuple of positive integers; got {hidden!r}")
        if isinstance(dataset, str):
            from ..data import DATASETS, load_dataset

            check_choice(dataset, "dataset", tuple(DATASETS))
            data = load_dataset(dataset, data_dir, download=download)
        else:
            data = dataset
        self.data = data
        self.name = data.name
        self.sizes = (data.n_features, *(int(h) for h in hidden), data.n_classes)
        scale = 1.0 / float(data.max_pixel)
        self._train_x = (
            torch.as_tensor(data.train_images).to(device=self.device, dtype=self.dtype) * scale
        )
        self._train_y = torch.as_tensor(data.train_labels, dtype=torch.int64, device=self.device)
        self._test_x = (
            torch.as_tensor(data.test_images).to(device=self.device, dtype=self.dtype) * scale
        )
        self._test_y = torch.as_tensor(data.test_labels, dtype=torch.int64, device=self.device)

    @property
    def n_train_available(self) -> int:
        """Size of the training set tasks are drawn from."""
        return int(self._train_y.shape[0])

    def sample(
        self,
        m: int,
        n_train: int,
        n_valid: int = 0,
        label_noise: float = 0.0,
        seed: int | None = None,
        *,
        optimizer: str | UpdateRule = "sgd",
        hyperparameters: Mapping[str, float] | None = None,
        init: str = "torch",
    ) -> MNISTBatch:
        """Draw ``m`` tasks: disjoint training and validation samples, an initialisation, an order.

        Args:
            m: Number of tasks, ``≥ 1``.
            n_train: Training samples per task, ``≥ 1``.
            n_valid: Validation samples per task (``0``: train-by-train only).
            label_noise: Fraction ``p ∈ [0, 1]`` of each task's training and
                validation labels replaced by uniformly random labels (Fig 4b).
            seed: Seed of everything random in the batch.
            optimizer: The inner optimizer: ``"sgd"`` (the paper's), ``"momentum"``,
                ``"nesterov"``, ``"adam"``, ``"adamw"`` or an update rule of
                :mod:`l2l_tune.hypergrad.rules` (``Scheduled(AdamW(), horizon=t)`` for
                a schedule).
            hyperparameters: Its fixed hyperparameters (defaults: ``torch.optim``'s, with
                ``momentum = 0.9`` for ``"momentum"`` and ``"nesterov"``); the scalar
                methods' ``eta`` is ``lr``.
            init: The networks' initialisation: ``"torch"`` (``nn.Linear``'s default)
                or ``"paper"`` (every tensor ``N(0, 1)·1.2/√fan_in``, the authors' code
                of the learned-optimizer experiments; see
                :func:`~l2l_tune.hypergrad.mlp.init_params`).

        Returns:
            The :class:`MNISTBatch`.

        Raises:
            ValueError: for ``m < 1``, ``n_train < 1``, ``n_valid < 0``,
                ``n_train + n_valid`` above the training set size, or ``label_noise``
                outside ``[0, 1]``, an unknown ``optimizer`` or hyperparameter, a
                hyperparameter out of its range, or an unknown ``init``.
        """
        torch = _torch()
        m = check_int(m, "m", 1)
        check_choice(init, "init", ("torch", "paper"))
        n_train = check_int(n_train, "n_train", 1)
        n_valid = check_int(n_valid, "n_valid", 0)
        if n_train + n_valid > self.n_train_available:
            raise ValueError(
                f"n_train + n_valid must be at most {self.n_train_available} (the {self.name} "
                f"training set); got {n_train} + {n_valid}"
            )
        if (
            isinstance(label_noise, bool)
            or not isinstance(label_noise, (int, float))
            or not (0.0 <= float(label_noise) <= 1.0)
        ):
            raise ValueError(f"label_noise must be a fraction in [0, 1]; got {label_noise!r}")
        rng = np.random.default_rng(seed)
        n = n_train + n_valid
        n_classes = self.data.n_classes
        indices = np.empty((m, n), dtype=np.int64)
        labels = np.empty((m, n), dtype=np.int64)
        order_seeds = rng.integers(0, 2**63 - 1, size=m)
        init_seed = int(rng.integers(0, 2**63 - 1))
        train_labels = np.asarray(self.data.train_labels, dtype=np.int64)
        for i in range(m):
            chosen = rng.choice(self.n_train_available, size=n, replace=False)
            indices[i] = chosen
            labels[i] = train_labels[chosen]
            n_noisy = int(round(float(label_noise) * n))
            if n_noisy:
                noisy = rng.choice(n, size=n_noisy, replace=False)
                labels[i, noisy] = rng.integers(0, n_classes, size=n_noisy)
        from ..hypergrad.mlp import init_params

        generator = torch.Generator().manual_seed(init_seed)
        init_tensors = init_params(
            self.sizes, m, generator, dtype=self.dtype, device=self.device, scheme=init
        )
        return MNISTBatch(
            self,
            indices=torch.as_tensor(indices, device=self.device),
            labels=torch.as_tensor(labels, device=self.device),
            n_train=n_train,
            n_valid=n_valid,
            label_noise=float(label_noise),
            init=init_tensors,
            order_seeds=[int(s) for s in order_seeds],
            optimizer=optimizer,
            hyperparameters=hyperparameters,
        )

    def __repr__(self) -> str:
        return (
            f"MNIST(dataset={self.name!r}, sizes={self.sizes}, batch_size={self.batch_size}, "
            f"dtype={self.dtype}, device={self.device})"
        )


@dataclass
class _RunResult:
    params: list[Tensor]
    #: Per direction, the tangent ``∂w/∂h`` of every tensor, stacked ``(d, m, ...)``.
    tangent: list[Tensor] | None
    alive: Tensor
    #: ``(d, m)``: whether each direction's tangent stayed finite on each task.
    tangent_finite: Tensor | None


#: The inner optimizers by name (:meth:`MNIST.sample`'s ``optimizer``).
INNER_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")


def _resolve_optimizer(optimizer: Any) -> UpdateRule:
    """An :class:`~l2l_tune.hypergrad.rules.UpdateRule` from a name or an instance."""
    from ..hypergrad.rules import SGD, Adam, AdamW, UpdateRule

    if isinstance(optimizer, UpdateRule):
        return optimizer
    if isinstance(optimizer, str) and optimizer in INNER_OPTIMIZERS:
        rules: dict[str, Callable[[], UpdateRule]] = {
            "sgd": SGD,
            "momentum": lambda: SGD(momentum_buffer=True),
            "nesterov": lambda: SGD(nesterov=True),
            "adam": Adam,
            "adamw": AdamW,
        }
        return rules[optimizer]()
    raise ValueError(
        f"optimizer must be one of {INNER_OPTIMIZERS} or an l2l_tune.hypergrad.rules.UpdateRule "
        f"(SGD, Adam, AdamW, Scheduled); got {optimizer!r}"
    )


#: Fixed hyperparameters of the named optimizers that differ from ``torch.optim``'s defaults.
_PRESET_HYPERPARAMETERS: dict[str, dict[str, float]] = {
    "momentum": {"momentum": 0.9},
    "nesterov": {"momentum": 0.9},
}


def _inner_rule(rule: UpdateRule) -> UpdateRule:
    return getattr(rule, "rule", rule)


def _search_bounds(rule: UpdateRule, name: str) -> tuple[float, float, bool]:
    """``(low, high, log)``: where a search over ``name`` looks for a training run of this rule."""
    from ..hypergrad.rules import SGD, Adam

    inner = _inner_rule(rule)
    if name == "momentum" and isinstance(inner, SGD) and inner.nesterov:
        return (1e-3, 0.99, False)  # Nesterov needs momentum > 0 (as torch.optim.SGD)
    if name == "lr":
        return (1e-5, 1.0, True) if isinstance(inner, Adam) else (1e-3, 10.0, True)
    return {
        "weight_decay": (1e-6, 1.0, True),
        "momentum": (0.0, 0.99, False),
        "dampening": (0.0, 0.99, False),
        "beta1": (0.0, 0.99, False),
        "beta2": (0.9, 0.9999, False),
        "eps": (1e-10, 1e-3, True),
        "warmup_fraction": (0.0, 0.5, False),
        "final_fraction": (1e-3, 1.0, True),
    }[name]


class MNISTBatch:
    """``m`` MNIST tasks trained at once (batched matrix products, CPU or CUDA).

    Built by :meth:`MNIST.sample`. Offers the :class:`~l2l_tune.tasks.MetaObjectiveTask`
    interface (the step size ``η``), so :class:`~l2l_tune.StepSizeTuner`, the Optuna
    sampler and the Ray searcher tune it like the closed-form tasks, and the
    :class:`~l2l_tune.tasks.HyperparameterTask` interface (every continuous
    hyperparameter of the inner optimizer, a step size per layer) for
    :class:`~l2l_tune.HyperparameterTuner` and the vector sampler and searcher.

    The inner optimizer is an update rule of :mod:`l2l_tune.hypergrad.rules`
    (SGD, SGD with momentum or Nesterov, Adam, AdamW, each with weight decay, and a
    schedule), the same code the drop-in optimizers run; its tangents come from the
    one tangent recursion (:func:`~l2l_tune.hypergrad.tangent.tangent_step`) with
    the hand-derived Hessian-vector products of :mod:`l2l_tune.hypergrad.mlp`.

    Attributes:
        m: Number of tasks.
        n_train: Training samples per task.
        n_valid: Validation samples per task.
        label_noise: Fraction of noisy labels.
        truncation_loss: The divergence bound ``40·ln C``.
        optimizer: The inner optimizer's update rule.
        hyperparameters: Its hyperparameters other than those a call names (``lr``
            is the scalar methods' ``eta``).
        n_layers: Layers of the network; parameter group ``i`` is layer ``i`` (its
            weight and bias), so ``"lr[i]"`` is layer ``i``'s step size.
        exact_meta_objective: ``False``: the meta-gradient is exact for the sampled
            batches, but the meta-objective of a ReLU network is rugged and chaotic at
            large step sizes (Theorem 3), so Claim 1 cannot be trusted.
    """

    exact_meta_objective = False

    def __init__(
        self,
        distribution: MNIST,
        *,
        indices: Tensor,
        labels: Tensor,
        n_train: int,
        n_valid: int,
        label_noise: float,
        init: list[Tensor],
        order_seeds: list[int],
        optimizer: Any = "sgd",
        hyperparameters: Mapping[str, float] | None = None,
    ) -> None:
        self.distribution = distribution
        self.m = int(indices.shape[0])
        self.n_train = n_train
        self.n_valid = n_valid
        self.label_noise = label_noise
        self.truncation_loss = TRUNCATION_FACTOR * math.log(distribution.data.n_classes)
        self.n_layers = len(init) // 2
        self.optimizer = _resolve_optimizer(optimizer)
        if not isinstance(hyperparameters, (Mapping, type(None))):
            raise ValueError(
                f"hyperparameters must be a mapping {{name: value}}, got {hyperparameters!r}"
            )
        preset = _PRESET_HYPERPARAMETERS.get(optimizer, {}) if isinstance(optimizer, str) else {}
        self.hyperparameters = self.optimizer.check_hyperparameters(
            {**preset, **(hyperparameters or {})}, "hyperparameters"
        )
        self._indices = indices
        self._labels = labels
        self._init = init
        self._order_seeds = order_seeds
        self._order: Tensor | None = None
        self._scale: float | None = None

    def with_optimizer(
        self, optimizer: Any, hyperparameters: Mapping[str, float] | None = None
    ) -> MNISTBatch:
        """The same tasks (samples, initialisations, batch orders) with another inner optimizer.

        Args:
            optimizer: A name of :data:`INNER_OPTIMIZERS` or an update rule.
            hyperparameters: Its fixed hyperparameters (defaults: ``torch.optim``'s, with
                ``momentum = 0.9`` for ``"momentum"`` and ``"nesterov"``).

        Raises:
            ValueError: for an unknown optimizer or hyperparameter, or a value out of range.
        """
        return MNISTBatch(
            self.distribution,
            indices=self._indices,
            labels=self._labels,
            n_train=self.n_train,
            n_valid=self.n_valid,
            label_noise=self.label_noise,
            init=self._init,
            order_seeds=self._order_seeds,
            optimizer=optimizer,
            hyperparameters=hyperparameters,
        )

    def hyperparameter_space(self) -> HyperparameterSpace:
        """What a search over this optimizer looks at: every differentiable name, then ``lr[i]``.

        The bounds are the usual search ranges (SGD ``lr ∈ [1e-3, 10]``, Adam
        ``lr ∈ [1e-5, 1]``, ``weight_decay ∈ [1e-6, 1]`` on a log scale, momenta and
        betas on a linear one); pick the names to tune with
        :meth:`~l2l_tune.meta.HyperparameterSpace.subset`.
        """
        from ..meta.vector import Hyperparameter, HyperparameterSpace

        names = []
        for name in self.optimizer.hyperparameters:
            try:
                self.optimizer.check_differentiable([name])
            except ValueError:
                continue
            names.append(name)
        entries = [Hyperparameter(n, *_search_bounds(self.optimizer, n)) for n in names]
        low, high, log = _search_bounds(self.optimizer, "lr")
        entries += [Hyperparameter(f"lr[{i}]", low, high, log) for i in range(self.n_layers)]
        return HyperparameterSpace(tuple(entries))

    # ------------------------------------------------------------------ data
    def _batch_order(self, t: int) -> Tensor:
        """``(m, t, B)`` positions within each task's training samples.

        Epochs are fresh permutations from each task's own seed, so the first
        ``t`` steps are the same whatever the longest run asked for.
        """
        torch = _torch()
        if self._order is not None and self._order.shape[1] >= t:
            return self._order[:, :t]
        b = self.distribution.batch_size
        needed = t * b
        rows = []
        for seed in self._order_seeds:
            rng = np.random.default_rng(seed)
            epochs = -(-needed // self.n_train)
            flat = np.concatenate([rng.permutation(self.n_train) for _ in range(epochs)])
            rows.append(flat[:needed].reshape(t, b))
        self._order = torch.as_tensor(np.stack(rows), device=self.distribution.device)
        return self._order

    def _minibatch(self, order: Tensor, step: int) -> tuple[Tensor, Tensor]:
        torch = _torch()
        positions = order[:, step]  # (m, B)
        rows = torch.gather(self._indices, 1, positions)
        return self.distribution._train_x[rows], torch.gather(self._labels, 1, positions)

    def minibatches(self, start: int, stop: int) -> list[tuple[Tensor, Tensor]]:
        """The minibatches ``(x, y)`` of steps ``start, …, stop − 1`` of every task.

        The order is the tasks' own (epoch-wise shuffled from each task's seed, the one
        every run of this batch uses): ``x`` of shape ``(m, batch_size, 784)``, ``y``
        ``(m, batch_size)`` with the task's (possibly noisy) labels.

        Raises:
            ValueError: for ``start < 0`` or ``stop <= start``.
        """
        start = check_int(start, "start")
        stop = check_int(stop, "stop", start + 1)
        order = self._batch_order(stop)
        return [self._minibatch(order, step) for step in range(start, stop)]

    def split_data(self, split: str, positions: Any = None) -> tuple[Tensor, Tensor]:
        """Every task's training (``"train"``) or validation (``"valid"``) subset:
        ``x`` of shape ``(m, n, 784)`` and labels ``(m, n)``.

        Args:
            split: ``"train"`` or ``"valid"``.
            positions: Positions within the subset to take (the same for every task,
                a sequence of integers); ``None``: all of it.

        Raises:
            ValueError: for an unknown split, ``"valid"`` without validation samples,
                or positions that are not integers within the subset.
        """
        torch = _torch()
        self._check_split(split)
        rows, labels = self._split_rows(split)
        if positions is not None:
            index = torch.as_tensor(np.asarray(positions), device=rows.device)
            size = int(rows.shape[1])
            if (
                index.dim() != 1
                or index.dtype in (torch.bool,)
                or index.is_floating_point()
                or (index.numel() and not (0 <= int(index.min()) and int(index.max()) < size))
            ):
                raise ValueError(
                    f"positions must be integers in [0, {size}) (the {split} subset), got "
                    f"{positions!r}"
                )
            rows, labels = rows[:, index], labels[:, index]
        return self.distribution._train_x[rows], labels

    def initial_params(self) -> list[Tensor]:
        """A copy of every task's initial parameters, stacked ``(m, ...)`` per tensor."""
        return [p.clone() for p in self._init]

    def select(self, problems: Sequence[int]) -> MNISTBatch:
        """The tasks ``problems`` of this batch (their samples, initialisations, orders).

        Args:
            problems: Task indices in ``[0, m)``.

        Raises:
            ValueError: for an empty selection or an index outside ``[0, m)``.
        """
        torch = _torch()
        chosen = [int(check_int(i, "problems[i]")) for i in problems]
        if not chosen or max(chosen) >= self.m:
            raise ValueError(f"problems must be task indices in [0, {self.m}), got {problems!r}")
        index = torch.as_tensor(chosen, device=self._indices.device)
        return MNISTBatch(
            self.distribution,
            indices=self._indices[index],
            labels=self._labels[index],
            n_train=self.n_train,
            n_valid=self.n_valid,
            label_noise=self.label_noise,
            init=[p[index] for p in self._init],
            order_seeds=[self._order_seeds[i] for i in chosen],
            optimizer=self.optimizer,
            hyperparameters=self.hyperparameters,
        )

    def _split_rows(self, split: str) -> tuple[Tensor, Tensor]:
        if split == "train":
            return self._indices[:, : self.n_train], self._labels[:, : self.n_train]
        return self._indices[:, self.n_train :], self._labels[:, self.n_train :]

    # ------------------------------------------------------------------ checks
    def _check_split(self, split: str) -> None:
        check_choice(split, "split", SPLITS)
        if split == "valid" and not self.n_valid:
            raise ValueError(
                "split='valid' needs validation samples: sample the batch with n_valid > 0"
            )

    def _check(self, eta: Any, t: Any, split: str) -> tuple[float, int]:
        eta = check_step_size(eta)
        t = check_horizon(t)
        self._check_split(split)
        return eta, t

    def _group_values(
        self, hyperparameters: Any, *, differentiate: bool
    ) -> tuple[list[dict[str, float]], list[Direction], list[str]]:
        """Each layer's hyperparameters, the directions of the named ones and their keys.

        A key is a name of the optimizer (every layer) or ``name[i]`` (layer ``i``).

        Raises:
            ValueError: for a key that is neither, a name given both ways, a value out
                of range, or (``differentiate``) a name the optimizer does not use.
        """
        from ..hypergrad.tangent import Direction

        if not isinstance(hyperparameters, Mapping) or not hyperparameters:
            raise ValueError(
                "hyperparameters must be a non-empty mapping {name: value} with names among "
                f"{sorted(self.optimizer.hyperparameters)} or 'name[i]' for layer i < "
                f"{self.n_layers}; got {hyperparameters!r}"
            )
        groups = [dict(self.hyperparameters) for _ in range(self.n_layers)]
        directions: list[Direction] = []
        keys: list[str] = []
        shared: set[str] = set()
        per_layer: set[str] = set()
        seen: set[tuple[str, int | None]] = set()
        for key, value in hyperparameters.items():
            match = _LAYER_KEY.fullmatch(key) if isinstance(key, str) else None
            name, layer = (match.group(1), int(match.group(2))) if match else (key, None)
            if name not in self.optimizer.hyperparameters or (
                layer is not None and layer >= self.n_layers
            ):
                raise ValueError(
                    f"hyperparameters names {key!r}; accepted: "
                    f"{sorted(self.optimizer.hyperparameters)} (every layer) or 'name[i]' "
                    f"for layer i < {self.n_layers}"
                )
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"hyperparameters[{key!r}] must be a real number; got {value!r}")
            if (name, layer) in seen:
                raise ValueError(f"hyperparameters gives {key!r} twice")
            seen.add((name, layer))
            (shared if layer is None else per_layer).add(name)
            for i in range(self.n_layers) if layer is None else (layer,):
                groups[i][name] = float(value)
            directions.append(Direction(name, layer))
            keys.append(key)
        both = sorted(shared & per_layer)
        if both:
            raise ValueError(
                f"hyperparameters gives {both} both for every layer and per layer; give one"
            )
        for i, group in enumerate(groups):
            self.optimizer.check_hyperparameters(group, f"layer {i}")
        if differentiate:
            self.optimizer.check_differentiable(sorted(shared | per_layer))
        return groups, directions, keys

    # ------------------------------------------------------------------ training
    def _run(
        self,
        group_hparams: Sequence[Mapping[str, Any]],
        t: int,
        *,
        directions: Sequence[Direction] = (),
        on_step: Callable[[int, list[Tensor]], None] | None = None,
        graph: bool = False,
    ) -> _RunResult:
        """``t`` steps of the inner optimizer on every task, with tangents along ``directions``.

        Forward mode (paper Eqn 2 for the optimizer's rule): one Hessian-vector
        product per direction and step, the rule's Jacobian-vector product from
        :func:`~l2l_tune.hypergrad.tangent.tangent_step`. With ``graph`` the run is
        recorded by autograd (reverse mode: tensor hyperparameters in
        ``group_hparams``). A task whose mini-batch loss reaches the truncation bound,
        or whose next weights or state would not be finite, is frozen (weights, state
        and tangents).
        """
        torch = _torch()
        from ..hypergrad import mlp
        from ..hypergrad.rules import update_groups
        from ..hypergrad.tangent import tangent_step, zero_tangents

        rule = self.optimizer
        order = self._batch_order(t)
        params = [p.clone() for p in self._init]
        group_of = [i // 2 for i in range(len(params))]
        states = rule.init(params)
        n_dir = len(directions)
        tangents = zero_tangents(params, states, n_dir) if n_dir else None
        alive = torch.ones(self.m, dtype=torch.bool, device=self.distribution.device)
        cap = self.truncation_loss
        with torch.enable_grad() if graph else torch.no_grad():
            for step in range(t):
                x, y = self._minibatch(order, step)
                steps = [step] * len(params)
                new_tangents = None
                if tangents is None:
                    loss, grads = mlp.loss_and_gradient(params, x, y)
                    new_params, new_states = update_groups(
                        rule, group_of, group_hparams, params, grads, states, steps
                    )
                else:
                    directional = [[tg[0][j] for tg in tangents] for j in range(n_dir)]
                    loss, grads, hvps = mlp.loss_gradient_and_hvps(params, directional, x, y)
                    stacked = [
                        hvps[0][i].unsqueeze(0) if n_dir == 1 else torch.stack([h[i] for h in hvps])
                        for i in range(len(params))
                    ]
                    new_params, new_states, new_tangents = tangent_step(
                        rule,
                        group_of,
                        group_hparams,
                        params,
                        grads,
                        states,
                        steps,
                        directions,
                        tangents,
                        stacked,
                    )
                with torch.no_grad():
                    ok = alive & (loss < cap)  # False for NaN too
                    for x_new in (*new_params, *(s for state in new_states for s in state)):
                        # a sum is non-finite when an entry is (inf - inf is NaN): one
                        # reduction instead of an elementwise test
                        ok &= torch.isfinite(x_new.flatten(1).sum(dim=1))
                    alive = ok
                params = [
                    _where(alive, new, old) for new, old in zip(new_params, params, strict=True)
                ]
                states = [
                    tuple(_where(alive, n, o) for n, o in zip(new, old, strict=True))
                    for new, old in zip(new_states, states, strict=True)
                ]
                if new_tangents is not None:
                    tangents = [
                        tuple(_where(alive, n, o, rows=True) for n, o in zip(new, old, strict=True))
                        for new, old in zip(new_tangents, tangents or (), strict=True)
                    ]
                if on_step is not None:
                    on_step(step + 1, params)
        if tangents is None:
            return _RunResult(params, None, alive, None)
        finite = torch.ones((n_dir, self.m), dtype=torch.bool, device=alive.device)
        for tangent in tangents:
            finite &= torch.isfinite(tangent[0]).flatten(2).all(dim=2)
        return _RunResult(params, [tg[0] for tg in tangents], alive, finite)

    def _split_loss(
        self, params: list[Tensor], split: str, tangent: list[Tensor] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Per-task mean loss on ``split`` (and its ``(d, m)`` derivatives along ``tangent``)."""
        rows, labels = self._split_rows(split)
        return self._loss_on(params, rows, labels, tangent)

    def _loss_on(
        self,
        params: list[Tensor],
        rows: Tensor | None,
        labels: Tensor,
        tangent: list[Tensor] | None = None,
        *,
        test: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        torch = _torch()
        from ..hypergrad import mlp

        n = int(labels.shape[-1])
        features = self.distribution.sizes[0]
        chunk = max(1, _CHUNK_ELEMENTS // (self.m * features))
        total = torch.zeros(self.m, dtype=self.distribution.dtype, device=labels.device)
        n_dir = 0 if tangent is None else int(tangent[0].shape[0])
        dtotal = torch.zeros((n_dir, self.m), dtype=total.dtype, device=total.device)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            if test:
                x = self.distribution._test_x[start:stop].expand(self.m, -1, -1)
                y = labels[:, start:stop]
            else:
                assert rows is not None
                x = self.distribution._train_x[rows[:, start:stop]]
                y = labels[:, start:stop]
            if tangent is None:
                loss = mlp.loss(params, x, y)
            else:
                directional = [[v[j] for v in tangent] for j in range(n_dir)]
                loss, dlosses = mlp.loss_and_directional_derivatives(params, directional, x, y)
                dtotal += torch.stack(dlosses) * (stop - start)
            total += loss * (stop - start)
        return total / n, (dtotal / n if tangent is not None else None)

    # ------------------------------------------------------------------ meta-objective
    def _combine(
        self, losses: Tensor, dlosses: Tensor | None, alive: Tensor, t: int, log: bool
    ) -> tuple[float, list[float]]:
        """The mean (or ``(1/t)·log`` mean) over tasks and its derivative per direction."""
        torch = _torch()
        losses = torch.where(alive, losses, torch.full_like(losses, self.truncation_loss))
        mean = float(losses.double().mean())
        dmeans: list[float] = []
        if dlosses is not None:
            dlosses = torch.where(alive, dlosses, torch.zeros_like(dlosses))
            dmeans = [float(x) for x in dlosses.double().mean(dim=1)]
        if not log:
            return mean, dmeans
        if mean <= 0.0:
            return -math.inf, [0.0] * len(dmeans)
        return math.log(mean) / t, [d / mean / t for d in dmeans]

    def value_and_gradients(
        self,
        hyperparameters: Mapping[str, float],
        t: int,
        *,
        split: str = "train",
        log: bool = False,
    ) -> tuple[float, dict[str, float]]:
        """The meta-loss and its exact gradient in each named hyperparameter, by forward mode.

        The tangent of every named hyperparameter is carried along the run (the
        paper's Eqn 2 for the optimizer's update rule: one Hessian-vector product per
        hyperparameter and step); memory does not grow with ``t``.

        Args:
            hyperparameters: Values by name: a name of the optimizer's hyperparameters
                (``"lr"``, ``"momentum"``, ``"weight_decay"``, ``"beta1"``…) sets it
                for every layer; ``"name[i]"`` sets it for layer ``i`` only (``"lr[0]"``,
                ``"lr[1]"``, ``"lr[2]"``: per-layer step sizes). Names not given keep
                :attr:`hyperparameters`.
            t: Inner steps, ``≥ 1``.
            split: ``"train"`` (train-by-train) or ``"valid"`` (train-by-validation).
            log: Return ``(1/t)·log F̂`` and its gradient (same minimiser).

        Returns:
            ``(value, {key: derivative})`` with the keys of ``hyperparameters``. The
            value is always finite (a diverging task counts at the truncation bound);
            a derivative is ``+inf`` (with a warning) when its tangent overflows the
            dtype (the run is chaotic there, Theorem 3).

        Raises:
            ValueError: for an unknown name, a value out of the optimizer's range, a
                name the optimizer does not use (``momentum`` without a momentum
                buffer), ``t < 1``, an unknown ``split``, or ``split="valid"`` without
                validation samples.
        """
        t = check_horizon(t)
        self._check_split(split)
        groups, directions, keys = self._group_values(hyperparameters, differentiate=True)
        run = self._run(groups, t, directions=directions)
        assert run.tangent is not None and run.tangent_finite is not None
        losses, dlosses = self._split_loss(run.params, split, run.tangent)
        value, grads = self._combine(losses, dlosses, run.alive, t, log)
        exploded = (run.alive.unsqueeze(0) & ~run.tangent_finite).any(dim=1).tolist()
        out: dict[str, float] = {}
        for key, grad, bad in zip(keys, grads, exploded, strict=True):
            if bad or not math.isfinite(grad):
                warnings.warn(
                    f"the meta-gradient in {key} at {dict(hyperparameters)} (t={t}) overflows "
                    f"{self.distribution.dtype}: the run is chaotic there; reported as +inf "
                    "(too large a step size)",
                    NonFiniteMetaGradientWarning,
                    stacklevel=2,
                )
                grad = math.inf
            out[key] = grad
        return value, out

    def value_and_gradient(
        self, eta: float, t: int, *, split: str = "train", log: bool = False
    ) -> tuple[float, float]:
        """The meta-loss ``F̂(η)`` and its exact derivative in the step size, by forward mode.

        The one-name case of :meth:`value_and_gradients` (``{"lr": eta}``, the other
        hyperparameters at :attr:`hyperparameters`).

        Args:
            eta: Step size ``η ≥ 0``.
            t: Inner steps, ``≥ 1``.
            split: ``"train"`` (train-by-train) or ``"valid"`` (train-by-validation).
            log: Return ``(1/t)·log F̂`` and its derivative (same minimiser).

        Returns:
            ``(value, derivative)``. The value is always finite; the derivative is
            ``+inf`` (with a warning) when the tangent overflows the dtype, i.e.
            the run is chaotic at this ``η`` (meta-gradient explosion).

        Raises:
            ValueError: for ``eta < 0`` or NaN, ``t < 1``, an unknown ``split``, or
                ``split="valid"`` on a batch without validation samples.
        """
        eta, t = self._check(eta, t, split)
        value, grads = self.value_and_gradients({"lr": eta}, t, split=split, log=log)
        return value, grads["lr"]

    def meta_objective(
        self,
        eta: float | Mapping[str, float],
        t: int,
        *,
        split: str = "train",
        log: bool = False,
    ) -> float:
        """``F̂`` (or ``(1/t)·log F̂``) from plain training runs, without tangents.

        Args:
            eta: The step size, or a mapping of hyperparameters as
                :meth:`value_and_gradients` takes.
            t, split, log: As in :meth:`value_and_gradient`.

        Raises:
            ValueError: as :meth:`value_and_gradient` and :meth:`value_and_gradients`.
        """
        groups = self._values_of(eta)
        t = check_horizon(t)
        self._check_split(split)
        run = self._run(groups, t)
        losses, _ = self._split_loss(run.params, split)
        return self._combine(losses, None, run.alive, t, log)[0]

    def _values_of(self, eta: float | Mapping[str, float]) -> list[dict[str, float]]:
        if isinstance(eta, Mapping):
            return self._group_values(eta, differentiate=False)[0]
        return self._group_values({"lr": check_step_size(eta)}, differentiate=False)[0]

    def meta_gradient(
        self,
        eta: float,
        t: int,
        *,
        split: str = "train",
        log: bool = False,
        method: str = "forward",
        fd_step: float | None = None,
    ) -> float:
        """The derivative of :meth:`meta_objective` in ``η``.

        Args:
            eta, t, split, log: As in :meth:`value_and_gradient`.
            method: ``"forward"`` (tangent carried along, memory independent of
                ``t``), ``"backprop"`` (autograd through the unrolled run: memory
                grows with ``t``) or ``"finite-difference"`` (central, for tests).
            fd_step: Relative step ``h`` of the central difference at
                ``η(1 ± h)``; default ``√ε`` of the dtype. The meta-objective of a
                ReLU network is only piecewise smooth, with kinks closer together
                the longer the run (at ``t = 100``, ``η = 0.5`` a step of ``1e-6``
                already straddles one and misses the derivative by orders of
                magnitude, while ``1e-8`` agrees to ``1e-7``).

        Returns:
            The derivative (``+inf`` in forward mode when the tangent overflows; in
            backprop mode whatever autograd produces, NaN included: it is the
            contrast that explodes).

        Raises:
            ValueError: for bad ``eta``/``t``/``split``, an unknown ``method``, an
                ``fd_step`` outside ``(0, 1)``, or ``eta = 0`` with finite differences.
        """
        check_choice(method, "method", META_GRADIENT_METHODS)
        if fd_step is not None:
            fd_step = check_relative_step(fd_step)
        if method == "forward":
            return self.value_and_gradient(eta, t, split=split, log=log)[1]
        eta, t = self._check(eta, t, split)
        if method == "finite-difference":
            torch = _torch()
            if eta == 0.0:
                raise ValueError("eta must be > 0 for method='finite-difference'")
            h = float(torch.finfo(self.distribution.dtype).eps) ** 0.5
            if fd_step is not None:
                h = check_relative_step(fd_step)
            plus = self.meta_objective(eta * (1 + h), t, split=split, log=log)
            minus = self.meta_objective(eta * (1 - h), t, split=split, log=log)
            return (plus - minus) / (2 * eta * h)
        return self.backprop_gradients({"lr": eta}, t, split=split, log=log)["lr"]

    def backprop_gradients(
        self,
        hyperparameters: Mapping[str, float],
        t: int,
        *,
        split: str = "train",
        log: bool = False,
    ) -> dict[str, float]:
        """The gradients of :meth:`value_and_gradients` by reverse mode through the unrolled run.

        The contrast and the reference: memory ``O(t)``; whatever autograd gives is
        returned, NaN included (it is the computation that explodes, Corollary 1).

        Raises:
            ValueError: as :meth:`value_and_gradients`.
        """
        torch = _torch()
        from ..hypergrad import mlp

        t = check_horizon(t)
        self._check_split(split)
        groups, directions, keys = self._group_values(hyperparameters, differentiate=True)
        leaves = [
            torch.tensor(float(hyperparameters[key]), dtype=self.distribution.dtype)
            .to(self.distribution.device)
            .requires_grad_(True)
            for key in keys
        ]
        tensor_groups: list[dict[str, Any]] = [dict(group) for group in groups]
        for leaf, direction in zip(leaves, directions, strict=True):
            for i in range(self.n_layers) if direction.group is None else (direction.group,):
                tensor_groups[i][direction.name] = leaf
        run = self._run(tensor_groups, t, graph=True)
        rows, labels = self._split_rows(split)
        losses = mlp.loss(run.params, self.distribution._train_x[rows], labels)
        losses = torch.where(run.alive, losses, torch.full_like(losses, self.truncation_loss))
        mean = losses.mean()
        objective = torch.log(mean) / t if log else mean
        grads = torch.autograd.grad(objective, leaves, allow_unused=True)
        return {
            key: 0.0 if grad is None else float(grad) for key, grad in zip(keys, grads, strict=True)
        }

    def step_size_scale(self) -> float:
        """``1/L``, ``L`` the largest Hessian eigenvalue of the training loss at initialisation.

        Estimated by 30 power iterations with Hessian-vector products on up to
        512 training samples of each task; the largest over tasks. Cached.
        """
        if self._scale is not None:
            return self._scale
        torch = _torch()
        from ..hypergrad import mlp

        n = min(self.n_train, 512)
        rows, labels = self._split_rows("train")
        x = self.distribution._train_x[rows[:, :n]]
        y = labels[:, :n]
        generator = torch.Generator().manual_seed(self._order_seeds[0] % (2**63))
        v = [
            torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p) for p in self._init
        ]
        top = torch.zeros(self.m, dtype=torch.float64)
        with torch.no_grad():
            for _ in range(30):
                norm = torch.sqrt(sum((u.flatten(1) ** 2).sum(1) for u in v))
                v = [u / _expand(norm, u) for u in v]
                _, _, hv = mlp.loss_gradient_and_hvp(self._init, v, x, y)
                top = (
                    sum((a * b).flatten(1).sum(1) for a, b in zip(v, hv, strict=True))
                    .double()
                    .cpu()
                )
                v = hv
        largest = float(top.abs().max())
        self._scale = 1.0 / largest if largest > 0 else 1.0
        return self._scale

    # ------------------------------------------------------------------ evaluation
    def evaluate(
        self,
        eta: float | Mapping[str, float] | None,
        t: int,
        *,
        eval_every: int | None = None,
        test_label_noise: float = 0.0,
        seed: int = 0,
    ) -> MNISTEvaluation:
        """Train every task ``t`` steps at ``eta`` (training samples only) and test it.

        Args:
            eta: Step size ``η ≥ 0``, a mapping of hyperparameters as
                :meth:`value_and_gradients` takes (its ``lr``, else the fixed one, is
                the evaluation's ``eta``), or ``None``: the batch's fixed
                hyperparameters as they are (an optimizer without a step size, such
                as the learned one of :class:`~l2l_tune.learned.LearnedRule`).
            t: Inner steps, ``≥ 1``.
            eval_every: Also record test and training accuracy every this many
                steps (the curves of Figs 4–5); ``None`` records the end only.
            test_label_noise: Fraction of test labels replaced by random labels
                (default 0: the true labels).
            seed: Seed of the test-label noise.

        Returns:
            The :class:`MNISTEvaluation`.

        Raises:
            ValueError: for bad ``eta``/``t``, ``eval_every < 1`` or
                ``test_label_noise`` outside ``[0, 1]``.
        """
        torch = _torch()
        if eta is None:
            groups = [dict(self.hyperparameters) for _ in range(self.n_layers)]
        else:
            groups = self._values_of(eta)
        t = check_horizon(t)
        if eval_every is not None:
            eval_every = check_int(eval_every, "eval_every", 1)
        if not (isinstance(test_label_noise, (int, float)) and 0.0 <= test_label_noise <= 1.0):
            raise ValueError(
                f"test_label_noise must be a fraction in [0, 1]; got {test_label_noise!r}"
            )
        test_y = self.distribution._test_y.clone()
        if test_label_noise:
            rng = np.random.default_rng(seed)
            n_test = int(test_y.shape[0])
            n_noisy = int(round(test_label_noise * n_test))
            noisy = torch.as_tensor(rng.choice(n_test, size=n_noisy, replace=False))
            test_y[noisy.to(test_y.device)] = torch.as_tensor(
                rng.integers(0, self.distribution.data.n_classes, size=n_noisy),
                device=test_y.device,
            )
        test_labels = test_y.expand(self.m, -1)
        steps: list[int] = []
        test_curve: list[np.ndarray] = []
        train_curve: list[np.ndarray] = []

        def record(step: int, params: list[Tensor]) -> None:
            if eval_every is not None and (step % eval_every == 0 or step == t):
                steps.append(step)
                test_curve.append(self._accuracy(params, None, test_labels, test=True))
                rows, labels = self._split_rows("train")
                train_curve.append(self._accuracy(params, rows, labels))

        run = self._run(groups, t, on_step=record)
        with torch.no_grad():
            test_loss, _ = self._loss_on(run.params, None, test_labels, test=True)
            train_loss, _ = self._split_loss(run.params, "train")
            valid: dict[str, np.ndarray] = {}
            if self.n_valid:
                valid_loss, _ = self._split_loss(run.params, "valid")
                rows, labels = self._split_rows("valid")
                valid = {
                    "valid_loss": valid_loss.double().cpu().numpy(),
                    "valid_accuracy": self._accuracy(run.params, rows, labels),
                }
        rows, labels = self._split_rows("train")
        empty = np.zeros((self.m, 0))
        return MNISTEvaluation(
            eta=groups[0].get("lr"),
            t=t,
            test_accuracy=self._accuracy(run.params, None, test_labels, test=True),
            test_loss=test_loss.double().cpu().numpy(),
            train_accuracy=self._accuracy(run.params, rows, labels),
            train_loss=train_loss.double().cpu().numpy(),
            truncated=(~run.alive).cpu().numpy(),
            curve_steps=np.asarray(steps, dtype=int),
            test_accuracy_curve=np.stack(test_curve, axis=1) if steps else empty,
            train_accuracy_curve=np.stack(train_curve, axis=1) if steps else empty,
            hyperparameters=(
                {k: float(v) for k, v in eta.items()} if isinstance(eta, Mapping) else {}
            ),
            **valid,
        )

    def _accuracy(
        self, params: list[Tensor], rows: Tensor | None, labels: Tensor, *, test: bool = False
    ) -> np.ndarray:
        torch = _torch()
        from ..hypergrad import mlp

        n = int(labels.shape[-1])
        chunk = max(1, _CHUNK_ELEMENTS // (self.m * self.distribution.sizes[0]))
        correct = torch.zeros(self.m, dtype=torch.float64, device=labels.device)
        with torch.no_grad():
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                if test:
                    x = self.distribution._test_x[start:stop].expand(self.m, -1, -1)
                else:
                    assert rows is not None
                    x = self.distribution._train_x[rows[:, start:stop]]
                predicted = mlp.logits(params, x).argmax(dim=-1)
                correct += (predicted == labels[:, start:stop]).double().sum(dim=1)
        return (correct / n).cpu().numpy()

    def __repr__(self) -> str:
        return (
            f"MNISTBatch(dataset={self.distribution.name!r}, m={self.m}, n_train={self.n_train}, "
            f"n_valid={self.n_valid}, label_noise={self.label_noise:g})"
        )


def _expand(per_task: Tensor, like: Tensor) -> Tensor:
    return per_task.to(like).reshape((-1,) + (1,) * (like.dim() - 1))


def _where(alive: Tensor, new: Tensor, old: Tensor, *, rows: bool = False) -> Tensor:
    """``new`` on the tasks still alive, ``old`` on the frozen ones (tasks on dim 1 if ``rows``)."""
    torch = _torch()
    lead = (1, -1) if rows else (-1,)
    return torch.where(alive.reshape(lead + (1,) * (new.dim() - len(lead))), new, old)
