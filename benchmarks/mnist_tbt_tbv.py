"""Train-by-train vs train-by-validation on MNIST (paper Section 5, Figs 4–5), for the step size.

Configuration over :func:`l2l_tune.reproduce.mnist.compare_on_mnist`, the function that
computes the step-size table of ``l2l-tune reproduce fig4``/``fig5`` (their second table,
after meta-training the MLP optimizer). This script runs that table alone, for the chosen
settings and horizon (``--settings``, ``--t``, which the targets do not take), logs every
tuning evaluation and writes one results folder for docs/mnist.md: ``results.json``,
``results.md`` and the test/training accuracy plots.

Usage::

    python benchmarks/mnist_tbt_tbv.py                       # the three settings, t = 1000
    python benchmarks/mnist_tbt_tbv.py --settings noisy --t 2000
    python benchmarks/mnist_tbt_tbv.py --quick               # digits, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from l2l_tune.bench.common import command_line
from l2l_tune.reproduce.mnist import MNISTSettings, compare_on_mnist, plot_accuracy_curves
from l2l_tune.tasks import MNIST
from l2l_tune.tuner import EvalRecord

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "docs" / "mnist"
DEFAULT_DATA = os.environ.get("L2L_TUNE_DATA", str(HERE.parent.parent / "shared/data/mnist"))


def _markdown(results: dict[str, Any], plots: list[str]) -> str:
    s = results["protocol"]
    tuned_by = sorted(
        {
            str(method.get("meta_optimizer"))
            for setting in results["settings"].values()
            for name, method in setting["methods"].items()
            if name != "SGD-grid"
        }
    )
    network, test_set = (
        ("784-100-20-10", "the 10000 test images")
        if s["dataset"] == "mnist"
        else ("64-100-20-10", "the digits' test images")
    )
    lines = [
        "# MNIST: step size learned train-by-train vs train-by-validation",
        "",
        f"Command: `{results['command']}` ({results['seconds'] / 60:.1f} min, "
        f"{results['machine']}, shared with other jobs). Network {network} ReLU, cross "
        f"entropy, batch 32, float32; t = {s['t']} SGD steps; meta-objective (1/t)·log of the "
        f"final loss averaged over m = {s['m']} tasks ({s['m_large']} for all samples), tuned by "
        f"`StepSizeTuner` (auto: {', '.join(tuned_by)}; ≤ {s['max_evals']} exact forward-mode "
        f"meta-gradients); grid baseline: {s['grid'][2]} step sizes in [{s['grid'][0]}, "
        f"{s['grid'][1]}] on the validation loss. Each step size then trains {s['runs']} new "
        f"tasks on their training samples; test accuracy on {test_set} (true labels).",
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
    """Run the chosen settings; write results.json, results.md and the plots."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--settings", default="small,noisy,all")
    parser.add_argument("--t", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="digits, small sizes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    keys = tuple(args.settings.split(","))
    protocol = MNISTSettings.for_run(args.quick, keys=keys)
    if not args.quick:
        protocol = replace(protocol, t=args.t)
    data_dir = args.data_dir if protocol.dataset == "mnist" else None
    distribution = MNIST(protocol.dataset, data_dir=data_dir, device=args.device)
    start = time.perf_counter()

    def log(record: EvalRecord) -> None:
        print(f"  eta={record.eta:.5g} value={record.value:.6g} grad={record.grad:.4g} "
              f"({record.seconds:.1f}s)", flush=True)  # fmt: skip

    settings: dict[str, Any] = {}
    for setting in protocol.settings:
        print(f"[{setting.key}] {setting.label}", flush=True)
        settings[setting.key] = compare_on_mnist(
            distribution, setting, protocol, seed=args.seed, callback=log
        )
        for name, method in settings[setting.key]["methods"].items():
            print(f"[{setting.key}] {name}: eta={method['step_size']:.4g} test accuracy "
                  f"{method['test']['test_accuracy']:.4f}", flush=True)  # fmt: skip
    results = {
        "command": command_line("benchmarks/mnist_tbt_tbv.py"),
        "machine": f"{os.cpu_count()} CPU cores" if args.device == "cpu" else args.device,
        "protocol": asdict(protocol),
        "settings": settings,
        "seconds": time.perf_counter() - start,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plots = []
    for kind in ("test", "train"):
        path = plot_accuracy_curves(settings, args.out / f"{kind}_accuracy.png", kind=kind,
                                    runs=protocol.runs)  # fmt: skip
        plots.append(path.name)
    (args.out / "results.md").write_text(_markdown(results, plots))
    print(f"wrote {args.out}/results.json, results.md, {', '.join(plots)}")


if __name__ == "__main__":
    main()
