"""An existing Optuna study, switched to meta-gradient step-size tuning with one line.

The objective trains a linear model on scikit-learn's bundled diabetes data set by
``T`` steps of full-batch gradient descent at learning rate ``lr`` and returns the
validation mean squared error: an unchanged black-box objective. The only change
from a TPE study is the ``sampler=`` line; the sampler then estimates the
meta-gradient from paired trials. ``optuna_exact_meta_gradient.py`` is the same
objective reporting the exact derivative.

Run: ``python examples/optuna_one_line_swap.py``.
"""

from __future__ import annotations

import numpy as np
import optuna
from l2l_tune.integrations.optuna import MetaGradientSampler
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

T = 100
X, y = load_diabetes(return_X_y=True)
X_train, X_valid, y_train, y_valid = train_test_split(X, y, test_size=0.5, random_state=0)
scaler = StandardScaler().fit(X_train)
X_train, X_valid = scaler.transform(X_train), scaler.transform(X_valid)
X_train = np.hstack([X_train, np.ones((len(X_train), 1))])
X_valid = np.hstack([X_valid, np.ones((len(X_valid), 1))])
y_scale = y_train.std()
y_train, y_valid = y_train / y_scale, y_valid / y_scale


def objective(trial: optuna.trial.Trial) -> float:
    """Validation MSE after T GD steps on the training MSE."""
    lr = trial.suggest_float("lr", 1e-4, 10.0, log=True)
    w = np.zeros(X_train.shape[1])
    for _ in range(T):
        w -= lr * X_train.T @ (X_train @ w - y_train) / len(y_train)
        if not np.all(np.isfinite(w)) or np.linalg.norm(w) > 1e6:
            return 1e12  # diverged: a large, finite value
    return float(np.mean((X_valid @ w - y_valid) ** 2))


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    baseline = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    baseline.optimize(objective, n_trials=30)
    # The one-line swap:
    study = optuna.create_study(sampler=MetaGradientSampler(param="lr", seed=0))
    study.optimize(objective, n_trials=30)
    tpe_lr = baseline.best_params["lr"]
    print(f"TPE:                 best lr {tpe_lr:.5g}, MSE {baseline.best_value:.6f}")
    print(f"MetaGradientSampler: best lr {study.best_params['lr']:.5g}, MSE {study.best_value:.6f}")
