"""Benchmark of the Ray Tune integration (``l2l_tune.integrations.ray``).

Task: the quadratic of the paper's Fig 1, ``Quadratic.random(20, seed, variant="authors")``,
t = 80 inner GD steps, search space ``{"lr": tune.loguniform(1e-4, 1.0)}``, trainable
``task_trainable(q, 80)``. The trainable reports ``"loss"`` (the plain last loss
``f(w_t)``) and ``"loss_grad"`` (its derivative in the step size).

Two measurements, in one Ray session
(``ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)``), with
``reuse_actors=True``, ``verbose=0`` and the experiment storage in a temporary directory:

1. **Throughput.** ``MetaGradientSearch(metric="loss", mode="min", eta0=0.1)`` runs the same
   budget of trials (default 30) with ``max_concurrent_trials`` 1 and then 2. The script
   records the wall time of ``tuner.fit()``, trials/s and meta-steps/s. With
   ``tasks_per_step=1`` a meta-step is one trial; the meta-step count is read from the
   searcher after the run. It reports the 2-worker/1-worker ratio, and also the rate
   between the first trial's start and the last trial's end (the "in-run" rate, which
   leaves out Tune's start-up and tear-down). This runs twice: on the bare trainable
   (well under a millisecond of compute, so Ray's overhead dominates) and on the same
   trainable with ``time.sleep(0.5)`` added to each trial (so the compute dominates).
   A third row uses a 2 s sleep (``--long-sleep``). With ``reuse_actors=True``, Ray
   reuses the finished trial's actor for the next pending trial and drops the second
   actor it was starting. Trials shorter than a worker's start-up (about 1–1.5 s here)
   therefore often ran one at a time, even with ``max_concurrent_trials=2``; whether the
   second worker came up in time varied from run to run. Each row records
   the peak number of trials running at once and the number of worker processes. A small
   warm-up run comes first and is discarded.
2. **Searcher overhead.** ``suggest()`` and ``on_trial_complete()`` are driven directly, with
   no Ray cluster, for 1,000 trials. Results are the closed-form quadratic values, which
   are computed outside the timed region. Sequential: one trial in flight at a time. Both
   modes are timed: gradient and black box. The script reports the mean ms per trial
   overall, and the per-call cost of each method at the start (trials 1–50) and at the
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
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
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
from l2l_tune.bench.common import dumps_json, machine_info, machine_line  # noqa: E402

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


def optimum(q: Quadratic) -> tuple[float, float]:
    """``(η*, f*)``: the optimal step size at t = 80 and the plain last loss there."""
    eta_star = q.optimal_step_size(T)
    return eta_star, q.meta_objective(eta_star, T, log=False)


# ---------------------------------------------------------------------------- Ray runs
class CompletionRecorder(tune.Callback):
    """Driver-side record of trial starts and completions, in the order Tune saw them."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.start_time: dict[str, float] = {}
        self.completed: list[tuple[str, float, float | None, float | None]] = []
        self.pids: set[int] = set()
        self.errored: list[str] = []
        self.t_first_start: float | None = None

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Remember the start order (and the time of the first start)."""
        if self.t_first_start is None:
            self.t_first_start = time.perf_counter()
        self.started.append(trial.trial_id)
        self.start_time[trial.trial_id] = time.perf_counter()

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Remember (trial id, time, loss, lr) in completion order."""
        result = trial.last_result or {}
        if isinstance(result.get("pid"), int):
            self.pids.add(result["pid"])
        loss = result.get("loss")
        lr = (trial.config or {}).get("lr")
        self.completed.append(
            (
                trial.trial_id,
                time.perf_counter(),
                None if loss is None else float(loss),
                None if lr is None else float(lr),
            )
        )

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Remember errored trials."""
        self.errored.append(trial.trial_id)

    @property
    def peak_concurrency(self) -> int:
        """Most trials running at once (from the driver's start and completion times)."""
        events = [(t, 1) for t in self.start_time.values()]
        events += [(c[1], -1) for c in self.completed]
        running = peak = 0
        for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
            running += delta
            peak = max(peak, running)
        return peak

    @property
    def completed_in_start_order(self) -> bool:
        """Whether trials completed in the order they started (FIFO)."""
        ids = [c[0] for c in self.completed]
        return ids == self.started[: len(ids)]


@dataclass
class RunRecord:
    """One ``tuner.fit()``: its timing and the trials in completion order."""

    name: str
    trials: int
    workers: int
    wall_s: float
    in_run_s: float
    losses: list[float]
    lrs: list[float]
    errors: int
    completed_in_start_order: bool
    peak_concurrency: int
    worker_processes: int
    meta_steps: int | None = None
    caught_warnings: list[str] = field(default_factory=list)


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
    recorder = CompletionRecorder()
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
            name=name, storage_path=str(storage), verbose=0, callbacks=[recorder]
        ),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        grid = tuner.fit()
        end = time.perf_counter()
    wall = end - start
    # Cross-check the callback's record against the ResultGrid.
    frame = grid.get_dataframe()
    if len(frame) != budget or len(recorder.completed) + len(recorder.errored) != budget:
        print(
            f"  !! {name}: ResultGrid has {len(frame)} rows, callback saw "
            f"{len(recorder.completed)} completed + {len(recorder.errored)} errored "
            f"(budget {budget})",
            flush=True,
        )
    last_end = recorder.completed[-1][1] if recorder.completed else end
    first = recorder.t_first_start if recorder.t_first_start is not None else start
    losses = [c[2] if c[2] is not None else math.nan for c in recorder.completed]
    lrs = [c[3] if c[3] is not None else math.nan for c in recorder.completed]
    meta_steps = search.n_meta_steps if isinstance(search, MetaGradientSearch) else None
    messages = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    return RunRecord(
        name=name,
        trials=len(recorder.completed),
        workers=workers,
        wall_s=wall,
        in_run_s=last_end - first,
        losses=losses,
        lrs=lrs,
        errors=int(grid.num_errors),
        completed_in_start_order=recorder.completed_in_start_order,
        peak_concurrency=recorder.peak_concurrency,
        worker_processes=len(recorder.pids),
        meta_steps=meta_steps,
        caught_warnings=messages,
    )


# ---------------------------------------------------------------------------- 1. throughput
def throughput(budget: int, storage: Path, repeats: int, sleeps: list[float]) -> dict[str, Any]:
    """Trials/s and meta-steps/s with 1 and 2 concurrent trials, for the bare trainable and
    for the trainable plus each ``time.sleep`` in ``sleeps``."""
    q = quadratic(0)
    bare = task_trainable(q, T)
    # Warm-up (discarded): the first fit pays for worker start-up and imports.
    run_tuner(
        bare,
        MetaGradientSearch(metric="loss", mode="min", eta0=0.1),
        budget=4,
        workers=2,
        name="warmup",
        storage=storage,
    )
    variants: list[tuple[str, Callable[[dict[str, Any]], None]]] = [("bare", bare)]
    variants += [(f"sleep {s:g} s", sleepy(bare, s)) for s in sleeps]
    out: dict[str, Any] = {}
    for label, trainable in variants:
        runs: dict[int, list[RunRecord]] = {1: [], 2: []}
        for rep in range(repeats):
            for workers in (1, 2):
                search = MetaGradientSearch(metric="loss", mode="min", eta0=0.1)
                record = run_tuner(
                    trainable,
                    search,
                    budget=budget,
                    workers=workers,
                    name=f"tp-{label.replace(' ', '')}-w{workers}-r{rep}",
                    storage=storage,
                )
                runs[workers].append(record)
                print(
                    f"  [throughput] {label:>11} workers={workers} rep={rep}: "
                    f"{record.trials} trials, {record.meta_steps} meta-steps, "
                    f"fit {record.wall_s:.2f} s ({record.trials / record.wall_s:.2f} trials/s), "
                    f"in-run {record.in_run_s:.2f} s, peak concurrency "
                    f"{record.peak_concurrency}, {record.worker_processes} worker process(es), "
                    f"errors {record.errors}",
                    flush=True,
                )
        row: dict[str, Any] = {}
        for workers, records in runs.items():
            wall = statistics.median(r.wall_s for r in records)
            in_run = statistics.median(r.in_run_s for r in records)
            trials = records[0].trials
            steps = records[0].meta_steps
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
                "warnings": sorted({w for r in records for w in r.caught_warnings}),
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
    search = MetaGradientSearch(
        metric="loss",
        mode="min",
        eta0=0.1,
        grad_metric="none" if black_box else None,
        deterministic=deterministic,
    )
    search.set_search_properties("loss", "min", param_space())
    suggest_s = np.empty(n)
    complete_s = np.empty(n)
    lrs = np.empty(n)
    for i in range(n):
        trial_id = f"trial_{i:05d}"
        t0 = time.perf_counter()
        config = search.suggest(trial_id)
        t1 = time.perf_counter()
        if config is None:
            raise RuntimeError(f"suggest returned None at trial {i}")
        lr = float(config["lr"])
        value, grad = q.value_and_gradient(lr, T, log=False)  # not timed
        result = {"loss": value, "loss_grad": grad}
        t2 = time.perf_counter()
        search.on_trial_complete(trial_id, result)
        t3 = time.perf_counter()
        suggest_s[i] = t1 - t0
        complete_s[i] = t3 - t2
        lrs[i] = lr
    total = suggest_s + complete_s
    w = min(window, n)
    eta_star, _ = optimum(q)
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
def markdown(out: dict[str, Any]) -> str:
    """The markdown report."""
    m = out["machine"]
    cfg = out["config"]
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
        "| trainable | workers | trials | meta-steps | fit (s) | trials/s | meta-steps/s "
        "| in-run trials/s | peak | procs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in out["throughput"].items():
        for workers in ("1", "2"):
            r = row[workers]
            steps = "?" if r["meta_steps"] is None else str(r["meta_steps"])
            mps = "?" if r["meta_steps_per_s"] is None else f"{r['meta_steps_per_s']:.2f}"
            lines.append(
                f"| {label} | {workers} | {r['trials']} | {steps} | {r['wall_s']:.2f} | "
                f"{r['trials_per_s']:.2f} | {mps} | {r['in_run_trials_per_s']:.2f} | "
                f"{r['peak_concurrency']} | {r['worker_processes']} |"
            )
        lines.append(
            f"| {label} | **2 / 1** | | | | **{row['ratio_2_over_1']:.2f}×** | | "
            f"{row['in_run_ratio_2_over_1']:.2f}× | | |"
        )
    lines += [
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
        "| mode | mean ms/trial | first: suggest / complete (ms) | last: suggest / complete (ms) "
        "| last ms/trial | total (s) | finished meta-steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, o in out["overhead"].items():
        lines.append(
            f"| {mode} | {o['mean_ms_per_trial']:.2f} | {o['first_suggest_ms']:.3f} / "
            f"{o['first_complete_ms']:.3f} | {o['last_suggest_ms']:.2f} / "
            f"{o['last_complete_ms']:.3f} | {o['last_per_trial_ms']:.2f} | {o['total_s']:.1f} | "
            f"{o['meta_steps']} |"
        )
    lines += [
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
        "command": "python benchmarks/bench_ray.py"
        + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv)),
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
    for black_box in (False, True):
        for deterministic in (None, True):
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
    warned: set[str] = set()
    for row in out["throughput"].values():
        for w in ("1", "2"):
            warned.update(row[w]["warnings"])
    out["warnings"] = sorted(warned)
    out["total_s"] = time.perf_counter() - t_start

    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(dumps_json(out) + "\n")
    text = markdown(out)
    md_path.write_text(text)
    print()
    print(text)
    print(f"wrote {out_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
