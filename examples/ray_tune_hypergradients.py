"""A Ray Tune run tuning AdamW's lr and weight decay together from their hypergradients.

The trainable trains a small MLP on scikit-learn's digits with ``HypergradAdamW`` and reports
``{"loss": ..., "loss_grad": opt.hypergradients(val_loss)}``; ``HypergradientSearch`` fits a
Gaussian process to the finished trials' values and hypergradients and proposes the next pair.
Ray's files go to a temporary directory.

    python examples/ray_tune_hypergradients.py
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import Any

import ray
import torch
import torch.nn.functional as F  # noqa: N812
from l2l_tune.integrations.ray import HypergradientSearch
from ray import tune
from torch import nn

from l2l_tune.data import load_digits
from l2l_tune.hypergrad import HypergradAdamW


def trainable(config: dict[str, Any]) -> None:
    warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
    data = load_digits()
    x = torch.as_tensor(data.train_images, dtype=torch.float64) / data.max_pixel
    y = torch.as_tensor(data.train_labels)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).double()
    opt = HypergradAdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    for _ in range(2):
        for i in range(0, 1000, 50):
            opt.zero_grad()
            F.cross_entropy(model(x[i : i + 50]), y[i : i + 50]).backward(create_graph=True)
            opt.step()
    val_loss = F.cross_entropy(model(x[1000:]), y[1000:])
    tune.report({"loss": val_loss.item(), "loss_grad": opt.hypergradients(val_loss)})


if __name__ == "__main__":
    workdir = tempfile.mkdtemp(prefix="l2l_ray_")
    os.environ.setdefault("RAY_TMPDIR", workdir)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False)
    search = HypergradientSearch(("lr", "weight_decay"), metric="loss", mode="min")
    tuner = tune.Tuner(
        trainable,
        param_space={
            "lr": tune.loguniform(1e-4, 1.0),
            "weight_decay": tune.loguniform(1e-4, 10.0),
        },
        tune_config=tune.TuneConfig(search_alg=search, num_samples=16, max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=os.path.join(workdir, "results"), verbose=0),
    )
    results = tuner.fit()
    best = results.get_best_result(metric="loss", mode="min")
    print("best trial:", best.config, f"val loss {best.metrics['loss']:.4f}")
    print("recommended:", search.meta_optimizer_state().estimate())
    ray.shutdown()
