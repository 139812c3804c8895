"""OptunaHub example: tune the step size of GD on a quadratic, with exact meta-gradients."""

from __future__ import annotations

import optuna
from l2l_tune.integrations.optuna import MetaGradientSampler, report_meta_gradient

from l2l_tune import Quadratic

task = Quadratic.random(20, seed=0, variant="authors")  # the paper's Fig 1 instance
T = 80


def objective(trial: optuna.trial.Trial) -> float:
    """Last loss after T GD steps; reports its exact derivative in the step size."""
    lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
    value, grad = task.value_and_gradient(lr, T, log=False)
    report_meta_gradient(trial, grad)
    return value


if __name__ == "__main__":
    study = optuna.create_study(sampler=MetaGradientSampler(param="lr", eta0=0.1))
    study.optimize(objective, n_trials=30)
    print(f"best lr {study.best_params['lr']:.10g}; optimum {task.optimal_step_size(T):.10g}")
