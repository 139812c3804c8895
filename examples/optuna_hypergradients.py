"""An Optuna study tuning AdamW's lr and weight decay together from their hypergradients.

Each trial trains a small MLP on scikit-learn's digits (no download) with ``HypergradAdamW``
(the same weights as ``torch.optim.AdamW``) and reports ``opt.hypergradients(val_loss)``;
``HypergradientSampler`` fits a Gaussian process to the trials' values and hypergradients
and proposes the next pair (``meta_optimizer="adam"``: Adam on their logarithms).

    python examples/optuna_hypergradients.py
"""

from __future__ import annotations

import warnings

import optuna
import torch
import torch.nn.functional as F  # noqa: N812
from l2l_tune.integrations.optuna import HypergradientSampler, report_meta_gradient
from torch import nn

from l2l_tune.data import load_digits
from l2l_tune.hypergrad import HypergradAdamW

warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
optuna.logging.set_verbosity(optuna.logging.WARNING)

data = load_digits()
x = torch.as_tensor(data.train_images, dtype=torch.float64) / data.max_pixel
y = torch.as_tensor(data.train_labels)
x_train, y_train, x_val, y_val = x[:1000], y[:1000], x[1000:], y[1000:]
batches = [(x_train[i : i + 50], y_train[i : i + 50]) for i in range(0, 1000, 50)] * 2


def objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
    weight_decay = trial.suggest_float("weight_decay", 1e-4, 10.0, log=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).double()
    opt = HypergradAdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    for xb, yb in batches:
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward(create_graph=True)
        opt.step()
    val_loss = F.cross_entropy(model(x_val), y_val)
    report_meta_gradient(trial, opt.hypergradients(val_loss))  # {"lr": ..., "weight_decay": ...}
    return val_loss.item()


sampler = HypergradientSampler(params=("lr", "weight_decay"))
study = optuna.create_study(sampler=sampler)
study.optimize(objective, n_trials=20)
for trial in study.trials[::4]:
    lr, wd = trial.params["lr"], trial.params["weight_decay"]
    print(f"trial {trial.number:2d}: lr={lr:.4g} weight_decay={wd:.4g} val loss {trial.value:.4f}")
print("recommended:", sampler.recommended_params(study))
