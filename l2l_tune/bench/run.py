"""``run_bench``: every selected tuner on every seed's task instance, then the report files."""

from __future__ import annotations

import collections
import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._plotting import plotting_missing
from .common import dumps_json, machine_line, text_table, to_jsonable, torch_threads
from .recording import TunerRun
from .report import (
    aggregate,
    curves,
    headline,
    headline_text,
    markdown_report,
    run_record,
    write_plots,
)
from .settings import GRADIENT_TUNERS, RAY_TUNERS, BenchSettings, RunSettingsMixin
from .tasks import BenchTask, gradient_cost, make_task
from .tuners import evaluations_allowed, missing_dependency, run_tuner

__all__ = ["run_bench"]


def _task_description(s: BenchSettings) -> str:
    if s.task == "quadratic":
        return (
            f"`Quadratic.random(d={s.d}, seed, variant={s.variant!r})`: GD on f(w) = ½wᵀHw for "
            f"t = {s.t} steps; meta-loss F(η) = f(w_t)"
        )
    which = "validation (train-by-validation, TbV)" if s.split == "valid" else "training (TbT)"
    if s.task == "least-squares":
        return (
            f"`LeastSquares(d={s.d}, sigma={s.sigma:g}).sample(m={s.m}, n_train={s.n_train}, "
            f"n_valid={s.n_valid or 0}, seed)`: GD for t = {s.t} steps (40σ truncation); "
            f"meta-loss F(η) = mean over the m tasks of the {which} loss; test RMSE on "
            f"{s.m_test} new tasks trained on n_train + n_valid samples"
        )
    return (
        f"`MNIST(dataset={s.dataset!r}).sample(m={s.m}, n_train={s.n_train}, "
        f"n_valid={s.n_valid or 0}, label_noise={s.label_noise:g}, seed)`: plain SGD for "
        f"t = {s.t} steps; meta-loss F(η) = mean over the m networks of the {which} loss"
    )


def _objective_description(s: BenchSettings) -> str:
    if s.objective == "log":
        return "(1/t)·log F(η) (the paper's log meta-objective, Theorem 4)"
    return "F(η), the last loss (`--objective last`); `optuna-gp` sees log F (it overflows on F)"


#: The per-tuner entries of the console table (``None`` for a skipped tuner), with formats.
_CONSOLE_KEYS = {
    "evals_to_1pct": ".3g",
    "evals_to_1e-4": ".3g",
    "final_test_metric": ".4g",
    "wall_s": ".2f",
}


def _console_summary(payload: dict[str, Any]) -> str:
    """The console table of every tuner, then the headline."""
    rows = []
    for name, entry in payload["tuners"].items():
        if entry["status"] != "ok":
            rows.append([name, "skipped", "", "", ""])
            continue
        values = [(entry[key], spec) for key, spec in _CONSOLE_KEYS.items()]
        rows.append([name, *("n.r." if x is None else format(x, spec) for x, spec in values)])
    header = ["tuner", "to 1%", "to 0.01%", payload["metric_name"], "wall s"]
    return text_table(header, rows) + "\n" + payload["headline_text"]


def run_bench(
    settings: BenchSettings,
    *,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and write ``report.md``, ``results.json`` and the plots.

    Args:
        settings: The run's settings (resolved here).
        command: The command line to record in the report.
        log: Where to print messages (default: standard error).

    Returns:
        The ``results.json`` content.

    Raises:
        ValueError: for bad settings (naming the option), or a budget below the cost
            of one meta-gradient evaluation.
    """
    s = settings.resolved()
    start = time.perf_counter()
    with torch_threads(s.torch_threads if s.task == "mnist" else None):
        return _run(s, start, command, log or _print_to_stderr)


def _print_to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _runnable(
    tuners: Sequence[str], say: Callable[[str], None]
) -> tuple[list[str], dict[str, str]]:
    """The tuners whose packages are importable, and why each other one is skipped (said)."""
    skipped = {name: reason for name in tuners if (reason := missing_dependency(name))}
    for reason in skipped.values():
        say(reason)
    return [name for name in tuners if name not in skipped], skipped


def _progress_bar(s: RunSettingsMixin, total: int, unit: str) -> Any:
    """The run's tqdm bar on standard error (disabled by ``--no-progress``)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=f"bench {s.task}",
        unit=unit,
        disable=not s.progress,
        file=sys.stderr,
    )


def _gradient_evaluations(budget: int, cost: float, *, needed: bool, what: str, unit: str) -> int:
    """Meta-gradient evaluations within ``budget`` at ``cost`` each; a ValueError naming
    ``--budget`` when ``needed`` and not one fits (``what``: an evaluation, in ``unit``s)."""
    n = evaluations_allowed("l2l", budget, cost)
    if n < 1 and needed:
        raise ValueError(
            f"--budget {budget} is below the cost of one {what} ({cost:.3g} {unit} "
            "equivalents): raise --budget"
        )
    return n


def _header(s: RunSettingsMixin, command: str | None) -> dict[str, Any]:
    """The entries of ``results.json`` that follow ``task``: budget, seeds, command, settings."""
    seeds = s.seed_values
    return {
        "budget": s.budget,
        "seeds": len(seeds),
        "seed_values": seeds,
        "command": command
        or f"l2l-tune bench --task {s.task} --budget {s.budget} --seeds {len(seeds)}",
        "settings": s.to_dict(),
    }


def _warning_notes(
    name: str, records: Sequence[dict[str, Any]], *, top: int, over: str
) -> list[str]:
    """The ``top`` most frequent warnings of a tuner's runs (``over``: what they were)."""
    counts: collections.Counter[str] = collections.Counter()
    for record in records:
        counts.update(record["warnings"])
    return [f"`{name}` warned {n}× (over {over}): {m}" for m, n in counts.most_common(top)]


def _write_results(
    payload: dict[str, Any],
    out_dir: Path,
    start: float,
    markdown: Callable[[dict[str, Any]], str],
    console: Callable[[dict[str, Any]], str],
) -> dict[str, Any]:
    """Write ``results.json`` (non-finite numbers as null) and ``report.md``, print the
    ``console`` summary and the files written; return the JSON content."""
    payload["total_wall_s"] = time.perf_counter() - start
    payload = to_jsonable(payload, nonfinite="null")
    (out_dir / "results.json").write_text(dumps_json(payload, nonfinite="null") + "\n")
    (out_dir / "report.md").write_text(markdown(payload))
    print(console(payload))
    files = [out_dir / name for name in ("report.md", "results.json", *payload["plots"].values())]
    print("wrote " + ", ".join(str(f) for f in files))
    return payload


def _run(
    s: BenchSettings, start: float, command: str | None, say: Callable[[str], None]
) -> dict[str, Any]:
    assert s.budget is not None
    budget = s.budget
    runnable, skipped = _runnable(s.tuners, say)
    seeds = s.seed_values
    bar = _progress_bar(s, len(seeds) * (len(runnable) + 1), "run")
    try:
        tasks: list[BenchTask] = []
        for seed in seeds:
            bar.set_postfix_str(f"seed {seed}: instance and optimum", refresh=True)
            tasks.append(make_task(s, seed))
            bar.update()
        first = tasks[0]
        cost_info = gradient_cost(
            first.task,
            first.t,
            first.split,
            first.low,
            first.high,
            given=s.grad_cost,
            repeats=3 if s.task == "mnist" else 7,
            measured_on=f"seed {first.seed}",
        )
        cost = float(cost_info["cost"])
        n_grad = _gradient_evaluations(
            budget,
            cost,
            needed=any(n in GRADIENT_TUNERS for n in runnable),
            what="meta-gradient evaluation",
            unit="inner-run",
        )
        runs: dict[str, list[TunerRun]] = {}
        session: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if any(n in RAY_TUNERS for n in runnable):
            from .raytune import RaySession

            session = RaySession(
                num_cpus=max(2, s.ray_workers),
                workers=s.ray_workers,
                torch_threads=s.torch_threads,
                trial_seconds=s.ray_trial_seconds,
            )
        with session as ray_session:
            for name in runnable:
                runs[name] = []
                for task in tasks:
                    bar.set_postfix_str(f"{name}, seed {task.seed}", refresh=True)
                    runs[name].append(
                        run_tuner(name, task, budget, cost, seed=task.seed, ray_session=ray_session)
                    )
                    bar.update()
    finally:
        bar.close()

    tuners: dict[str, Any] = {}
    series: dict[str, dict[str, np.ndarray]] = {}
    for name in s.tuners:
        if name in skipped:
            tuners[name] = {"status": skipped[name], **dict.fromkeys(_CONSOLE_KEYS)}
            continue
        records = [run_record(run, task) for run, task in zip(runs[name], tasks, strict=True)]
        tuners[name] = aggregate(
            records, gradient=name in GRADIENT_TUNERS, cost=cost if name in GRADIENT_TUNERS else 1.0
        )
        series[name] = curves(runs[name], tasks, budget)
    head = headline(tuners, budget)
    notes = _notes(tuners, skipped)
    out_dir = s.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    title = (
        f"{s.task}: {_objective_description(s).split(' (')[0]}, budget {budget}, {len(seeds)} seeds"
    )
    no_plot = plotting_missing("drawing the bench's plots")
    if no_plot is not None:
        notes.append(f"Plots not drawn: {no_plot}.")
        say(no_plot)
    plots = write_plots(out_dir, series, title) if series and no_plot is None else {}
    payload: dict[str, Any] = {
        "task": s.task,
        **_header(s, command),
        "task_description": _task_description(s),
        "objective": s.objective,
        "objective_description": _objective_description(s),
        "eta_range": {
            "units": "step_size_scale() = 1/L of each instance",
            "low": s.eta_range[0],
            "high": s.eta_range[1],
            "scale": "log-uniform",
        },
        "optimum_description": str(tasks[0].info.get("optimum_method", "")),
        "metric_name": tasks[0].metric_name,
        "metric_higher_is_better": tasks[0].higher_is_better,
        "gradient_cost": cost_info,
        "gradient_evaluations": n_grad,
        "instances": [task.summary() for task in tasks],
        "tuners": tuners,
        "headline": head,
        "headline_text": headline_text(head, budget),
        "plots": plots,
        "machine": machine_line(),
        "notes": notes,
    }
    return _write_results(payload, out_dir, start, markdown_report, _console_summary)


def _notes(tuners: dict[str, Any], skipped: dict[str, str]) -> list[str]:
    notes = [
        "`optuna-grid` evaluates the same log-spaced points as `grid`, in GridSampler's "
        "shuffled order (`grid` goes from the smallest step size up).",
        "`ray-*` wall times include Ray Tune's start-up and tear-down of each Tuner run "
        "(about 1–3 s here); trials run one at a time unless `--ray-workers` is raised, and "
        "overlap only when a trial outlasts the searcher's turnaround (`--ray-trial-seconds`).",
        "Non-finite numbers are written as null in results.json.",
    ]
    notes.extend(skipped.values())
    for name, entry in tuners.items():
        if entry.get("status") != "ok":
            continue
        notes += _warning_notes(name, entry["per_seed"], top=3, over="seeds")
        errors = sum(
            int(r["extra"].get("errored_trials", 0) or r["extra"].get("failed_trials", 0))
            for r in entry["per_seed"]
        )
        if errors:
            notes.append(f"`{name}`: {errors} trials failed or errored (over seeds)")
        peaks = [
            r["extra"]["peak_concurrency"]
            for r in entry["per_seed"]
            if "peak_concurrency" in r["extra"]
        ]
        if peaks:
            out_of_order = sum(
                not r["extra"].get("completed_in_start_order", True) for r in entry["per_seed"]
            )
            notes.append(
                f"`{name}`: peak number of trials running at once {max(peaks)}; trials finished "
                f"out of the order they started in {out_of_order} of {len(peaks)} seeds."
            )
    return notes
