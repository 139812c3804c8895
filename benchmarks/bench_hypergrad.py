"""Cost of hypergradients in a user's loop: the drop-in optimizers against ``torch.optim``.

For each rule (SGD with momentum and weight decay, AdamW) and each number ``k`` of
tracked hyperparameters, seconds per training step of the standard loop
(``zero_grad``, forward, ``backward``, ``step``) with the ``torch.optim`` class and
with its drop-in (``backward(create_graph=True)``, ``HypergradSGD``/``HypergradAdamW``),
timed in interleaved rounds in one run; the ratio is the issue's cost measure
(target ``≤ 1 + k``). Also the bytes the optimizer keeps after 50 and after 500 steps
(memory flat in ``t``), and the functional engine's forward mode
(:func:`~l2l_tune.hypergrad.hypergradients`) against a plain functional run.

Models: the paper's MLP (784-100-20-10, batch 32) and a wider one (784-512-512-10,
batch 128), float32 on CPU, inputs drawn at random (timing does not depend on them).

Usage::

    python benchmarks/bench_hypergrad.py            # about 5 minutes on 2 cores
    python benchmarks/bench_hypergrad.py --quick    # the paper's MLP only, fewer rounds
"""

from __future__ import annotations

import argparse
import functools
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from l2l_tune.bench.common import (
    Column,
    machine_info,
    medians,
    records_table,
    time_interleaved,
    write_results,
)
from l2l_tune.hypergrad import (
    HypergradAdamW,
    HypergradOptimizer,
    HypergradSGD,
    hypergradients,
)
from l2l_tune.hypergrad.rules import SGD, AdamW

warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")

#: (rule label, torch.optim class, drop-in class, keyword arguments, names for k = 1, 2, ...)
RULES: list[tuple[str, Any, type[HypergradOptimizer], dict[str, Any], tuple[str, ...]]] = [
    (
        "SGD (momentum 0.9, weight decay 1e-4)",
        torch.optim.SGD,
        HypergradSGD,
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
        ("lr", "weight_decay", "momentum"),
    ),
    (
        "AdamW",
        torch.optim.AdamW,
        HypergradAdamW,
        {"lr": 1e-3, "weight_decay": 1e-2},
        ("lr", "weight_decay", "beta1", "beta2"),
    ),
]
MODELS = [((784, 100, 20, 10), 32), ((784, 512, 512, 10), 128)]


def _mlp(sizes: Sequence[int]) -> nn.Module:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _loop(
    model: nn.Module, opt: torch.optim.Optimizer, data: list[tuple[Tensor, Tensor]], graph: bool
) -> Callable[[int], None]:
    def run(steps: int) -> None:
        for k in range(steps):
            x, y = data[k % len(data)]
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward(create_graph=graph)
            opt.step()

    return run


def _state_bytes(opt: torch.optim.Optimizer) -> int:
    total = 0
    for state in opt.state.values():
        for value in state.values():
            tensors = value if isinstance(value, tuple) else (value,)
            total += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, Tensor))
    return total


def bench_drop_in(
    rounds: int, steps: int, models: Sequence[tuple[tuple[int, ...], int]]
) -> list[dict[str, Any]]:
    """Seconds per step of each variant, interleaved rounds, one row per (model, rule, k)."""
    rows: list[dict[str, Any]] = []
    for sizes, batch in models:
        gen = torch.Generator().manual_seed(0)
        data = [
            (
                torch.randn(batch, sizes[0], generator=gen),
                torch.randint(0, sizes[-1], (batch,), generator=gen),
            )
            for _ in range(16)
        ]
        for label, plain_class, drop_in, kwargs, names in RULES:
            torch.manual_seed(0)
            base = _mlp(sizes)
            variants: dict[str, Callable[[int], None]] = {}
            model = _mlp(sizes)
            model.load_state_dict(base.state_dict())
            variants["plain"] = _loop(model, plain_class(model.parameters(), **kwargs), data, False)
            opts: dict[int, HypergradOptimizer] = {}
            for k in range(1, len(names) + 1):
                model = _mlp(sizes)
                model.load_state_dict(base.state_dict())
                opts[k] = drop_in(model.parameters(), hypergradients_of=names[:k], **kwargs)
                variants[f"k={k}"] = _loop(model, opts[k], data, True)
            for run in variants.values():
                run(3)  # warm-up
            timed: dict[str, Callable[[], Any]] = {
                name: functools.partial(run, steps) for name, run in variants.items()
            }
            per_step_s = medians(time_interleaved(timed, rounds, per=steps))
            plain = per_step_s["plain"]
            for k in range(1, len(names) + 1):
                opt = opts[k]
                before = _state_bytes(opt)
                variants[f"k={k}"](450)
                after = _state_bytes(opt)
                per_step = per_step_s[f"k={k}"]
                rows.append(
                    {
                        "model": "-".join(map(str, sizes)),
                        "batch": batch,
                        "rule": label,
                        "k": k,
                        "names": list(names[:k]),
                        "plain_s": plain,
                        "drop_in_s": per_step,
                        "ratio": per_step / plain,
                        "target": 1 + k,
                        "state_bytes_50": before,
                        "state_bytes_500": after,
                    }
                )
                print(
                    f"{rows[-1]['model']} {label} k={k}: {per_step * 1e3:.2f} ms vs "
                    f"{plain * 1e3:.2f} ms = {per_step / plain:.2f}x (target {1 + k}), "
                    f"state {before} -> {after} bytes",
                    flush=True,
                )
    return rows


def _functional_problem(t: int, seed: int, held_out: bool) -> tuple[Any, Any, Any, Any]:
    """The paper MLP's parameters, ``t`` random batches (drawn from ``seed``), the functional
    loss on a batch and the meta-loss: on one more batch (``held_out``) or on the first."""
    sizes, batch = MODELS[0]
    torch.manual_seed(0)
    model = _mlp(sizes)
    params = {n: p.detach() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(t + held_out, batch, sizes[0], generator=gen)
    ys = torch.randint(0, sizes[-1], (t + held_out, batch), generator=gen)

    def loss_fn(p: dict[str, Tensor], b: tuple[Tensor, Tensor]) -> Tensor:
        return F.cross_entropy(torch.func.functional_call(model, p, (b[0],)), b[1])

    meta_batch = (xs[-1], ys[-1]) if held_out else (xs[0], ys[0])
    batches = list(zip(xs[:t], ys[:t], strict=True))
    return params, batches, loss_fn, functools.partial(loss_fn, b=meta_batch)


def bench_functional(rounds: int, t: int) -> list[dict[str, Any]]:
    """The functional engine's forward mode against a plain functional run, paper MLP."""
    params, batches, loss_fn, meta = _functional_problem(t, seed=1, held_out=False)
    grad_fn = torch.func.grad(loss_fn)

    def plain() -> None:
        p = params
        with torch.no_grad():
            for b in batches:
                g = grad_fn(p, b)
                p = {n: p[n] - 0.05 * g[n] for n in p}

    rows = []
    variants: dict[str, Callable[[], Any]] = {"plain": plain}
    names = ("lr", "momentum", "weight_decay")
    for k in (1, 2, 3):
        variants[f"k={k}"] = (
            lambda k=k: hypergradients(  # type: ignore[misc]
                loss_fn,
                params,
                batches,
                meta,
                rule=SGD(momentum_buffer=True),
                hparams={"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
                hypergradients_of=names[:k],
            )
        )
    per_step_s = medians(time_interleaved(variants, rounds, per=t))
    base = per_step_s["plain"]
    for k in (1, 2, 3):
        per_step = per_step_s[f"k={k}"]
        rows.append({"k": k, "plain_s": base, "forward_s": per_step, "ratio": per_step / base})
        print(
            f"functional k={k}: {per_step * 1e3:.2f} ms vs {base * 1e3:.2f} ms "
            f"= {per_step / base:.2f}x"
        )
    return rows


def bench_crossover(rounds: int, t: int, ks: Sequence[int]) -> list[dict[str, Any]]:
    """Forward mode (cost grows with k) against reverse mode (does not), paper MLP, AdamW."""
    params, batches, loss_fn, meta = _functional_problem(t, seed=2, held_out=True)
    names = ("lr", "weight_decay", "beta1", "beta2", "eps")
    every = max(1, round(math.sqrt(t)))
    rows = []
    for k in ks:
        variants: dict[str, Callable[[], Any]] = {}
        for label, extra in (
            ("forward", {"method": "forward"}),
            ("backprop", {"method": "backprop"}),
            (
                f"backprop, checkpoint every {every}",
                {"method": "backprop", "checkpoint_every": every},
            ),
        ):
            variants[label] = lambda extra=extra, k=k: hypergradients(  # type: ignore[misc]
                loss_fn, params, batches, meta, rule=AdamW(),
                hparams={"lr": 1e-3, "weight_decay": 1e-2}, hypergradients_of=names[:k],
                **extra,
            )  # fmt: skip
        row = {"k": k, **medians(time_interleaved(variants, rounds, per=t))}
        rows.append(row)
        print(
            "crossover",
            {key: (f"{v * 1e3:.2f} ms" if isinstance(v, float) else v) for key, v in row.items()},
        )
    return rows


def _ms(key: str) -> Column:
    """A table column showing ``record[key]`` seconds in milliseconds."""
    return lambda record: f"{record[key] * 1e3:.2f} ms"


#: The markdown tables' columns (:func:`records_table`).
DROP_IN_COLUMNS: dict[str, Column] = {
    "model (batch)": "{model} ({batch})",
    "rule": "{rule}",
    "k": "{k}",
    "hyperparameters": lambda r: ", ".join(r["names"]),
    "torch.optim": _ms("plain_s"),
    "drop-in": _ms("drop_in_s"),
    "ratio": "{ratio:.2f}×",
    "target 1+k": "{target}×",
    "state bytes after 50 / 500 steps": "{state_bytes_50} / {state_bytes_500}",
}
FUNCTIONAL_COLUMNS = {
    "k": "{k}",
    "plain": _ms("plain_s"),
    "forward": _ms("forward_s"),
    "ratio": "{ratio:.2f}×",
}


def report(result: dict[str, Any]) -> str:
    """The markdown section."""
    machine = result["machine"]
    return "\n".join(
        [
            "# Hypergradient cost in a user's loop",
            "",
            f"Command: `{result['command']}`. Machine: {machine['processor']}, "
            f"{machine['cpu_count']} CPUs, torch {machine['packages']['torch']} "
            f"({machine['torch_threads']} threads). Seconds per training step (median of "
            f"{result['rounds']} interleaved rounds of {result['steps']} steps), float32.",
            "",
            records_table(DROP_IN_COLUMNS, result["drop_in"]),
            "",
            "Functional forward mode (`hypergradients`, SGD with momentum, paper MLP, "
            f"t = {result['functional_t']}) against a plain `torch.func` run of the same steps:",
            "",
            records_table(FUNCTIONAL_COLUMNS, result["functional"]),
            "",
        ]
    )


def _crossover_lines(cross: list[dict[str, Any]], t: int) -> list[str]:
    columns = {"k": "{k}", **{key: _ms(key) for key in cross[0] if key != "k"}}
    return [
        f"Forward against reverse mode (`hypergradients`, AdamW, paper MLP, t = {t}; seconds "
        "per step of the whole computation, median of 3 interleaved rounds):",
        "",
        records_table(columns, cross),
        "",
    ]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the paper's MLP only, 3 rounds")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (markdown beside it)")
    parser.add_argument(
        "--crossover-only",
        action="store_true",
        help="only forward against reverse mode (to results/hypergrad_crossover.json)",
    )
    args = parser.parse_args(argv)
    if args.crossover_only:
        t = 100
        name = "hypergrad_crossover"
        result: dict[str, Any] = {
            "command": "python benchmarks/bench_hypergrad.py --crossover-only",
            "machine": machine_info(),
            "drop_in": [],
            "functional": [],
            "crossover_t": t,
            "crossover": bench_crossover(3, t, (1, 2, 3, 5)),
            "rounds": 3,
            "steps": t,
        }
        lines = [f"Command: `{result['command']}`.", "", *_crossover_lines(result["crossover"], t)]
        md = "\n".join(lines)
        print(md)
    else:
        rounds, steps = (3, 20) if args.quick else (7, 30)
        name = "hypergrad_quick" if args.quick else "hypergrad"
        result = {
            "command": "python benchmarks/bench_hypergrad.py" + (" --quick" if args.quick else ""),
            "machine": machine_info(),
            "rounds": rounds,
            "steps": steps,
            "drop_in": bench_drop_in(rounds, steps, MODELS[:1] if args.quick else MODELS),
            "functional_t": 50,
            "functional": bench_functional(rounds, 50),
        }
        md = report(result)
    write_results(
        args.out or Path(__file__).resolve().parent / "results" / f"{name}.json", result, md
    )
    return result


if __name__ == "__main__":
    main()
