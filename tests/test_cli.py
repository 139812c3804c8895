"""The ``l2l-tune`` command line: help, the tune subcommand, JSON and plot output, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from l2l_tune.cli import build_parser, main


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    """``l2l-tune tune --help`` documents each option the issue names."""
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--task",
        "--t",
        "--sigma",
        "--n-train",
        "--n-valid",
        "--split",
        "--objective",
        "--meta-optimizer",
        "--eta0",
        "--seed",
        "--json",
        "--plot",
    ):
        assert option in text


def test_top_level_help_names_the_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    """``l2l-tune --help`` lists ``tune``."""
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "tune" in capsys.readouterr().out


def test_quadratic_fig1_setting_reaches_eta_star(tmp_path: Path) -> None:
    """The Fig 1 command converges to η* within 1e-3 in ≤ 40 evaluations (issue's target)."""
    out = tmp_path / "q.json"
    plot = tmp_path / "q.png"
    code = main(
        [
            "tune",
            "--task",
            "quadratic",
            "--t",
            "80",
            "--eta0",
            "0.1",
            "--json",
            str(out),
            "--plot",
            str(plot),
            "--no-progress",
        ]
    )
    assert code == 0
    payload = json.loads(out.read_text())
    (result,) = payload["results"]
    assert result["n_evals"] <= 40
    assert (
        abs(result["step_size"] - result["optimal_step_size"]) <= 1e-3 * result["optimal_step_size"]
    )
    assert result["converged"] is True
    assert len(result["history"]) == result["n_evals"]
    assert plot.stat().st_size > 10_000


def test_least_squares_both_splits_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The main job (small size) reports TbT and TbV with step size, objective and test RMSE."""
    out = tmp_path / "ls.json"
    code = main(
        [
            "tune",
            "--task",
            "least-squares",
            "--d",
            "100",
            "--m",
            "20",
            "--n-train",
            "25",
            "--n-valid",
            "25",
            "--json",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "TbT(50)" in printed and "TbV(25+25)" in printed
    results = {r["split"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"train", "valid"}
    for result in results.values():
        for key in ("step_size", "meta_objective", "test_rmse", "n_evals"):
            assert key in result
    assert results["train"]["step_size"] > 5 * results["valid"]["step_size"]


def test_paper_meta_optimizer_from_cli(capsys: pytest.CaptureFixture[str]) -> None:
    """``--meta-optimizer paper`` runs the projected meta-GD for the requested budget."""
    code = main(
        [
            "tune",
            "--task",
            "quadratic",
            "--meta-optimizer",
            "paper",
            "--max-evals",
            "50",
            "--eta0",
            "0.1",
            "--no-progress",
        ]
    )
    assert code == 0
    assert " 50 " in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tune", "--task", "quadratic", "--split", "valid"], "split"),
        (["tune", "--task", "quadratic", "--t", "0"], "t must be"),
        (["tune", "--task", "quadratic", "--eta0", "-1"], "eta0"),
        (
            [
                "tune",
                "--task",
                "least-squares",
                "--split",
                "valid",
                "--n-valid",
                "0",
                "--d",
                "10",
                "--m",
                "2",
                "--n-train",
                "5",
            ],
            "n-valid",
        ),
        (["tune", "--task", "least-squares", "--sigma", "0", "--d", "10"], "sigma"),
        (["tune", "--task", "least-squares", "--n-train", "0", "--d", "10"], "--n-train must"),
    ],
)
def test_bad_arguments_exit_2_with_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad values exit with status 2 and a message naming the argument."""
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--no-progress"])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_choice_rejected_by_parser() -> None:
    """argparse rejects an unknown task name."""
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["tune", "--task", "mnist-xl"])
    assert exc.value.code == 2


def test_console_script_is_installed() -> None:
    """The ``l2l-tune`` entry point runs as a module too."""
    done = subprocess.run(
        [sys.executable, "-m", "l2l_tune.cli", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert "l2l-tune" in done.stdout
