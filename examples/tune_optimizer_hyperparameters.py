"""Tune the inner optimizer's hyperparameters of the MNIST task with their gradients.

Two searches on scikit-learn's digits (no download), train-by-validation with 20 % label
noise: AdamW's ``(lr, weight_decay)`` jointly, and a step size per layer for SGD with
momentum. Each evaluation is one training run of every task that also carries the tangents
of the tuned hyperparameters (forward mode through the update rule, the paper's Eqn 2);
``HyperparameterTuner`` proposes the next values from a Gaussian process fitted to every
run's value and gradients. The picks are then trained on new tasks and tested.

    python examples/tune_optimizer_hyperparameters.py
"""

from __future__ import annotations

import torch

from l2l_tune import HyperparameterTuner
from l2l_tune.tasks import MNIST

torch.set_num_threads(1)  # a 64-wide network only loses to threading overhead
digits = MNIST("digits")
T = 150

searches = {
    "adamw": (("lr", "weight_decay"), {"lr": 1e-4, "weight_decay": 1e-2}),
    "momentum": (("lr[0]", "lr[1]", "lr[2]"), {"lr[0]": 1e-3, "lr[1]": 1e-3, "lr[2]": 1e-3}),
}
for optimizer, (names, start) in searches.items():
    batch = digits.sample(2, 400, 400, label_noise=0.2, seed=0, optimizer=optimizer)
    before = batch.value_and_gradients(start, T, split="valid")[0]
    tuner = HyperparameterTuner(names, start=start, max_evals=12).fit(batch, T, split="valid")
    picked = ", ".join(f"{k}={v:.3g}" for k, v in tuner.hyperparameters_.items())
    test = digits.sample(3, 400, 0, label_noise=0.2, seed=1, optimizer=optimizer)
    accuracy = test.evaluate(tuner.hyperparameters_, T).summary()["test_accuracy"]
    print(
        f"{optimizer}: validation loss {before:.3f} -> {tuner.meta_objective_:.3f} "
        f"in {len(tuner.history_)} runs; {picked}; test accuracy on new tasks {accuracy:.3f}"
    )
