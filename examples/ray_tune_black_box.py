"""An unchanged Ray Tune trainable, searched by ``MetaGradientSearch`` as a black box.

The trainable reports only its loss; the searcher estimates the meta-gradient from
paired trials at ``η`` and ``η·e^h``. Compare with Ray's random search at the same budget.

Run: ``python examples/ray_tune_black_box.py``.
"""

from __future__ import annotations

import tempfile

import numpy as np
import ray
from l2l_tune.integrations.ray import MetaGradientSearch
from ray import tune
from ray.tune.search import BasicVariantGenerator

RNG = np.random.default_rng(0)
A = RNG.standard_normal((50, 20))
B = A @ RNG.standard_normal(20) + 0.1 * RNG.standard_normal(50)


def train(config: dict) -> None:
    """100 GD steps of linear regression; reports the final training loss."""
    w = np.zeros(20)
    for _ in range(100):
        w -= config["lr"] * A.T @ (A @ w - B) / len(B)
        if np.linalg.norm(w) > 1e6:
            break
    tune.report({"loss": float(np.mean((A @ w - B) ** 2)) + 1e-12})


def best_loss(search_alg: object) -> float:
    """Best loss of a 30-trial run with the given search algorithm."""
    tuner = tune.Tuner(
        train,
        param_space={"lr": tune.loguniform(1e-4, 1.0)},
        tune_config=tune.TuneConfig(
            metric="loss",
            mode="min",
            search_alg=search_alg,
            num_samples=30,
            max_concurrent_trials=2,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), verbose=0),
    )
    return float(tuner.fit().get_best_result().metrics["loss"])


if __name__ == "__main__":
    ray.init(num_cpus=2, include_dashboard=False)
    print(f"MetaGradientSearch (black box): {best_loss(MetaGradientSearch(seed=0)):.6g}")
    print(f"random search:                  {best_loss(BasicVariantGenerator(random_state=0)):.6g}")
