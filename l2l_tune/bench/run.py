"""``run_bench``: every selected tuner on every seed's task instance, then the report files."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._plotting import plotting_missing
from .common import dumps_json, machine_line, text_table, to_jsonable
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
from .settings import GRADIENT_TUNERS, RAY_TUNERS, BenchSettings
from .tasks import BenchTask, make_task, measure_gradient_cost
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


def _console_table(payload: dict[str, Any]) -> str:
    rows = [["tuner", "to 1%", "to 0.01%", payload["metric_name"], "wall s"]]
    for name, entry in payload["tuners"].items():
        if entry["status"] != "ok":
            rows.append([name, "skipped", "", "", ""])
            continue

        def fmt(x: float | None, spec: str = ".3g") -> str:
            return "n.r." if x is None else format(x, spec)

        rows.append(
            [
                name,
                fmt(entry["evals_to_1pct"]),
                fmt(entry["evals_to_1e-4"]),
                fmt(entry["final_test_metric"], ".4g"),
                fmt(entry["wall_s"], ".2f"),
            ]
        )
    return text_table(rows[0], rows[1:])


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

    say = _messenger(log)

    start = time.perf_counter()
    out_dir = s.out_dir
    with _torch_threads(s.torch_threads if s.task == "mnist" else None):
        return _run(s, start, out_dir, command, say)


def _messenger(log: Callable[[str], None] | None) -> Callable[[str], None]:
    """``log``, or a printer to standard error when ``log`` is ``None``."""
    if log is not None:
        return log
    return lambda message: print(message, file=sys.stderr)


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """PyTorch's intra-op threads set to ``n`` inside (``None``: untouched)."""
    if n is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _run(
    s: BenchSettings,
    start: float,
    out_dir: Path,
    command: str | None,
    say: Callable[[str], None],
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    assert s.budget is not None
    budget = s.budget
    skipped: dict[str, str] = {}
    runnable: list[str] = []
    for name in s.tuners:
        reason = missing_dependency(name)
        if reason is None:
            runnable.append(name)
        else:
            skipped[name] = reason
            say(reason)
    seeds = s.seed_values
    bar = tqdm(
        total=len(seeds) * (len(runnable) + 1),
        desc=f"bench {s.task}",
        unit="run",
        disable=not s.progress,
        file=sys.stderr,
    )
    try:
        tasks: list[BenchTask] = []
        for seed in seeds:
            bar.set_postfix_str(f"seed {seed}: instance and optimum", refresh=True)
            tasks.append(make_task(s, seed))
            bar.update()
        if s.grad_cost is None:
            first = tasks[0]
            repeats = 3 if s.task == "mnist" else 7
            etas = [float(e) for e in np.geomspace(first.low, first.high, 7)[1:-1]]
            cost_info = measure_gradient_cost(
                first.task, first.t, first.split, etas, repeats=repeats
            )
            cost_info["method"] = (
                f"measured on seed {first.seed}: fastest of {repeats} timings of "
                "value_and_gradient ÷ meta_objective at each of "
                f"{len(cost_info['etas'])} step sizes, median over them, at least 1"
            )
        else:
            cost_info = {"cost": float(s.grad_cost), "method": "given by --grad-cost"}
        cost = float(cost_info["cost"])
        n_grad = evaluations_allowed("l2l", budget, cost)
        if n_grad < 1 and any(n in GRADIENT_TUNERS for n in runnable):
            raise ValueError(
                f"--budget {budget} is below the cost of one meta-gradient evaluation "
                f"({cost:.3g} inner-run equivalents): raise --budget"
            )
        runs: dict[str, list[TunerRun]] = {}
        need_ray = any(n in RAY_TUNERS for n in runnable)
        session: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if need_ray:
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
            tuners[name] = {
                "status": skipped[name],
                "evals_to_1pct": None,
                "evals_to_1e-4": None,
                "final_test_metric": None,
                "wall_s": None,
            }
            continue
        records = [run_record(run, task) for run, task in zip(runs[name], tasks, strict=True)]
        tuners[name] = aggregate(
            records, gradient=name in GRADIENT_TUNERS, cost=cost if name in GRADIENT_TUNERS else 1.0
        )
        series[name] = curves(runs[name], tasks, budget)
    head = headline(tuners, budget)
    notes = _notes(tuners, skipped)
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
        "budget": budget,
        "seeds": len(seeds),
        "seed_values": seeds,
        "command": command
        or f"l2l-tune bench --task {s.task} --budget {budget} --seeds {len(seeds)}",
        "settings": s.to_dict(),
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
    payload["total_wall_s"] = time.perf_counter() - start
    payload = to_jsonable(payload, nonfinite="null")
    (out_dir / "results.json").write_text(dumps_json(payload, nonfinite="null") + "\n")
    (out_dir / "report.md").write_text(markdown_report(payload))
    print(_console_table(payload))
    print(payload["headline_text"])
    files = [out_dir / name for name in ("report.md", "results.json", *plots.values())]
    print("wrote " + ", ".join(str(f) for f in files))
    return payload


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
        counts: dict[str, int] = {}
        for record in entry["per_seed"]:
            for message, n in record["warnings"].items():
                counts[message] = counts.get(message, 0) + n
        for message, n in sorted(counts.items(), key=lambda kv: -kv[1])[:3]:
            notes.append(f"`{name}` warned {n}× (over seeds): {message}")
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
