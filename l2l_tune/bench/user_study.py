"""``l2l-tune bench --task mnist-user`` (and ``digits-user``): the step size of a user's study.

The other bench tasks tune a deterministic meta-objective (fixed tasks, common random
numbers). A user's study is different: each trial of an Optuna objective trains a
fresh network — a new initialisation and a new mini-batch order, no fixed seed — and
returns its validation loss, so every evaluation is noisy. This task measures the
tuners in that setting.

* **Instance.** One data set, the user's: ``n_train`` training and ``n_valid``
  validation samples of MNIST (or scikit-learn's 8×8 digits) with a fraction
  ``label_noise`` of their labels made random, drawn once from ``--seed0``
  (:meth:`~l2l_tune.tasks.MNIST.sample` with ``m = 1``). The network is the
  paper's 784-100-20-10 ReLU MLP (64-100-20-10 on digits), plain SGD, batch 32,
  ``t`` steps.
* **One evaluation** is one fresh run: an :class:`~l2l_tune.tasks.mnist.MNISTBatch`
  over the same data with an initialisation and batch order from a fresh seed
  (:meth:`UserStudyInstance.fresh`); the value is the validation loss
  (``meta_objective(eta, t, split="valid", log=False)``), with a hypergradient
  ``value_and_gradient(eta, t, split="valid", log=True)``, the forward-mode
  ``d/dη`` of ``(1/t)·log`` of that loss — the recursion
  :class:`~l2l_tune.hypergrad.HypergradSGD` runs in a user's own loop, here on the
  library's batched MLP. The hypergradient costs its measured price in full-run
  equivalents (:func:`~l2l_tune.bench.tasks.measure_gradient_cost`).
* **Score.** A tuner's result is the step size it *recommends*: our meta-optimizer's
  ``estimate()``; for Optuna samplers, grid and random search, ``best_params`` — the
  step size of the best validation loss observed, which is what their users take.
  It is scored by the **expected** validation loss at that step size, read off a
  dense log grid of step sizes (:class:`ExpectedLossGrid`: ``grid_points`` points,
  each the mean over ``grid_seeds`` fresh runs, lightly smoothed); the regret is
  that expected loss minus the grid's minimum, so it is ``≥ 0`` and ``0`` at the
  grid's optimum.
* **One-run alternatives** a user might pick instead of tuning, each charged one
  run: an LR range test (:func:`lr_range_test`, Lightning's ``lr_find`` rule),
  scored like a tuner by the regret of its recommendation; Prodigy and
  Schedule-Free SGD, which need no step size (Prodigy) or use their default one
  (Schedule-Free), scored by the validation loss of their own runs over the grid's
  seeds minus the same optimum — a different kind of result (their loss is not
  that of constant-step SGD, so it can fall below the optimum).

:func:`run_user_study` writes ``results.json``, ``report.md`` and ``regret.png``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._plotting import plotting_missing, pyplot
from ..meta import make_meta_optimizer
from .common import evals_within, machine_line, markdown_table, text_table, torch_threads
from .recording import check_objective
from .report import label_and_save, plot_tuner
from .run import (
    _gradient_evaluations,
    _header,
    _print_to_stderr,
    _progress_bar,
    _runnable,
    _warning_notes,
    _write_results,
)
from .settings import (
    USER_TUNER_NAMES,
    BenchSettings,
    RunSettingsMixin,
    _check_int,
    parse_tuners,
)
from .tasks import gradient_cost, mnist_data
from .tuners import _caught, _quiet_optuna, baseline_search, evaluations_allowed

if TYPE_CHECKING:
    import argparse

    from ..tasks.mnist import MNISTBatch

__all__ = [
    "GRADIENT_USER_TUNERS",
    "STANDARD_USER_TUNERS",
    "USER_STUDY_TOLERANCE",
    "headline",
    "runs_to_tolerance",
    "ONE_RUN_OPTIMIZERS",
    "ExpectedLossGrid",
    "StudyRun",
    "UserStudyInstance",
    "UserStudySettings",
    "lr_range_test",
    "make_instance",
    "run_user_study",
    "user_settings_from_args",
]

#: Tuners that evaluate hypergradients (each evaluation costs the measured gradient cost).
GRADIENT_USER_TUNERS: frozenset[str] = frozenset({"l2l"})
#: One-run optimizers scored by their own runs' validation loss (a different kind of result).
ONE_RUN_OPTIMIZERS: frozenset[str] = frozenset({"prodigy", "schedule-free"})
#: Meta-optimizer of the ``l2l`` and ``l2l-blackbox`` tuners.
META_OPTIMIZER = "model"


_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits-user": {
        "t": 200,
        "n_train": 300,
        "n_valid": 300,
        "label_noise": 0.2,
        "budget": 30,
        "seeds": 4,
    },
    "mnist-user": {
        "t": 500,
        "n_train": 1000,
        "n_valid": 1000,
        "label_noise": 0.2,
        "budget": 30,
        "seeds": 5,
    },
}


# ---------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class UserStudySettings(RunSettingsMixin):
    """Everything that defines a user-study bench run (``l2l-tune bench --task *-user``).

    ``None`` fields take the task's default in :meth:`resolved`. Step sizes are absolute
    (a user does not know ``1/L``).

    Attributes:
        task: ``"digits-user"`` or ``"mnist-user"``.
        budget: Full-run equivalents per study (default 30).
        seeds: Studies per tuner (default 4 digits, 5 MNIST); study ``s`` uses seed ``seed0 + s``.
        seed0: Seed of the data set (the user's) and first study seed.
        tuners: Tuner names (:data:`~l2l_tune.bench.settings.USER_TUNER_NAMES`).
        eta_range: ``(low, high)`` of the step size searched (log scale, absolute).
        eta0: First step size of our tuners (``None``: the range's geometric mean).
        t: SGD steps per run (default 200 digits, 500 MNIST).
        n_train: Training samples (default 300 digits, 1000 MNIST).
        n_valid: Validation samples (default 300 digits, 1000 MNIST).
        label_noise: Fraction of training and validation labels made random (default 0.2).
        grid_points: Points of the expected-loss grid, ``≥ 3``.
        grid_seeds: Fresh runs averaged at each grid point, ``≥ 1`` (8 or more for a
            trustworthy score).
        data_dir: MNIST data directory.
        download: Allow downloading MNIST.
        torch_threads: PyTorch CPU threads.
        grad_cost: Full-run equivalents of one hypergradient run (``None``: measure it).
        progress: Show a progress bar.
        out: Output directory (``None``: ``./bench-<task>``).
    """

    task: str = "digits-user"
    budget: int | None = None
    seeds: int | None = None
    seed0: int = 0
    tuners: tuple[str, ...] = USER_TUNER_NAMES
    eta_range: tuple[float, float] = (1e-3, 10.0)
    eta0: float | None = None
    t: int | None = None
    n_train: int | None = None
    n_valid: int | None = None
    label_noise: float | None = None
    grid_points: int = 30
    grid_seeds: int = 8
    data_dir: str | None = None
    download: bool = False
    torch_threads: int = 1
    grad_cost: float | None = None
    progress: bool = True
    out: Path | None = None

    def resolved(self) -> UserStudySettings:
        """A copy with the task's defaults filled in and every field validated.

        Raises:
            ValueError: naming the option (``--budget``, ``--grid-seeds``, ``--tuners``, …).
        """
        out = self._resolved(_DEFAULTS, USER_TUNER_NAMES, unit="full runs", name_task=True)
        _check_int(out.n_train, "--n-train", 1)
        _check_int(out.n_valid, "--n-valid", 1)
        _check_int(out.grid_points, "--grid-points", 3)
        _check_int(out.grid_seeds, "--grid-seeds", 1)
        return out

    @property
    def dataset(self) -> str:
        """``"digits"`` or ``"mnist"``."""
        return self.task.removesuffix("-user")


#: ``l2l-tune bench`` options that do not apply to the user-study tasks.
_NOT_APPLICABLE = (
    "objective d variant m sigma split m_test dataset ray_workers ray_trial_seconds".split()
)


def user_settings_from_args(args: argparse.Namespace) -> UserStudySettings:
    """The :class:`UserStudySettings` of parsed ``bench`` arguments.

    Raises:
        ValueError: naming an option that does not apply to a user-study task, or a bad
            ``--tuners`` list (the rest is checked by :meth:`UserStudySettings.resolved`).
    """
    defaults = {f.name: f.default for f in fields(BenchSettings)}
    for option in _NOT_APPLICABLE:
        if getattr(args, option, defaults[option]) != defaults[option]:
            flag = "--" + option.replace("_", "-")
            raise ValueError(
                f"{flag} does not apply to --task {args.task} (the user-study tasks always "
                "score the validation loss of fresh runs on their own data set)"
            )
    tuners = parse_tuners(args.tuners, USER_TUNER_NAMES, task=args.task)
    return UserStudySettings.from_args(args, tuners)


# ---------------------------------------------------------------------------- instance
@dataclass
class UserStudyInstance:
    """The user's data set, with fresh runs on it.

    Attributes:
        data: The data set as a one-task :class:`~l2l_tune.tasks.mnist.MNISTBatch`
            (its samples and noisy labels; its own initialisation is not used).
        t: SGD steps per run.
        low: Smallest step size searched.
        high: Largest step size searched.
    """

    data: MNISTBatch
    t: int
    low: float
    high: float

    def fresh(self, seeds: Sequence[int]) -> MNISTBatch:
        """``len(seeds)`` runs on the data set, run ``i`` initialised and ordered by ``seeds[i]``.

        Run ``i`` is the same whether drawn alone or with others (the initialisation
        of each comes from its own generator), so a batch of runs and single runs
        share their random numbers.
        """
        import torch

        from ..hypergrad.mlp import init_params
        from ..tasks.mnist import MNISTBatch

        data = self.data
        dist = data.distribution
        m = len(seeds)
        inits = [
            init_params(
                dist.sizes,
                1,
                torch.Generator().manual_seed(int(s)),
                dtype=dist.dtype,
                device=dist.device,
            )
            for s in seeds
        ]
        return MNISTBatch(
            dist,
            indices=data._indices.repeat(m, 1),
            labels=data._labels.repeat(m, 1),
            n_train=data.n_train,
            n_valid=data.n_valid,
            label_noise=data.label_noise,
            init=[torch.cat(parts, dim=0) for parts in zip(*inits, strict=True)],
            order_seeds=[int(s) for s in seeds],
        )

    def value(self, eta: float, seed: int) -> float:
        """Validation loss of one fresh run at ``eta`` (truncated runs: the bound ``40 ln C``)."""
        return float(self.fresh([seed]).meta_objective(eta, self.t, split="valid", log=False))

    def log_value_and_gradient(self, eta: float, seed: int) -> tuple[float, float]:
        """``(1/t)·log`` of one fresh run's validation loss and its hypergradient in ``eta``."""
        value, grad = self.fresh([seed]).value_and_gradient(eta, self.t, split="valid", log=True)
        return float(value), float(grad)


def make_instance(settings: UserStudySettings) -> UserStudyInstance:
    """The user's data set of (resolved) ``settings``, drawn with ``seed0``.

    Raises:
        ValueError: when PyTorch is not installed.
    """
    assert settings.n_train is not None and settings.n_valid is not None and settings.t
    data = mnist_data(settings).sample(
        1,
        settings.n_train,
        n_valid=settings.n_valid,
        label_noise=float(settings.label_noise or 0.0),
        seed=settings.seed0,
    )
    return UserStudyInstance(data, settings.t, *settings.eta_range)


# ---------------------------------------------------------------------------- the score
@dataclass
class ExpectedLossGrid:
    """The expected validation loss on a log grid of step sizes, and the regret it defines.

    ``mean[i]`` is the mean validation loss of ``seeds`` fresh runs at ``eta[i]``;
    ``smoothed`` is ``mean`` convolved with the binomial kernel ``(1, 2, 1)/4`` along
    the grid (end points repeated), which halves the variance of a point's noise while
    moving a smooth minimum by a fraction of a grid cell. The expected loss between
    grid points is the linear interpolation of ``smoothed`` in ``log η``, so

        regret(η) = E(η) − min_i smoothed[i] ≥ 0,

    with equality at the grid's best point.

    Attributes:
        eta: ``(n,)`` step sizes, log-spaced.
        mean: ``(n,)`` mean validation loss over the seeds.
        smoothed: ``(n,)`` smoothed ``mean``.
        seeds: Fresh runs per point.
        run_seeds: Their seeds (the same at every point: common random numbers).
    """

    eta: np.ndarray
    mean: np.ndarray
    smoothed: np.ndarray
    seeds: int
    run_seeds: list[int] = field(default_factory=list)

    @classmethod
    def from_means(
        cls,
        eta: Sequence[float] | np.ndarray,
        mean: Sequence[float] | np.ndarray,
        seeds: int,
        run_seeds: Sequence[int] = (),
    ) -> ExpectedLossGrid:
        """Smooth ``mean`` and build the grid."""
        mean_a = np.asarray(mean, dtype=float)
        padded = np.concatenate([mean_a[:1], mean_a, mean_a[-1:]])
        smoothed = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
        return cls(np.asarray(eta, dtype=float), mean_a, smoothed, seeds, list(run_seeds))

    @property
    def optimum_index(self) -> int:
        """Index of the smallest smoothed expected loss."""
        return int(np.argmin(self.smoothed))

    @property
    def optimum_eta(self) -> float:
        """The grid's optimal step size."""
        return float(self.eta[self.optimum_index])

    @property
    def optimum(self) -> float:
        """The smallest smoothed expected loss."""
        return float(self.smoothed[self.optimum_index])

    def expected_loss(self, eta: float) -> float:
        """``E(η)``: the smoothed grid interpolated in ``log η`` (clamped to the grid's ends)."""
        x = math.log(min(max(float(eta), self.eta[0]), self.eta[-1]))
        return float(np.interp(x, np.log(self.eta), self.smoothed))

    def regret(self, eta: float) -> float:
        """``E(η) − min E ≥ 0``; NaN for a NaN step size (no recommendation yet)."""
        if not math.isfinite(eta):
            return math.nan
        return max(0.0, self.expected_loss(eta) - self.optimum)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description."""
        return {
            "method": (
                f"{self.eta.size}-point log grid; each point the mean validation loss of "
                f"{self.seeds} fresh runs (the same seeds at every point), smoothed by the "
                "(1, 2, 1)/4 kernel along the grid, interpolated linearly in log η; "
                "optimum = the smallest smoothed point"
            ),
            "eta": self.eta,
            "mean": self.mean,
            "smoothed": self.smoothed,
            "seeds": self.seeds,
            "run_seeds": self.run_seeds,
            "optimum_eta": self.optimum_eta,
            "optimum_loss": self.optimum,
        }


def expected_loss_grid(
    instance: UserStudyInstance, points: int, run_seeds: Sequence[int]
) -> ExpectedLossGrid:
    """The :class:`ExpectedLossGrid` of ``instance``: all seeds' runs at once per point."""
    batch = instance.fresh(run_seeds)
    eta = np.geomspace(instance.low, instance.high, points)
    mean = [batch.meta_objective(float(e), instance.t, split="valid", log=False) for e in eta]
    return ExpectedLossGrid.from_means(eta, mean, len(run_seeds), run_seeds)


# ---------------------------------------------------------------------------- one-run loops
def _train_with(
    batch: MNISTBatch,
    t: int,
    make_optimizer: Callable[[list[Any]], Any],
    *,
    lr_at: Callable[[int], float] | None = None,
    on_loss: Callable[[int, float], bool] | None = None,
) -> float:
    """Train the one network of ``batch`` ``t`` steps with a ``torch.optim`` optimizer.

    The network, data, initialisation, mini-batch order and divergence rule are
    those of :class:`~l2l_tune.tasks.mnist.MNISTBatch` (a run whose mini-batch loss
    reaches ``40 ln C`` or whose weights stop being finite is frozen and scores that
    bound); only the update rule differs.

    Args:
        batch: A one-run batch (:meth:`UserStudyInstance.fresh` with one seed).
        t: Steps.
        make_optimizer: ``params ↦`` optimizer (a Schedule-Free optimizer is switched
            with its ``train()``/``eval()``).
        lr_at: Step size of step ``k`` (sets every group's ``lr``), if given.
        on_loss: Called with ``(k, mini-batch loss)`` before step ``k``; return
            ``False`` to stop the run there.

    Returns:
        The validation loss at the end.
    """
    import torch

    from ..hypergrad import mlp

    if batch.m != 1:
        raise ValueError(f"one run at a time (the optimizers' state is global); got m={batch.m}")
    params = [p.clone().requires_grad_(True) for p in batch._init]
    optimizer = make_optimizer(params)
    switch = callable(getattr(optimizer, "train", None)) and callable(
        getattr(optimizer, "eval", None)
    )
    if switch:
        optimizer.train()
    order = batch._batch_order(t)
    diverged = False
    for step in range(t):
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
        x, y = batch._minibatch(order, step)
        optimizer.zero_grad()
        loss = mlp.loss(params, x, y).sum()
        value = float(loss.detach())
        if not math.isfinite(value) or value >= batch.truncation_loss:
            diverged = True
            break
        if on_loss is not None and not on_loss(step, value):
            break
        loss.backward()
        before = [p.detach().clone() for p in params]
        optimizer.step()
        if not all(bool(torch.isfinite(p).all()) for p in params):
            with torch.no_grad():
                for p, old in zip(params, before, strict=True):
                    p.copy_(old)
            diverged = True
            break
    if switch:
        optimizer.eval()
    if diverged:
        return float(batch.truncation_loss)
    with torch.no_grad():
        losses, _ = batch._split_loss([p.detach() for p in params], "valid")
    value = float(losses[0])
    return value if math.isfinite(value) else float(batch.truncation_loss)


def lr_range_test(
    batch: MNISTBatch,
    t: int,
    low: float,
    high: float,
    *,
    beta: float = 0.98,
    stop_factor: float = 4.0,
    skip_begin: int = 10,
    skip_end: int = 1,
) -> tuple[float, dict[str, Any]]:
    """An LR range test in one run of ``t`` steps, as PyTorch Lightning's ``lr_find``.

    SGD's step size grows exponentially from ``low`` to ``high`` over the run; the
    mini-batch training loss is smoothed by a bias-corrected exponential moving
    average (``beta``), and the sweep stops once the smoothed loss exceeds
    ``stop_factor`` times its best (or the run diverges). The suggestion is
    Lightning's default: the step size at the steepest descent of the smoothed loss
    (the most negative finite difference per step, i.e. per ``log η``), ignoring the
    first ``skip_begin`` and last ``skip_end`` points. When fewer than two points
    remain (a very short run), it falls back to fastai's other rule, the step size
    of the smallest smoothed loss divided by 10.

    Args:
        batch: A one-run batch.
        t: Steps of the sweep (one run).
        low: First step size.
        high: Last step size.
        beta: Smoothing of the loss.
        stop_factor: Early-stop threshold relative to the best smoothed loss.
        skip_begin: Points ignored at the start.
        skip_end: Points ignored at the end.

    Returns:
        ``(suggested step size, info)`` with the rule used and the sweep.
    """
    import torch

    ratio = high / low
    lrs = [low * ratio ** (k / max(t - 1, 1)) for k in range(t)]
    smoothed: list[float] = []
    average = 0.0
    best = math.inf

    def on_loss(step: int, loss: float) -> bool:
        nonlocal average, best
        average = beta * average + (1 - beta) * loss
        value = average / (1 - beta ** (step + 1))
        smoothed.append(value)
        best = min(best, value)
        return not value > stop_factor * best

    _train_with(
        batch,
        t,
        lambda params: torch.optim.SGD(params, lr=low),
        lr_at=lambda k: lrs[k],
        on_loss=on_loss,
    )
    losses = np.asarray(smoothed)
    kept = losses[skip_begin : max(skip_begin, losses.size - skip_end)]
    if kept.size >= 2:
        index = skip_begin + int(np.argmin(np.gradient(kept)))
        rule = "steepest descent of the smoothed loss (Lightning's lr_find suggestion)"
        lr = lrs[index]
    else:
        index = int(np.argmin(losses)) if losses.size else 0
        rule = "smallest smoothed loss / 10 (fastai; too few points for the steepest descent)"
        lr = max(low, lrs[index] / 10.0)
    return float(lr), {"rule": rule, "steps": int(losses.size), "index": index}


def _one_run_optimizer(name: str) -> tuple[Callable[[list[Any]], Any], str]:
    """The optimizer factory of a one-run alternative and its description."""
    if name == "prodigy":
        from prodigyopt import Prodigy

        return (lambda params: Prodigy(params, lr=1.0)), "prodigyopt.Prodigy(lr=1.0), defaults"
    from schedulefree import SGDScheduleFree

    return (
        (lambda params: SGDScheduleFree(params)),
        "schedulefree.SGDScheduleFree with its defaults (lr=1.0, momentum=0.9), evaluated "
        "at its averaged weights (optimizer.eval())",
    )


# ---------------------------------------------------------------------------- studies
@dataclass
class StudyRun:
    """One tuner's study (or one-run alternative) on the user's data set.

    Attributes:
        tuner: Tuner name.
        seed: Study seed.
        etas: Step sizes evaluated, in order.
        losses: Validation loss of each evaluation's fresh run.
        costs: Full-run equivalents of each evaluation.
        recommendations: The step size the tuner recommends after each evaluation.
        wall_s: Wall time of the study.
        extra: Tuner-specific facts.
        warnings: Distinct warnings raised, with counts.
    """

    tuner: str
    seed: int
    etas: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    recommendations: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)

    def add(self, eta: float, loss: float, cost: float, recommendation: float) -> None:
        """Record one evaluation and the recommendation after it."""
        self.etas.append(float(eta))
        self.losses.append(float(loss))
        self.costs.append(float(cost))
        self.recommendations.append(float(recommendation))

    def regret_curve(self, grid: ExpectedLossGrid, budget: int) -> np.ndarray:
        """Regret of the recommendation at ``x = 1 … budget`` full-run equivalents (NaN
        before the first evaluation has finished)."""
        x = np.arange(1, budget + 1, dtype=float)
        cumulative = np.cumsum(self.costs) if self.costs else np.zeros(0)
        index = np.searchsorted(cumulative, x + 1e-9, side="right") - 1
        regrets = np.array([grid.regret(r) for r in self.recommendations], dtype=float)
        out = np.full(budget, np.nan)
        ok = index >= 0
        out[ok] = regrets[index[ok]]
        return out


class _FreshRuns:
    """A :class:`~l2l_tune.tasks.MetaObjectiveTask` view for :mod:`l2l_tune.baselines`:
    every ``meta_objective`` call is a fresh run at a new seed, recorded in a study."""

    def __init__(self, instance: UserStudyInstance, rng: np.random.Generator, run: StudyRun):
        self._instance = instance
        self._rng = rng
        self._run = run
        self._best = (math.inf, math.nan)

    def meta_objective(
        self, eta: float, t: int, *, split: str = "valid", log: bool = False
    ) -> float:
        """Validation loss of a fresh run (``t``, ``split``, ``log`` must be the study's)."""
        check_objective((t, split, log), (self._instance.t, "valid", False))
        loss = self._instance.value(eta, _draw(self._rng))
        self._best = min(self._best, (loss, float(eta)))
        self._run.add(eta, loss, 1.0, self._best[1])
        return loss

    def value_and_gradient(
        self, eta: float, t: int, *, split: str = "valid", log: bool = False
    ) -> tuple[float, float]:
        """Not available to gradient-free tuners."""
        raise RuntimeError("a gradient-free tuner asked for a hypergradient")

    def step_size_scale(self) -> float:
        """The data set's ``1/L`` at the initialisation it was drawn with."""
        return float(self._instance.data.step_size_scale())


def _draw(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**62))


def _study_l2l(
    instance: UserStudyInstance,
    n: int,
    cost: float,
    rng: np.random.Generator,
    run: StudyRun,
    *,
    gradient: bool,
    eta0: float,
    seed: int,
) -> None:
    """Our meta-optimizer on fresh runs: ``(1/t)·log`` of the validation loss, with the
    hypergradient (``gradient=True``) or as a black box (``tell(eta, value, None)``)."""
    bounds = (instance.low, instance.high)
    # The model's initial design depends on its seed: one per study, as Optuna's.
    optimizer = make_meta_optimizer(META_OPTIMIZER, eta0=eta0, bounds=bounds, seed=seed)
    for _ in range(n):
        eta = float(optimizer.ask())
        seed = _draw(rng)
        if gradient:
            value, grad = instance.log_value_and_gradient(eta, seed)
            optimizer.tell(eta, value, grad)
        else:
            value = math.log(instance.value(eta, seed)) / instance.t
            optimizer.tell(eta, value, None)
        run.add(eta, math.exp(instance.t * value), cost if gradient else 1.0, optimizer.estimate())
    run.extra["final_estimate"] = float(optimizer.estimate())


def _study_optuna(
    tuner: str,
    instance: UserStudyInstance,
    n: int,
    seed: int,
    rng: np.random.Generator,
    run: StudyRun,
) -> None:
    """A user's Optuna study: ``suggest_float("lr", low, high, log=True)``, a fresh run per
    trial returning its validation loss; the recommendation is ``study.best_params``."""
    import optuna
    from optuna import samplers

    factories = {
        "optuna-tpe": samplers.TPESampler,
        "optuna-gp": samplers.GPSampler,
        "optuna-cmaes": samplers.CmaEsSampler,
    }

    def objective(trial: Any) -> float:
        return instance.value(
            trial.suggest_float("lr", instance.low, instance.high, log=True), _draw(rng)
        )

    def record(study: Any, trial: Any) -> None:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            run.add(trial.params["lr"], trial.value, 1.0, study.best_params["lr"])

    study = optuna.create_study(sampler=factories[tuner](seed=seed), direction="minimize")
    study.optimize(objective, n_trials=n, callbacks=[record])
    run.extra["failed_trials"] = sum(
        tr.state != optuna.trial.TrialState.COMPLETE for tr in study.trials
    )


def _run_study(
    tuner: str,
    instance: UserStudyInstance,
    budget: int,
    cost: float,
    seed: int,
    *,
    eta0: float,
) -> StudyRun:
    """One study of ``tuner`` (a searching tuner or the LR range test) with seed ``seed``."""
    run = StudyRun(tuner, seed)
    rng = np.random.default_rng([seed, USER_TUNER_NAMES.index(tuner)])
    n = evaluations_allowed("l2l" if tuner in GRADIENT_USER_TUNERS else "grid", budget, cost)
    start = time.perf_counter()
    quiet = _quiet_optuna() if tuner.startswith("optuna-") else contextlib.nullcontext()
    with _caught(run.warnings), quiet:
        if tuner in ("l2l", "l2l-blackbox"):
            _study_l2l(instance, n, cost, rng, run, gradient=tuner == "l2l", eta0=eta0, seed=seed)
        elif tuner in ("grid", "random"):
            search = baseline_search(tuner, n, instance.low, instance.high, seed)
            search.fit(_FreshRuns(instance, rng, run), instance.t, split="valid", log=False)
        elif tuner == "lr-range-test":
            lr, info = lr_range_test(
                instance.fresh([_draw(rng)]), instance.t, instance.low, instance.high
            )
            run.add(math.nan, math.nan, 1.0, lr)
            run.extra.update(info)
        else:
            _study_optuna(tuner, instance, n, seed, rng, run)
    run.wall_s = time.perf_counter() - start
    run.extra["max_evals"] = 1 if tuner == "lr-range-test" else n
    return run


# ---------------------------------------------------------------------------- summaries
def _summary(values: Sequence[float]) -> dict[str, float | None]:
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if a.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "median": None}
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "min": float(a.min()),
        "max": float(a.max()),
        "median": float(np.median(a)),
    }


#: The tolerance of the issue's target: regret within 1 % of the optimal expected loss.
USER_STUDY_TOLERANCE = 0.01
#: Tuners a user would otherwise reach for (the headline's "best standard tuner").
STANDARD_USER_TUNERS: tuple[str, ...] = (
    "grid",
    "random",
    "optuna-tpe",
    "optuna-gp",
    "optuna-cmaes",
)


def runs_to_tolerance(mean_curve: np.ndarray, tolerance: float) -> int | None:
    """Full-run equivalents after which the mean regret stays ``≤ tolerance``.

    ``mean_curve[x − 1]`` is the mean regret over studies at a budget of ``x`` runs (NaN
    before every study has an evaluation): the smallest ``x`` from which every later point
    is within the tolerance (:func:`~l2l_tune.bench.common.evals_within` with ``stay``), or
    ``None`` if the curve ends above it (a tuner that dips and climbs out again has not
    reached it).
    """
    return evals_within(mean_curve, tolerance, stay=True)


def headline(
    curves: dict[str, np.ndarray], entries: dict[str, Any], optimum: float, budget: int
) -> dict[str, Any]:
    """The issue's targets for a user's study, from the regret curves of one run.

    * ``with_gradients``: full-run equivalents for ``l2l``'s mean regret to stay
      within 1 % of the optimal expected loss, against the best standard tuner's;
      a tuner that never gets there within the budget counts as ``> budget``, so
      the ratio is then a lower bound. Target: ratio ``≥ 3``.
    * ``black_box``: ``l2l-blackbox``'s mean regret at the full budget against the
      best of TPE, GP and random search, and its worst study against random
      search's median study. Target: ``≤`` both.
    """
    tolerance = USER_STUDY_TOLERANCE * abs(optimum)
    # The mean over studies is NaN until every study has finished an evaluation.
    reached = {name: runs_to_tolerance(c.mean(axis=0), tolerance) for name, c in curves.items()}
    out: dict[str, Any] = {"tolerance": tolerance, "runs_to_tolerance": reached}
    standard = [n for n in STANDARD_USER_TUNERS if n in reached]
    if "l2l" in reached and standard:
        best = min(standard, key=lambda n: (reached[n] is None, reached[n] or 0))
        ours, theirs = reached["l2l"], reached[best]
        ratio: float | None
        bound = False
        if ours is None:
            ratio = None
        elif theirs is None:
            ratio, bound = budget / ours, True
        else:
            ratio = theirs / ours
        out["with_gradients"] = {
            "l2l": ours,
            "best_standard": best,
            "best_standard_runs": theirs,
            "ratio": ratio,
            "ratio_is_lower_bound": bound,
            "target": 3.0,
            "met": ratio is not None and ratio >= 3.0,
        }
    rivals = [n for n in ("optuna-tpe", "optuna-gp", "random") if n in entries]
    if "l2l-blackbox" in entries and rivals:
        final = {n: entries[n]["regret_at"][str(budget)] for n in (*rivals, "l2l-blackbox")}
        best = min(rivals, key=lambda n: final[n]["mean"])
        ours_mean, worst = final["l2l-blackbox"]["mean"], final["l2l-blackbox"]["max"]
        random_median = final["random"]["median"] if "random" in final else None
        out["black_box"] = {
            "l2l_blackbox_mean": ours_mean,
            "best_rival": best,
            "best_rival_mean": final[best]["mean"],
            "mean_met": ours_mean <= final[best]["mean"],
            "worst_study": worst,
            "random_median": random_median,
            "worst_met": None if random_median is None else worst <= random_median,
        }
    return out


def _checkpoints(budget: int) -> list[int]:
    return sorted({max(1, round(budget * f)) for f in (0.25, 0.5, 1.0)})


def _tuner_entry(
    name: str, runs: list[StudyRun], grid: ExpectedLossGrid, budget: int, cost: float
) -> tuple[dict[str, Any], np.ndarray]:
    curves = np.stack([r.regret_curve(grid, budget) for r in runs])
    finals = [float(r.recommendations[-1]) if r.recommendations else math.nan for r in runs]
    regrets = [grid.regret(e) for e in finals]
    kind = "one-run recommendation" if name == "lr-range-test" else "tuner"
    recommendation = {
        "l2l": "the meta-optimizer's estimate()",
        "l2l-blackbox": "the meta-optimizer's estimate()",
        "grid": "the best observed validation loss's step size",
        "random": "the best observed validation loss's step size",
        "lr-range-test": "the sweep's suggestion",
    }.get(name, "study.best_params (the best observed validation loss's step size)")
    entry: dict[str, Any] = {
        "status": "ok",
        "kind": kind,
        "recommendation": recommendation,
        "gradient": name in GRADIENT_USER_TUNERS,
        "cost_per_evaluation": cost if name in GRADIENT_USER_TUNERS else 1.0,
        "max_evaluations": runs[0].extra.get("max_evals"),
        "final_regret": _summary(regrets),
        "final_relative_regret": _summary([r / grid.optimum for r in regrets]),
        "final_eta": _summary(finals),
        "regret_at": {str(x): _summary(list(curves[:, x - 1])) for x in _checkpoints(budget)},
        "wall_s": _summary([r.wall_s for r in runs]),
        "per_study": [
            {
                "seed": r.seed,
                "recommended_eta": eta,
                "regret": reg,
                "expected_loss": grid.expected_loss(eta) if math.isfinite(eta) else None,
                "evaluations": len(r.costs),
                "full_run_equivalents": float(sum(r.costs)),
                "wall_s": r.wall_s,
                "extra": r.extra,
                "warnings": r.warnings,
                "points": {
                    "eta": r.etas,
                    "val_loss": r.losses,
                    "cost": r.costs,
                    "recommendation": r.recommendations,
                },
            }
            for r, eta, reg in zip(runs, finals, regrets, strict=True)
        ],
    }
    return entry, curves


def _one_run_entry(
    name: str, instance: UserStudyInstance, grid: ExpectedLossGrid
) -> dict[str, Any]:
    factory, description = _one_run_optimizer(name)
    losses: list[float] = []
    start = time.perf_counter()
    counts: dict[str, int] = {}
    with _caught(counts):
        for seed in grid.run_seeds:
            losses.append(_train_with(instance.fresh([seed]), instance.t, factory))
    wall = time.perf_counter() - start
    mean = float(np.mean(losses))
    return {
        "status": "ok",
        "kind": "one-run optimizer",
        "recommendation": "none: scored by its own runs' validation loss",
        "optimizer": description,
        "cost_per_evaluation": 1.0,
        "max_evaluations": 1,
        "expected_val_loss": mean,
        "excess_over_optimum": mean - grid.optimum,
        "relative_excess": (mean - grid.optimum) / grid.optimum,
        "val_loss_per_seed": _summary(losses),
        "per_seed": {"seed": grid.run_seeds, "val_loss": losses},
        "wall_s": {"mean": wall / max(1, len(losses))},
        "warnings": counts,
    }


# ---------------------------------------------------------------------------- report
def _fmt(x: float | None, spec: str = ".3g") -> str:
    if x is None:
        return "—"
    return format(x, spec)


def _spread(s: dict[str, Any], spec: str = ".3g") -> str:
    return f"{_fmt(s['mean'], spec)} ± {_fmt(s['std'], spec)} [{_fmt(s['min'], spec)}–" + (
        f"{_fmt(s['max'], spec)}]"
    )


def _headline_markdown(head: dict[str, Any], budget: int) -> list[str]:
    if not head:
        return []
    reached = head["runs_to_tolerance"]
    lines = [
        "",
        "## Targets",
        "",
        f"Full-run equivalents after which the mean regret stays within 1 % of the optimum "
        f"({head['tolerance']:.4g}); `> {budget}`: not within the budget.",
        "",
        markdown_table(
            ["tuner", "runs to 1 %"],
            [[n, f"> {budget}" if r is None else str(r)] for n, r in reached.items()],
        ),
    ]
    grad = head.get("with_gradients")
    if grad:
        if grad["ratio"] is None:
            verdict = "not met: `l2l` does not reach 1 % within the budget"
        else:
            sign = "≥ " if grad["ratio_is_lower_bound"] else ""
            verdict = (
                f"{sign}{grad['ratio']:.2f}× fewer runs than `{grad['best_standard']}` "
                f"(target ≥ 3×): {'met' if grad['met'] else 'not met'}"
            )
        lines += ["", f"* With hypergradients: {verdict}."]
    box = head.get("black_box")
    if box:
        worst = (
            ""
            if box["random_median"] is None
            else f"; worst study {box['worst_study']:.4g} vs random search's median "
            f"{box['random_median']:.4g}: {'met' if box['worst_met'] else 'not met'}"
        )
        lines += [
            f"* Black box: mean regret at {budget} runs {box['l2l_blackbox_mean']:.4g} vs "
            f"the best of TPE/GP/random (`{box['best_rival']}`) {box['best_rival_mean']:.4g}: "
            f"{'met' if box['mean_met'] else 'not met'}{worst}."
        ]
    return lines


def _markdown(payload: dict[str, Any]) -> str:
    grid = payload["expected_loss_grid"]
    cost = payload["gradient_cost"]
    checkpoints = [int(x) for x in payload["checkpoints"]]
    lines = [
        f"# l2l-tune bench: {payload['task']} (a user's study)",
        "",
        f"Command: `{payload['command']}`",
        "",
        f"* Task: {payload['task_description']}",
        f"* Step size searched log-uniformly in [{payload['eta_range'][0]:g}, "
        f"{payload['eta_range'][1]:g}] (absolute); our tuners start at η0 = {payload['eta0']:.4g}.",
        f"* Budget: {payload['budget']} full-run equivalents per study; "
        f"{payload['seeds']} studies per tuner (seeds {payload['seed_values']}); every evaluation "
        "is a fresh run (new initialisation and mini-batch order).",
        f"* Hypergradient cost: {cost['cost']:.3g} full-run equivalents ({cost['method']}), so "
        f"`l2l` makes {payload['gradient_evaluations']} evaluations.",
        f"* Our meta-optimizer: `{payload['meta_optimizer']['l2l']}` with hypergradients (`l2l`), "
        f"`{payload['meta_optimizer']['l2l-blackbox']}` on values only (`l2l-blackbox`)"
        ". Both see (1/t)·log of the validation loss; Optuna, grid and random search see the "
        "validation loss itself, as a user's objective returns it.",
        f"* Score: expected validation loss at the recommended step size — {grid['method']}. "
        f"Optimum: η = {grid['optimum_eta']:.4g}, expected loss {grid['optimum_loss']:.4f}. "
        "Regret = expected loss at the recommendation − optimum (≥ 0, 0 at the grid optimum).",
        f"* Machine: {payload['machine']}. Total wall time: {payload['total_wall_s']:.0f} s.",
        "",
        "## Tuners",
        "",
        "Regret of the recommended step size: mean ± std [min–max] over studies.",
        "",
    ]
    skipped: list[str] = []
    one_run: list[list[str]] = []
    rows: list[list[str]] = []
    for name, entry in payload["tuners"].items():
        if entry["status"] != "ok":
            skipped.append(f"* `{name}`: {entry['status']}")
        elif entry["kind"] == "one-run optimizer":
            excess = (
                f"{entry['excess_over_optimum']:+.4f} ({100 * entry['relative_excess']:+.1f} %)"
            )
            loss = f"{entry['expected_val_loss']:.4f}"
            spread = _spread(entry["val_loss_per_seed"], ".4f")
            one_run.append([name, entry["optimizer"], loss, excess, spread])
        else:
            evals = entry["per_study"][0]["evaluations"]
            rows.append(
                [
                    f"**{name}**" if name == "l2l" else name,
                    f"{evals} ({entry['max_evaluations']})",
                    entry["recommendation"],
                    *(_spread(entry["regret_at"][str(x)]) for x in checkpoints),
                    _spread(entry["final_eta"]),
                    f"{_fmt(entry['final_relative_regret']['mean'], '.1%')}",
                    _fmt(entry["wall_s"]["mean"], ".2g"),
                ]
            )
    regrets = [f"regret at {x}" for x in checkpoints]
    header = ["tuner", "evals (max)", "recommends", *regrets, "final η", "relative regret"]
    lines.append(markdown_table([*header, "wall (s)"], rows))
    lines += _headline_markdown(payload.get("headline") or {}, payload["budget"])
    if one_run:
        lines += [
            "",
            "## One-run optimizers (a different kind of result)",
            "",
            "Not a step size for SGD: each is scored by the validation loss of its own runs "
            f"(mean over the grid's {grid['seeds']} seeds), against the constant-step SGD "
            "optimum; charged one run. A negative excess beats the best constant SGD step size.",
            "",
            markdown_table(
                ["optimizer", "setup", "expected val loss", "excess over SGD optimum"]
                + ["val loss per seed"],
                one_run,
            ),
        ]
    if skipped:
        lines += ["", "Skipped:", "", *skipped]
    if payload.get("plots"):
        lines += ["", "## Regret against budget", "", f"![regret]({payload['plots']['regret']})"]
    lines += [
        "",
        "## Expected validation loss",
        "",
        markdown_table(
            ["η", "mean", "smoothed"],
            [
                [f"{e:.4g}", f"{m:.4f}", f"{s:.4f}"]
                for e, m, s in zip(grid["eta"], grid["mean"], grid["smoothed"], strict=True)
            ],
        ),
    ]
    if payload["notes"]:
        lines += ["", "## Notes", "", *[f"* {n}" for n in payload["notes"]]]
    return "\n".join(lines) + "\n"


def _plot(
    out_dir: Path,
    curves: dict[str, np.ndarray],
    one_run: dict[str, float],
    budget: int,
    title: str,
) -> dict[str, str]:
    """Mean regret (line) and min–max band over studies; one-run results as flat lines."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(10.5, 5.5))
    x = np.arange(1, budget + 1)
    for i, (name, values) in enumerate(curves.items()):
        complete = np.all(np.isfinite(values), axis=0)
        mean = np.where(complete, np.mean(np.where(complete, values, 0.0), axis=0), np.nan)
        low, high = (np.where(complete, bound, np.nan) for bound in (values.min(0), values.max(0)))
        plot_tuner(ax, x, name, i, mean, low, high, color=f"C{i % 10}", band=values.shape[0] > 1)
    for j, (name, excess) in enumerate(one_run.items()):
        color = f"C{(len(curves) + j) % 10}"
        ax.axhline(excess, color=color, lw=1.2, ls=(0, (1, 2)), label=f"{name} (own runs)")
        ax.plot([1], [excess], "o", color=color)
    ax.set_yscale("symlog", linthresh=1e-3)
    xlabel = "full-run equivalents (a hypergradient run at its measured cost)"
    ylabel = "regret: expected val loss at the recommendation − optimum"
    label_and_save(fig, ax, out_dir / "regret.png", xlabel, ylabel, title)
    return {"regret": "regret.png"}


def _task_description(s: UserStudySettings, instance: UserStudyInstance) -> str:
    sizes = "-".join(str(n) for n in instance.data.distribution.sizes)
    return (
        f"a {sizes} ReLU MLP trained by plain SGD (batch 32) for t = {s.t} steps on one data "
        f"set of {s.n_train} training + {s.n_valid} validation {s.dataset} samples with "
        f"{100 * float(s.label_noise or 0):g} % random labels (drawn with seed {s.seed0}); each "
        "evaluation is a fresh run and returns its validation loss"
    )


def _console(payload: dict[str, Any]) -> str:
    rows = [["tuner", "kind", "final regret (mean ± std)", "final η (mean)"]]
    for name, entry in payload["tuners"].items():
        if entry["status"] != "ok":
            rows.append([name, "skipped", "", ""])
        elif entry["kind"] == "one-run optimizer":
            rows.append([name, entry["kind"], f"{entry['excess_over_optimum']:+.4g}", ""])
        else:
            r = entry["final_regret"]
            rows.append(
                [
                    name,
                    entry["kind"],
                    f"{_fmt(r['mean'], '.4g')} ± {_fmt(r['std'], '.2g')}",
                    _fmt(entry["final_eta"]["mean"], ".4g"),
                ]
            )
    return text_table(rows[0], rows[1:])


# ---------------------------------------------------------------------------- the run
def run_user_study(
    settings: UserStudySettings,
    *,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the user-study bench and write ``report.md``, ``results.json`` and ``regret.png``.

    Args:
        settings: The run's settings (resolved here).
        command: The command line to record in the report.
        log: Where to print messages (default: standard error).

    Returns:
        The ``results.json`` content.

    Raises:
        ValueError: for bad settings (naming the option), or a budget below the cost of
            one hypergradient run when ``l2l`` is selected.
    """
    s = settings.resolved()
    with torch_threads(s.torch_threads):
        return _run(s, time.perf_counter(), command, log or _print_to_stderr)


def _run(
    s: UserStudySettings, start: float, command: str | None, say: Callable[[str], None]
) -> dict[str, Any]:
    runnable, skipped = _runnable(s.tuners, say)
    instance = make_instance(s)
    assert s.budget is not None
    budget = s.budget
    eta0 = float(s.eta0) if s.eta0 is not None else math.sqrt(instance.low * instance.high)
    grid_rng = np.random.default_rng([s.seed0, 2**31 - 1])
    grid_seeds = [_draw(grid_rng) for _ in range(s.grid_seeds)]
    searching = [n for n in runnable if n not in ONE_RUN_OPTIMIZERS]
    total = 1 + len(searching) * len(s.seed_values) + (len(runnable) - len(searching))
    bar = _progress_bar(s, total, "study")
    try:
        bar.set_postfix_str("expected-loss grid", refresh=True)
        grid = expected_loss_grid(instance, s.grid_points, grid_seeds)
        bar.update()
        cost_info = gradient_cost(
            instance.fresh([grid_seeds[0]]),
            instance.t,
            "valid",
            instance.low,
            instance.high,
            given=s.grad_cost,
            repeats=3,
            measured_on="one fresh run",
        )
        cost = float(cost_info["cost"])
        n_grad = _gradient_evaluations(
            budget,
            cost,
            needed="l2l" in runnable,
            what="hypergradient run",
            unit="full-run",
        )
        tuners: dict[str, Any] = {}
        curves: dict[str, np.ndarray] = {}
        one_run: dict[str, float] = {}
        for name in runnable:
            if name in ONE_RUN_OPTIMIZERS:
                bar.set_postfix_str(name, refresh=True)
                tuners[name] = _one_run_entry(name, instance, grid)
                one_run[name] = tuners[name]["excess_over_optimum"]
                bar.update()
                continue
            runs = []
            for seed in s.seed_values:
                bar.set_postfix_str(f"{name}, study {seed}", refresh=True)
                runs.append(_run_study(name, instance, budget, cost, seed, eta0=eta0))
                bar.update()
            tuners[name], curves[name] = _tuner_entry(name, runs, grid, budget, cost)
    finally:
        bar.close()
    ordered = {name: tuners.get(name) or {"status": skipped[name]} for name in s.tuners}
    out_dir = s.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    title = (
        f"{s.task}: regret of the recommended step size, budget {budget}, "
        f"{len(s.seed_values)} studies (mean, min–max band)"
    )
    no_plot = plotting_missing("drawing the user study's plot")
    if no_plot is not None:
        say(no_plot)
    drawn = (curves or one_run) and no_plot is None
    plots = _plot(out_dir, curves, one_run, budget, title) if drawn else {}
    notes = [
        "Grid search evaluates its points from the smallest step size up, so its curve below "
        "the full budget reflects only the small step sizes seen so far.",
        "Regrets are against the smoothed expected-loss grid; its own noise (the grid's "
        f"{s.grid_seeds} seeds per point) is a floor below which regrets are not resolved.",
        "Non-finite numbers are written as null in results.json.",
        *skipped.values(),
    ]
    if no_plot is not None:
        notes.append(f"Plot not drawn: {no_plot}.")
    for name, entry in tuners.items():
        notes += _warning_notes(name, entry.get("per_study", []), top=2, over="studies")
    payload: dict[str, Any] = {
        "task": s.task,
        "kind": "user-study",
        **_header(s, command),
        "task_description": _task_description(s, instance),
        "eta_range": [instance.low, instance.high],
        "eta0": eta0,
        "meta_optimizer": {"l2l": META_OPTIMIZER, "l2l-blackbox": META_OPTIMIZER},
        "expected_loss_grid": grid.to_dict(),
        "gradient_cost": cost_info,
        "gradient_evaluations": n_grad,
        "checkpoints": _checkpoints(budget),
        "headline": headline(curves, tuners, grid.optimum, budget),
        "tuners": ordered,
        "curves": {"x": list(range(1, budget + 1)), **curves},
        "plots": plots,
        "machine": machine_line(),
        "notes": notes,
    }
    return _write_results(payload, out_dir, start, _markdown, _console)
