"""Settings of one ``l2l-tune bench`` run, with per-task defaults and validation."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .common import to_jsonable

if TYPE_CHECKING:
    import argparse

__all__ = [
    "GRADIENT_TUNERS",
    "L2L_TUNERS",
    "OPTUNA_TUNERS",
    "RAY_TUNERS",
    "TASKS",
    "TUNER_NAMES",
    "USER_TASKS",
    "USER_TUNER_NAMES",
    "BenchSettings",
    "RunSettingsMixin",
    "check_search_options",
    "parse_tuners",
]

#: Tasks of the benchmark (``--task``).
TASKS: tuple[str, ...] = ("quadratic", "least-squares", "mnist")

#: User-study tasks (:mod:`l2l_tune.bench.user_study`): fresh runs scored by expected
#: validation loss; they have their own settings and tuners.
USER_TASKS: tuple[str, ...] = ("digits-user", "mnist-user")

#: The tuners of the user-study tasks, in report order: ours with hypergradients and as a
#: black box, grid, random, Optuna's TPE, GP and CMA-ES, and the one-run alternatives.
USER_TUNER_NAMES: tuple[str, ...] = (
    "l2l",
    "l2l-blackbox",
    "grid",
    "random",
    "optuna-tpe",
    "optuna-gp",
    "optuna-cmaes",
    "lr-range-test",
    "prodigy",
    "schedule-free",
)

#: Every tuner, in report order (``--tuners``).
TUNER_NAMES: tuple[str, ...] = (
    "l2l",
    "l2l-paper",
    "l2l-blackbox",
    "grid",
    "random",
    "optuna-grid",
    "optuna-random",
    "optuna-tpe",
    "optuna-cmaes",
    "optuna-gp",
    "optuna-l2l",
    "optuna-l2l-blackbox",
    "ray-random",
    "ray-tpe",
    "ray-l2l",
    "ray-l2l-blackbox",
)

#: Tuners that evaluate exact meta-gradients (each evaluation costs the measured
#: gradient cost in inner-run equivalents).
GRADIENT_TUNERS: frozenset[str] = frozenset({"l2l", "l2l-paper", "optuna-l2l", "ray-l2l"})

#: Tuners built on this library's meta-optimizers (excluded from "best other tuner").
L2L_TUNERS: frozenset[str] = frozenset(name for name in TUNER_NAMES if "l2l" in name)

#: Tuners that need Optuna (``ray-tpe`` needs both Optuna and Ray).
OPTUNA_TUNERS: frozenset[str] = frozenset(
    {name for name in TUNER_NAMES if name.startswith("optuna-")} | {"ray-tpe"}
)

#: Tuners that run through Ray Tune.
RAY_TUNERS: frozenset[str] = frozenset(name for name in TUNER_NAMES if name.startswith("ray-"))

#: Per-task defaults of the options left as ``None`` on the command line.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "quadratic": {"t": 80, "d": 20, "split": "train", "budget": 60, "seeds": 5},
    "least-squares": {
        "t": 40,
        "d": 1000,
        "m": 50,
        "n_train": 250,
        "n_valid": 250,
        "split": "valid",
        "budget": 60,
        "seeds": 5,
    },
    "mnist": {
        "t": 200,
        "m": 4,
        "n_train": 300,
        "n_valid": 300,
        "label_noise": 0.2,
        "split": "valid",
        "budget": 40,
        "seeds": 3,
    },
}


def _check_tuners(names: Sequence[str], valid: Sequence[str], task: str | None) -> None:
    for name in names:
        if name not in valid:
            where = f" for --task {task}" if task else ""
            raise ValueError(
                f"--tuners: unknown tuner {name!r}{where}; valid names are " + ", ".join(valid)
            )


def parse_tuners(
    text: str | None, valid: Sequence[str] = TUNER_NAMES, *, task: str | None = None
) -> tuple[str, ...]:
    """The tuner names of a comma-separated ``--tuners`` value, in ``valid``'s order.

    Args:
        text: The ``--tuners`` value (``None``: every valid name).
        valid: The tuner names the task accepts.
        task: The task, named in the unknown-tuner message when given.

    Raises:
        ValueError: naming ``--tuners`` and the valid names, for an unknown or empty name.
    """
    if text is None:
        return tuple(valid)
    names = [part.strip() for part in str(text).split(",")]
    _check_tuners(names, valid, task)
    return tuple(n for n in valid if n in names)


def _check_int(value: Any, option: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_float(value: Any, option: str, *, low: float = 0.0, inclusive: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    out = float(value) if ok else math.nan
    if not (math.isfinite(out) and (out >= low if inclusive else out > low)):
        sign = ">=" if inclusive else ">"
        raise ValueError(f"{option} must be a finite number {sign} {low:g}, got {value!r}")
    return out


_Settings = TypeVar("_Settings", bound="RunSettingsMixin")


class RunSettingsMixin:
    """What the settings of every bench run share: seeds, output directory, JSON form, the
    per-task defaults and the checks of the options common to all tasks.

    Expects the dataclass fields declared here.
    """

    task: str
    budget: int | None
    seeds: int | None
    seed0: int
    tuners: tuple[str, ...]
    eta_range: tuple[float, float]
    eta0: float | None
    t: int | None
    label_noise: float | None
    torch_threads: int
    grad_cost: float | None
    progress: bool
    out: Path | None

    @property
    def seed_values(self) -> list[int]:
        """The seeds of the run."""
        return list(range(self.seed0, self.seed0 + int(self.seeds or 0)))

    @property
    def out_dir(self) -> Path:
        """The output directory."""
        return Path(self.out) if self.out is not None else Path(f"bench-{self.task}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict of the settings."""
        return to_jsonable({**vars(self), "out": str(self.out_dir)})

    @classmethod
    def from_args(
        cls: type[_Settings], args: argparse.Namespace, tuners: tuple[str, ...]
    ) -> _Settings:
        """The settings of parsed ``bench`` arguments (options left ``None`` take the field's
        default) with the ``tuners`` parsed from ``--tuners``."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        given = {k: v for k, v in vars(args).items() if k in names and v is not None}
        given.update(
            tuners=tuners,
            eta_range=(float(args.eta_range[0]), float(args.eta_range[1])),
            progress=not args.no_progress,
        )
        return cls(**given)

    def _resolved(
        self: _Settings,
        defaults: Mapping[str, Mapping[str, Any]],
        valid_tuners: Sequence[str],
        *,
        unit: str,
        name_task: bool = False,
    ) -> _Settings:
        """A copy with the task's ``defaults`` (task → field → value) filled in and the shared
        options checked.

        Raises:
            ValueError: naming the option.
        """
        if self.task not in defaults:
            raise ValueError(f"--task must be one of {', '.join(defaults)}; got {self.task!r}")
        values = {
            name: default if getattr(self, name) is None else getattr(self, name)
            for name, default in defaults[self.task].items()
        }
        out = replace(cast(Any, self), **values)
        _check_int(out.budget, "--budget", 1)
        _check_int(out.seeds, "--seeds", 1)
        _check_int(out.seed0, "--seed0", 0)
        _check_int(out.t, "--t", 1)
        _check_int(out.torch_threads, "--torch-threads", 1)
        if out.label_noise is not None:
            _check_float(out.label_noise, "--label-noise", inclusive=True)
            if out.label_noise > 1.0:
                raise ValueError(f"--label-noise must be in [0, 1], got {out.label_noise!r}")
        low, high = check_search_options(
            out.eta_range,
            out.eta0,
            out.grad_cost,
            out.tuners,
            valid_tuners,
            unit=unit,
            task=out.task if name_task else None,
        )
        return cast(_Settings, replace(out, eta_range=(low, high)))


@dataclass(frozen=True)
class BenchSettings(RunSettingsMixin):
    """Everything that defines a benchmark run (the ``l2l-tune bench`` options).

    ``None`` fields take the task's default in :meth:`resolved`. Step-size bounds
    ``eta_range`` are in units of the task's ``step_size_scale()`` (``1/L``).

    Attributes:
        task: ``"quadratic"``, ``"least-squares"`` or ``"mnist"``.
        budget: Inner-run equivalents per tuner and seed.
        seeds: Number of seeds (each changes the task instance and the tuners' seeds).
        seed0: First seed; seeds are ``seed0, …, seed0 + seeds − 1``.
        tuners: Tuner names to run.
        objective: ``"log"`` (``(1/t)·log`` of the meta-loss) or ``"last"`` (the meta-loss).
        eta_range: ``(low, high)`` of the step size in units of ``1/L``.
        eta0: First step size of the meta-gradient tuners in units of ``1/L``
            (``None``: the geometric mean of ``eta_range``).
        t: Inner steps.
        d: Dimension (quadratic, least squares).
        variant: Quadratic instance (``"authors"`` or ``"paper"``).
        m: Tasks per batch (least squares, MNIST).
        n_train: Training samples per task.
        n_valid: Validation samples per task.
        sigma: Least-squares label noise.
        split: ``"train"`` (train-by-train) or ``"valid"`` (train-by-validation).
        m_test: New least-squares tasks for the test RMSE.
        dataset: MNIST data set, ``"digits"`` or ``"mnist"``.
        data_dir: MNIST data directory.
        download: Allow downloading MNIST.
        label_noise: Fraction of MNIST labels replaced by random ones (default 0.2).
        torch_threads: PyTorch CPU threads for the MNIST task (the networks are tiny:
            more threads mostly contend).
        grad_cost: Inner-run equivalents of one meta-gradient evaluation; ``None``: measure it.
        ray_workers: Concurrent Ray trials.
        ray_trial_seconds: Seconds every Ray trial sleeps before it reports, so that
            concurrent trials really overlap and finish out of order as long trials do
            (``0``: none).
        progress: Show a progress bar.
        out: Output directory (``None``: ``./bench-<task>``).
    """

    task: str = "quadratic"
    budget: int | None = None
    seeds: int | None = None
    seed0: int = 0
    tuners: tuple[str, ...] = TUNER_NAMES
    objective: str = "log"
    eta_range: tuple[float, float] = (1e-3, 10.0)
    eta0: float | None = None
    t: int | None = None
    d: int | None = None
    variant: str = "authors"
    m: int | None = None
    n_train: int | None = None
    n_valid: int | None = None
    sigma: float = 1.0
    split: str | None = None
    m_test: int = 10
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    label_noise: float | None = None
    torch_threads: int = 1
    grad_cost: float | None = None
    ray_workers: int = 1
    ray_trial_seconds: float = 0.0
    progress: bool = True
    out: Path | None = None

    def resolved(self) -> BenchSettings:
        """A copy with the task's defaults filled in and every field validated.

        Raises:
            ValueError: naming the option (``--budget``, ``--seeds``, ``--tuners``, …).
        """
        out = self._resolved(_DEFAULTS, TUNER_NAMES, unit="inner runs")
        for name in ("d", "m", "n_train"):
            value = getattr(out, name)
            if value is not None:
                _check_int(value, f"--{name.replace('_', '-')}", 1)
        if out.n_valid is not None:
            _check_int(out.n_valid, "--n-valid", 0)
        _check_int(out.m_test, "--m-test", 1)
        _check_int(out.ray_workers, "--ray-workers", 1)
        _check_float(out.ray_trial_seconds, "--ray-trial-seconds", inclusive=True)
        _check_float(out.sigma, "--sigma")
        if out.objective not in ("log", "last"):
            raise ValueError(f"--objective must be 'log' or 'last'; got {out.objective!r}")
        if out.split not in ("train", "valid"):
            raise ValueError(f"--split must be 'train' or 'valid'; got {out.split!r}")
        if out.task == "quadratic" and out.split != "train":
            raise ValueError("--split must be 'train' for the quadratic task (no validation set)")
        if out.split == "valid" and not out.n_valid:
            raise ValueError("--n-valid must be >= 1 with --split valid")
        if out.variant not in ("authors", "paper"):
            raise ValueError(f"--variant must be 'authors' or 'paper'; got {out.variant!r}")
        if out.dataset not in ("digits", "mnist"):
            raise ValueError(f"--dataset must be 'digits' or 'mnist'; got {out.dataset!r}")
        return out


def check_search_options(
    eta_range: Any,
    eta0: float | None,
    grad_cost: float | None,
    tuners: Sequence[str],
    valid_tuners: Sequence[str],
    *,
    unit: str,
    task: str | None = None,
) -> tuple[float, float]:
    """Validate the options every bench task shares; return ``(low, high)`` of ``--eta-range``.

    Args:
        eta_range: The ``--eta-range`` pair.
        eta0: ``--eta0`` (must lie in the range) or ``None``.
        grad_cost: ``--grad-cost`` (``>= 1``) or ``None``.
        tuners: ``--tuners``.
        valid_tuners: The tuner names this task accepts.
        unit: What ``--grad-cost`` counts (for the message).
        task: The task, named in the unknown-tuner message when given.

    Raises:
        ValueError: naming the option and what is accepted.
    """
    try:
        low, high = (float(x) for x in eta_range)
    except (TypeError, ValueError):
        raise ValueError(f"--eta-range must be two numbers, got {eta_range!r}") from None
    _check_float(low, "--eta-range low")
    _check_float(high, "--eta-range high")
    if not low < high:
        raise ValueError(f"--eta-range must satisfy low < high, got {eta_range!r}")
    if eta0 is not None:
        _check_float(eta0, "--eta0")
        if not low <= eta0 <= high:
            raise ValueError(f"--eta0 must lie in --eta-range [{low:g}, {high:g}], got {eta0!r}")
    if grad_cost is not None:
        _check_float(grad_cost, "--grad-cost")
        if grad_cost < 1.0:
            raise ValueError(f"--grad-cost must be >= 1 ({unit}), got {grad_cost!r}")
    if not tuners:
        raise ValueError("--tuners must name at least one tuner")
    _check_tuners(tuners, valid_tuners, task)
    return low, high
