"""Ray Tune benchmark: throughput with 1 and 2 workers, trials to a log-regret, overhead.

Task: the quadratic of the paper's Fig 1 (``Quadratic.random(20, seed, variant="authors")``,
t = 80), ``lr ~ tune.loguniform(1e-4, 1)``, trainable ``task_trainable`` (reports the plain
last loss and its derivative).

1. Meta-steps per second with ``max_concurrent_trials`` 1 and 2 (same budget, one run each),
   for the bare trainable and for one that sleeps 0.5 s per trial (compute-bound).
2. Trials until ``log(best loss / f*) ≤ 1e-4`` (in completion order), budget 30, 2 concurrent,
   against ``BasicVariantGenerator`` (random) and ``OptunaSearch`` (TPE); ours with gradients
   and as a black box.
3. The searcher's own cost per trial (``suggest`` + ``on_trial_complete``), driven directly
   for 1,000 trials.

Run: ``python benchmarks/bench_ray.py [--quick] [--seeds 2] [--budget 30]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

_TMP = tempfile.mkdtemp(prefix="l2lray")
os.environ.setdefault("RAY_TMPDIR", _TMP)
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import ray  # noqa: E402
from l2l_tune.integrations.ray import MetaGradientSearch, task_trainable  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.search import BasicVariantGenerator  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from l2l_tune import Quadratic  # noqa: E402

T = 80


def run(
    trainable: Any, search: Any, budget: int, workers: int, name: str
) -> tuple[list[float], float]:
    """Run a Tuner; return the losses in completion order and the wall time."""
    start = time.perf_counter()
    grid = tune.Tuner(
        trainable,
        param_space={"lr": tune.loguniform(1e-4, 1.0)},
        tune_config=tune.TuneConfig(
            search_alg=search,
            metric="loss",
            mode="min",
            num_samples=budget,
            max_concurrent_trials=workers,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=_TMP, name=name, verbose=0),
    ).fit()
    wall = time.perf_counter() - start
    frame = grid.get_dataframe()
    frame = frame.sort_values("timestamp") if "timestamp" in frame else frame
    return [float(v) for v in frame["loss"]], wall


def trials_to(losses: list[float], f_star: float, threshold: float) -> int | None:
    """1-based completion index where log(best/f*) first drops to ``threshold``."""
    best = math.inf
    for i, loss in enumerate(losses, start=1):
        best = min(best, loss)
        if math.log(best / f_star) <= threshold:
            return i
    return None


def sleepy(trainable: Any) -> Any:
    """The trainable plus 0.5 s of 'training'."""

    def wrapped(config: dict[str, Any]) -> None:
        time.sleep(0.5)
        trainable(config)

    return wrapped


def overhead(n: int) -> dict[str, float]:
    """Searcher cost per trial, driven directly (no cluster)."""
    q = Quadratic.random(20, 0, variant="authors")
    search = MetaGradientSearch(metric="loss", mode="min", eta0=0.1)
    search.set_search_properties(None, None, {"lr": tune.loguniform(1e-4, 1.0)})
    times = []
    for i in range(n):
        start = time.perf_counter()
        config = search.suggest(f"t{i}")
        assert config is not None
        value, grad = q.value_and_gradient(config["lr"], T, log=False)
        mid = time.perf_counter()
        search.on_trial_complete(f"t{i}", {"loss": value, "loss_grad": grad})
        times.append((mid - start) + (time.perf_counter() - mid))
    return {
        "mean_ms": 1e3 * float(np.mean(times)),
        "first_100_ms": 1e3 * float(np.mean(times[:100])),
        "last_100_ms": 1e3 * float(np.mean(times[-100:])),
    }


def main() -> None:
    """Run the three measurements; write JSON and markdown."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--budget", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    budget = 10 if args.quick else args.budget
    seeds = 1 if args.quick else args.seeds
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "ray": ray.__version__,
        },
        "budget": budget,
    }

    q = Quadratic.random(20, 0, variant="authors")
    throughput = {}
    for label, trainable in (
        ("bare", task_trainable(q, T)),
        ("sleep 0.5 s", sleepy(task_trainable(q, T))),
    ):
        n = budget if label == "bare" else max(6, budget // 3)
        row = {}
        for workers in (1, 2):
            search = MetaGradientSearch(metric="loss", mode="min", eta0=0.1)
            _, wall = run(trainable, search, n, workers, f"tp-{label[:5]}-{workers}")
            row[workers] = {"trials": n, "wall_s": wall, "trials_per_s": n / wall}
        row["ratio"] = row[2]["trials_per_s"] / row[1]["trials_per_s"]
        throughput[label] = row
        print(label, row)
    out["throughput"] = throughput

    searches = {
        "MetaGradientSearch (gradients)": lambda s: MetaGradientSearch(
            metric="loss", mode="min", eta0=0.1
        ),
        "MetaGradientSearch (black box)": lambda s: MetaGradientSearch(
            metric="loss", mode="min", eta0=0.1, grad_metric="none"
        ),
        "random (BasicVariantGenerator)": lambda s: BasicVariantGenerator(random_state=s),
        "OptunaSearch (TPE)": lambda s: OptunaSearch(
            sampler=optuna.samplers.TPESampler(seed=s), metric="loss", mode="min"
        ),
    }
    regret: dict[str, Any] = {}
    for name, make in searches.items():
        runs = []
        for seed in range(seeds):
            task = Quadratic.random(20, seed, variant="authors")
            f_star = task.meta_objective(task.optimal_step_size(T), T, log=False)
            losses, wall = run(
                task_trainable(task, T), make(seed), budget, 2, f"r-{len(regret)}-{seed}"
            )
            runs.append(
                {
                    "seed": seed,
                    "to_1e-4": trials_to(losses, f_star, 1e-4),
                    "to_1e-2": trials_to(losses, f_star, 1e-2),
                    "final_log_regret": math.log(min(losses) / f_star),
                    "wall_s": wall,
                }
            )
        regret[name] = runs
        print(name, runs)
    out["regret"] = regret
    out["overhead"] = overhead(200 if args.quick else 1000)
    print("overhead", out["overhead"])

    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (args.out / f"ray{suffix}.json").write_text(json.dumps(out, indent=2) + "\n")

    def cell(values: list[int | None]) -> str:
        got = [v for v in values if v is not None]
        text = ", ".join("n.r." if v is None else str(v) for v in values)
        return f"{text} ({len(got)}/{len(values)})"

    lines = [
        "# Ray Tune benchmark (`benchmarks/bench_ray.py`)",
        "",
        f"Machine: {out['machine']['platform']}, {out['machine']['cpus']} CPUs, ray "
        f"{out['machine']['ray']}. Quadratic (authors' Fig 1 instance), t = 80, "
        "lr ~ loguniform(1e-4, 1).",
        "",
        "## 1. Throughput, 1 vs 2 concurrent trials (same run)",
        "",
        "| trainable | trials | 1 worker: trials/s | 2 workers: trials/s | ratio |",
        "|---|---|---|---|---|",
    ]
    for label, row in throughput.items():
        lines.append(
            f"| {label} | {row[1]['trials']} | {row[1]['trials_per_s']:.2f} | "
            f"{row[2]['trials_per_s']:.2f} | {row['ratio']:.2f}× |"
        )
    lines += [
        "",
        f"## 2. Trials to log-regret (budget {budget}, 2 concurrent, seeds 0–{seeds - 1})",
        "",
        "Per seed, the completion index at which log(best loss / f*) first reaches the threshold.",
        "",
        "| searcher | to ≤ 1e-4 | to ≤ 1e-2 | final log-regret per seed |",
        "|---|---|---|---|",
    ]
    for name, runs in regret.items():
        finals = ", ".join(f"{r['final_log_regret']:.2g}" for r in runs)
        lines.append(
            f"| {name} | {cell([r['to_1e-4'] for r in runs])} | "
            f"{cell([r['to_1e-2'] for r in runs])} | {finals} |"
        )
    o = out["overhead"]
    lines += [
        "",
        "## 3. Searcher overhead (suggest + on_trial_complete, no cluster)",
        "",
        f"{1000 if not args.quick else 200} trials: mean {o['mean_ms']:.2f} ms/trial; first 100 "
        f"{o['first_100_ms']:.2f} ms, last 100 {o['last_100_ms']:.2f} ms (the state is rebuilt "
        "from all finished meta-steps at every suggest).",
        "",
    ]
    (args.out / f"ray{suffix}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    ray.shutdown()


if __name__ == "__main__":
    main()
