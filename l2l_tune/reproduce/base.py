"""The registry of reproduction targets, their shared scaffolding, and what every target writes.

A *target* reproduces one figure or theorem of Wang, Yuan, Wu and Ge, "Guarantees
for Tuning the Step Size using a Learning-to-Learn Approach" (ICML 2021). It is a
function ``run(ctx) -> TargetReport`` registered under a name with :func:`register`
that states its settings (a :class:`TargetSettings` dataclass: the paper's values and
what ``--quick`` changes), its measurement (``ctx.bar`` for progress) and its
:class:`Check` list; :func:`figure_row`, :func:`label_axes` and
:meth:`RunContext.save_figure` draw its figures.

.. code-block:: python

    @register("fig4", title="...", reference="Fig 4, Section 5", claim="...")
    def fig4(ctx: RunContext) -> TargetReport:
        ...  # measure, plot into ctx.out_dir, return the numbers and the checks

Every module of :mod:`l2l_tune.reproduce` whose name does not start with ``_``
(besides ``base`` and ``cli``) is imported when the package is, so a new target
is one more module; heavy dependencies (PyTorch, data sets) should be imported
inside the target function so that ``l2l-tune reproduce --list`` stays fast.

:func:`run_target` times a target, decides its verdict from the report's
explicit :class:`Check` results (``SUPPORTED`` when every check passed, never
hard-coded), and writes ``<name>.json`` and ``<name>.txt`` beside the target's
figures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .._plotting import pyplot, save_figure
from .._validation import check_choice
from ..bench.common import dumps_json, to_jsonable

__all__ = [
    "OPTION_SPECS",
    "TARGETS",
    "Check",
    "OptionSpec",
    "Outcome",
    "RunContext",
    "Target",
    "TargetReport",
    "TargetSettings",
    "checkpointed",
    "figure_row",
    "label_axes",
    "register",
    "register_option",
    "run_target",
]

#: Verdict strings of the text and JSON outputs.
SUPPORTED = "SUPPORTED"
NOT_SUPPORTED = "NOT SUPPORTED"

_Settings = TypeVar("_Settings", bound="TargetSettings")


@dataclass(frozen=True)
class TargetSettings:
    """Base of a target's settings: the paper's values as field defaults.

    A subclass is a frozen dataclass whose ``QUICK`` names the fields that ``--quick``
    changes (small sizes, seconds); :meth:`for_run` picks one or the other.
    """

    QUICK: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def for_run(cls: type[_Settings], quick: bool) -> _Settings:
        """The paper's settings, or those with ``QUICK`` applied when ``quick``."""
        return replace(cls(), **cls.QUICK) if quick else cls()


@dataclass(frozen=True)
class Check:
    """One explicit test of a paper's claim on measured numbers.

    Attributes:
        name: What is checked, in words (including the threshold used).
        passed: Whether the measured numbers satisfy it.
        detail: The measured numbers the decision was made on.
    """

    name: str
    passed: bool
    detail: str


@dataclass
class TargetReport:
    """What a target measured.

    Attributes:
        setting: One paragraph: the instance, sizes and protocol actually run.
        measured: Short lines stating the measured result.
        checks: The explicit checks that decide the verdict.
        settings: The parameters of the run (JSON-friendly).
        results: The measured numbers (JSON-friendly; NumPy values are converted).
        figures: Paths of the PNG files the target wrote.
        notes: Caveats (skipped references, deviations from the paper's protocol).
    """

    setting: str
    measured: list[str]
    checks: list[Check]
    settings: dict[str, Any]
    results: dict[str, Any]
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def supported(self) -> bool:
        """True when there is at least one check and every check passed."""
        return bool(self.checks) and all(c.passed for c in self.checks)


@dataclass(frozen=True)
class RunContext:
    """How a target is run.

    Attributes:
        out_dir: Folder for the target's PNG, JSON and TXT files (created if needed).
        quick: Small sizes (seconds) instead of the paper's settings.
        full: The paper's whole schedule where a target's default is cut to fit a
            CPU (fig4/fig5's meta-training: for a GPU).
        seed: Random seed of the instances (test tasks use ``seed + 10_000``).
        progress: Show tqdm progress bars on stderr.
        options: Target-specific options from the command line (e.g. ``variant``);
            a missing key means "the target's default".
    """

    out_dir: Path
    quick: bool = False
    full: bool = False
    seed: int = 0
    progress: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)

    def option(self, name: str, default: Any) -> Any:
        """The option ``name``, or ``default`` when it was not given.

        Raises:
            ValueError: naming the option, for a value outside its described choices.
        """
        value = self.options.get(name)
        if value is None:
            return default
        spec = OPTION_SPECS.get(name)
        if spec is not None and spec.choices is not None:
            check_choice(value, name, spec.choices)
        return value

    def bar(self, total: int, desc: str) -> Any:
        """A tqdm progress bar (disabled with ``progress=False``), to use as a context manager."""
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False)

    def figure_path(self, stem: str) -> Path:
        """``out_dir / f"{stem}.png"``, with ``out_dir`` created."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / f"{stem}.png"

    def save_figure(self, fig: Any, stem: str) -> Path:
        """Lay out, save and close ``fig`` as ``out_dir / f"{stem}.png"``; return the path."""
        return save_figure(fig, self.figure_path(stem))


def figure_row(panels: int, width: float = 12.0) -> tuple[Any, Any]:
    """A Matplotlib figure of ``panels`` axes side by side, 4.2 in high: ``(fig, axes)``."""
    return pyplot().subplots(1, panels, figsize=(width, 4.2))


def label_axes(
    ax: Any,
    title: str,
    xlabel: str,
    ylabel: str | None = None,
    *,
    log: str = "",
    fontsize: float = 8,
    **legend: Any,
) -> None:
    """Title, label and scale ``ax``, then draw its legend.

    Args:
        ax: Matplotlib axes.
        title: The axes' title.
        xlabel: The x axis' label.
        ylabel: The y axis' label (``None``: none).
        log: The axes on a log scale: ``""``, ``"x"``, ``"y"`` or ``"xy"``.
        fontsize: The legend's font size.
        **legend: Further keyword arguments of ``ax.legend`` (``ncol``…).

    Raises:
        ValueError: for another ``log``.
    """
    check_choice(log, "log", ("", "x", "y", "xy"))
    ax.set(title=title, xlabel=xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if "x" in log:
        ax.set_xscale("log")
    if "y" in log:
        ax.set_yscale("log")
    ax.legend(fontsize=fontsize, **legend)


@dataclass(frozen=True)
class Target:
    """A registered reproduction target.

    Attributes:
        name: Command-line name (``fig1``, ``thm3``, ...).
        title: One line describing the experiment.
        reference: Where the claim is in the paper (figure, theorem, section).
        claim: The paper's claim, in a sentence or two.
        run: ``run(ctx) -> TargetReport``.
        options: Names of the :attr:`RunContext.options` the target reads.
        full: Whether the target has a schedule beyond its default (``--full``).
    """

    name: str
    title: str
    reference: str
    claim: str
    run: Callable[[RunContext], TargetReport]
    options: tuple[str, ...] = ()
    full: bool = False


#: Every registered target, by name (filled by importing :mod:`l2l_tune.reproduce`).
TARGETS: dict[str, Target] = {}


@dataclass(frozen=True)
class OptionSpec:
    """How a target option appears on the command line (see :func:`register_option`).

    Attributes:
        name: The :attr:`RunContext.options` key; the flag is ``--name`` with ``_`` → ``-``.
        help: Help text.
        choices: Accepted values (``None``: any string).
    """

    name: str
    help: str
    choices: tuple[str, ...] | None = None


#: Command-line descriptions of target options, by name. An option that a target
#: declares without a spec still becomes a plain string flag.
OPTION_SPECS: dict[str, OptionSpec] = {}


def checkpointed(
    path: Path, fingerprint: Mapping[str, Any], compute: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    """A part of a long target, read back from ``path`` when an earlier run finished it.

    The part's result is written to ``path`` (JSON, beside its fingerprint) when
    ``compute`` returns, so a target started again with the same ``--out`` (after a
    kill, or to rerun only its plots and checks) skips what was done. A file whose
    fingerprint differs (other settings, seed or inputs), or that is not such a JSON
    file, is recomputed and replaced.
    What the fingerprint cannot see is the code: delete the folder after changing it.

    Args:
        path: The part's JSON file.
        fingerprint: Everything the result depends on (settings, seed, a checksum of
            learned parameters), JSON-able.
        compute: Computes the result (a JSON-able dict) when it cannot be read back.

    Returns:
        The result (as JSON gives it back when read: tuples become lists) and whether
        it was read back.
    """
    expected = to_jsonable(fingerprint)
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            saved = None  # not written by this function (its writes are atomic): recompute
        if isinstance(saved, dict) and saved.get("fingerprint") == expected:
            return saved["result"], True
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(dumps_json({"fingerprint": expected, "result": result}) + "\n")
    partial.replace(path)
    return result, False


def register_option(name: str, *, help: str, choices: Iterable[str] | None = None) -> None:
    """Describe the target option ``name`` for ``l2l-tune reproduce --<name>``.

    Raises:
        ValueError: if ``name`` is not an identifier.
    """
    if not name.isidentifier():
        raise ValueError(f"option name must be an identifier, got {name!r}")
    OPTION_SPECS[name] = OptionSpec(name, help, None if choices is None else tuple(choices))


def register(
    name: str,
    *,
    title: str,
    reference: str,
    claim: str,
    options: Iterable[str] = (),
    full: bool = False,
) -> Callable[[Callable[[RunContext], TargetReport]], Callable[[RunContext], TargetReport]]:
    """Decorator registering ``run(ctx) -> TargetReport`` as the target ``name``.

    Raises:
        ValueError: if ``name`` is empty, is ``"all"``, or is already registered.
    """
    if not name or not name.isidentifier() or name == "all":
        raise ValueError(f"target name must be an identifier other than 'all', got {name!r}")

    def decorate(
        run: Callable[[RunContext], TargetReport],
    ) -> Callable[[RunContext], TargetReport]:
        if name in TARGETS:
            raise ValueError(f"target {name!r} is already registered")
        TARGETS[name] = Target(name, title, reference, claim, run, tuple(options), full)
        return run

    return decorate


@dataclass(frozen=True)
class Outcome:
    """The result of :func:`run_target`.

    Attributes:
        target: The target run.
        report: Its report.
        seconds: Wall time of the run (measurement and plots).
        text: The text written to ``<name>.txt`` (and printed by the CLI).
        files: The files written (figures, JSON, TXT).
    """

    target: Target
    report: TargetReport
    seconds: float
    text: str
    files: list[Path]

    @property
    def supported(self) -> bool:
        """The verdict (see :attr:`TargetReport.supported`)."""
        return self.report.supported


def _command(target: Target, ctx: RunContext) -> str:
    parts = ["l2l-tune", "reproduce", target.name]
    if ctx.quick:
        parts.append("--quick")
    if ctx.full:
        parts.append("--full")
    if ctx.seed:
        parts += ["--seed", str(ctx.seed)]
    for key in target.options:
        if ctx.options.get(key) is not None:
            parts += [f"--{key.replace('_', '-')}", str(ctx.options[key])]
    parts += ["--out", str(ctx.out_dir)]
    return " ".join(parts)


def format_text(target: Target, report: TargetReport, seconds: float, files: list[Path]) -> str:
    """The human-readable summary: claim, setting, measured result, checks, verdict."""
    verdict = SUPPORTED if report.supported else NOT_SUPPORTED
    lines = [
        f"{target.name}: {target.title}",
        f"Paper ({target.reference}): {target.claim}",
        f"Setting: {report.setting}",
        "Measured:",
        *(f"  - {line}" for line in report.measured),
        "Checks:",
        *(f"  [{'pass' if c.passed else 'FAIL'}] {c.name}: {c.detail}" for c in report.checks),
    ]
    if report.notes:
        lines += ["Notes:", *(f"  - {note}" for note in report.notes)]
    lines.append(f"Verdict: {verdict}")
    names = ", ".join(str(f) for f in files)
    lines.append(f"({seconds:.1f} s; files: {names})")
    return "\n".join(lines)


def run_target(target: Target, ctx: RunContext) -> Outcome:
    """Run ``target``, write ``<name>.json`` and ``<name>.txt`` into ``ctx.out_dir``.

    The verdict is ``SUPPORTED`` exactly when every :class:`Check` of the report
    passed; it is written to the text and as ``"supported"`` to the JSON.

    Returns:
        The :class:`Outcome` (the report, the text, the files written).
    """
    from .. import __version__

    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = target.run(ctx)
    seconds = time.perf_counter() - start
    json_path = ctx.out_dir / f"{target.name}.json"
    txt_path = ctx.out_dir / f"{target.name}.txt"
    files = [*report.figures, json_path, txt_path]
    text = format_text(target, report, seconds, files)
    payload = {
        "target": target.name,
        "title": target.title,
        "reference": target.reference,
        "claim": target.claim,
        "command": _command(target, ctx),
        "quick": ctx.quick,
        "full": ctx.full,
        "seed": ctx.seed,
        "version": __version__,
        "seconds": seconds,
        "setting": report.setting,
        "settings": report.settings,
        "measured": report.measured,
        "checks": [asdict(c) for c in report.checks],
        "notes": report.notes,
        "supported": report.supported,
        "verdict": SUPPORTED if report.supported else NOT_SUPPORTED,
        "figures": [f.name for f in report.figures],
        "results": report.results,
    }
    json_path.write_text(dumps_json(payload) + "\n")
    txt_path.write_text(text + "\n")
    return Outcome(target, report, seconds, text, files)
