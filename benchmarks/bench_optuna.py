"""Overhead of the Optuna integration: ``MetaGradientSampler``'s time per trial.

In an in-memory study that already holds 1,000 completed trials (added with
``study.add_trials``; for the meta-gradient sampler they carry the system attributes
it reads: the meta-gradient in ``GRADIENT_ATTR``, or the probe/partner roles of
finite-difference pairs), the time spent in the sampler's methods
(``infer_relative_search_space``, ``sample_relative``, ``sample_independent``,
``before_trial``, ``after_trial``) is measured over 20 further trials of a trivial
objective, together with the whole trial's wall time, for the default
``meta_optimizer="auto"`` (the model-based search on such trials) and with
``deterministic=True`` (the bracketing search); Random and TPE are the references.

How fast the sampler finds the step size, against Optuna's samplers, is a suite of
``l2l-tune bench`` (tuners ``optuna-l2l`` and ``optuna-l2l-blackbox``): see
``benchmarks/README.md``.

Usage::

    python benchmarks/bench_optuna.py                 # about 20 s on 2 cores
    python benchmarks/bench_optuna.py --quick         # 200-trial history, 10 trials

Results go to ``benchmarks/results/optuna.json`` and ``optuna.md`` (``optuna_quick.*``
with ``--quick``); see ``--out`` and ``--markdown``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from l2l_tune.integrations.optuna import GRADIENT_ATTR, MetaGradientSampler, report_meta_gradient
from l2l_tune.integrations.optuna import _sampler as mgs_internals
from optuna.distributions import FloatDistribution
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.trial import Trial
from tqdm.auto import tqdm

from l2l_tune.bench.common import (
    command_line,
    dumps_json,
    limit_threads,
    machine_info,
    machine_line,
    markdown_table,
    text_table,
)

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "optuna.json"

PARAM = "lr"
#: The sampler's private bookkeeping of finite-difference pairs, needed only to build a
#: realistic black-box history.
ROLE_ATTR: str = mgs_internals._ROLE_ATTR
PAIR_ATTR: str = mgs_internals._PAIR_ATTR


def _meta_gradient(deterministic: bool | None) -> Callable[..., BaseSampler]:
    return lambda seed: MetaGradientSampler(param=PARAM, deterministic=deterministic, seed=seed)


#: The timed samplers, in table order: name → (history attributes, factory of ``seed=``).
SAMPLERS: dict[str, tuple[str, Callable[..., BaseSampler]]] = {
    "MetaGradient (exact grad)": ("grad", _meta_gradient(None)),
    "MetaGradient (exact grad, deterministic=True)": ("grad", _meta_gradient(True)),
    "MetaGradient (black box)": ("blackbox", _meta_gradient(None)),
    "MetaGradient (black box, deterministic=True)": ("blackbox", _meta_gradient(True)),
    "Random": ("plain", RandomSampler),
    "TPE": ("plain", TPESampler),
}


# ====================================================================== timing
class SamplerTimer:
    """Accumulates the wall time spent in a sampler's Optuna-facing methods.

    The methods are wrapped on the instance; nested calls (a sampler's
    ``sample_relative`` calling its own ``sample_independent``) count once.
    """

    METHODS = (
        "infer_relative_search_space",
        "sample_relative",
        "sample_independent",
        "before_trial",
        "after_trial",
    )

    def __init__(self, sampler: BaseSampler) -> None:
        self.elapsed = 0.0
        self._depth = 0
        for name in self.METHODS:
            setattr(sampler, name, self._wrap(getattr(sampler, name)))

    def _wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return method(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.elapsed += time.perf_counter() - start
                self._depth -= 1

        return timed


def trivial_value_and_grad(lr: float) -> tuple[float, float]:
    """``1 + log(lr/0.01)²`` and its derivative: cheap, positive, minimal at ``lr = 0.01``."""
    z = math.log(lr / 0.01)
    return 1.0 + z * z, 2.0 * z / lr


def history_trials(mode: str, n: int, seed: int, fd_step: float = 0.02) -> list[Any]:
    """``n`` completed frozen trials of the trivial objective, for the overhead study.

    ``mode`` ``"grad"``: each carries its meta-gradient in ``GRADIENT_ATTR``;
    ``"blackbox"``: probe/partner pairs ``(η, η·e^{h})`` with the sampler's role
    attributes (trial numbers ``2k`` and ``2k+1``); ``"plain"``: no attributes.
    """
    rng = np.random.default_rng(seed)
    points: list[tuple[float, dict[str, Any]]] = []  # (lr, system attributes)
    if mode == "blackbox":
        for k in range(n // 2):
            probe = float(math.exp(rng.uniform(math.log(1e-4), math.log(1.0) - fd_step)))
            points.append((probe, {ROLE_ATTR: "probe"}))
            points.append((probe * math.exp(fd_step), {ROLE_ATTR: "partner", PAIR_ATTR: 2 * k}))
    else:
        for _ in range(n):
            lr = float(math.exp(rng.uniform(math.log(1e-4), 0.0)))
            grad = trivial_value_and_grad(lr)[1]
            points.append((lr, {GRADIENT_ATTR: grad} if mode == "grad" else {}))
    dist = FloatDistribution(1e-4, 1.0, log=True)
    return [
        optuna.trial.create_trial(
            params={PARAM: lr},
            distributions={PARAM: dist},
            value=trivial_value_and_grad(lr)[0],
            system_attrs=attrs,
        )
        for lr, attrs in points
    ]


def bench_overhead(history: int, n_trials: int, seed: int, progress: bool) -> dict[str, Any]:
    """Sampler time per trial on top of ``history`` completed trials, for each sampler."""

    def grad_objective(trial: Trial) -> float:
        lr = trial.suggest_float(PARAM, 1e-4, 1.0, log=True)
        value, grad = trivial_value_and_grad(lr)
        report_meta_gradient(trial, grad)
        return value

    def plain_objective(trial: Trial) -> float:
        return trivial_value_and_grad(trial.suggest_float(PARAM, 1e-4, 1.0, log=True))[0]

    results: dict[str, Any] = {"history": history, "trials": n_trials, "storage": "in-memory"}
    for name, (mode, factory) in tqdm(SAMPLERS.items(), desc="overhead", disable=not progress):
        objective = grad_objective if mode == "grad" else plain_objective
        sampler = factory(seed=seed)
        study = optuna.create_study(sampler=sampler)
        study.add_trials(history_trials(mode, history, seed))
        assert len(study.trials) == history
        if mode == "blackbox":  # the pair attribute must point at the probe's number
            assert study.trials[1].system_attrs[PAIR_ATTR] == study.trials[0].number
        timer = SamplerTimer(sampler)
        study.optimize(objective, n_trials=2)  # warm-up (imports, caches)
        ms: list[float] = []
        total_ms: list[float] = []
        for _ in range(n_trials):
            timer.elapsed = 0.0
            start = time.perf_counter()
            study.optimize(objective, n_trials=1)
            total_ms.append(1e3 * (time.perf_counter() - start))
            ms.append(1e3 * timer.elapsed)
        results[name] = {
            "history_mode": mode,
            "sampler_ms_median": statistics.median(ms),
            "sampler_ms_mean": statistics.fmean(ms),
            "sampler_ms_max": max(ms),
            "total_ms_median": statistics.median(total_ms),
            "total_ms_mean": statistics.fmean(total_ms),
            "sampler_ms_per_trial": ms,
        }
    return results


def overhead_table(section: dict[str, Any], table: Callable[..., str]) -> str:
    """The overhead table, one row per sampler, as ``table`` (markdown or text) lays it out."""
    header = [
        "sampler",
        "history attrs",
        "sampler ms/trial (median)",
        "mean",
        "max",
        "whole trial ms (median)",
    ]
    keys = ("sampler_ms_median", "sampler_ms_mean", "sampler_ms_max", "total_ms_median")
    rows = []
    for name in SAMPLERS:
        r = section[name]
        rows.append([name, r["history_mode"], *(f"{r[key]:.2f}" for key in keys)])
    return table(header, rows)


# ====================================================================== main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200-trial history, 10 trials")
    parser.add_argument(
        "--history", type=int, default=None, help="completed trials before timing (default 1000)"
    )
    parser.add_argument(
        "--overhead-trials", type=int, default=None, help="timed trials (default 20)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS and torch threads (default 1; 0: defaults)"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    parser.add_argument("--markdown", type=Path, default=None, help="markdown output path")
    parser.add_argument("--no-progress", action="store_true", help="disable tqdm bars")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Time the samplers, print the table, write the JSON and markdown files."""
    args = parse_args(argv)
    history = args.history or (200 if args.quick else 1000)
    overhead_trials = args.overhead_trials or (10 if args.quick else 20)
    stem = "optuna_quick" if args.quick else "optuna"
    out_path: Path = args.out or DEFAULT_OUT.with_name(f"{stem}.json")
    md_path: Path = args.markdown or out_path.with_name(f"{stem}.md")
    command = command_line("benchmarks/bench_optuna.py", argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    machine = machine_info()
    thread_limit = limit_threads(args.threads)
    started = time.perf_counter()
    section = bench_overhead(history, overhead_trials, seed=0, progress=not args.no_progress)
    print(overhead_table(section, text_table), flush=True)
    results: dict[str, Any] = {
        "benchmark": "bench_optuna",
        "mode": "quick" if args.quick else "full",
        "command": command,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine,
        "threads": thread_limit,
        "overhead": section,
        "total_wall_s": time.perf_counter() - started,
    }
    md = [
        "# Optuna sampler overhead (`benchmarks/bench_optuna.py`)",
        "",
        f"Mode: {results['mode']}. Command: `{command}`. Machine: {machine_line(machine)}; "
        f"{thread_limit['description']}.",
        "",
        f"Time inside the sampler's methods over {overhead_trials} trials (after 2 warm-up "
        f"trials) of a study that already holds {history} completed trials (in memory), on "
        "the trivial objective `1 + log(lr/0.01)²` (lr ∈ [1e-4, 1], log scale). History: "
        f"`grad` = each trial carries `GRADIENT_ATTR`; `blackbox` = {history // 2} "
        "probe/partner pairs with the sampler's role attributes; `plain` = no attributes. "
        '"whole trial" is the wall time of `study.optimize(n_trials=1)`. The sampler\'s '
        'default `meta_optimizer="auto"` takes these trials (not from `task_objective`) as '
        "possibly noisy and runs the model-based search, which fits a Gaussian process "
        "every trial; `deterministic=True` selects the bracketing search.",
        "",
        overhead_table(section, markdown_table),
        "",
        f"Total wall time: {results['total_wall_s']:.0f} s.",
    ]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(dumps_json(results) + "\n")
    md_path.write_text("\n".join(md) + "\n")
    print(f"\nTotal {results['total_wall_s']:.0f} s. Wrote {out_path} and {md_path}", flush=True)
    return results


if __name__ == "__main__":
    main()
