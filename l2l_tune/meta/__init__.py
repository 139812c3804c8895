"""Meta-optimizers on the step size, with an ask/tell interface.

* ``"bracket"`` (:class:`BracketingMetaOptimizer`, the default): safeguarded
  secant on the meta-gradient's sign change (Claim 1), for deterministic
  meta-objectives.
* ``"paper"`` (:class:`ProjectedMetaGD`): projected meta-GD with ``μ_k = μ0/√k``
  (Theorem 4).
* ``"adam"`` (:class:`LogAdamMetaOptimizer`): Adam on ``log η`` with a decaying
  rate, for noisy meta-gradients (tasks sampled per step).
"""

from __future__ import annotations

from typing import Any

from .._validation import check_choice
from .base import MetaOptimizer, MetaRecord, NonFiniteMetaGradientWarning
from .bracket import BracketingMetaOptimizer
from .driver import Evaluation, Proposal, propose, records_from_evaluations
from .gradient import LogAdamMetaOptimizer, ProjectedMetaGD

__all__ = [
    "META_OPTIMIZERS",
    "BracketingMetaOptimizer",
    "Evaluation",
    "LogAdamMetaOptimizer",
    "MetaOptimizer",
    "MetaRecord",
    "NonFiniteMetaGradientWarning",
    "ProjectedMetaGD",
    "Proposal",
    "make_meta_optimizer",
    "propose",
    "records_from_evaluations",
]

#: Registry of meta-optimizers by name.
META_OPTIMIZERS: dict[str, type[MetaOptimizer]] = {
    BracketingMetaOptimizer.name: BracketingMetaOptimizer,
    ProjectedMetaGD.name: ProjectedMetaGD,
    LogAdamMetaOptimizer.name: LogAdamMetaOptimizer,
}


def make_meta_optimizer(name: str, **kwargs: Any) -> MetaOptimizer:
    """Build a meta-optimizer by registry name (``"bracket"``, ``"paper"``, ``"adam"``).

    Args:
        name: Key of :data:`META_OPTIMIZERS`.
        **kwargs: Passed to the class (``eta0``, ``tol``, ``bounds``, …).

    Raises:
        ValueError: for an unknown name or bad arguments.
    """
    check_choice(name, "meta_optimizer", tuple(META_OPTIMIZERS))
    return META_OPTIMIZERS[name](**kwargs)
