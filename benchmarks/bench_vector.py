"""AdamW's (lr, weight decay) tuned jointly: hypergradients against TPE, GP and random search.

A user's study: each trial trains a 64-64-10 ReLU network on scikit-learn's digits (1,000
training images, 3 epochs of batches of 50, float32) with AdamW at the trial's
``(lr, weight_decay)`` and a fresh seed (initialisation and batch order), and returns the
validation loss on 400 held-out images. ``HypergradientSampler`` also gets
``HypergradAdamW.hypergradients(val_loss)``; Optuna's ``TPESampler``, ``GPSampler`` and
``RandomSampler`` get the value only. The expected validation loss ``E_seed[val(lr, wd)]``
comes from a dense grid (``n × n`` points in log space, several seeds each), and a tuner's
regret after ``k`` trials is the expected loss at its pick (the best trial so far for the
black boxes; ``recommended_params`` for ours) minus the grid's best, relative to the
grid's best. Reported: the mean regret curve over studies, the full-run equivalents until
it stays within 1 % (a hypergradient run costs what ``benchmarks/bench_hypergrad.py``
measures, here timed in the same run), and the test accuracy (397 images) of the final picks.

With ``--task mnist`` the study is the issue's MNIST setting: each trial trains the paper's
784-100-20-10 network with AdamW for ``--t`` steps (batches of 32) on a fresh task of the
library's :class:`~l2l_tune.tasks.MNIST` distribution (1,000 training and 1,000 validation
images, 20 % label noise, a new sample, initialisation and batch order per trial) and returns
its validation loss; the hypergradients come from the task's forward mode
(``MNISTBatch.value_and_gradients``), the test accuracy from ``MNISTBatch.evaluate``.

Usage::

    python benchmarks/bench_vector.py            # 6 studies x 30 trials, grid 12 x 12 x 4 seeds
    python benchmarks/bench_vector.py --quick    # 2 studies x 15 trials, grid 6 x 6 x 2 seeds
    python benchmarks/bench_vector.py --tuners l2l-hypergrad --start 3e-4 3 --out PATH
    python benchmarks/bench_vector.py --task mnist --data-dir DIR --t 500 --studies 4 --grid 8 2
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from scipy.interpolate import RegularGridInterpolator
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import machine_info, markdown_table, to_jsonable  # noqa: E402
from l2l_tune.integrations.optuna import (  # noqa: E402
    HypergradientSampler,
    report_meta_gradient,
)

from l2l_tune.data import load_digits  # noqa: E402
from l2l_tune.hypergrad import HypergradAdamW  # noqa: E402

warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
optuna.logging.set_verbosity(optuna.logging.WARNING)

LR = (1e-4, 1.0)
WD = (1e-4, 10.0)
_DATA = load_digits()
_X = torch.as_tensor(_DATA.train_images, dtype=torch.float32) / _DATA.max_pixel
_Y = torch.as_tensor(_DATA.train_labels)
X_TRAIN, Y_TRAIN = _X[:1000], _Y[:1000]
X_VAL, Y_VAL = _X[1000:1400], _Y[1000:1400]
X_TEST, Y_TEST = _X[1400:], _Y[1400:]


def train(lr: float, wd: float, seed: int, *, hyper: bool) -> tuple[float, Any, float]:
    """(validation loss, hypergradients or None, test accuracy) of one training run."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt_class = HypergradAdamW if hyper else torch.optim.AdamW
    opt = opt_class(model.parameters(), lr=lr, weight_decay=wd)
    for _ in range(3):
        order = torch.randperm(1000, generator=gen)
        for i in range(0, 1000, 50):
            rows = order[i : i + 50]
            opt.zero_grad()
            F.cross_entropy(model(X_TRAIN[rows]), Y_TRAIN[rows]).backward(create_graph=hyper)
            opt.step()
    val = F.cross_entropy(model(X_VAL), Y_VAL)
    grads = opt.hypergradients(val) if isinstance(opt, HypergradAdamW) else None
    with torch.no_grad():
        accuracy = float((model(X_TEST).argmax(1) == Y_TEST).float().mean())
    value = val.item()
    return (value if math.isfinite(value) else math.inf), grads, accuracy


_MNIST: Any = None  # the MNIST distribution, set by main for --task mnist
_MNIST_T = 500


def train_mnist(lr: float, wd: float, seed: int, *, hyper: bool) -> tuple[float, Any, float]:
    """(validation loss, hypergradients or None, test accuracy) of one MNIST task (AdamW).

    With ``hyper`` the run carries the tangents of both hyperparameters (forward mode) and
    the test accuracy is not measured (NaN); without, one run gives the validation loss and
    the test accuracy (``MNISTBatch.evaluate``).
    """
    batch = _MNIST.sample(1, 1000, 1000, 0.2, seed=seed, optimizer="adamw")
    values = {"lr": lr, "weight_decay": wd}
    if hyper:
        value, grads = batch.value_and_gradients(values, _MNIST_T, split="valid")
        return value, grads, math.nan
    evaluation = batch.evaluate(values, _MNIST_T)
    summary = evaluation.summary()
    return summary["valid_loss"], None, summary["test_accuracy"]


_TRAIN = {"digits": train, "mnist": train_mnist}
_RUN = train  # the workload of this invocation


def dense_grid(n: int, seeds: int) -> dict[str, Any]:
    """Expected validation loss and test accuracy on an ``n × n`` log grid."""
    lrs = np.geomspace(*LR, n)
    wds = np.geomspace(*WD, n)
    loss = np.zeros((n, n))
    acc = np.zeros((n, n))
    for i, lr in enumerate(lrs):
        for j, wd in enumerate(wds):
            runs = [_RUN(float(lr), float(wd), 10_000 + s, hyper=False) for s in range(seeds)]
            loss[i, j] = np.mean([min(r[0], 10.0) for r in runs])  # a diverged run counts 10
            acc[i, j] = np.mean([r[2] for r in runs])
    return {"lr": lrs, "wd": wds, "loss": loss, "accuracy": acc}


def run_study(
    tuner: str, study_seed: int, trials: int, start: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """One study; per trial: its point, value, and the tuner's pick after it."""
    if tuner == "l2l-hypergrad":
        sampler: optuna.samplers.BaseSampler = HypergradientSampler(
            ("lr", "weight_decay"), start=start
        )
    elif tuner == "optuna-tpe":
        sampler = optuna.samplers.TPESampler(seed=study_seed)
    elif tuner == "optuna-gp":
        sampler = optuna.samplers.GPSampler(seed=study_seed)
    else:
        sampler = optuna.samplers.RandomSampler(seed=study_seed)
    hyper = tuner == "l2l-hypergrad"

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", *LR, log=True)
        wd = trial.suggest_float("weight_decay", *WD, log=True)
        value, grads, accuracy = _RUN(lr, wd, 1000 * study_seed + trial.number, hyper=hyper)
        trial.set_user_attr("accuracy", accuracy)
        if grads is not None:
            report_meta_gradient(trial, grads)
        return value

    study = optuna.create_study(sampler=sampler)
    out = []
    for _ in range(trials):
        study.optimize(objective, n_trials=1, catch=(RuntimeError,))
        if isinstance(sampler, HypergradientSampler):
            pick = sampler.recommended_params(study)
        else:
            best = study.best_trial
            pick = {"lr": best.params["lr"], "weight_decay": best.params["weight_decay"]}
        last = study.trials[-1]
        out.append({"params": last.params, "value": last.value, "pick": pick})
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    global _RUN, _MNIST, _MNIST_T
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--start",
        type=float,
        nargs=2,
        metavar=("LR", "WD"),
        default=None,
        help="first point of l2l-hypergrad (default: the geometric means of the ranges)",
    )
    parser.add_argument(
        "--tuners",
        nargs="+",
        default=["l2l-hypergrad", "optuna-tpe", "optuna-gp", "random"],
        choices=["l2l-hypergrad", "optuna-tpe", "optuna-gp", "random"],
    )
    parser.add_argument("--task", choices=sorted(_TRAIN), default="digits")
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST IDX files")
    parser.add_argument("--t", type=int, default=_MNIST_T, help="AdamW steps (--task mnist)")
    parser.add_argument("--studies", type=int, default=None, help="studies per tuner")
    parser.add_argument("--trials", type=int, default=None, help="trials per study")
    parser.add_argument(
        "--grid", type=int, nargs=2, metavar=("N", "SEEDS"), default=None,
        help="dense grid: N x N points, SEEDS runs each",
    )  # fmt: skip
    args = parser.parse_args(argv)
    _RUN = _TRAIN[args.task]
    if args.task == "mnist":
        from l2l_tune.tasks import MNIST

        _MNIST = MNIST("mnist", data_dir=args.data_dir)
        _MNIST_T = args.t
    start = None if args.start is None else {"lr": args.start[0], "weight_decay": args.start[1]}
    studies, trials, n, seeds = (2, 15, 6, 2) if args.quick else (6, 30, 12, 4)
    studies = args.studies or studies
    trials = args.trials or trials
    if args.grid is not None:
        n, seeds = args.grid
    torch.set_num_threads(1)
    started = time.perf_counter()
    grid = dense_grid(n, seeds)
    grid_s = time.perf_counter() - started
    # cost of one run with and without hypergradients, side by side
    t_plain, t_hyper = [], []
    for s in range(3):
        t0 = time.perf_counter()
        _RUN(1e-2, 1e-2, s, hyper=False)
        t_plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _RUN(1e-2, 1e-2, s, hyper=True)
        t_hyper.append(time.perf_counter() - t0)
    cost = float(np.median(t_hyper) / np.median(t_plain))
    interp = RegularGridInterpolator(
        (np.log(grid["lr"]), np.log(grid["wd"])), grid["loss"], bounds_error=False, fill_value=None
    )
    acc_interp = RegularGridInterpolator(
        (np.log(grid["lr"]), np.log(grid["wd"])), grid["accuracy"], bounds_error=False,
        fill_value=None,
    )  # fmt: skip
    best = float(grid["loss"].min())
    tuners = list(args.tuners)
    results: dict[str, Any] = {}
    for tuner in tuners:
        curves, accs = [], []
        for study_seed in range(studies):
            history = run_study(tuner, study_seed, trials, start)
            picks = [
                (math.log(h["pick"]["lr"]), math.log(h["pick"]["weight_decay"])) for h in history
            ]
            expected = interp(np.array(picks))
            curves.append(((expected - best) / best).tolist())
            accs.append(float(acc_interp(np.array(picks[-1:]))[0]))
            print(
                f"{tuner} study {study_seed}: regret at {trials} = {curves[-1][-1]:.4f}", flush=True
            )
        mean = np.mean(np.array(curves), axis=0)
        within = np.nonzero(mean > 0.01)[0]
        stay = None if mean[-1] > 0.01 else (int(within[-1]) + 2 if within.size else 1)
        unit = cost if tuner == "l2l-hypergrad" else 1.0
        results[tuner] = {
            "curves": curves,
            "mean_regret": mean.tolist(),
            "runs_to_1pct": stay,
            "full_run_equivalents_to_1pct": None if stay is None else stay * unit,
            "final_regret_mean": float(mean[-1]),
            "final_regret_worst": float(np.max(np.array(curves)[:, -1])),
            "test_accuracy_mean": float(np.mean(accs)),
        }
    result = {
        "command": "python benchmarks/bench_vector.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(),
        "settings": {
            "studies": studies,
            "trials": trials,
            "grid": n,
            "grid_seeds": seeds,
            "l2l_start": start,
            "task": args.task,
            "t": _MNIST_T if args.task == "mnist" else None,
        },
        "grid": {k: np.asarray(v).tolist() for k, v in grid.items()},
        "grid_best": best,
        "grid_best_accuracy": float(grid["accuracy"].max()),
        "grid_seconds": grid_s,
        "hypergradient_run_cost": cost,
        "tuners": results,
    }
    name = "vector" if args.task == "digits" else f"vector_{args.task}"
    out = args.out or Path(__file__).resolve().parent / "results" / (
        f"{name}_quick.json" if args.quick else f"{name}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_jsonable(result), indent=2) + "\n")
    rows = [
        [
            name,
            f"{r['final_regret_mean']:.4f}",
            f"{r['final_regret_worst']:.4f}",
            "—" if r["runs_to_1pct"] is None else str(r["runs_to_1pct"]),
            "—" if r["full_run_equivalents_to_1pct"] is None
            else f"{r['full_run_equivalents_to_1pct']:.1f}",
            f"{r['test_accuracy_mean']:.4f}",
        ]
        for name, r in results.items()
    ]  # fmt: skip
    md = [
        f"# AdamW (lr, weight decay) on {args.task}"
        + (f" (1000 + 1000, 20 % label noise, t = {_MNIST_T})" if args.task == "mnist" else "")
        + ": hypergradients against TPE, GP and random",
        "",
        f"Command: `{result['command']}`. {studies} studies × {trials} trials per tuner, fresh "
        f"seed per trial; expected validation loss from a {n}×{n} log grid × {seeds} seeds "
        f"(best {best:.4f}, test accuracy there up to {result['grid_best_accuracy']:.4f}). "
        f"A run with hypergradients costs {cost:.2f}× a plain AdamW run (timed here). "
        f"l2l-hypergrad starts at {start or 'the geometric means of the ranges'}.",
        "",
        markdown_table(
            [
                "tuner",
                f"mean regret at {trials}",
                "worst study",
                "runs until the mean regret stays ≤ 1 %",
                "full-run equivalents",
                "test accuracy of the final pick",
            ],
            rows,
        ),
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
