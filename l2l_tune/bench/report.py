"""Summaries of benchmark runs: thresholds, medians and spreads, the headline, files.

All thresholds are on the **un-logged** meta-loss ``F``: a tuner has reached
"1 %" once the best ``F`` it evaluated is ``≤ 1.01·F*`` (``1e-4``: ``≤ 1.0001·F*``),
whatever objective it optimised. Evaluations are counted in inner-run
equivalents (a meta-gradient evaluation at its measured cost) in the order they
finished; wall times are from the start of the tuner's run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._plotting import pyplot, save_figure
from .common import first_index_within, markdown_table
from .recording import TunerRun
from .settings import L2L_TUNERS, TUNER_NAMES
from .tasks import BenchTask

__all__ = [
    "THRESHOLDS",
    "aggregate",
    "curves",
    "headline",
    "headline_text",
    "label_and_save",
    "markdown_report",
    "plot_tuner",
    "run_record",
    "task_section",
    "write_plots",
]

#: JSON suffix -> relative excess of the best meta-loss over ``F*``.
THRESHOLDS: dict[str, float] = {"1pct": 1e-2, "1e-4": 1e-4}

#: Floor of the plotted ratios (``F/F* − 1`` reaches 0 up to rounding).
PLOT_FLOOR = 1e-16

_METRIC_LABEL = {
    "relative_error": "|η−η*|/η* of the chosen η",
    "test_rmse": "test RMSE of the chosen η (new tasks)",
    "test_accuracy": "test accuracy of the chosen η",
}


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _best_path(run: TunerRun) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative cost, end time, best log-loss so far and its step size, per evaluation."""
    cost = np.cumsum([p.cost for p in run.points]) if run.points else np.zeros(0)
    ends = np.array([p.end_s for p in run.points], dtype=float)
    log_loss = np.array([p.log_loss for p in run.points], dtype=float)
    log_loss = np.where(np.isnan(log_loss), np.inf, log_loss)
    best = np.minimum.accumulate(log_loss) if log_loss.size else log_loss
    etas = np.array([p.eta for p in run.points], dtype=float)
    # The step size of the first evaluation that reached the best value so far.
    first_best = [int(np.argmax(log_loss[: i + 1] == value)) for i, value in enumerate(best)]
    return cost, ends, best, etas[first_best]


def run_record(run: TunerRun, task: BenchTask) -> dict[str, Any]:
    """Per-seed results of one tuner run (thresholds, chosen step size, test metric, points)."""
    cost, ends, best, best_eta = _best_path(run)
    excess = best - task.log_f_star  # log(F_best / F*)
    out: dict[str, Any] = {"seed": run.seed}
    for key, threshold in THRESHOLDS.items():
        hit = first_index_within(excess, math.log1p(threshold))
        out[f"evals_to_{key}"] = None if hit is None else float(cost[hit])
        out[f"wall_to_{key}"] = None if hit is None else float(ends[hit])
    if run.points:
        chosen = float(best_eta[-1])
        ratio = float(np.expm1(excess[-1])) if math.isfinite(excess[-1]) else math.inf
        out["chosen_eta"] = chosen
        out["final_meta_loss_ratio"] = ratio
        out["final_eta_rel_error"] = abs(chosen - task.eta_star) / task.eta_star
        out["final_test_metric"] = float(task.test_metric(chosen))
    else:
        out.update(
            chosen_eta=None,
            final_meta_loss_ratio=None,
            final_eta_rel_error=None,
            final_test_metric=None,
        )
    out["evaluations"] = len(run.points)
    out["inner_run_equivalents"] = float(cost[-1]) if cost.size else 0.0
    out["wall_s"] = run.wall_s
    out["extra"] = run.extra
    out["warnings"] = run.warnings
    keys = ("eta", "objective", "log_loss", "cost", "end_s")
    out["points"] = {key: [getattr(p, key) for p in run.points] for key in keys}
    return out


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
    """Median, quartiles, min and max; ``None`` (not reached) counts as ``+inf``."""
    as_float = np.array([math.inf if v is None else float(v) for v in values], dtype=float)
    if as_float.size == 0:
        return {"median": None, "min": None, "max": None, "q1": None, "q3": None, "reached": 0}
    stats = {
        "median": np.median(as_float),  # inf when half or more are not reached
        "min": as_float.min(),
        "max": as_float.max(),
        # Order statistics (method="nearest"): no interpolation between inf and finite entries.
        "q1": np.quantile(as_float, 0.25, method="nearest"),
        "q3": np.quantile(as_float, 0.75, method="nearest"),
    }
    finite = {key: _finite_or_none(float(value)) for key, value in stats.items()}
    return {**finite, "reached": int(np.isfinite(as_float).sum())}


_SUMMARISED = (
    "evals_to_1pct",
    "evals_to_1e-4",
    "wall_to_1pct",
    "wall_to_1e-4",
    "final_test_metric",
    "final_meta_loss_ratio",
    "final_eta_rel_error",
    "wall_s",
    "evaluations",
    "inner_run_equivalents",
)


def aggregate(records: Sequence[dict[str, Any]], *, gradient: bool, cost: float) -> dict[str, Any]:
    """One tuner's entry of ``results.json``: medians, spreads and per-seed data."""
    out: dict[str, Any] = {
        "status": "ok",
        "gradient": gradient,
        "cost_per_evaluation": cost,
        "max_evaluations": records[0]["extra"].get("max_evals") if records else None,
    }
    spread: dict[str, Any] = {}
    for key in _SUMMARISED:
        stats = _stats([r[key] for r in records])
        out[key] = stats.pop("median")
        spread[key] = stats
    out["spread"] = spread
    out["per_seed"] = list(records)
    return out


def headline(tuners: dict[str, Any], budget: int, factor: float = 5.0) -> dict[str, Any]:
    """Does ours reach 1 % in ``factor``× fewer inner-run equivalents than every other tuner?

    "Ours" is ``l2l``, or where it did not run the first of ``optuna-l2l`` and
    ``ray-l2l`` that did (the adapters' suites). "Other" means the tuners not built on
    this library (grid, random, Optuna's and Ray's samplers). With medians over seeds;
    a tuner whose median is "not reached" needs more than the budget, so when no other
    tuner reaches 1 % the ratio is only bounded below by ``budget / ours``.
    """
    ran = [n for n in ("l2l", "optuna-l2l", "ray-l2l") if tuners.get(n, {}).get("status") == "ok"]
    name = ran[0] if ran else "l2l"
    others = [
        name
        for name in TUNER_NAMES
        if name not in L2L_TUNERS and tuners.get(name, {}).get("status") == "ok"
    ]
    out: dict[str, Any] = {
        "question": (
            f"does {name} reach 1% of the optimal meta-objective in >= {factor:g}x fewer "
            "inner-run equivalents than the best other (non-l2l) tuner?"
        ),
        "ours": name,
        "factor": factor,
        "others_compared": others,
    }
    ours = tuners.get(name, {})
    x = ours.get("evals_to_1pct") if ours.get("status") == "ok" else None
    out["l2l_evals_to_1pct"] = x
    reached = {n: tuners[n]["evals_to_1pct"] for n in others if tuners[n]["evals_to_1pct"]}
    best = min(reached, key=lambda n: reached[n]) if reached else None
    out["best_other_tuner"] = best
    out["best_other_evals_to_1pct"] = reached.get(best) if best else None
    out.update(ratio=None, ratio_lower_bound=None, meets_target=None)
    if x is not None and others:
        if best is not None:
            out["ratio"] = reached[best] / x
            out["meets_target"] = bool(out["ratio"] >= factor)
        else:
            out["ratio_lower_bound"] = budget / x
            out["meets_target"] = True if budget / x >= factor else None
    # Per seed: the best other tuner's evaluations over l2l's; where no other tuner
    # reaches 1 %, budget / l2l's is a lower bound of the ratio.
    per_seed: list[float | None] = []
    lower: list[bool] = []
    if ours.get("status") == "ok" and others:
        for i, record in enumerate(ours["per_seed"]):
            mine = record["evals_to_1pct"]
            theirs = [tuners[n]["per_seed"][i]["evals_to_1pct"] for n in others]
            finite = [v for v in theirs if v is not None]
            per_seed.append(None if mine is None else (min(finite) if finite else budget) / mine)
            lower.append(mine is not None and not finite)
    out["per_seed_ratio"] = per_seed
    out["per_seed_ratio_is_lower_bound"] = lower
    if not reached and others:
        # The other tuner that came closest, by its final meta-loss ratio.
        finals = {
            n: tuners[n]["final_meta_loss_ratio"]
            for n in others
            if tuners[n]["final_meta_loss_ratio"] is not None
        }
        out["closest_other_by_final_ratio"] = (
            min(finals, key=lambda n: finals[n]) if finals else None
        )
    return out


# ---------------------------------------------------------------------------- curves and plots
def curves(
    runs: Sequence[TunerRun], tasks: Sequence[BenchTask], budget: int
) -> dict[str, np.ndarray]:
    """Best ``F/F* − 1`` and ``|η−η*|/η*`` on the grid ``x = 1 … budget`` (inner-run equivalents).

    Returns:
        ``{"x": (budget,), "ratio": (seeds, budget), "eta_error": (seeds, budget)}``, with
        ``inf`` before a run's first evaluation.
    """
    x = np.arange(1, budget + 1, dtype=float)
    ratio = np.full((len(runs), budget), np.inf)
    eta_error = np.full((len(runs), budget), np.inf)
    for row, (run, task) in enumerate(zip(runs, tasks, strict=True)):
        cost, _, best, best_eta = _best_path(run)
        if not cost.size:
            continue
        idx = np.searchsorted(cost, x + 1e-9, side="right") - 1
        ok = idx >= 0
        with np.errstate(over="ignore", invalid="ignore"):
            ratio[row, ok] = np.expm1(best[idx[ok]] - task.log_f_star)
            eta_error[row, ok] = np.abs(best_eta[idx[ok]] - task.eta_star) / task.eta_star
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    eta_error = np.where(np.isnan(eta_error), np.inf, eta_error)
    return {"x": x, "ratio": ratio, "eta_error": eta_error}


def write_plots(
    out_dir: Path, series: dict[str, dict[str, np.ndarray]], title: str
) -> dict[str, str]:
    """Median (line) and min–max band over seeds of both curves, one PNG each.

    Args:
        out_dir: Directory to write to.
        series: Tuner name -> :func:`curves` output.
        title: Plot title (task and settings).

    Returns:
        ``{"meta_loss_ratio": file name, "eta_error": file name}``.
    """
    plt = pyplot()

    files = {"meta_loss_ratio": "meta_loss_ratio.png", "eta_error": "eta_error.png"}
    labels = {
        "meta_loss_ratio": ("ratio", "best meta-loss so far: F/F* − 1"),
        "eta_error": ("eta_error", "|η − η*|/η* of the best step size so far"),
    }
    colors = {
        "l2l": "#1f4e9c",
        "l2l-paper": "#7fa7e0",
        "l2l-blackbox": "#2ca02c",
        "ray-l2l": "#17becf",
        "ray-l2l-blackbox": "#9edae5",
        "optuna-l2l": "#393b79",
        "optuna-l2l-blackbox": "#98df8a",
        "grid": "#7f7f7f",
        "random": "#bcbd22",
        "optuna-grid": "#8c564b",
        "optuna-random": "#e377c2",
        "optuna-tpe": "#d62728",
        "optuna-cmaes": "#ff7f0e",
        "optuna-gp": "#9467bd",
        "ray-random": "#c49c94",
        "ray-tpe": "#f7b6d2",
    }
    for key, (field_name, ylabel) in labels.items():
        fig, ax = plt.subplots(figsize=(10.5, 5.5))
        lowest = math.inf
        for i, (name, data) in enumerate(series.items()):
            values = np.maximum(data[field_name], PLOT_FLOOR)
            low, high = values.min(axis=0), values.max(axis=0)
            color = colors.get(name, f"C{i % 10}")
            plot_tuner(ax, data["x"], name, i, np.median(values, axis=0), low, high, color=color)
            if np.isfinite(low).any():
                lowest = min(lowest, float(low[np.isfinite(low)].min()))
        if key == "meta_loss_ratio":
            for level, text in ((1e-2, "1 %"), (1e-4, "0.01 %")):
                ax.axhline(level, color="k", linestyle=":", linewidth=0.8)
                ax.annotate(text, (1.0, level), fontsize=8, va="bottom")
        ax.set_yscale("log")
        # The first evaluations of a diverging step size reach 1e100 and more: cut the
        # axis at 1e3 (ratios) or 10 (step-size errors) so the approach to F* stays visible.
        y_top = 1e3 if key == "meta_loss_ratio" else 10.0
        bottom = max(PLOT_FLOOR, lowest) / 3 if math.isfinite(lowest) else PLOT_FLOOR
        ax.set_ylim(bottom, y_top)
        label_and_save(fig, ax, out_dir / files[key], "inner-run equivalents", ylabel, title)
    return files


def plot_tuner(
    ax: Any,
    x: np.ndarray,
    name: str,
    index: int,
    center: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    *,
    color: str,
    band: bool = True,
) -> None:
    """One tuner's curve: its ``center`` line (solid for this library's tuners, thickest for
    ``l2l``, else a dash style by ``index``) and, with ``band``, the band between ``low`` and
    ``high`` where both are finite."""
    style = "-" if name in L2L_TUNERS else ("--", "-.", ":")[index % 3]
    shown = np.where(np.isfinite(center), center, np.nan)
    ax.plot(x, shown, style, color=color, linewidth=2.4 if name == "l2l" else 1.4, label=name)
    finite = np.isfinite(low) & np.isfinite(high)
    if band and finite.any():
        top = np.where(np.isfinite(high), high, np.nan)
        ax.fill_between(x, np.where(finite, low, np.nan), top, color=color, alpha=0.12, lw=0)


def label_and_save(fig: Any, ax: Any, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    """Label ``ax``, put its legend right of it, grid it, then save and close ``fig``
    (:func:`~l2l_tune._plotting.save_figure`)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, which="major", alpha=0.3)
    save_figure(fig, path)


# ---------------------------------------------------------------------------- markdown
def _fmt(x: float | None, spec: str = ".3g") -> str:
    if x is None:
        return "n.r."
    if isinstance(x, float) and not math.isfinite(x):
        return "∞"
    return format(x, spec)


def _cell(entry: dict[str, Any], key: str, spec: str = ".3g", count: bool = False) -> str:
    spread = entry["spread"][key]
    median = entry[key]
    lo, hi = spread["min"], spread["max"]
    text = f"{_fmt(median, spec)} [{_fmt(lo, spec)}–{_fmt(hi, spec)}]"
    if count:
        text += f" ({spread['reached']}/{len(entry['per_seed'])})"
    return text


def markdown_report(payload: dict[str, Any], plot_prefix: str = "") -> str:
    """``report.md``: settings, headline, the per-tuner table, plots and instances.

    Args:
        payload: The ``results.json`` content.
        plot_prefix: Prefix of the PNG links (e.g. ``"bench_quadratic/"`` from elsewhere).
    """
    s = payload["settings"]
    tuners = payload["tuners"]
    cost = payload["gradient_cost"]
    lines = [
        f"# l2l-tune bench: {payload['task']}",
        "",
        f"Command: `{payload['command']}`",
        "",
        f"* Task: {payload['task_description']}",
        f"* Objective seen by every tuner: {payload['objective_description']}; step size searched "
        f"log-uniformly in [{s['eta_range'][0]:g}, {s['eta_range'][1]:g}]·(1/L), 1/L = the "
        "task's `step_size_scale()`; the meta-gradient tuners start at "
        + (
            "the range's geometric mean"
            if s.get("eta0") is None
            else f"η0 = {s['eta0']:g}/L (`--eta0`)"
        )
        + ".",
        f"* Budget: {payload['budget']} inner-run equivalents per tuner and seed; seeds "
        f"{payload['seed_values']} (each seed changes the task instance and the tuners' seeds).",
        f"* Cost of one meta-gradient evaluation: {cost['cost']:.3g} inner-run equivalents "
        f"({cost['method']}), so the meta-gradient tuners make {payload['gradient_evaluations']} "
        "evaluations.",
        "* F* = the meta-loss at the exact η*: " + payload["optimum_description"] + ".",
        "* Reaching 1 % / 0.01 %: the best un-logged meta-loss evaluated so far is ≤ 1.01·F* / "
        "≤ 1.0001·F*; counted in inner-run equivalents in the order evaluations finished; wall "
        "time from the start of the tuner's run (framework start-up included).",
        f"* Final test metric: {_METRIC_LABEL.get(payload['metric_name'], payload['metric_name'])}"
        " (chosen η = the best evaluated one).",
        f"* Machine: {payload['machine']}. Total wall time: {payload['total_wall_s']:.0f} s.",
        "",
        "## Headline",
        "",
        payload["headline_text"],
        "",
        "## Results",
        "",
        "Median [min–max] over seeds; (k/K) = seeds that reached the threshold within the "
        "budget; n.r. = not reached (a median is n.r. when half or more of the seeds fail).",
        "",
    ]
    header = [
        "tuner",
        "evals (max)",
        "to 1 % (inner-run eq.)",
        "to 0.01 %",
        "wall to 1 % (s)",
        "wall to 0.01 % (s)",
        "final F/F*−1",
        "final \\|η−η*\\|/η*",
        payload["metric_name"],
        "wall (s)",
    ]
    # The quadratic's test metric is the relative error itself: one column for both.
    duplicate = payload["metric_name"] == "relative_error"
    if duplicate:
        header.remove(payload["metric_name"])
    rows, skipped = [], []
    for name in TUNER_NAMES:
        entry = tuners.get(name)
        if entry is None:
            continue
        if entry["status"] != "ok":
            skipped.append(f"* `{name}`: {entry['status']}")
            continue
        label = f"**{name}**" if name == "l2l" else name
        row = [
            label,
            f"{_fmt(entry['evaluations'], '.0f')} ({entry['max_evaluations']})",
            _cell(entry, "evals_to_1pct", ".3g", count=True),
            _cell(entry, "evals_to_1e-4", ".3g", count=True),
            _cell(entry, "wall_to_1pct", ".2g"),
            _cell(entry, "wall_to_1e-4", ".2g"),
            _cell(entry, "final_meta_loss_ratio", ".2e"),
            _cell(entry, "final_eta_rel_error", ".2e"),
            _cell(entry, "final_test_metric", ".4g"),
            _cell(entry, "wall_s", ".2g"),
        ]
        if duplicate:
            del row[-3]
        rows.append(row)
    lines.append(markdown_table(header, rows))
    if skipped:
        lines += ["", "Skipped:", "", *skipped]
    plots = payload.get("plots") or {}
    if plots:
        lines += [
            "",
            "## Curves",
            "",
            "Median over seeds (line) and min–max band, against inner-run equivalents.",
            "",
            f"![best meta-loss ratio]({plot_prefix}{plots['meta_loss_ratio']})",
            "",
            f"![step-size error]({plot_prefix}{plots['eta_error']})",
        ]
    lines += [
        "",
        "## Instances",
        "",
        f"| seed | 1/L | η* | η*·L | F* | {payload['metric_name']} at η* |",
        "|---|---|---|---|---|---|",
    ]
    for inst in payload["instances"]:
        scale = inst["step_size_scale"]
        lines.append(
            f"| {inst['seed']} | {scale:.4g} | {inst['eta_star']:.10g} | "
            f"{inst['eta_star'] / scale:.5g} | {inst['f_star']:.10g} | "
            f"{inst['test_metric_at_eta_star']:.4g} |"
        )
    notes = payload.get("notes") or []
    if notes:
        lines += ["", "## Notes", "", *[f"* {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def task_section(payload: dict[str, Any], plot_prefix: str, title: str | None = None) -> str:
    """:func:`markdown_report` one heading level down, for a page that gathers several tasks.

    Args:
        payload: The ``results.json`` content.
        plot_prefix: Path of the results directory as seen from the page (``"bench_quadratic/"``).
        title: Section title (default: the report's).
    """
    lines = markdown_report(payload, plot_prefix).splitlines()
    if title is not None:
        lines[0] = f"# {title}"
    return "\n".join("#" + line if line.startswith("#") else line for line in lines) + "\n"


def headline_text(head: dict[str, Any], budget: int) -> str:
    """One paragraph answering the headline question."""
    x = head["l2l_evals_to_1pct"]
    factor = head["factor"]
    ours = f"`{head.get('ours', 'l2l')}`"
    if x is None:
        return (
            f"{ours} was not run or did not reach 1 % of F* in the median seed: no ratio "
            f"(question: {head['question']})"
        )
    if head["ratio"] is not None:
        verdict = "yes" if head["meets_target"] else "no"
        text = (
            f"**{verdict}**: {ours} reaches 1 % of F* in {x:.3g} inner-run equivalents (median), "
            f"the best other tuner (`{head['best_other_tuner']}`) in "
            f"{head['best_other_evals_to_1pct']:.3g}: ratio **{head['ratio']:.2f}×** "
            f"(target ≥ {factor:g}×)."
        )
        if not head["meets_target"]:
            text += f" Short of the target by a factor {factor / head['ratio']:.2f}."
        return text
    bound = head["ratio_lower_bound"]
    if not head["others_compared"]:
        return f"{ours} reaches 1 % of F* in {x:.3g} inner-run equivalents; no other tuner was run."
    verdict = "yes" if head["meets_target"] else "undetermined"
    return (
        f"**{verdict}**: {ours} reaches 1 % of F* in {x:.3g} inner-run equivalents (median); no "
        f"other tuner reaches 1 % in the median seed within the budget of {budget}, so the "
        f"ratio is > {bound:.2f}× (a lower bound: budget / {x:.3g}; target ≥ {factor:g}×)."
        + (
            ""
            if head["meets_target"]
            else f" The budget is too small to show {factor:g}×: it would take a budget of "
            f"{factor * x:.0f} in which no other tuner reaches 1 %."
        )
    )
