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
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from l2l_tune.bench.common import dumps_json, machine_info, markdown_table
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
            medians = _interleaved(timed, rounds, steps)
            plain = medians["plain"]
            for k in range(1, len(names) + 1):
                opt = opts[k]
                before = _state_bytes(opt)
                variants[f"k={k}"](450)
                after = _state_bytes(opt)
                per_step = medians[f"k={k}"]
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


def _interleaved(
    variants: Mapping[str, Callable[[], Any]], rounds: int, per: int
) -> dict[str, float]:
    """Median seconds per unit (a call divided by ``per``) of each variant, the variants
    timed in turn in every round (so a change of machine load hits them alike)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) / per)
    return {name: statistics.median(v) for name, v in times.items()}


def bench_functional(rounds: int, t: int) -> list[dict[str, Any]]:
    """The functional engine's forward mode against a plain functional run, paper MLP."""
    sizes, batch = MODELS[0]
    torch.manual_seed(0)
    model = _mlp(sizes)
    params = {n: p.detach() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(1)
    xs = torch.randn(t, batch, sizes[0], generator=gen)
    ys = torch.randint(0, sizes[-1], (t, batch), generator=gen)

    def loss_fn(p: dict[str, Tensor], b: tuple[Tensor, Tensor]) -> Tensor:
        return F.cross_entropy(torch.func.functional_call(model, p, (b[0],)), b[1])

    def meta(p: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(torch.func.functional_call(model, p, (xs[0],)), ys[0])

    batches = list(zip(xs, ys, strict=True))
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
    medians = _interleaved(variants, rounds, t)
    base = medians["plain"]
    for k in (1, 2, 3):
        per_step = medians[f"k={k}"]
        rows.append({"k": k, "plain_s": base, "forward_s": per_step, "ratio": per_step / base})
        print(
            f"functional k={k}: {per_step * 1e3:.2f} ms vs {base * 1e3:.2f} ms "
            f"= {per_step / base:.2f}x"
        )
    return rows


def bench_crossover(rounds: int, t: int, ks: Sequence[int]) -> list[dict[str, Any]]:
    """Forward mode (cost grows with k) against reverse mode (does not), paper MLP, AdamW."""
    sizes, batch = MODELS[0]
    torch.manual_seed(0)
    model = _mlp(sizes)
    params = {n: p.detach() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(2)
    xs = torch.randn(t + 1, batch, sizes[0], generator=gen)
    ys = torch.randint(0, sizes[-1], (t + 1, batch), generator=gen)

    def loss_fn(p: dict[str, Tensor], b: tuple[Tensor, Tensor]) -> Tensor:
        return F.cross_entropy(torch.func.functional_call(model, p, (b[0],)), b[1])

    def meta(p: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(torch.func.functional_call(model, p, (xs[t],)), ys[t])

    batches = list(zip(xs[:t], ys[:t], strict=True))
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
        row = {"k": k, **_interleaved(variants, rounds, t)}
        rows.append(row)
        print(
            "crossover",
            {key: (f"{v * 1e3:.2f} ms" if isinstance(v, float) else v) for key, v in row.items()},
        )
    return rows


def report(result: dict[str, Any]) -> str:
    """The markdown section."""
    lines = [
        "# Hypergradient cost in a user's loop",
        "",
        f"Command: `{result['command']}`. Machine: {result['machine']['processor']}, "
        f"{result['machine']['cpu_count']} CPUs, torch {result['machine']['torch']} "
        f"({result['machine']['torch_threads']} threads). Seconds per training step (median of "
        f"{result['rounds']} interleaved rounds of {result['steps']} steps), float32.",
        "",
    ]
    header = [
        "model (batch)",
        "rule",
        "k",
        "hyperparameters",
        "torch.optim",
        "drop-in",
        "ratio",
        "target 1+k",
        "state bytes after 50 / 500 steps",
    ]
    rows = [
        [
            f"{r['model']} ({r['batch']})",
            r["rule"],
            str(r["k"]),
            ", ".join(r["names"]),
            f"{r['plain_s'] * 1e3:.2f} ms",
            f"{r['drop_in_s'] * 1e3:.2f} ms",
            f"{r['ratio']:.2f}×",
            f"{r['target']}×",
            f"{r['state_bytes_50']} / {r['state_bytes_500']}",
        ]
        for r in result["drop_in"]
    ]
    lines += [markdown_table(header, rows), ""]
    lines += [
        "Functional forward mode (`hypergradients`, SGD with momentum, paper MLP, "
        f"t = {result['functional_t']}) against a plain `torch.func` run of the same steps:",
        "",
        markdown_table(
            ["k", "plain", "forward", "ratio"],
            [
                [
                    str(r["k"]),
                    f"{r['plain_s'] * 1e3:.2f} ms",
                    f"{r['forward_s'] * 1e3:.2f} ms",
                    f"{r['ratio']:.2f}×",
                ]
                for r in result["functional"]
            ],
        ),
        "",
    ]
    if result.get("crossover"):
        lines += _crossover_lines(result["crossover"], result["crossover_t"])
    return "\n".join(lines)


def _crossover_lines(cross: list[dict[str, Any]], t: int) -> list[str]:
    labels = [key for key in cross[0] if key != "k"]
    return [
        f"Forward against reverse mode (`hypergradients`, AdamW, paper MLP, t = {t}; seconds "
        "per step of the whole computation, median of 3 interleaved rounds):",
        "",
        markdown_table(
            ["k", *labels],
            [[str(r["k"]), *(f"{r[key] * 1e3:.2f} ms" for key in labels)] for r in cross],
        ),
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
        crossover: dict[str, Any] = {
            "command": "python benchmarks/bench_hypergrad.py --crossover-only",
            "machine": machine_info(),
            "drop_in": [],
            "functional": [],
            "crossover_t": t,
            "crossover": bench_crossover(3, t, (1, 2, 3, 5)),
            "rounds": 3,
            "steps": t,
        }
        out = args.out or Path(__file__).resolve().parent / "results" / "hypergrad_crossover.json"
        out.write_text(dumps_json(crossover) + "\n")
        lines = [f"Command: `{crossover['command']}`.", ""]
        lines += _crossover_lines(crossover["crossover"], t)
        out.with_suffix(".md").write_text("\n".join(lines))
        print("\n".join(lines))
        return crossover
    rounds, steps = (3, 20) if args.quick else (7, 30)
    models = MODELS[:1] if args.quick else MODELS
    result: dict[str, Any] = {
        "command": "python benchmarks/bench_hypergrad.py" + (" --quick" if args.quick else ""),
        "machine": machine_info(),
        "rounds": rounds,
        "steps": steps,
        "drop_in": bench_drop_in(rounds, steps, models),
        "functional_t": 50,
        "functional": bench_functional(rounds, 50),
    }
    out = args.out or Path(__file__).resolve().parent / "results" / (
        "hypergrad_quick.json" if args.quick else "hypergrad.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dumps_json(result) + "\n")
    out.with_suffix(".md").write_text(report(result))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
