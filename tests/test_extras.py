"""The lean install: the core runs without any optional package, and each command that needs
one either stops with the ``pip install`` line of its extra or skips what needs it, saying why.

Each case hides packages in a fresh interpreter behind a meta-path finder that refuses them
(as if they were not installed), so it runs on the full test environment.
"""

from __future__ import annotations

import configparser
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from l2l_tune.bench.tuners import TUNER_PACKAGES, USER_TUNER_PACKAGES

REPO = Path(__file__).resolve().parents[1]

#: Every package of an extra the core must run without.
OPTIONAL = (
    "matplotlib",
    "torch",
    "sklearn",
    "optuna",
    "cmaes",
    "optunahub",
    "ray",
    "prodigyopt",
    "schedulefree",
    "mpmath",
)


def _run_hidden(hidden: tuple[str, ...], code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter in which the ``hidden`` packages cannot be imported."""
    prelude = textwrap.dedent(
        f"""
        import sys

        class _Hidden:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {hidden!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (hidden)", name=name)
                return None

        sys.meta_path.insert(0, _Hidden())
        """
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _cli(hidden: tuple[str, ...], argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    code = f"from l2l_tune.cli import main\nsys.exit(main({argv!r}))\n"
    return _run_hidden(hidden, code, cwd)


def _extras() -> dict[str, set[str]]:
    """setup.cfg's extras: name → the distribution names it lists."""
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    extras = {}
    for name, value in parser["options.extras_require"].items():
        lines = [line.strip() for line in value.splitlines() if line.strip()]
        extras[name] = {line.split(">")[0].split("=")[0].split("[")[0] for line in lines}
    return extras


#: Import name → distribution name where they differ.
DISTRIBUTION = {"sklearn": "scikit-learn"}


def test_core_install_requires_no_optional_package() -> None:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    required = {
        line.strip().split(">")[0]
        for line in parser["options"]["install_requires"].splitlines()
        if line.strip()
    }
    assert required == {"numpy", "scipy", "tqdm", "threadpoolctl"}
    assert (REPO / "l2l_tune" / "py.typed").is_file()
    assert "py.typed" in parser["options.package_data"]["l2l_tune"]


def test_main_job_and_api_run_without_optional_packages(tmp_path: Path) -> None:
    code = """
    import l2l_tune, l2l_tune.meta, l2l_tune.integrations
    from l2l_tune.cli import main
    rc = main(["tune", "--task", "quadratic", "--t", "40", "--json", "out.json"])
    loaded = sorted(n for n in ("matplotlib", "torch", "optuna", "ray") if sys.modules.get(n))
    print("LOADED", loaded)
    sys.exit(rc)
    """
    result = _run_hidden(OPTIONAL, code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED []" in result.stdout
    assert (tmp_path / "out.json").is_file()


@pytest.mark.parametrize(
    "argv",
    [
        ["tune", "--task", "quadratic", "--plot", "out.png"],
        ["reproduce", "fig1", "--quick", "--out", "fig1"],
    ],
    ids=["tune --plot", "reproduce"],
)
def test_plotting_commands_name_the_plot_extra_before_running(
    tmp_path: Path, argv: list[str]
) -> None:
    result = _cli(("matplotlib",), argv, tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "needs matplotlib" in result.stderr
    assert "pip install 'l2l-tune[plot]'" in result.stderr
    assert not any(tmp_path.iterdir()), "stopped before writing anything"


def test_pyplot_raises_import_error_naming_the_extra() -> None:
    code = """
    from l2l_tune._plotting import pyplot
    try:
        pyplot()
    except ImportError as exc:
        print("MESSAGE", exc)
    """
    result = _run_hidden(("matplotlib",), code, REPO)
    assert "MESSAGE plotting needs matplotlib" in result.stdout, result.stderr[-3000:]
    assert "l2l-tune[plot]" in result.stdout


CASES = [
    (tuner, package, extra)
    for table in (TUNER_PACKAGES, USER_TUNER_PACKAGES)
    for tuner, packages in table.items()
    for package, extra in packages
]


@pytest.mark.parametrize(("tuner", "package", "extra"), CASES)
def test_each_bench_tuner_dependency_is_in_its_extra_and_all(
    tuner: str, package: str, extra: str
) -> None:
    extras = _extras()
    distribution = DISTRIBUTION.get(package, package)
    assert distribution in extras[extra], f"{package} missing from [{extra}]"
    assert distribution in extras["all"], f"{package} missing from [all]"


def test_missing_dependency_is_none_when_everything_is_installed() -> None:
    from l2l_tune.bench.tuners import missing_dependency

    for tuner, _, _ in CASES:
        if tuner in TUNER_PACKAGES:  # the user-study packages are in [bench]: maybe absent
            assert missing_dependency(tuner) is None


def test_every_extra_is_in_all_except_test() -> None:
    extras = _extras()
    everything = set().union(*(v for k, v in extras.items() if k not in ("test", "all")))
    assert everything <= extras["all"]
    assert everything <= extras["test"]


def test_bench_skips_a_tuner_without_its_package_and_draws_no_plot(tmp_path: Path) -> None:
    argv = [
        "bench",
        "--task",
        "quadratic",
        "--tuners",
        "l2l,optuna-cmaes,optuna-random",
        "--seeds",
        "1",
        "--budget",
        "10",
        "--out",
        "out",
        "--no-progress",
    ]
    result = _cli(("matplotlib", "cmaes"), argv, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "optuna-cmaes skipped: needs cmaes (pip install 'l2l-tune[optuna]')" in report
    assert "Plots not drawn" in report and "l2l-tune[plot]" in report
    assert not list((tmp_path / "out").glob("*.png"))
    assert "optuna-random" in result.stdout and "l2l " in result.stdout
