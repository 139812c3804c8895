"""``StepSizeTuner`` and ``HyperparameterTuner``: tasks + meta-objective + meta-optimizer.

:class:`StepSizeTuner` tunes the step size; :class:`HyperparameterTuner` tunes
several named hyperparameters of the inner optimizer (the step size, weight decay,
momentum, per-layer step sizes) with their gradients.

Follows scikit-learn's conventions: ``__init__`` only stores its arguments,
:meth:`StepSizeTuner.fit` validates them, runs the ask/tell loop and returns the
fitted tuner, whose learned state sits in trailing-underscore attributes.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ._validation import check_choice, check_horizon, check_positive
from .meta import (
    META_OPTIMIZER_CHOICES,
    VECTOR_META_OPTIMIZERS,
    MetaOptimizer,
    NonFiniteMetaGradientWarning,
    make_meta_optimizer,
    resolve_meta_optimizer,
)
from .meta.vector import (
    HyperparameterSpace,
    VectorMetaOptimizer,
    VectorRecord,
    check_names,
    check_start,
)
from .tasks.base import SPLITS, HyperparameterTask, MetaObjectiveTask, is_exact_task

__all__ = ["EvalRecord", "HyperparameterTuner", "StepSizeTuner", "TuningResultMixin"]


@dataclass(frozen=True)
class EvalRecord:
    """One evaluation made while tuning.

    Attributes:
        eta: Step size evaluated.
        value: Meta-objective there.
        grad: Meta-gradient there (``None`` for gradient-free baselines).
        seconds: Wall time of the evaluation.
    """

    eta: float
    value: float
    grad: float | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return asdict(self)


class TuningResultMixin:
    """Shared fitted state of :class:`StepSizeTuner` and the baselines.

    Attributes:
        step_size_: The chosen step size.
        meta_objective_: The meta-objective at ``step_size_``.
        history_: One :class:`EvalRecord` per evaluation, in order.
        n_evals_: ``len(history_)``.
    """

    step_size_: float
    meta_objective_: float
    history_: list[EvalRecord]

    @property
    def n_evals_(self) -> int:
        """Number of meta-objective evaluations made by ``fit``."""
        return len(self.history_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "step_size_"):
            raise AttributeError(f"this {type(self).__name__} is not fitted yet: call fit first")

    def result_dict(self) -> dict[str, Any]:
        """The fitted state as a JSON-friendly dict."""
        self._check_fitted()
        return {
            "step_size": self.step_size_,
            "meta_objective": self.meta_objective_,
            "n_evals": self.n_evals_,
            "history": [r.to_dict() for r in self.history_],
        }


def _check_task(task: Any) -> MetaObjectiveTask:
    if not isinstance(task, MetaObjectiveTask):
        raise ValueError(
            "task must provide meta_objective, value_and_gradient and step_size_scale "
            f"(a Quadratic or a LeastSquaresBatch, for example); got {type(task).__name__}"
        )
    return task


class StepSizeTuner(TuningResultMixin):
    """Tune the step size of GD by meta-gradient descent on a task's meta-objective.

    Args:
        meta_optimizer: ``"auto"`` (the default: ``"bracket"`` for a task that
            declares an exact meta-objective, the closed forms, and the
            model-based ``"model"`` for training runs, see
            :func:`~l2l_tune.meta.resolve_meta_optimizer`), a registry name
            (``"bracket"``, ``"model"``, ``"paper"``, ``"adam"``) or a
            :class:`~l2l_tune.meta.MetaOptimizer` instance (used as given, its
            history included).
        eta0: First step size; ``None`` uses the task's ``1/L``
            (``step_size_scale()``).
        max_evals: Most meta-gradient evaluations.
        tol: Convergence tolerance passed to a named meta-optimizer (relative
            bracket width for ``"bracket"``, relative expected improvement for
            ``"model"``); ``None``: the meta-optimizer's own default (``1e-10``
            for the bracket, as precise as float64 allows on the quadratic).
        meta_optimizer_options: Extra keyword arguments for a named meta-optimizer
            (e.g. ``{"lr": 0.01}`` for ``"paper"``).
        callback: Called as ``callback(record)`` after every evaluation.

    Attributes:
        step_size_: The tuned step size: the meta-optimizer's recommendation
            (:meth:`~l2l_tune.meta.MetaOptimizer.estimate`; for ``"model"`` the
            minimiser of the posterior mean, not the luckiest noisy evaluation).
        meta_objective_: Meta-objective at ``step_size_``.
        history_: :class:`EvalRecord` per evaluation.
        converged_: Whether the meta-optimizer met its tolerance before ``max_evals``
            and the tuned step size is at least as good as every evaluated one.
        meta_optimizer_: The fitted :class:`~l2l_tune.meta.MetaOptimizer`.
    """

    def __init__(
        self,
        meta_optimizer: str | MetaOptimizer = "auto",
        eta0: float | None = None,
        max_evals: int = 200,
        tol: float | None = None,
        meta_optimizer_options: Mapping[str, Any] | None = None,
        callback: Callable[[EvalRecord], None] | None = None,
    ) -> None:
        self.meta_optimizer = meta_optimizer
        self.eta0 = eta0
        self.max_evals = max_evals
        self.tol = tol
        self.meta_optimizer_options = meta_optimizer_options
        self.callback = callback

    def _build_optimizer(self, task: MetaObjectiveTask) -> MetaOptimizer:
        if isinstance(self.meta_optimizer, MetaOptimizer):
            return self.meta_optimizer
        if not isinstance(self.meta_optimizer, str):
            raise ValueError(
                "meta_optimizer must be one of "
                + ", ".join(repr(k) for k in META_OPTIMIZER_CHOICES)
                + f" or a MetaOptimizer instance; got {self.meta_optimizer!r}"
            )
        name = resolve_meta_optimizer(self.meta_optimizer, exact=is_exact_task(task))
        eta0 = task.step_size_scale() if self.eta0 is None else check_positive(self.eta0, "eta0")
        options = dict(self.meta_optimizer_options or {})
        if self.tol is not None:
            options.setdefault("tol", check_positive(self.tol, "tol"))
        return make_meta_optimizer(name, eta0=eta0, **options)

    def fit(
        self, task: MetaObjectiveTask, t: int, split: str = "train", log: bool = True
    ) -> StepSizeTuner:
        """Run the ask/tell loop on ``task``'s meta-objective.

        Args:
            task: A :class:`~l2l_tune.tasks.Quadratic`, a
                :class:`~l2l_tune.tasks.LeastSquaresBatch` or any object with the
                :class:`~l2l_tune.tasks.MetaObjectiveTask` methods.
            t: Inner GD steps, ``≥ 1``.
            split: ``"train"`` (train-by-train) or ``"valid"`` (train-by-validation).
            log: Tune ``(1/t)·log`` of the meta-loss (Theorem 4) rather than the loss.

        Returns:
            ``self``, fitted.

        Raises:
            ValueError: for a bad task, ``t``, ``split``, ``max_evals``, ``tol``,
                ``eta0`` or meta-optimizer name.
        """
        task = _check_task(task)
        t = check_horizon(t)
        check_choice(split, "split", SPLITS)
        max_evals = check_horizon(self.max_evals, "max_evals")
        optimizer = self._build_optimizer(task)
        history: list[EvalRecord] = []
        underflow = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
            for _ in range(max_evals):
                if optimizer.converged:
                    break
                eta = optimizer.ask()
                start = time.perf_counter()
                value, grad = task.value_and_gradient(eta, t, split=split, log=log)
                record = EvalRecord(eta, value, grad, time.perf_counter() - start)
                optimizer.tell(eta, value, grad)
                history.append(record)
                if self.callback is not None:
                    self.callback(record)
                if not log and value == 0.0 and grad == 0.0 and eta > 0.0:
                    warnings.warn(
                        f"the meta-objective and its gradient underflowed to 0 at eta={eta:.6g} "
                        f"(t={t}): the plain last-loss objective vanishes exponentially in t "
                        "(Theorem 3) and carries no information there; use log=True. "
                        "Stopping without convergence.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    underflow = True
                    break
        self.meta_optimizer_ = optimizer
        self.history_ = history
        self.step_size_ = float(optimizer.estimate())
        self.meta_objective_ = float(task.meta_objective(self.step_size_, t, split=split, log=log))
        # Never "converged" at a point worse than one already seen (a chaotic or truncated
        # region can fool a meta-optimizer; the values cannot).
        seen = [r.value for r in history if math.isfinite(r.value)]
        worse = bool(seen) and not (
            self.meta_objective_ <= min(seen) + 1e-9 * (abs(min(seen)) + 1.0)
        )
        self.converged_ = optimizer.converged and not underflow and not worse
        if not math.isfinite(self.meta_objective_):
            warnings.warn(
                f"the meta-objective at the tuned step size {self.step_size_:.6g} is "
                f"{self.meta_objective_}; the inner run diverges there",
                RuntimeWarning,
                stacklevel=2,
            )
        return self

    def result_dict(self) -> dict[str, Any]:
        """The fitted state as a JSON-friendly dict."""
        out = super().result_dict()
        out["converged"] = self.converged_
        out["meta_optimizer"] = getattr(
            self.meta_optimizer_, "name", type(self.meta_optimizer_).__name__
        )
        return out


class HyperparameterTuner:
    """Tune several hyperparameters of a task's inner optimizer by meta-gradient descent.

    The vector form of :class:`StepSizeTuner`: each evaluation runs the inner
    optimizer once and returns the meta-objective and its gradient in every tuned
    hyperparameter (:meth:`~l2l_tune.tasks.HyperparameterTask.value_and_gradients`:
    forward mode through the update rule, paper Eqn 2, or a closed form); a vector
    meta-optimizer (:class:`~l2l_tune.meta.VectorGaussianProcess`, the default:
    Bayesian optimisation on the values and gradients, robust to noisy, rugged and
    diverging runs; :class:`~l2l_tune.meta.VectorLogAdam`; or
    :class:`~l2l_tune.meta.VectorProjectedGD`, Theorem 4's iteration) proposes the
    next values on the log scale of step sizes and decays and the linear scale of
    momenta. The step size alone (``params=("lr",)``) is the one-name case.

    Args:
        params: The names to tune (their bounds from the task's
            :meth:`~l2l_tune.tasks.HyperparameterTask.hyperparameter_space`), or a
            :class:`~l2l_tune.meta.HyperparameterSpace` (your own bounds).
        meta_optimizer: ``"model"`` (default), ``"adam"``, ``"paper"`` (projected meta-GD) or a
            :class:`~l2l_tune.meta.VectorMetaOptimizer` instance (used as given).
        start: First values (default: the geometric mean of each log-scale range,
            the middle of each linear one).
        max_evals: Training runs with their gradients, ``≥ 1``.
        meta_optimizer_options: Keyword arguments of a named meta-optimizer
            (``{"lr": 0.3}``).
        callback: Called as ``callback(record)`` after every evaluation.

    Attributes:
        hyperparameters_: The tuned values: the meta-optimizer's estimate (the
            model's recommended evaluated point; Adam's and projected GD's last
            iterate, Theorem 4, evaluated once more), or the best evaluated values
            when the estimate is worse than them (a noisy or chaotic run can mislead
            an iterate, the values cannot).
        meta_objective_: The meta-objective at ``hyperparameters_``.
        history_: One :class:`~l2l_tune.meta.VectorRecord` per evaluation.
        meta_optimizer_: The fitted meta-optimizer.
    """

    def __init__(
        self,
        params: str | Sequence[str] | HyperparameterSpace,
        meta_optimizer: str | VectorMetaOptimizer = "model",
        start: Mapping[str, float] | None = None,
        max_evals: int = 30,
        meta_optimizer_options: Mapping[str, Any] | None = None,
        callback: Callable[[VectorRecord], None] | None = None,
    ) -> None:
        self.params = params
        self.meta_optimizer = meta_optimizer
        self.start = start
        self.max_evals = max_evals
        self.meta_optimizer_options = meta_optimizer_options
        self.callback = callback

    def _build_optimizer(self, task: HyperparameterTask) -> VectorMetaOptimizer:
        if isinstance(self.meta_optimizer, VectorMetaOptimizer):
            return self.meta_optimizer
        if not isinstance(self.meta_optimizer, str) or (
            self.meta_optimizer not in VECTOR_META_OPTIMIZERS
        ):
            raise ValueError(
                "meta_optimizer must be one of "
                + ", ".join(repr(k) for k in VECTOR_META_OPTIMIZERS)
                + f" or a VectorMetaOptimizer instance; got {self.meta_optimizer!r}"
            )
        if isinstance(self.params, HyperparameterSpace):
            space = self.params
        else:
            space = task.hyperparameter_space().subset(check_names(self.params))
        start = check_start(self.start, space.names)
        return VECTOR_META_OPTIMIZERS[self.meta_optimizer](
            space, start=start, **dict(self.meta_optimizer_options or {})
        )

    def fit(
        self, task: HyperparameterTask, t: int, split: str = "train", log: bool = False
    ) -> HyperparameterTuner:
        """Run the ask/tell loop on ``task``'s meta-objective.

        Args:
            task: A :class:`~l2l_tune.tasks.HyperparameterTask` (an
                :class:`~l2l_tune.tasks.MNISTBatch` with any inner optimizer, a
                :class:`~l2l_tune.tasks.Quadratic` with heavy-ball momentum).
            t: Inner steps, ``≥ 1``.
            split: ``"train"`` (train-by-train) or ``"valid"`` (train-by-validation).
            log: Tune ``(1/t)·log`` of the meta-loss (Theorem 4) rather than the loss.

        Returns:
            ``self``, fitted.

        Raises:
            ValueError: for a task without the protocol, bad ``t``, ``split``,
                ``max_evals``, names, ``start`` or meta-optimizer.
        """
        if not isinstance(task, HyperparameterTask):
            raise ValueError(
                "task must provide hyperparameter_space and value_and_gradients (an "
                f"MNISTBatch or a Quadratic, for example); got {type(task).__name__}"
            )
        t = check_horizon(t)
        check_choice(split, "split", SPLITS)
        max_evals = check_horizon(self.max_evals, "max_evals")
        optimizer = self._build_optimizer(task)
        names = optimizer.space.names
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
            for _ in range(max_evals):
                values = optimizer.ask()
                value, gradients = task.value_and_gradients(values, t, split=split, log=log)
                optimizer.tell(values, value, {n: gradients[n] for n in names})
                if self.callback is not None:
                    self.callback(optimizer.history[-1])
            estimate = optimizer.estimate()
            told = [r.value for r in optimizer.history if dict(r.values) == estimate]
            # the model recommends a told point: its value is known, no further run
            value = (
                told[-1] if told else task.value_and_gradients(estimate, t, split=split, log=log)[0]
            )
        best = optimizer.best
        if best is not None and not value <= best.value:
            estimate, value = dict(best.values), best.value
        self.meta_optimizer_ = optimizer
        self.history_ = list(optimizer.history)
        self.hyperparameters_ = estimate
        self.meta_objective_ = float(value)
        return self

    def result_dict(self) -> dict[str, Any]:
        """The fitted state as a JSON-friendly dict."""
        if not hasattr(self, "hyperparameters_"):
            raise AttributeError(f"this {type(self).__name__} is not fitted yet: call fit first")
        return {
            "hyperparameters": dict(self.hyperparameters_),
            "meta_objective": self.meta_objective_,
            "n_evals": len(self.history_),
            "meta_optimizer": self.meta_optimizer_.name or type(self.meta_optimizer_).__name__,
            "history": [r.to_dict() for r in self.history_],
        }
