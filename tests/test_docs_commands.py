"""Docs that cannot go stale: README's commands and every example, run in a fresh virtualenv.

The slow tests build one new virtual environment per module with the README's own install
lines, run verbatim from the repository root:

1. the Quick start's first command (``pip install -e . && l2l-tune tune --task least-squares``:
   the core install and the main job, before any extra is installed);
2. the Quick start's second command up to its ``&& python -m pytest`` (installing the test
   extras; the test run itself is not repeated here, it would recurse into this suite);
3. ``pip install -e ".[all]"``, which the examples need.

Then every other ``l2l-tune`` command of README's ```` ```bash ```` blocks runs in that venv
(each in its own temporary working directory, so ``out/...`` and ``out.json`` land there),
except those that need MNIST files, a GPU or the paper's full schedule, and the measured long
runs in :data:`LONG_RUNS`: each of those is collected as a visible skip with its reason.
Every script in ``examples/`` runs with the venv's Python. A missing install step therefore
fails this suite instead of a user.

The fast tests check that README's ```` ```python ```` blocks compile and that every command of
its bash blocks is either run here or skipped with a reason (so nothing escapes silently).

Commands and scripts are parsed and globbed, never copied here; only the skip reasons are.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
EXAMPLES = sorted((REPO / "examples").glob("*.py"))

#: Seconds allowed for one install step (torch and ray are large wheels).
INSTALL_TIMEOUT = 1800
#: Seconds allowed for one README command or example script.
RUN_TIMEOUT = 600
#: Characters of stdout and stderr shown when a command fails.
TAIL = 4000

#: The command of the Quick start that runs the tests: it is cut here, only its installs run.
PYTEST_TAIL = re.compile(r"\s*&&\s*python -m pytest\b.*$")

#: ``(pattern, reason)``: README commands that cannot run offline on a CPU in a test.
NEEDS_MORE_THAN_A_TEST: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"--data-dir\s+DIR\b"), "needs the MNIST files (--data-dir DIR): not offline"),
    (re.compile(r"--device\s+cuda\b"), "needs a CUDA device"),
    (re.compile(r"--full\b"), "--full is the paper's schedule: hours on a GPU"),
)

#: README commands measured too long for a test (wall time on the shared 2-core machine under
#: a load average of about 7, in the project's own venv). Each must still be in README
#: (checked by ``test_long_runs_are_readme_commands``); a new long command is not skipped
#: by default: it runs, and fails on the timeout until it is listed here.
LONG_RUNS: dict[str, str] = {
    "l2l-tune tune --task mnist --dataset digits": (
        "long run: measured 400 s (TbT and TbV, 30 training runs each)"
    ),
    "l2l-tune tune --task mnist --dataset digits --optimizer adamw --tune lr,weight_decay "
    "--start lr=1e-4,weight_decay=1e-2": (
        "long run: still running after 13 min when stopped (AdamW, two hyperparameters)"
    ),
    "l2l-tune reproduce fig1 --out out/fig1": (
        "long run: measured 440 s (3000 meta-steps, float32 backprop contrast)"
    ),
    "l2l-tune reproduce all --quick": (
        "long run: includes fig4 --quick (494 s measured in docs/REPRODUCTION.md) and fig5 "
        "--quick (~2 min); tests/test_reproduce.py runs each quick target"
    ),
    "l2l-tune bench --task quadratic --budget 60 --seeds 5 --out out/bench": (
        "long run: measured 415 s (13 tuners x 5 seeds)"
    ),
    "l2l-tune bench --task digits-user --seeds 4 --budget 30 --out out/user": (
        "long run (estimated, not run here): about 1,000 digits training runs (a 30-point x "
        "8-seed grid, then 4 studies of 30 runs per tuner); docs/user_study.md measured 14 min "
        "for its 16-seed version"
    ),
}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    lang: str
    body: str
    line: int  # 1-based line of the block's first body line


@dataclass(frozen=True)
class Result:
    """What one command did."""

    command: str
    cwd: Path
    returncode: int | None  # None: killed on the timeout
    stdout: str
    stderr: str
    seconds: float

    def report(self) -> str:
        """The command, its return code and the tails of its output, for a failure message."""
        code = "killed on timeout" if self.returncode is None else str(self.returncode)
        return (
            f"command: {self.command}\ncwd: {self.cwd}\nreturn code: {code} "
            f"after {self.seconds:.0f} s\n"
            f"--- stdout (last {TAIL} characters) ---\n{self.stdout[-TAIL:]}\n"
            f"--- stderr (last {TAIL} characters) ---\n{self.stderr[-TAIL:]}"
        )


@dataclass(frozen=True)
class FreshVenv:
    """A virtual environment made by README's install lines, and how to run in it."""

    path: Path
    env: dict[str, str]
    scratch: Path  # a short directory for Ray's sockets and temporary files
    core: Result  # the Quick start's first command: core install and the main job


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced block of ``text`` (```` ```lang ```` ... ```` ``` ````), in order."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = re.fullmatch(r"```([\w+-]*)\s*", lines[i])
        if opening is None:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not re.fullmatch(r"```\s*", lines[end]):
            end += 1
        blocks.append(Block(opening.group(1), "\n".join(lines[i + 1 : end]), i + 2))
        i = end + 1
    return blocks


def strip_comment(line: str) -> str:
    """``line`` without a trailing shell comment (a ``#`` outside quotes, after a blank)."""
    quote = ""
    escaped = False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def shell_commands(block: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments and blanks dropped."""
    commands: list[str] = []
    pending = ""
    for line in block.splitlines():
        code = strip_comment(line)
        if code.endswith("\\"):
            pending += code[:-1].strip() + " "
            continue
        command = (pending + code.strip()).strip()
        pending = ""
        if command:
            commands.append(command)
    if pending.strip():
        commands.append(pending.strip())
    return commands


def readme_blocks(lang: str) -> list[Block]:
    """README's fenced blocks of one language."""
    return [
        block for block in fenced_blocks(README.read_text(encoding="utf-8")) if block.lang == lang
    ]


def readme_commands() -> list[str]:
    """Every command of README's bash blocks, in order."""
    return [command for block in readme_blocks("bash") for command in shell_commands(block.body)]


def install_commands() -> tuple[str, str]:
    """The Quick start's set-up commands: core install + main job, then the test extras.

    The second is returned without its ``&& python -m pytest ...`` part.
    """
    pips = [command for command in readme_commands() if command.startswith("pip install")]
    cores = [command for command in pips if not PYTEST_TAIL.search(command)]
    tests = [command for command in pips if PYTEST_TAIL.search(command)]
    assert cores and tests, f"README's bash blocks lost the Quick start's install lines: {pips}"
    return cores[0], PYTEST_TAIL.sub("", tests[0])


def skip_reason(command: str) -> str | None:
    """Why a README ``l2l-tune`` command is not run here (every reason), or None to run it."""
    reasons = [reason for pattern, reason in NEEDS_MORE_THAN_A_TEST if pattern.search(command)]
    if command in LONG_RUNS:
        reasons.append(LONG_RUNS[command])
    return "; ".join(reasons) or None


def cli_params() -> list[object]:
    """README's ``l2l-tune`` commands as parameters; skipped ones carry their reason."""
    params: list[object] = []
    for command in readme_commands():
        if not command.startswith("l2l-tune "):
            continue
        reason = skip_reason(command)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(command, marks=marks, id=command.removeprefix("l2l-tune ")))
    return params


def main_job_table() -> tuple[str, list[str]]:
    """README's "What the main job prints": the table's header and its rows' run names."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## What the main job prints", 1)[1]
    block = fenced_blocks(section)[0].body.splitlines()
    return block[0], [row.split()[0] for row in block[1:] if row.strip()]


def squeeze(text: str) -> str:
    """``text`` with runs of whitespace made one blank."""
    return " ".join(text.split())


def run(command: str | list[str], cwd: Path, env: dict[str, str], timeout: float) -> Result:
    """Run ``command`` (a string goes to ``bash -c`` verbatim); on the timeout kill its group."""
    argv = ["bash", "-c", command] if isinstance(command, str) else command
    start = time.monotonic()
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        returncode: int | None = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        returncode = None
    shown = command if isinstance(command, str) else " ".join(command)
    return Result(shown, cwd, returncode, stdout, stderr, time.monotonic() - start)


def venv_env(venv: Path, scratch: Path) -> dict[str, str]:
    """This process's environment with ``venv`` activated and nothing of the test's own venv.

    The running interpreter's ``bin`` is taken off ``PATH`` (its ``l2l-tune`` must not stand in
    for a missing one), ``PYTHONPATH`` and user site-packages are off, and Ray and
    ``tempfile`` write under ``scratch``. ``HOME`` stays: pip reads its user configuration
    and keeps its cache there (see ``fresh_venv`` for the runs).
    """
    own_bins = {str(Path(sys.prefix) / "bin"), str(Path(sys.executable).parent)}
    path = [
        entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry not in own_bins
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(
        PATH=os.pathsep.join([str(venv / "bin"), *path]),
        VIRTUAL_ENV=str(venv),
        PYTHONNOUSERSITE="1",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_TMPDIR=str(scratch / "ray"),
        TMPDIR=str(scratch / "tmp"),
    )
    return env


def require(result: Result, what: str) -> None:
    """Fail with the command's report unless it exited 0 (its time is printed either way)."""
    print(f"{what}: {result.command} [{result.returncode}, {result.seconds:.0f} s]")
    if result.returncode != 0:
        pytest.fail(f"{what} failed in a fresh venv\n{result.report()}", pytrace=False)


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshVenv]:
    """A new venv made by README's install lines (run verbatim from the repository root).

    The Quick start's first command (core install and main job) is recorded, not asserted here,
    so that ``test_quick_start_main_job`` reports it; the test extras and ``.[all]`` must install.
    """
    extras = configparser.ConfigParser()
    extras.read(REPO / "setup.cfg", encoding="utf-8")
    declared = (
        set(extras["options.extras_require"])
        if extras.has_section("options.extras_require")
        else set()
    )
    assert {"test", "all"} <= declared, f"setup.cfg's extras are {sorted(declared)}"
    core, test_extras = install_commands()

    root = tmp_path_factory.mktemp("docs_venv")
    # Ray's unix sockets (<RAY_TMPDIR>/ray/session_<date>_<pid>/sockets/...) must stay under
    # 107 bytes, more than a pytest tmp path allows: Ray and TMPDIR get a short mkdtemp.
    scratch = Path(tempfile.mkdtemp(prefix="l2ldocs"))
    (scratch / "ray").mkdir(exist_ok=True)
    (scratch / "tmp").mkdir(exist_ok=True)
    (scratch / "home").mkdir(exist_ok=True)
    venv = root / "venv"
    env = venv_env(venv, scratch)
    try:
        require(run([sys.executable, "-m", "venv", str(venv)], root, env, 300), "python -m venv")
        core_result = run(core, REPO, env, INSTALL_TIMEOUT)
        require(run(test_extras, REPO, env, INSTALL_TIMEOUT), "the Quick start's test extras")
        require(run('pip install -e ".[all]"', REPO, env, INSTALL_TIMEOUT), "the [all] extra")
        found = shutil.which("l2l-tune", path=env["PATH"])
        assert found == str(venv / "bin" / "l2l-tune"), f"l2l-tune on the venv's PATH: {found}"
        # The commands and examples get a private HOME: Ray writes ~/.ray/auth_token.
        yield FreshVenv(venv, {**env, "HOME": str(scratch / "home")}, scratch, core_result)
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # ~2 GB with torch and ray
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.mark.slow
def test_quick_start_main_job(fresh_venv: FreshVenv) -> None:
    """The core install and the main job succeed before any extra is installed, and print
    README's table (its header and run names, from "What the main job prints")."""
    result = fresh_venv.core
    require(result, "the Quick start's core install and main job")
    header, runs = main_job_table()
    printed = [squeeze(line) for line in result.stdout.splitlines()]
    assert squeeze(header) in printed, f"README's header is not printed\n{result.report()}"
    for name in runs:
        assert any(line.startswith(name + " ") for line in printed), (
            f"README's run {name!r} is not printed\n{result.report()}"
        )


@pytest.mark.slow
@pytest.mark.parametrize("command", cli_params())
def test_readme_command(command: str, fresh_venv: FreshVenv, tmp_path: Path) -> None:
    """A README ``l2l-tune`` command, verbatim, exits 0 (relative outputs go to ``tmp_path``)."""
    require(run(command, tmp_path, fresh_venv.env, RUN_TIMEOUT), "README command")


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=[script.name for script in EXAMPLES])
def test_example(script: Path, fresh_venv: FreshVenv, tmp_path: Path) -> None:
    """An example script exits 0 with the venv's Python (working directory ``tmp_path``)."""
    python = str(fresh_venv.path / "bin" / "python")
    require(run([python, str(script)], tmp_path, fresh_venv.env, RUN_TIMEOUT), "example")


def test_readme_python_blocks_compile() -> None:
    """Every ```python block of README compiles (errors name README's own line numbers)."""
    blocks = readme_blocks("python")
    assert blocks, "README has no ```python block"
    for block in blocks:
        compile("\n" * (block.line - 1) + block.body, str(README), "exec")


def test_every_readme_command_is_run_or_skipped_with_a_reason() -> None:
    """Each command of README's bash blocks is an install line or an ``l2l-tune`` command, so
    the slow tests above run it or skip it visibly; the Quick start's install lines exist."""
    commands = readme_commands()
    core, test_extras = install_commands()
    assert "pip install -e ." in core and "l2l-tune tune" in core, core
    assert test_extras.startswith("pip install") and ".[test]" in test_extras, test_extras
    set_up = [c for c in commands if c == core or PYTEST_TAIL.sub("", c) == test_extras]
    assert len(set_up) == 2, f"README's install lines: {set_up}"
    others = [c for c in commands if c not in set_up and not c.startswith("l2l-tune ")]
    assert not others, f"README commands neither run nor skipped by this module: {others}"
    assert len(cli_params()) >= 2, commands


def test_long_runs_are_readme_commands() -> None:
    """Every skip of :data:`LONG_RUNS` names a command still in README (no stale skips)."""
    stale = sorted(set(LONG_RUNS) - set(readme_commands()))
    assert not stale, f"LONG_RUNS names commands that README no longer has: {stale}"


def test_shell_command_parsing() -> None:
    """Continuation lines join, trailing comments go, quoted ``#`` and ``&&`` stay."""
    block = (
        "# a comment line\n"
        "l2l-tune a --x 1 \\\n"
        "    --y 2        # what y is\n"
        "\n"
        'pip install "a[#b]" && python -m pytest -m "not slow"  # tests\n'
    )
    assert shell_commands(block) == [
        "l2l-tune a --x 1 --y 2",
        'pip install "a[#b]" && python -m pytest -m "not slow"',
    ]
    assert PYTEST_TAIL.sub("", shell_commands(block)[1]) == 'pip install "a[#b]"'
