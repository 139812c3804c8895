"""l2l-tune for Optuna: a drop-in sampler that tunes the step size by meta-gradient descent.

Switch an existing study with one line::

    import optuna
    from l2l_tune.integrations.optuna import MetaGradientSampler, report_meta_gradient

    study = optuna.create_study(sampler=MetaGradientSampler(param="lr"))

The objective may call ``report_meta_gradient(trial, d_value_d_lr)`` for the exact,
fastest path; otherwise the sampler estimates it from paired trials.
``HypergradientSampler(params=("lr", "weight_decay"))`` tunes several float
parameters with the mapping of hypergradients the objective reports. Needs the
``[optuna]`` extra. This folder is also an OptunaHub package (see its README.md).
"""

from __future__ import annotations

from l2l_tune.integrations.optuna._production import (
    STORAGE_ERRORS,
    check_journal,
    journal_storage,
    optimize_resiliently,
)
from l2l_tune.integrations.optuna._sampler import (
    GRADIENT_ATTR,
    MetaGradientSampler,
    report_meta_gradient,
    task_objective,
)
from l2l_tune.integrations.optuna._vector import HypergradientSampler, hyperparameter_objective

__all__ = [
    "GRADIENT_ATTR",
    "HypergradientSampler",
    "MetaGradientSampler",
    "STORAGE_ERRORS",
    "check_journal",
    "hyperparameter_objective",
    "journal_storage",
    "optimize_resiliently",
    "report_meta_gradient",
    "task_objective",
]
