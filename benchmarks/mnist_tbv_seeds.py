"""The MNIST TbV command on several seeds, each against a dense grid on the same objective.

Issue #11's target: ``l2l-tune tune --task mnist --n-train 1000 --n-valid 1000 --label-noise
0.2 --seed S`` (TbT and TbV, the default ``meta_optimizer="auto"``, i.e. the model on this
training-run objective), for several seeds ``S``: the step size TbV picks is within one point
of test accuracy of the one a dense grid picks on the same validation objective, and TbV beats
TbT by at least two points on average.

Per seed the script runs the command itself (``l2l-tune tune ... --json``), then evaluates a
log grid of step sizes on the same TbV meta-objective (the same ``m`` tasks, drawn by
``MNIST.sample(..., seed=S)`` as the command draws them), takes its minimiser and trains the
command's test tasks (``seed = S + 10000``) with it. One JSON file per seed (resumable), and a
``results.md`` table over the seeds done so far.

Usage::

    python benchmarks/mnist_tbv_seeds.py --seeds 0 1 2 --out benchmarks/results/mnist_tbv_seeds
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = os.environ.get("L2L_TUNE_DATA", str(HERE.parent.parent / "shared/data/mnist"))
#: The command's defaults for --task mnist (l2l_tune/cli.py): t, m, m_test.
T, M, M_TEST = 1000, 4, 5
N_TRAIN, N_VALID, NOISE = 1000, 1000, 0.2
#: What is kept of each run of the command's JSON.
KEPT = ("step_size", "test_accuracy", "test_loss", "n_evals", "seconds", "converged")


def run_seed(seed: int, data_dir: str, grid: np.ndarray, threads: int, out: Path) -> dict[str, Any]:
    """The command, the dense grid and the grid's test accuracy for one seed."""
    import torch

    from l2l_tune.tasks import MNIST

    command = [
        "l2l-tune", "tune", "--task", "mnist", "--data-dir", data_dir,
        "--n-train", str(N_TRAIN), "--n-valid", str(N_VALID), "--label-noise", str(NOISE),
        "--seed", str(seed), "--threads", str(threads), "--no-progress",
        "--json", str(out / f"command_seed{seed}.json"),
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    command_s = time.perf_counter() - start
    payload = json.loads((out / f"command_seed{seed}.json").read_text())
    runs = {r["split"]: r for r in payload["results"]}

    torch.set_num_threads(threads)
    distribution = MNIST("mnist", data_dir=data_dir)
    batch = distribution.sample(M, N_TRAIN, N_VALID, NOISE, seed=seed)
    test_batch = distribution.sample(M_TEST, N_TRAIN, 0, NOISE, seed=seed + 10_000)
    start = time.perf_counter()
    values = [batch.meta_objective(float(e), T, split="valid", log=True) for e in grid]
    best = float(grid[int(np.argmin(values))])
    grid_test = test_batch.evaluate(best, T).summary()
    grid_s = time.perf_counter() - start
    return {
        "seed": seed,
        "command": " ".join(command),
        "command_seconds": command_s,
        "grid_seconds": grid_s,
        "tbv": {k: runs["valid"][k] for k in KEPT if k in runs["valid"]},
        "tbt": {k: runs["train"][k] for k in KEPT if k in runs["train"]},
        "grid": {
            "etas": [float(e) for e in grid],
            "tbv_objective": [float(v) for v in values],
            "step_size": best,
            "test_accuracy": grid_test["test_accuracy"],
            "test_loss": grid_test["test_loss"],
        },
    }  # fmt: skip


def markdown(results: list[dict[str, Any]]) -> str:
    """A table over the seeds and the two checks of the target."""
    lines = [
        "# The MNIST TbV command on several seeds (issue #11)",
        "",
        f"`l2l-tune tune --task mnist --n-train {N_TRAIN} --n-valid {N_VALID} --label-noise "
        f"{NOISE} --seed S` (t = {T}, m = {M} tasks, test: {M_TEST} new tasks on the 10000 test "
        "images), and a dense grid on the same TbV objective; "
        "`python benchmarks/mnist_tbv_seeds.py --seeds ...`.",
        "",
        "| seed | TbV η → test acc. | TbT η → test acc. | grid η → test acc. | TbV − grid | "
        "TbV − TbT | minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    results = sorted(results, key=lambda r: r["seed"])
    gaps = [r["tbv"]["test_accuracy"] - r["grid"]["test_accuracy"] for r in results]
    wins = [r["tbv"]["test_accuracy"] - r["tbt"]["test_accuracy"] for r in results]
    for r, gap, win in zip(results, gaps, wins, strict=True):
        v, t, g = r["tbv"], r["tbt"], r["grid"]
        minutes = (r["command_seconds"] + r["grid_seconds"]) / 60
        lines.append(
            f"| {r['seed']} | {v['step_size']:.4g} → {v['test_accuracy']:.4f} | "
            f"{t['step_size']:.4g} → {t['test_accuracy']:.4f} | {g['step_size']:.4g} → "
            f"{g['test_accuracy']:.4f} | {100 * gap:+.2f} pt | {100 * win:+.2f} pt | "
            f"{minutes:.1f} |"
        )
    if results:
        within = sum(abs(x) <= 0.01 or x > 0 for x in gaps)
        lines += [
            "",
            f"* TbV within 1 point of the grid (or above it): {within} of {len(gaps)} seeds "
            f"(worst {100 * min(gaps):+.2f} pt).",
            f"* TbV − TbT: mean {100 * float(np.mean(wins)):+.2f} pt over {len(wins)} seeds "
            f"(target ≥ +2 pt).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the seeds not done yet in ``--out``; rewrite ``results.md`` after each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid-points", type=int, default=11)
    parser.add_argument("--grid-range", type=float, nargs=2, default=(0.003, 1.0))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "mnist_tbv_seeds")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    low, high = args.grid_range
    grid = np.geomspace(low, high, args.grid_points)
    for seed in args.seeds:
        path = args.out / f"seed{seed}.json"
        if path.exists():
            continue
        result = run_seed(seed, args.data_dir, grid, args.threads, args.out)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: result[k] for k in ("seed", "tbv", "tbt")}), flush=True)
        done = [json.loads(p.read_text()) for p in sorted(args.out.glob("seed*.json"))]
        (args.out / "results.md").write_text(markdown(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
