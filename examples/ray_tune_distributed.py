"""Distributed meta-training with Ray Tune: least squares, m tasks per meta-step, N workers.

Each meta-step evaluates the same step size on ``m`` least-squares tasks (one trial
per task, ``config["task_seed"]``) and the searcher averages them, the paper's
``F̂(η) = (1/m) Σ Δ(η, P_i)``. With ``--workers N`` Tune runs N trials at once;
further meta-steps start at step sizes that avoid the running ones. Trials ask for
a GPU when the cluster has one (the closed form itself runs on the CPU).

Run locally: ``python examples/ray_tune_distributed.py``; on a cluster started with
``ray start --head`` (and ``ray start --address=HEAD:6379`` on workers):
``python examples/ray_tune_distributed.py --address auto --workers 16``.
"""

from __future__ import annotations

import argparse
import tempfile

import ray
from l2l_tune.integrations.ray import MetaGradientSearch, task_trainable, with_resources
from ray import tune

from l2l_tune import LeastSquares


def main() -> None:
    """Tune η by train-by-validation on least-squares tasks across Ray workers."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--address", default=None, help="Ray cluster address ('auto' for a cluster)"
    )
    parser.add_argument("--workers", type=int, default=2, help="concurrent trials")
    parser.add_argument("--tasks-per-step", type=int, default=2)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--d", type=int, default=100)
    args = parser.parse_args()

    ray.init(address=args.address, include_dashboard=False)
    dist = LeastSquares(args.d, sigma=1.0)

    def make_task(task_seed: int):  # noqa: ANN202 - a batch of one task per seed
        return dist.sample(1, args.d // 2, args.d // 2, seed=task_seed)

    trainable = task_trainable(make_task, t=40, split="valid")
    gpus = ray.cluster_resources().get("GPU", 0.0)
    trainable = with_resources(trainable, {"cpu": 1, "gpu": 1} if gpus else {"cpu": 1})
    scale = make_task(0).step_size_scale()
    search = MetaGradientSearch(metric="loss", mode="min", tasks_per_step=args.tasks_per_step)
    tuner = tune.Tuner(
        trainable,
        param_space={"lr": tune.loguniform(1e-3 * scale, 10 * scale)},
        tune_config=tune.TuneConfig(
            search_alg=search,
            num_samples=args.trials,
            max_concurrent_trials=args.workers,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), verbose=0),
    )
    tuner.fit()
    estimate = search.meta_optimizer_state().estimate()
    print(
        f"{search.n_meta_steps} meta-steps of {args.tasks_per_step} tasks; tuned lr {estimate:.6g}"
    )


if __name__ == "__main__":
    main()
