"""Several hyperparameters tuned jointly: hypergradients against TPE, GP and random search.

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
``--task mnist-layers`` is the same setting with plain SGD and one step size per layer
(``lr[0]``, ``lr[1]``, ``lr[2]``, each in ``[1e-3, 3]``): three hyperparameters, a dense
grid of ``n³`` points.

Our tuners are ``HypergradientSampler`` with ``meta_optimizer="adam"`` (l2l-hypergrad) and
``"model"`` (l2l-model, the default). ``--grid-from PATH`` reuses the grid of an earlier
result with the same settings and keeps its tuners that this run does not repeat (marked).

Usage::

    python benchmarks/bench_vector.py            # 6 studies x 30 trials, grid 12 x 12 x 4 seeds
    python benchmarks/bench_vector.py --quick    # 2 studies x 15 trials, grid 6 x 6 x 2 seeds
    python benchmarks/bench_vector.py --tuners l2l-hypergrad --start 3e-4 3 --out PATH
    python benchmarks/bench_vector.py --task mnist --data-dir DIR --t 500 --studies 4 --grid 8 2
    python benchmarks/bench_vector.py --task mnist-layers --data-dir DIR --t 300 --grid 5 1
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from l2l_tune.integrations.optuna import HypergradientSampler, report_meta_gradient
from scipy.interpolate import RegularGridInterpolator
from torch import nn
from torch.nn import functional as F

from l2l_tune.bench.common import (
    command_line,
    dumps_json,
    evals_within,
    machine_info,
    markdown_table,
)
from l2l_tune.data import load_digits
from l2l_tune.hypergrad import HypergradAdamW

warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
optuna.logging.set_verbosity(optuna.logging.WARNING)

LR = (1e-4, 1.0)
WD = (1e-4, 10.0)
#: Per-layer SGD step sizes of the paper's 784-100-20-10 network (``--task mnist-layers``).
LAYER_LR = (1e-3, 3.0)
_DATA = load_digits()
_X = torch.as_tensor(_DATA.train_images, dtype=torch.float32) / _DATA.max_pixel
_Y = torch.as_tensor(_DATA.train_labels)
X_TRAIN, Y_TRAIN = _X[:1000], _Y[:1000]
X_VAL, Y_VAL = _X[1000:1400], _Y[1000:1400]
X_TEST, Y_TEST = _X[1400:], _Y[1400:]


def train(values: dict[str, float], seed: int, *, hyper: bool) -> tuple[float, Any, float]:
    """(validation loss, hypergradients or None, test accuracy) of one training run."""
    lr, wd = values["lr"], values["weight_decay"]
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


def train_mnist(
    values: dict[str, float], seed: int, *, hyper: bool, optimizer: str = "adamw"
) -> tuple[float, Any, float]:
    """(validation loss, hypergradients or None, test accuracy) of one MNIST task.

    With ``hyper`` the run carries the tangents of both hyperparameters (forward mode) and
    the test accuracy is not measured (NaN); without, one run gives the validation loss and
    the test accuracy (``MNISTBatch.evaluate``).
    """
    batch = _MNIST.sample(1, 1000, 1000, 0.2, seed=seed, optimizer=optimizer)
    if hyper:
        value, grads = batch.value_and_gradients(values, _MNIST_T, split="valid")
        return value, grads, math.nan
    evaluation = batch.evaluate(values, _MNIST_T)
    summary = evaluation.summary()
    return summary["valid_loss"], None, summary["test_accuracy"]


#: One training run of each task (``mnist-layers``: plain SGD, one step size per layer).
_TRAIN: dict[str, Callable[..., tuple[float, Any, float]]] = {
    "digits": train,
    "mnist": train_mnist,
    "mnist-layers": functools.partial(train_mnist, optimizer="sgd"),
}
#: The tuned hyperparameters of each task: name -> (low, high), all on a log scale.
SPACES: dict[str, dict[str, tuple[float, float]]] = {
    "digits": {"lr": LR, "weight_decay": WD},
    "mnist": {"lr": LR, "weight_decay": WD},
    "mnist-layers": {f"lr[{i}]": LAYER_LR for i in range(3)},
}
_RUN = train  # the workload of this invocation
_SPACE = SPACES["digits"]


def dense_grid(n: int, seeds: int) -> dict[str, Any]:
    """Expected validation loss and test accuracy on an ``n × … × n`` log grid."""
    axes = {name: np.geomspace(*bounds, n) for name, bounds in _SPACE.items()}
    shape = (n,) * len(axes)
    loss = np.zeros(shape)
    acc = np.zeros(shape)
    for index in np.ndindex(*shape):
        point = {name: float(axes[name][k]) for name, k in zip(axes, index, strict=True)}
        runs = [_RUN(point, 10_000 + s, hyper=False) for s in range(seeds)]
        loss[index] = np.mean([min(r[0], 10.0) for r in runs])  # a diverged run counts 10
        acc[index] = np.mean([r[2] for r in runs])
    return {"axes": {k: v.tolist() for k, v in axes.items()}, "loss": loss, "accuracy": acc}


def _grid_axes(grid: dict[str, Any]) -> dict[str, np.ndarray]:
    """The grid's axes by hyperparameter name (results before --task mnist-layers kept
    ``lr`` and ``wd`` at the top level)."""
    if "axes" in grid:
        return {k: np.asarray(v) for k, v in grid["axes"].items()}
    return {"lr": np.asarray(grid["lr"]), "weight_decay": np.asarray(grid["wd"])}


#: Our tuners: HypergradientSampler with each vector meta-optimizer.
_L2L = {"l2l-hypergrad": "adam", "l2l-model": "model"}
#: The black boxes: Optuna's samplers on the value only.
_BLACK_BOX = {
    "optuna-tpe": optuna.samplers.TPESampler,
    "optuna-gp": optuna.samplers.GPSampler,
    "random": optuna.samplers.RandomSampler,
}
TUNERS = [*_L2L, *_BLACK_BOX]


def run_study(
    tuner: str, study_seed: int, trials: int, start: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """One study; per trial: its point, value, and the tuner's pick after it."""
    hyper = tuner in _L2L
    if hyper:
        sampler: optuna.samplers.BaseSampler = HypergradientSampler(
            tuple(_SPACE), start=start, meta_optimizer=_L2L[tuner]
        )
    else:
        sampler = _BLACK_BOX[tuner](seed=study_seed)

    def objective(trial: optuna.Trial) -> float:
        values = {
            name: trial.suggest_float(name, *bounds, log=True) for name, bounds in _SPACE.items()
        }
        value, grads, accuracy = _RUN(values, 1000 * study_seed + trial.number, hyper=hyper)
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
            pick = {name: best.params[name] for name in _SPACE}
        last = study.trials[-1]
        out.append({"params": last.params, "value": last.value, "pick": pick})
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the grid and the studies; write the JSON and markdown results and print the latter."""
    global _RUN, _MNIST, _MNIST_T, _SPACE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--start",
        type=float,
        nargs="+",
        metavar="VALUE",
        default=None,
        help="first point of our tuners, one value per hyperparameter of the task "
        "(default: the geometric means of the ranges)",
    )
    parser.add_argument("--tuners", nargs="+", default=TUNERS, choices=TUNERS)
    parser.add_argument(
        "--grid-from", type=Path, default=None,
        help="reuse the dense grid of an earlier result with the same task, t and grid, and "
        "keep its tuners that this run does not repeat",
    )  # fmt: skip
    parser.add_argument("--task", choices=sorted(_TRAIN), default="digits")
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST IDX files")
    parser.add_argument("--t", type=int, default=_MNIST_T, help="AdamW steps (--task mnist)")
    parser.add_argument("--studies", type=int, default=None, help="studies per tuner")
    parser.add_argument("--trials", type=int, default=None, help="trials per study")
    parser.add_argument(
        "--grid", type=int, nargs=2, metavar=("N", "SEEDS"), default=None,
        help="dense grid: N points per hyperparameter, SEEDS runs each",
    )  # fmt: skip
    args = parser.parse_args(argv)
    _RUN = _TRAIN[args.task]
    _SPACE = SPACES[args.task]
    if args.task.startswith("mnist"):
        from l2l_tune.tasks import MNIST

        _MNIST = MNIST("mnist", data_dir=args.data_dir)
        _MNIST_T = args.t
    if args.start is not None and len(args.start) != len(_SPACE):
        parser.error(f"--start needs {len(_SPACE)} values, for {list(_SPACE)}")
    start = None if args.start is None else dict(zip(_SPACE, args.start, strict=True))
    studies, trials, n, seeds = (2, 15, 6, 2) if args.quick else (6, 30, 12, 4)
    studies, trials = args.studies or studies, args.trials or trials
    n, seeds = args.grid or (n, seeds)
    settings = {
        "studies": studies,
        "trials": trials,
        "grid": n,
        "grid_seeds": seeds,
        "l2l_start": start,
        "task": args.task,
        "t": _MNIST_T if args.task.startswith("mnist") else None,
    }
    torch.set_num_threads(1)
    earlier: dict[str, Any] = {}
    if args.grid_from is not None:
        earlier = json.loads(args.grid_from.read_text())
        mine = {k: v for k, v in settings.items() if k != "l2l_start"}
        # results written before --task existed were all digits (and had no t)
        theirs = {k: earlier["settings"].get(k, "digits" if k == "task" else None) for k in mine}
        if theirs != mine:
            parser.error(f"--grid-from {args.grid_from} has {theirs}, this run {mine}")
        grid = dict(earlier["grid"])
        grid_s = float(earlier["grid_seconds"])
    else:
        started = time.perf_counter()
        grid = dense_grid(n, seeds)
        grid_s = time.perf_counter() - started
    # cost of one run with and without hypergradients, side by side
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for s in range(3):
        for hyper in (False, True):
            t0 = time.perf_counter()
            _RUN({name: 1e-2 for name in _SPACE}, s, hyper=hyper)
            seconds[hyper].append(time.perf_counter() - t0)
    cost = float(np.median(seconds[True]) / np.median(seconds[False]))
    axes = _grid_axes(grid)
    if list(axes) != list(_SPACE):
        parser.error(f"the grid's axes {list(axes)} are not the task's {list(_SPACE)}")
    log_axes = tuple(np.log(a) for a in axes.values())
    grid_loss, grid_accuracy = np.asarray(grid["loss"]), np.asarray(grid["accuracy"])
    interp, acc_interp = (
        RegularGridInterpolator(log_axes, values, bounds_error=False, fill_value=None)
        for values in (grid_loss, grid_accuracy)
    )
    best = float(grid_loss.min())
    results: dict[str, Any] = {}
    for tuner in args.tuners:
        curves, accs = [], []
        for study_seed in range(studies):
            history = run_study(tuner, study_seed, trials, start)
            picks = [[math.log(h["pick"][name]) for name in _SPACE] for h in history]
            expected = interp(np.array(picks))
            curves.append(((expected - best) / best).tolist())
            accs.append(float(acc_interp(np.array(picks[-1:]))[0]))
            print(
                f"{tuner} study {study_seed}: regret at {trials} = {curves[-1][-1]:.4f}", flush=True
            )
        mean = np.mean(np.array(curves), axis=0)
        stay = evals_within(mean, 0.01, stay=True)
        unit = cost if tuner in _L2L else 1.0
        results[tuner] = {
            "curves": curves,
            "mean_regret": mean.tolist(),
            "runs_to_1pct": stay,
            "full_run_equivalents_to_1pct": None if stay is None else stay * unit,
            "final_regret_mean": float(mean[-1]),
            "final_regret_worst": float(np.max(np.array(curves)[:, -1])),
            "test_accuracy_mean": float(np.mean(accs)),
        }
    for tuner, kept in earlier.get("tuners", {}).items():
        if tuner not in results:
            results[tuner] = {**kept, "from": kept.get("from", earlier["command"])}
    result = {
        "command": command_line("benchmarks/bench_vector.py", argv),
        "machine": machine_info(),
        "settings": settings,
        "grid": grid,
        "grid_best": best,
        "grid_best_accuracy": float(grid_accuracy.max()),
        "grid_seconds": grid_s,
        "hypergradient_run_cost": cost,
        "tuners": results,
    }
    name = "vector" if args.task == "digits" else f"vector_{args.task}"
    out = args.out or Path(__file__).resolve().parent / "results" / (
        f"{name}_quick.json" if args.quick else f"{name}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dumps_json(result) + "\n")
    md = markdown_report(result)
    out.with_suffix(".md").write_text(md)
    print(md)
    return result


def markdown_report(result: dict[str, Any]) -> str:
    """The markdown summary of a result (also of one merged from several runs)."""
    settings, results = result["settings"], result["tuners"]
    task, studies, trials = settings["task"], settings["studies"], settings["trials"]
    n, seeds, start = settings["grid"], settings["grid_seeds"], settings["l2l_start"]
    best, cost = result["grid_best"], result["hypergradient_run_cost"]
    n_params = len(SPACES[task])
    kept = sorted({r["from"] for r in results.values() if "from" in r})
    marks = {command: "abcdefgh"[i] for i, command in enumerate(kept)}
    rows = [
        [
            name + (f" ({marks[r['from']]})" if "from" in r else ""),
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
        (
            "# SGD with one step size per layer (lr[0], lr[1], lr[2]) on mnist"
            if task == "mnist-layers"
            else f"# AdamW (lr, weight decay) on {task}"
        )
        + (f" (1000 + 1000, 20 % label noise, t = {settings['t']})" if task != "digits" else "")
        + ": hypergradients against TPE, GP and random",
        "",
        f"Command: `{result['command']}`. {studies} studies × {trials} trials per tuner, fresh "
        f"seed per trial; expected validation loss from a {n}^{n_params} log grid × {seeds} "
        f"seeds (best {best:.4f}, test accuracy there up to {result['grid_best_accuracy']:.4f}). "
        f"A run with hypergradients costs {cost:.2f}× a plain run (timed here). "
        f"l2l-hypergrad (Adam on the log-hyperparameters) and l2l-model (the Gaussian-process "
        f"model on values and hypergradients) start at "
        f"{start or 'the geometric means of the ranges'}.",
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
    if kept:
        md += [
            f"({marks[c]}) from the earlier run `{c}` (same grid, studies and trials)."
            for c in kept
        ]
        md.append("")
    return "\n".join(md)


if __name__ == "__main__":
    main()
