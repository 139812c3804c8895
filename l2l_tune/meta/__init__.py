"""Meta-optimizers on the step size, with an ask/tell interface.

* ``"bracket"`` (:class:`BracketingMetaOptimizer`, the default): safeguarded
  secant on the meta-gradient's sign change (Claim 1), for deterministic
  meta-objectives.
* ``"paper"`` (:class:`ProjectedMetaGD`): projected meta-GD with ``μ_k = μ0/√k``
  (Theorem 4).
* ``"adam"`` (:class:`LogAdamMetaOptimizer`): Adam on ``log η`` with a decaying
  rate, for noisy meta-gradients (tasks sampled per step).
* ``"model"`` (:class:`GaussianProcessMetaOptimizer`): Bayesian optimisation
  on ``log η`` with a Gaussian process on values and gradients, for noisy,
  rugged or chaotic meta-objectives (diverged runs, exploding meta-gradients).

``"auto"`` (:func:`resolve_meta_optimizer`, the default of the tuner and the
adapters) picks ``"bracket"`` where the objective is exact and deterministic and
``"model"`` otherwise.

Several hyperparameters at once (:mod:`~l2l_tune.meta.vector`):
:class:`VectorLogAdam`, :class:`VectorProjectedGD` and
:class:`VectorGaussianProcess` (:mod:`~l2l_tune.meta.vector_model`, Bayesian
optimisation on values and hypergradients) over a :class:`HyperparameterSpace`,
the same ask/tell protocol with mappings.
"""

from __future__ import annotations

from typing import Any

from .._validation import check_choice
from .base import MetaOptimizer, MetaRecord, NonFiniteMetaGradientWarning
from .bracket import BracketingMetaOptimizer
from .driver import Evaluation, Proposal, propose, records_from_evaluations
from .gradient import LogAdamMetaOptimizer, ProjectedMetaGD
from .model import GaussianProcessMetaOptimizer
from .vector import (
    Hyperparameter,
    HyperparameterSpace,
    VectorLogAdam,
    VectorMetaOptimizer,
    VectorProjectedGD,
    VectorRecord,
)
from .vector_model import VectorGaussianProcess

__all__ = [
    "META_OPTIMIZERS",
    "META_OPTIMIZER_CHOICES",
    "VECTOR_META_OPTIMIZERS",
    "BracketingMetaOptimizer",
    "Evaluation",
    "GaussianProcessMetaOptimizer",
    "Hyperparameter",
    "HyperparameterSpace",
    "LogAdamMetaOptimizer",
    "MetaOptimizer",
    "MetaRecord",
    "NonFiniteMetaGradientWarning",
    "ProjectedMetaGD",
    "Proposal",
    "VectorGaussianProcess",
    "VectorLogAdam",
    "VectorMetaOptimizer",
    "VectorProjectedGD",
    "VectorRecord",
    "make_meta_optimizer",
    "propose",
    "records_from_evaluations",
    "resolve_meta_optimizer",
]

#: Registry of meta-optimizers by name.
META_OPTIMIZERS: dict[str, type[MetaOptimizer]] = {
    BracketingMetaOptimizer.name: BracketingMetaOptimizer,
    ProjectedMetaGD.name: ProjectedMetaGD,
    LogAdamMetaOptimizer.name: LogAdamMetaOptimizer,
    GaussianProcessMetaOptimizer.name: GaussianProcessMetaOptimizer,
}

#: Vector meta-optimizers (several hyperparameters) by name.
VECTOR_META_OPTIMIZERS: dict[str, type[VectorMetaOptimizer]] = {
    VectorLogAdam.name: VectorLogAdam,
    VectorProjectedGD.name: VectorProjectedGD,
    VectorGaussianProcess.name: VectorGaussianProcess,
}


def make_meta_optimizer(name: str, **kwargs: Any) -> MetaOptimizer:
    """Build a meta-optimizer by registry name (a key of :data:`META_OPTIMIZERS`).

    Args:
        name: Key of :data:`META_OPTIMIZERS`.
        **kwargs: Passed to the class (``eta0``, ``tol``, ``bounds``, …).

    Raises:
        ValueError: for an unknown name or bad arguments.
    """
    check_choice(name, "meta_optimizer", tuple(META_OPTIMIZERS))
    return META_OPTIMIZERS[name](**kwargs)


#: Names the tuner, the CLI and the adapters accept: ``"auto"`` and every registry key.
META_OPTIMIZER_CHOICES: tuple[str, ...] = ("auto", *META_OPTIMIZERS)


def resolve_meta_optimizer(name: str, *, exact: bool) -> str:
    """The registry name that ``name`` stands for.

    ``"auto"`` is ``"bracket"`` when the meta-objective is exact, deterministic and
    smooth (Claim 1 can be trusted: the closed forms, see
    :func:`l2l_tune.tasks.is_exact_task`) and ``"model"`` otherwise (training runs:
    noisy, rugged, chaotic at large step sizes, Theorem 3). Other names are returned
    unchanged.

    Args:
        name: ``"auto"`` or a key of :data:`META_OPTIMIZERS`.
        exact: Whether the objective is exact and deterministic.

    Raises:
        ValueError: for an unknown name.
    """
    check_choice(name, "meta_optimizer", META_OPTIMIZER_CHOICES)
    if name != "auto":
        return name
    return BracketingMetaOptimizer.name if exact else GaussianProcessMetaOptimizer.name
