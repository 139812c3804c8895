"""``l2l-tune learn``: meta-train the paper's MLP optimizer, with checkpoints that resume.

Kept apart from :mod:`l2l_tune.learned` so that building the CLI's parser does not
import PyTorch (the core install has none); the command imports it when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ._validation import check_int
from .bench.common import dumps_json, to_jsonable

__all__ = ["add_learn_parser"]


def add_learn_parser(sub: Any) -> None:
    """Register ``learn`` on the CLI's sub-parsers."""
    parser = sub.add_parser(
        "learn",
        help="meta-train the paper's MLP optimizer (train-by-train or train-by-validation)",
        description=(
            "Meta-train the MLP optimizer of the paper's Section 5 by truncated backprop on "
            "MNIST (or scikit-learn's digits) tasks. Writes OUT/meta.pt (load it with "
            "l2l_tune.learned.MLPOptimizer), OUT/result.json and OUT/checkpoint.pt, written "
            "after every trajectory; a run started again with the same settings and OUT "
            "resumes from it and ends where an uninterrupted run would. With --test-runs K, "
            "the meta-trained optimizer then trains K new problems (new samples, the authors' "
            "initialisation, seed + 1000) for --test-steps steps, and result.json records "
            "their test and training accuracy."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--dataset", choices=("mnist", "digits"), default="digits")
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST IDX files")
    parser.add_argument("--download", action="store_true", help="download missing MNIST files")
    parser.add_argument(
        "--split", choices=("train", "valid"), default="valid",
        help="meta-set: the training subset (TbT) or the validation subset (TbV)",
    )  # fmt: skip
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-valid", type=int, default=1000)
    parser.add_argument("--label-noise", type=float, default=0.0)
    parser.add_argument("--problems", type=int, default=4, help="inner problems trained at once")
    parser.add_argument("--trajectories", type=int, default=3)
    parser.add_argument(
        "--truncations", type=float, nargs=2, default=(10, 30), metavar=("MIN", "MEAN_EXTRA"),
        help="truncations per trajectory: MIN + round(Exp(MEAN_EXTRA)) (the paper: 10 30)",
    )  # fmt: skip
    parser.add_argument(
        "--steps", type=float, nargs=2, default=(50, 100), metavar=("MIN", "MEAN_EXTRA"),
        help="steps per truncation: MIN + round(Exp(MEAN_EXTRA)) (the paper: 50 100)",
    )  # fmt: skip
    parser.add_argument("--order", choices=("first", "second"), default="first")
    parser.add_argument("--lr", type=float, default=1e-2, help="RMSProp learning rate")
    parser.add_argument("--decay", type=float, default=0.9, help="RMSProp decay")
    parser.add_argument(
        "--lr-schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="RMSProp learning rate over the run: constant (the paper's) or a half cosine to 0",
    )
    parser.add_argument(
        "--meta-init",
        choices=("authors", "fan-in"),
        default="authors",
        help="initial meta-parameters: authors (weights N(0, 1), biases 0.1: the paper's) or "
        "fan-in (weights N(0, 1/fan_in), biases 0)",
    )
    parser.add_argument(
        "--meta-set-size", type=int, default=None,
        help="meta-objective on this many meta-set samples, redrawn every truncation "
        "(default: the whole meta-set, the paper's)",
    )  # fmt: skip
    parser.add_argument(
        "--group-size", type=int, default=None,
        help="problems stacked at once; the meta-gradient is accumulated over the groups "
        "(default: all; on a CPU 1 is fastest)",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, default=0,
        help="Ray actors sharing the meta-batch's problems (0: this process; needs [ray])",
    )  # fmt: skip
    parser.add_argument("--worker-cpus", type=float, default=1.0, help="CPUs of each Ray actor")
    parser.add_argument(
        "--worker-gpus", type=float, default=0.0,
        help="GPUs of each Ray actor (> 0: the actors train on CUDA)",
    )  # fmt: skip
    parser.add_argument(
        "--ray-address", default=None,
        help="a running Ray cluster to join (default: start Ray on this machine)",
    )  # fmt: skip
    parser.add_argument(
        "--test-runs", type=int, default=0,
        help="new problems the meta-trained optimizer trains afterwards (0: no test)",
    )  # fmt: skip
    parser.add_argument(
        "--test-steps", type=int, default=1000, help="training steps of each test problem"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress lines")
    parser.set_defaults(func=_run)


def _integral(value: float, flag: str) -> int:
    """``value`` of ``flag``'s first number as an int, refused when it is not whole."""
    if value != int(value):
        raise ValueError(f"{flag} MIN must be an integer, got {value!r}")
    return int(value)


def _run(args: argparse.Namespace) -> int:
    import torch

    from .learned import MetaTrainingRecord, MetaTrainingSchedule, meta_train
    from .tasks import MNIST

    check_int(args.test_runs, "--test-runs", 0)
    check_int(args.test_steps, "--test-steps", 1)
    if check_int(args.threads, "--threads", 0):  # 0: PyTorch's default
        torch.set_num_threads(args.threads)
    schedule = MetaTrainingSchedule(
        split=args.split,
        n_train=args.n_train,
        n_valid=args.n_valid,
        label_noise=args.label_noise,
        problems=args.problems,
        trajectories=args.trajectories,
        min_truncations=_integral(args.truncations[0], "--truncations"),
        mean_extra_truncations=args.truncations[1],
        min_steps=_integral(args.steps[0], "--steps"),
        mean_extra_steps=args.steps[1],
        order=args.order,
        lr=args.lr,
        decay=args.decay,
        lr_schedule=args.lr_schedule,
        init=args.meta_init,
        meta_set_size=args.meta_set_size,
    )
    if args.worker_cpus < 0 or args.worker_gpus < 0:
        raise ValueError(
            f"--worker-cpus and --worker-gpus must be >= 0; got {args.worker_cpus}, "
            f"{args.worker_gpus}"
        )
    if args.workers and args.ray_address is not None:
        import ray

        if not ray.is_initialized():
            ray.init(address=args.ray_address)
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a folder; {str(out)!r} is a file")
    distribution = MNIST(
        args.dataset, data_dir=args.data_dir, download=args.download, device=args.device
    )
    started = time.perf_counter()

    def report(record: MetaTrainingRecord) -> None:
        if not args.no_progress:
            print(
                f"trajectory {record.trajectory + 1}/{schedule.trajectories} truncation "
                f"{record.truncation + 1}: {record.steps} steps, meta-loss "
                f"{record.meta_loss:.4g}{'' if record.finite else ' (diverged)'}",
                file=sys.stderr,
                flush=True,
            )

    meta, records = meta_train(
        distribution,
        schedule,
        seed=args.seed,
        callback=report,
        checkpoint=out / "checkpoint.pt",
        group_size=args.group_size,
        workers=args.workers,
        worker_resources={"num_cpus": args.worker_cpus, "num_gpus": args.worker_gpus},
    )
    meta.save(out / "meta.pt")
    result = {
        "command": "l2l-tune learn " + " ".join(sys.argv[2:]),
        "schedule": asdict(schedule),
        "dataset": args.dataset,
        "seed": args.seed,
        "meta_parameters": str(out / "meta.pt"),
        "meta_steps": len(records),
        "inner_steps": sum(r.steps for r in records),
        "seconds_this_run": time.perf_counter() - started,
        "records": [r.__dict__ for r in records],
    }
    if args.test_runs:
        from .learned import LearnedRule, evaluate_on_new_problems

        tested = evaluate_on_new_problems(
            distribution, LearnedRule(meta), None, n_train=schedule.n_train,
            label_noise=schedule.label_noise, runs=args.test_runs, steps=args.test_steps,
            eval_every=min(100, args.test_steps), seed=args.seed + 1000,
        )  # fmt: skip
        result["test"] = {"runs": args.test_runs, "steps": args.test_steps, **tested}
    (out / "result.json").write_text(dumps_json(result) + "\n")
    if args.json:
        print(json.dumps(to_jsonable(result)))
    else:
        last = records[-5:]
        print(
            f"meta-trained {len(records)} truncations ({result['inner_steps']} inner steps); "
            f"last meta-losses {', '.join(f'{r.meta_loss:.4g}' for r in last)}; "
            f"wrote {out / 'meta.pt'}"
        )
        if "test" in result:
            test = result["test"]["test"]
            print(
                f"tested on {args.test_runs} new problems × {args.test_steps} steps: test "
                f"accuracy {test['test_accuracy']:.4f} ± {test['test_accuracy_std']:.4f}, "
                f"training accuracy {test['train_accuracy']:.4f}"
            )
    return 0
