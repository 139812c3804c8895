"""Benchmark of the Ray Tune integration (``l2l_tune.integrations.ray``).

Task: the quadratic of the paper's Fig 1, ``Quadratic.random(20, seed, variant="authors")``,
t = 80 inner GD steps, search space ``{"lr": tune.loguniform(1e-4, 1.0)}``, trainable
``task_trainable(q, 80)``, which reports ``"loss"`` (the plain last loss ``f(w_t)``) and
``"loss_grad"`` (its derivative in the step size). Two measurements, in one Ray session
(``ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)``), with
``reuse_actors=True``, ``verbose=0`` and the experiment storage in a temporary directory:

1. **Throughput.** ``MetaGradientSearch(metric="loss", mode="min", eta0=0.1)`` runs the same
   budget of trials (default 30) with ``max_concurrent_trials`` 1, then 2: the wall time of
   ``tuner.fit()``, trials/s and meta-steps/s (with ``tasks_per_step=1`` a trial is a
   meta-step; the searcher counts them), their 2-worker/1-worker ratio, and the "in-run"
   rate from the first trial's start to the last trial's end (without Tune's start-up and
   tear-down). Trainables: the bare one (well under a millisecond of compute: Ray's overhead
   dominates), the same after ``time.sleep(0.5)`` (the compute dominates) and after a 2 s
   sleep (``--long-sleep``). Each row records the peak number of trials running at once and
   the number of worker processes: with ``reuse_actors=True`` Ray gives the next pending
   trial the finished trial's actor and drops the second actor it was starting, so trials
   shorter than a worker's start-up (about 1–1.5 s here) often ran one at a time even with
   ``max_concurrent_trials=2``, varying from run to run. A discarded warm-up run comes first.
2. **Searcher overhead.** ``suggest()`` and ``on_trial_complete()`` driven directly, with no
   Ray cluster, for 1,000 sequential trials (one in flight at a time; the results, closed-form
   quadratic values, are computed outside the timed region), with gradients and as a black
   box: the mean ms per trial, and each method's cost at the start (trials 1–50) and at the
   end (the last 50 trials, with about 950–1,000 finished trials).

How fast the searcher finds the step size against Ray's random search and
``OptunaSearch``, with 2 concurrent trials and with 2 s trials that really overlap, is a
suite of ``l2l-tune bench`` (tuners ``ray-random``, ``ray-tpe``, ``ray-l2l``,
``ray-l2l-blackbox``, ``--ray-workers 2``, ``--ray-trial-seconds``): see
``benchmarks/README.md``.

Usage::

    python benchmarks/bench_ray.py [--quick] [--budget 30]

``--quick`` runs budget 10 and 200 overhead trials, and writes
``results/ray_quick.{json,md}`` instead of ``results/ray.{json,md}``.
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import math
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Ray's environment must be set before Ray is imported (as tests/_ray_helpers.py does): a
# short temporary directory (unix-socket paths must stay under 107 bytes), no token
# authentication, no usage stats.
_RAY_TMP = Path(tempfile.mkdtemp(prefix="l2lray", dir="/tmp" if os.path.isdir("/tmp") else None))
atexit.register(shutil.rmtree, _RAY_TMP, True)
os.environ["RAY_TMPDIR"] = str(_RAY_TMP)
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import numpy as np  # noqa: E402
import ray  # noqa: E402
from l2l_tune.integrations.ray import MetaGradientSearch, task_trainable  # noqa: E402
from ray import tune  # noqa: E402

from l2l_tune import Quadratic  # noqa: E402
from l2l_tune.bench.common import (  # noqa: E402
    command_line,
    machine_info,
    machine_line,
    markdown_table,
    write_results,
)

#: Inner GD steps (the paper's Fig 1).
T = 80
#: The Tuner's search space.
LOW, HIGH = 1e-4, 1.0
#: Seconds of simulated training per trial in the compute-bound throughput run.
SLEEP_S = 0.5
#: A longer sleep: with ``reuse_actors=True`` and ``max_concurrent_trials=2``, Ray ran
#: 0.5 s and 1 s trials one at a time in some runs on the development machine; 1.5 s and
#: 2 s trials ran two at a time in every run tried.
LONG_SLEEP_S = 2.0

RESULTS = Path(__file__).resolve().parent / "results"


def param_space() -> dict[str, Any]:
    """The search space: ``{"lr": tune.loguniform(1e-4, 1.0)}``."""
    return {"lr": tune.loguniform(LOW, HIGH)}


def quadratic(seed: int) -> Quadratic:
    """The benchmark instance for ``seed`` (authors' variant, d = 20)."""
    return Quadratic.random(20, seed, variant="authors")


def searcher(**options: Any) -> MetaGradientSearch:
    """``MetaGradientSearch(metric="loss", mode="min", eta0=0.1, **options)``."""
    return MetaGradientSearch(metric="loss", mode="min", eta0=0.1, **options)


# ---------------------------------------------------------------------------- Ray runs
class TrialClock(tune.Callback):
    """Driver-side times of trial starts and completions, and the workers that reported."""

    def __init__(self) -> None:
        self.first_start: float | None = None
        self.start_times: dict[str, float] = {}
        self.end_times: list[float] = []
        self.pids: set[int] = set()
        self.errored = 0

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Remember when the trial started (and when the first one did)."""
        now = time.perf_counter()
        self.first_start = now if self.first_start is None else self.first_start
        self.start_times[trial.trial_id] = now

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Remember when the trial completed and which worker process reported it."""
        self.end_times.append(time.perf_counter())
        pid = (trial.last_result or {}).get("pid")
        if isinstance(pid, int):
            self.pids.add(pid)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Count errored trials."""
        self.errored += 1

    @property
    def peak_concurrency(self) -> int:
        """Most trials running at once (from the driver's start and completion times)."""
        starts = [(t, 1) for t in self.start_times.values()]
        events = sorted(starts + [(t, -1) for t in self.end_times])
        return max([0, *itertools.accumulate(delta for _, delta in events)])


@dataclass
class RunRecord:
    """One ``tuner.fit()``: its timing, its trials and the warnings raised in the driver."""

    trials: int
    wall_s: float
    in_run_s: float
    errors: int
    peak_concurrency: int
    worker_processes: int
    meta_steps: int | None
    warnings: list[str]


def sleepy(
    trainable: Callable[[dict[str, Any]], None], seconds: float
) -> Callable[[dict[str, Any]], None]:
    """``trainable`` preceded by ``time.sleep(seconds)`` (simulated training)."""

    def sleepy_trainable(config: dict[str, Any]) -> None:
        time.sleep(seconds)
        trainable(config)

    return sleepy_trainable


def run_tuner(
    trainable: Callable[[dict[str, Any]], None],
    search: Any,
    *,
    budget: int,
    workers: int,
    name: str,
    storage: Path,
) -> RunRecord:
    """Run one Tuner to ``budget`` trials with ``workers`` concurrent; time ``fit()``."""
    clock = TrialClock()
    tuner = tune.Tuner(
        trainable,
        param_space=param_space(),
        tune_config=tune.TuneConfig(
            search_alg=search,
            metric="loss",
            mode="min",
            num_samples=budget,
            max_concurrent_trials=workers,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage), verbose=0, callbacks=[clock]
        ),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        grid = tuner.fit()
        end = time.perf_counter()
    completed = len(clock.end_times)
    # Cross-check the callback's record against the ResultGrid.
    rows = len(grid.get_dataframe())
    if rows != budget or completed + clock.errored != budget:
        print(
            f"  !! {name}: ResultGrid has {rows} rows, callback saw {completed} completed + "
            f"{clock.errored} errored (budget {budget})",
            flush=True,
        )
    first = clock.first_start if clock.first_start is not None else start
    return RunRecord(
        trials=completed,
        wall_s=end - start,
        in_run_s=(clock.end_times[-1] if clock.end_times else end) - first,
        errors=int(grid.num_errors),
        peak_concurrency=clock.peak_concurrency,
        worker_processes=len(clock.pids),
        meta_steps=search.n_meta_steps if isinstance(search, MetaGradientSearch) else None,
        warnings=sorted({f"{w.category.__name__}: {w.message}" for w in caught}),
    )


# ---------------------------------------------------------------------------- 1. throughput
def throughput(budget: int, storage: Path, repeats: int, sleeps: list[float]) -> dict[str, Any]:
    """Trials/s and meta-steps/s with 1 and 2 concurrent trials, for the bare trainable and
    for the trainable plus each ``time.sleep`` in ``sleeps``."""
    bare = task_trainable(quadratic(0), T)
    # Warm-up (discarded): the first fit pays for worker start-up and imports.
    run_tuner(bare, searcher(), budget=4, workers=2, name="warmup", storage=storage)
    variants: list[tuple[str, Callable[[dict[str, Any]], None]]] = [("bare", bare)]
    variants += [(f"sleep {s:g} s", sleepy(bare, s)) for s in sleeps]
    out: dict[str, Any] = {}
    for label, trainable in variants:
        runs: dict[int, list[RunRecord]] = {1: [], 2: []}
        for rep in range(repeats):
            for workers in (1, 2):
                name = f"tp-{label.replace(' ', '')}-w{workers}-r{rep}"
                r = run_tuner(
                    trainable,
                    searcher(),
                    budget=budget,
                    workers=workers,
                    name=name,
                    storage=storage,
                )
                runs[workers].append(r)
                print(
                    f"  [throughput] {label:>11} workers={workers} rep={rep}: {r.trials} trials, "
                    f"{r.meta_steps} meta-steps, fit {r.wall_s:.2f} s "
                    f"({r.trials / r.wall_s:.2f} trials/s), in-run {r.in_run_s:.2f} s, peak "
                    f"concurrency {r.peak_concurrency}, {r.worker_processes} worker process(es), "
                    f"errors {r.errors}",
                    flush=True,
                )
        row: dict[str, Any] = {}
        for workers, records in runs.items():
            wall = statistics.median(r.wall_s for r in records)
            in_run = statistics.median(r.in_run_s for r in records)
            trials, steps = records[0].trials, records[0].meta_steps
            row[str(workers)] = {
                "trials": trials,
                "meta_steps": steps,
                "wall_s": wall,
                "wall_s_all": [r.wall_s for r in records],
                "trials_per_s": trials / wall,
                "meta_steps_per_s": None if steps is None else steps / wall,
                "in_run_s": in_run,
                "in_run_trials_per_s": trials / in_run if in_run > 0 else math.nan,
                "peak_concurrency": max(r.peak_concurrency for r in records),
                "worker_processes": max(r.worker_processes for r in records),
                "errors": sum(r.errors for r in records),
                "warnings": sorted({w for r in records for w in r.warnings}),
            }
        row["ratio_2_over_1"] = row["2"]["trials_per_s"] / row["1"]["trials_per_s"]
        row["in_run_ratio_2_over_1"] = (
            row["2"]["in_run_trials_per_s"] / row["1"]["in_run_trials_per_s"]
        )
        out[label] = row
    return out


# ---------------------------------------------------------------------------- 2. overhead
def overhead(
    n: int, *, black_box: bool, deterministic: bool | None = None, window: int = 50
) -> dict[str, Any]:
    """Time ``suggest`` and ``on_trial_complete`` for ``n`` sequential trials, no cluster."""
    q = quadratic(0)
    search = searcher(grad_metric="none" if black_box else None, deterministic=deterministic)
    search.set_search_properties("loss", "min", param_space())
    suggest_s, complete_s, lrs = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        trial_id = f"trial_{i:05d}"
        t0 = time.perf_counter()
        config = search.suggest(trial_id)
        suggest_s[i] = time.perf_counter() - t0
        if config is None:
            raise RuntimeError(f"suggest returned None at trial {i}")
        lrs[i] = lr = float(config["lr"])
        value, grad = q.value_and_gradient(lr, T, log=False)  # not timed
        result = {"loss": value, "loss_grad": grad}
        t0 = time.perf_counter()
        search.on_trial_complete(trial_id, result)
        complete_s[i] = time.perf_counter() - t0
    total = suggest_s + complete_s
    w = min(window, n)
    eta_star = q.optimal_step_size(T)
    return {
        "trials": n,
        "meta_steps": search.n_meta_steps,
        "total_s": float(total.sum()),
        "mean_ms_per_trial": 1e3 * float(total.mean()),
        "first_window": w,
        "first_suggest_ms": 1e3 * float(suggest_s[:w].mean()),
        "first_complete_ms": 1e3 * float(complete_s[:w].mean()),
        "last_suggest_ms": 1e3 * float(suggest_s[-w:].mean()),
        "last_complete_ms": 1e3 * float(complete_s[-w:].mean()),
        "last_per_trial_ms": 1e3 * float(total[-w:].mean()),
        "max_suggest_ms": 1e3 * float(suggest_s.max()),
        "suggest_ms_by_hundred": [
            1e3 * float(suggest_s[i : i + 100].mean()) for i in range(0, n, 100)
        ],
        "distinct_lrs": int(np.unique(lrs).size),
        "final_estimate_rel_err": abs(search.meta_optimizer_state().estimate() - eta_star)
        / eta_star,
    }


# ---------------------------------------------------------------------------- reporting
#: The throughput table's columns after trainable and workers: (header, key, format).
THROUGHPUT_COLUMNS = (
    ("trials", "trials", "d"),
    ("meta-steps", "meta_steps", "d"),
    ("fit (s)", "wall_s", ".2f"),
    ("trials/s", "trials_per_s", ".2f"),
    ("meta-steps/s", "meta_steps_per_s", ".2f"),
    ("in-run trials/s", "in_run_trials_per_s", ".2f"),
    ("peak", "peak_concurrency", "d"),
    ("procs", "worker_processes", "d"),
)


def throughput_table(section: dict[str, Any]) -> str:
    """Each trainable with 1 and 2 workers, then the 2/1 ratios (``?``: not measured)."""
    rows = []
    for label, row in section.items():
        for workers in ("1", "2"):
            r = row[workers]
            cells = [
                "?" if r[key] is None else format(r[key], spec)
                for _, key, spec in THROUGHPUT_COLUMNS
            ]
            rows.append([label, workers, *cells])
        ratio, in_run_ratio = row["ratio_2_over_1"], row["in_run_ratio_2_over_1"]
        ratios = {"trials/s": f"**{ratio:.2f}×**", "in-run trials/s": f"{in_run_ratio:.2f}×"}
        rows.append([label, "**2 / 1**"] + [ratios.get(h, "") for h, *_ in THROUGHPUT_COLUMNS])
    return markdown_table(["trainable", "workers"] + [h for h, *_ in THROUGHPUT_COLUMNS], rows)


def markdown(out: dict[str, Any]) -> str:
    """The markdown report."""
    m = out["machine"]
    cfg = out["config"]
    overhead_rows = [
        [
            mode,
            f"{o['mean_ms_per_trial']:.2f}",
            f"{o['first_suggest_ms']:.3f} / {o['first_complete_ms']:.3f}",
            f"{o['last_suggest_ms']:.2f} / {o['last_complete_ms']:.3f}",
            f"{o['last_per_trial_ms']:.2f}",
            f"{o['total_s']:.1f}",
            str(o["meta_steps"]),
        ]
        for mode, o in out["overhead"].items()
    ]
    lines = [
        "# Ray Tune integration benchmark (`benchmarks/bench_ray.py`)",
        "",
        f"Command: `{out['command']}`. Machine: {machine_line(m)}, l2l-tune {m['l2l_tune']}. "
        "Setup: one `ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)`, "
        '`reuse_actors=True`. Task: `Quadratic.random(20, seed, variant="authors")`, t = 80, '
        "`lr ~ tune.loguniform(1e-4, 1)`, trainable `task_trainable(q, 80)`. "
        f"Total run time: {out['total_s'] / 60:.1f} min.",
        "",
        f"## 1. Throughput: 1 vs 2 concurrent trials ({cfg['budget']} trials, seed-0 instance)",
        "",
        'The searcher is `MetaGradientSearch(metric="loss", mode="min", eta0=0.1)` with '
        '`tasks_per_step=1`, so one trial is one meta-step. "fit" is the wall time of '
        "`tuner.fit()`. \"in-run\" runs from the first trial's start to the last trial's end, "
        'as seen by a driver-side callback. "peak" is the largest number of trials that '
        'were running at once. "procs" is the number of distinct worker processes that '
        f"reported results. Each figure is the median of {cfg['repeats']} run(s); a discarded "
        "warm-up fit came first.",
        "",
        throughput_table(out["throughput"]),
        "",
        f"## 2. Searcher overhead (driven directly, no Ray cluster, {cfg['overhead_trials']} "
        "sequential trials)",
        "",
        "The table gives the time of `suggest()` + `on_trial_complete()`. Results come from "
        'the closed-form quadratic and are computed outside the timed region. "first" '
        f'means trials 1–50 and "last" the last 50, at about {cfg["overhead_trials"] - 50}–'
        f"{cfg['overhead_trials']} finished trials. The searcher's default "
        '`meta_optimizer="auto"` does not know these results are exact (the bare trainable '
        "does not say so) and runs the model-based search, which fits a Gaussian process at "
        "every suggestion; `deterministic=True` selects the bracketing search.",
        "",
        markdown_table(
            ["mode", "mean ms/trial", "first: suggest / complete (ms)"]
            + ["last: suggest / complete (ms)", "last ms/trial", "total (s)"]
            + ["finished meta-steps"],
            overhead_rows,
        ),
        "",
        "Mean `suggest()` time per block of 100 trials (ms): "
        + "; ".join(
            f"{mode}: " + ", ".join(f"{v:.2f}" for v in o["suggest_ms_by_hundred"])
            for mode, o in out["overhead"].items()
        )
        + ".",
        "",
    ]
    if out.get("warnings"):
        lines += ["Warnings raised in the driver during the Ray runs:", ""]
        lines += [f"* {w}" for w in out["warnings"]]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the two measurements, print and write the results."""
    parser = argparse.ArgumentParser(
        description="Benchmark the Ray Tune integration of l2l-tune (see the module docstring)."
    )
    parser.add_argument("--quick", action="store_true", help="budget 10, 200 overhead trials")
    parser.add_argument("--budget", type=int, default=30, help="trials per Tuner run (default 30)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="repeats of each throughput run (default 1)"
    )
    parser.add_argument(
        "--long-sleep",
        type=float,
        default=LONG_SLEEP_S,
        help=f"extra throughput row with this sleep per trial, 0: none (default {LONG_SLEEP_S:g})",
    )
    parser.add_argument(
        "--overhead-trials", type=int, default=1000, help="trials for part 2 (default 1000)"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    parser.add_argument("--markdown", type=Path, default=None, help="markdown path")
    args = parser.parse_args(argv)
    if args.quick:
        args.budget, args.overhead_trials = 10, 200
    suffix = "_quick" if args.quick else ""
    out_path = args.out or RESULTS / f"ray{suffix}.json"
    md_path = args.markdown or out_path.with_name(f"ray{suffix}.md")

    storage = Path(tempfile.mkdtemp(prefix="l2lray_storage"))
    t_start = time.perf_counter()
    sleeps = [SLEEP_S] + ([args.long_sleep] if args.long_sleep > 0 else [])
    out: dict[str, Any] = {
        "command": command_line("benchmarks/bench_ray.py", argv),
        "machine": machine_info(),
        "config": {
            "t": T,
            "d": 20,
            "variant": "authors",
            "space": f"lr ~ loguniform({LOW:g}, {HIGH:g})",
            "budget": args.budget,
            "repeats": args.repeats,
            "throughput_sleeps_s": sleeps,
            "overhead_trials": args.overhead_trials,
            "quick": args.quick,
        },
    }
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        print("1. throughput", flush=True)
        out["throughput"] = throughput(args.budget, storage, args.repeats, sleeps)
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
        shutil.rmtree(_RAY_TMP, ignore_errors=True)
    print("2. searcher overhead", flush=True)
    out["overhead"] = {}
    for black_box, deterministic in itertools.product((False, True), (None, True)):
        mode = ("black box" if black_box else "gradients") + (
            ", deterministic=True" if deterministic else ""
        )
        out["overhead"][mode] = o = overhead(
            args.overhead_trials, black_box=black_box, deterministic=deterministic
        )
        print(
            f"  [overhead] {mode}: {o['mean_ms_per_trial']:.2f} ms/trial, last suggest "
            f"{o['last_suggest_ms']:.2f} ms, last complete {o['last_complete_ms']:.3f} ms",
            flush=True,
        )
    runs = [row[workers] for row in out["throughput"].values() for workers in ("1", "2")]
    out["warnings"] = sorted({w for run in runs for w in run["warnings"]})
    out["total_s"] = time.perf_counter() - t_start

    text = markdown(out)
    print()
    print(text)
    write_results(out_path, out, text, md_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
