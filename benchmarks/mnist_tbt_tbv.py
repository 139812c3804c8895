"""Train-by-train vs train-by-validation on MNIST (paper Section 5, Figs 4–5), for the step size.

Three settings, as in the paper: 1000 samples; 1000 samples with 20 % label noise;
all samples. In each, the SGD step size of the 784-100-20-10 network (batch 32) is

- learned train-by-train (TbT) on ``n`` training samples,
- learned train-by-validation (TbV) on ``n`` training + ``n_valid`` validation samples,
- chosen by grid search on the validation loss (the paper's SGD baseline),

by meta-gradient descent (``StepSizeTuner``, bracketing, exact forward-mode
meta-gradients, meta-objective ``(1/t)·log`` of the final loss averaged over
``--m`` tasks). Each chosen step size then trains ``--runs`` new tasks (new
samples, initialisations and mini-batch orders) for ``t`` steps on their training
samples; test accuracy (true labels) and training accuracy (the task's labels)
are recorded every ``--eval-every`` steps.

Usage::

    python benchmarks/mnist_tbt_tbv.py                     # the three settings
    python benchmarks/mnist_tbt_tbv.py --settings noisy    # one of them
    python benchmarks/mnist_tbt_tbv.py --quick --dataset digits

Results: ``docs/mnist/results.json``, ``docs/mnist/results.md`` and PNG plots
(``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from l2l_tune import GridSearch, StepSizeTuner
from l2l_tune.meta import NonFiniteMetaGradientWarning
from l2l_tune.tasks import MNIST

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "docs" / "mnist"
DEFAULT_DATA = os.environ.get("L2L_TUNE_DATA", str(HERE.parent.parent / "shared/data/mnist"))

#: name: (label, n_train TbT, n_train TbV, n_valid TbV, label noise)
SETTINGS: dict[str, tuple[str, int, int, int, float]] = {
    "small": ("1000 samples", 1000, 1000, 1000, 0.0),
    "noisy": ("1000 samples, 20% label noise", 1000, 1000, 1000, 0.2),
    "all": ("all 60000 samples", 60000, 50000, 10000, 0.0),
}
QUICK_SETTINGS: dict[str, tuple[str, int, int, int, float]] = {
    "small": ("300 samples", 300, 300, 300, 0.0),
    "noisy": ("300 samples, 20% label noise", 300, 300, 300, 0.2),
    "all": ("all 1500 samples", 1500, 1200, 300, 0.0),
}


def run_setting(
    distribution: MNIST, key: str, spec: tuple[str, int, int, int, float], args: argparse.Namespace
) -> dict[str, Any]:
    """Tune TbT, TbV and the grid baseline in one setting; test each on new tasks."""
    label, n_tbt, n_tbv, n_valid, noise = spec
    t = args.t
    out: dict[str, Any] = {"label": label, "t": t, "label_noise": noise, "methods": {}}
    m = args.m if n_tbt <= 5000 else args.m_large
    tbt_batch = distribution.sample(m, n_tbt, 0, noise, seed=args.seed)
    tbv_batch = distribution.sample(m, n_tbv, n_valid, noise, seed=args.seed)
    plans = [
        ("TbT", f"TbT({n_tbt})", tbt_batch, "train", n_tbt),
        ("TbV", f"TbV({n_tbv}+{n_valid})", tbv_batch, "valid", n_tbv),
    ]
    for name, method_label, batch, split, n_train in plans:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
            tuner = StepSizeTuner(max_evals=args.max_evals, tol=args.tol).fit(
                batch, t, split=split, log=True
            )
        out["methods"][name] = {
            "label": method_label,
            "step_size": tuner.step_size_,
            "meta_objective": tuner.meta_objective_,
            "evals": tuner.n_evals_,
            "tune_seconds": time.perf_counter() - start,
            "n_train": n_train,
            "history": [(r.eta, r.value, r.grad) for r in tuner.history_],
        }
        seconds = time.perf_counter() - start
        print(f"[{key}] {method_label}: eta={tuner.step_size_:.4g} ({tuner.n_evals_} evals, "
              f"{seconds:.0f}s)", flush=True)  # fmt: skip
    grid = np.geomspace(args.grid_low, args.grid_high, args.grid_points)
    start = time.perf_counter()
    search = GridSearch(grid=grid.tolist()).fit(tbv_batch, t, split="valid", log=True)
    out["methods"]["SGD-grid"] = {
        "label": f"SGD, grid on valid. loss ({n_tbv}+{n_valid})",
        "step_size": search.step_size_,
        "meta_objective": search.meta_objective_,
        "evals": search.n_evals_,
        "tune_seconds": time.perf_counter() - start,
        "n_train": n_tbv,
        "history": [(r.eta, r.value, None) for r in search.history_],
    }
    print(f"[{key}] grid: eta={search.step_size_:.4g}", flush=True)
    for name, method in out["methods"].items():
        test_batch = distribution.sample(
            args.runs, method["n_train"], 0, noise, seed=args.seed + 1000
        )
        evaluation = test_batch.evaluate(method["step_size"], t, eval_every=args.eval_every)
        method["test"] = evaluation.summary()
        method["curve_steps"] = evaluation.curve_steps.tolist()
        method["test_accuracy_curve"] = evaluation.test_accuracy_curve.tolist()
        method["train_accuracy_curve"] = evaluation.train_accuracy_curve.tolist()
        method["test_accuracy_runs"] = evaluation.test_accuracy.tolist()
        print(f"[{key}] {name}: test accuracy {method['test']['test_accuracy']:.4f}", flush=True)
    return out


def _plot(results: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    settings = results["settings"]
    for kind, key_curve, ylabel in (
        ("test", "test_accuracy_curve", "test accuracy"),
        ("train", "train_accuracy_curve", "training accuracy (task labels)"),
    ):
        fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 3.8), squeeze=False)
        for ax, setting in zip(axes[0], settings.values(), strict=True):
            for method in setting["methods"].values():
                curves = np.asarray(method[key_curve])
                steps = method["curve_steps"]
                mean = curves.mean(axis=0)
                label = f"{method['label']} η={method['step_size']:.3g}"
                (line,) = ax.plot(steps, mean, label=label)
                ax.fill_between(steps, curves.min(axis=0), curves.max(axis=0), alpha=0.2,
                                color=line.get_color())  # fmt: skip
            ax.set_title(setting["label"])
            ax.set_xlabel("SGD step")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        fig.suptitle(f"MNIST, 784-100-20-10, {kind} accuracy: mean and min–max of "
                     f"{results['args']['runs']} runs")  # fmt: skip
        fig.tight_layout()
        name = f"{kind}_accuracy.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def _markdown(results: dict[str, Any], plots: list[str]) -> str:
    a = results["args"]
    lines = [
        "# MNIST: step size learned train-by-train vs train-by-validation",
        "",
        f"Command: `{results['command']}` ({results['seconds'] / 60:.1f} min on "
        f"{results['machine']}). Network 784-100-20-10 ReLU, cross entropy, batch 32, "
        f"{a['dtype']}; t = {a['t']} SGD steps; meta-objective (1/t)·log of the final loss "
        f"averaged over m = {a['m']} tasks ({a['m_large']} for all samples), tuned by "
        f"`StepSizeTuner` (bracket, ≤ {a['max_evals']} exact forward-mode meta-gradients, "
        f"tol {a['tol']}); grid baseline: {a['grid_points']} step sizes in "
        f"[{a['grid_low']}, {a['grid_high']}] on the validation loss. Each step size then "
        f"trains {a['runs']} new tasks; test accuracy on the 10000 test images (true labels).",
        "",
        "| setting | method | η | evals | tuning s | test accuracy (mean ± sd) | min–max | "
        "train acc. | test loss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for setting in results["settings"].values():
        for method in setting["methods"].values():
            test = method["test"]
            runs = method["test_accuracy_runs"]
            lines.append(
                f"| {setting['label']} | {method['label']} | {method['step_size']:.4g} | "
                f"{method['evals']} | {method['tune_seconds']:.0f} | "
                f"{test['test_accuracy']:.4f} ± {test['test_accuracy_std']:.4f} | "
                f"{min(runs):.4f}–{max(runs):.4f} | {test['train_accuracy']:.4f} | "
                f"{test['test_loss']:.3f} |"
            )
    lines += [""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the chosen settings and write results, plots and a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=("mnist", "digits"), default="mnist")
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--settings", default="small,noisy,all")
    parser.add_argument("--t", type=int, default=2000)
    parser.add_argument("--m", type=int, default=4)
    parser.add_argument("--m-large", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--max-evals", type=int, default=20)
    parser.add_argument("--tol", type=float, default=1e-2)
    parser.add_argument("--grid-low", type=float, default=1e-3)
    parser.add_argument("--grid-high", type=float, default=3.0)
    parser.add_argument("--grid-points", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    table = SETTINGS
    if args.quick:
        args.t, args.m, args.runs, args.eval_every, args.max_evals = 200, 2, 2, 50, 10
        args.grid_points = 7
        table = QUICK_SETTINGS
    data_dir = args.data_dir if args.dataset == "mnist" else None
    distribution = MNIST(args.dataset, data_dir=data_dir, dtype=args.dtype, device=args.device)
    start = time.perf_counter()
    results: dict[str, Any] = {
        "command": "python benchmarks/mnist_tbt_tbv.py " + " ".join(sys.argv[1:]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": f"{os.cpu_count()} CPU cores" if args.device == "cpu" else args.device,
        "settings": {},
    }
    for key in args.settings.split(","):
        if key not in table:
            raise ValueError(f"--settings must name some of {sorted(table)}; got {key!r}")
        results["settings"][key] = run_setting(distribution, key, table[key], args)
    results["seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plots = _plot(results, args.out)
    (args.out / "results.md").write_text(_markdown(results, plots))
    print(f"wrote {args.out}/results.json, results.md, {', '.join(plots)}")


if __name__ == "__main__":
    main()
