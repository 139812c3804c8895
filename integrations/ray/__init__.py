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

Needs the ``[ray]`` extra.
"""

from __future__ import annotations

from l2l_tune.integrations.ray._searcher import MetaGradientSearch, task_trainable, with_resources

__all__ = ["MetaGradientSearch", "task_trainable", "with_resources"]
