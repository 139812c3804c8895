"""l2l-tune for Ray Tune: a searcher that tunes the step size by meta-gradient descent.

::

    from ray import tune
    from l2l_tune.integrations.ray import MetaGradientSearch, task_trainable

    tuner = tune.Tuner(
        task_trainable(task, t=80),
        param_space={"lr": tune.loguniform(1e-4, 1.0)},
        tune_config=tune.TuneConfig(
            search_alg=MetaGradientSearch(metric="loss", mode="min"),
            num_samples=30, max_concurrent_trials=2),
    )

``HypergradientSearch(("lr", "weight_decay"), metric="loss", mode="min")`` tunes several
float hyperparameters with the mapping of hypergradients a trainable reports. Needs the
``[ray]`` extra.
"""

from __future__ import annotations

from l2l_tune.integrations.ray._searcher import MetaGradientSearch, task_trainable, with_resources
from l2l_tune.integrations.ray._vector import HypergradientSearch

__all__ = ["HypergradientSearch", "MetaGradientSearch", "task_trainable", "with_resources"]
