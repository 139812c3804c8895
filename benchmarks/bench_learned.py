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
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from l2l_tune.bench.common import dumps_json, machine_info, markdown_table
from l2l_tune.hypergrad import mlp
from l2l_tune.learned import MetaParameters, init_states, run_truncation

SIZES = (784, 100, 20, 10)


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


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


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
    rows, table = [], []
    for m in args.m:
        params, batches, meta_set = _problems(m, args.steps, args.device, m)
        singles = [
            ([p[i : i + 1] for p in params],
             [(x[i : i + 1], y[i : i + 1]) for x, y in batches],
             (meta_set[0][i : i + 1], meta_set[1][i : i + 1]))
            for i in range(m)
        ]  # fmt: skip
        _meta_step(meta, params, batches, meta_set)  # warm-up
        batched_s, single_s = [], []
        for _ in range(args.rounds):
            _sync(args.device)
            t0 = time.perf_counter()
            _meta_step(meta, params, batches, meta_set)
            _sync(args.device)
            batched_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for one in singles:
                _meta_step(meta, *one)
            _sync(args.device)
            single_s.append(time.perf_counter() - t0)
        batched, single = statistics.median(batched_s), statistics.median(single_s)
        problem_steps = m * args.steps
        rows.append(
            {
                "m": m,
                "batched_s": batched,
                "one_by_one_s": single,
                "batched_steps_per_s": problem_steps / batched,
                "one_by_one_steps_per_s": problem_steps / single,
                "speedup": single / batched,
            }
        )
        table.append(
            [
                str(m),
                f"{problem_steps / batched:,.0f}",
                f"{problem_steps / single:,.0f}",
                f"{single / batched:.2f}×",
            ]  # fmt: skip
        )
        print(table[-1], flush=True)
    command = "python benchmarks/bench_learned.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    result = {
        "command": command,
        "machine": machine_info(),
        "settings": vars(args) | {"out": None},
        "rows": rows,
    }
    out = args.out or Path(__file__).resolve().parent / "results" / "learned.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dumps_json(result) + "\n")
    md = "\n".join(
        [
            "# MLP-optimizer meta-training throughput",
            "",
            f"Command: `{command}`. Device {args.device}, {args.threads or 'default'} "
            f"thread(s); one meta-step = a first-order truncation of {args.steps} inner steps "
            "of the 784-100-20-10 network (batch 32, meta-set 1000) and its backward pass; "
            f"median of {args.rounds} interleaved rounds. Inner problem-steps per second:",
            "",
            markdown_table(["problems m", "batched", "one by one", "batched ÷ one by one"], table),
            "",
        ]
    )
    out.with_suffix(".md").write_text(md)
    print(md)
    return result


if __name__ == "__main__":
    main()
