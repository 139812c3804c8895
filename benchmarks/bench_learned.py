"""Meta-training throughput of the MLP optimizer: problems batched against one at a time.

One meta-step is a truncation of ``--steps`` inner steps of the paper's 784-100-20-10
network on MNIST-shaped data (``run_truncation``, first order) plus its backward pass into
the meta-parameters. For each ``m`` the same ``m`` problems are meta-trained once stacked
(one batched truncation) and once one by one (``m`` truncations of one problem); the figure
is inner problem-steps per second, side by side in one run (median of ``--rounds``
interleaved rounds), on the CPU (one thread) or ``--device cuda``.

Usage::

    python benchmarks/bench_learned.py                 # m = 1, 4, 16; 20 steps; CPU
    python benchmarks/bench_learned.py --device cuda
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import Any

import torch

from l2l_tune.bench.common import (
    command_line,
    machine_info,
    medians,
    records_table,
    time_interleaved,
    write_results,
)
from l2l_tune.hypergrad import mlp
from l2l_tune.learned import MetaParameters, init_states, run_truncation

SIZES = (784, 100, 20, 10)
#: The markdown table's columns: header → format of a row of the results (:func:`records_table`).
COLUMNS = {
    "problems m": "{m}",
    "batched": "{batched_steps_per_s:,.0f}",
    "one by one": "{one_by_one_steps_per_s:,.0f}",
    "batched ÷ one by one": "{speedup:.2f}×",
}


def _problems(m: int, steps: int, device: str, seed: int) -> tuple[list[Any], list[Any], Any]:
    gen = torch.Generator().manual_seed(seed)
    params = mlp.init_params(SIZES, m, gen, scheme="paper", device=device)
    batches = [
        (torch.rand(m, 32, 784, generator=gen).to(device),
         torch.randint(0, 10, (m, 32), generator=gen).to(device))
        for _ in range(steps)
    ]  # fmt: skip
    meta_set = (
        torch.rand(m, 1000, 784, generator=gen).to(device),
        torch.randint(0, 10, (m, 1000), generator=gen).to(device),
    )
    return params, batches, meta_set


def _meta_step(meta: MetaParameters, params: list[Any], batches: list[Any], meta_set: Any) -> None:
    result = run_truncation(meta, params, init_states(params), batches, meta_set)
    result.meta_loss.backward()
    for tensor in meta.tensors():
        tensor.grad = None


def _meta_steps(meta: MetaParameters, problems: list[tuple[list[Any], list[Any], Any]]) -> None:
    for problem in problems:
        _meta_step(meta, *problem)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    meta = MetaParameters.initial(torch.Generator().manual_seed(0), device=args.device)
    meta.requires_grad_()
    rows = []
    for m in args.m:
        params, batches, meta_set = _problems(m, args.steps, args.device, m)
        singles = [
            ([p[i : i + 1] for p in params],
             [(x[i : i + 1], y[i : i + 1]) for x, y in batches],
             (meta_set[0][i : i + 1], meta_set[1][i : i + 1]))
            for i in range(m)
        ]  # fmt: skip
        calls = {
            "batched": partial(_meta_step, meta, params, batches, meta_set),
            "one_by_one": partial(_meta_steps, meta, singles),
        }
        calls["batched"]()  # warm-up
        median = medians(time_interleaved(calls, args.rounds, device=args.device))
        problem_steps = m * args.steps
        rows.append(
            {
                "m": m,
                "batched_s": median["batched"],
                "one_by_one_s": median["one_by_one"],
                "batched_steps_per_s": problem_steps / median["batched"],
                "one_by_one_steps_per_s": problem_steps / median["one_by_one"],
                "speedup": median["one_by_one"] / median["batched"],
            }
        )
        print(f"m = {m}: batched {rows[-1]['speedup']:.2f}× as fast as one by one", flush=True)
    command = command_line("benchmarks/bench_learned.py", argv)
    result = {
        "command": command,
        "machine": machine_info(),
        "settings": vars(args) | {"out": None},
        "rows": rows,
    }
    md = "\n".join(
        [
            "# MLP-optimizer meta-training throughput",
            "",
            f"Command: `{command}`. Device {args.device}, {args.threads or 'default'} "
            f"thread(s); one meta-step = a first-order truncation of {args.steps} inner steps "
            "of the 784-100-20-10 network (batch 32, meta-set 1000) and its backward pass; "
            f"median of {args.rounds} interleaved rounds. Inner problem-steps per second:",
            "",
            records_table(COLUMNS, rows),
            "",
        ]
    )
    write_results(
        args.out or Path(__file__).resolve().parent / "results" / "learned.json", result, md
    )
    print(md)
    return result


if __name__ == "__main__":
    main()
