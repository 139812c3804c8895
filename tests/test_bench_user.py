"""``l2l-tune bench --task digits-user``: a user's study, end to end at a tiny size."""

from __future__ import annotations

import configparser
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from l2l_tune.bench import tuners as bench_tuners  # noqa: E402
from l2l_tune.bench import user_study  # noqa: E402
from l2l_tune.bench.settings import USER_TUNER_NAMES  # noqa: E402
from l2l_tune.bench.tuners import USER_TUNER_PACKAGES  # noqa: E402
from l2l_tune.bench.user_study import (  # noqa: E402
    ExpectedLossGrid,
    UserStudySettings,
    lr_range_test,
    make_instance,
)
from l2l_tune.cli import main  # noqa: E402

#: A tiny digits study: 20 SGD steps on 100 + 100 samples, a 6-point grid of 2 seeds.
TINY = (
    "--task digits-user --budget 6 --seeds 2 --t 20 --n-train 100 --n-valid 100 "
    "--grid-points 6 --grid-seeds 2 --no-progress"
).split()


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def run_cli(args: list[str]) -> dict[str, Any]:
    """Run ``l2l-tune bench`` with ``args`` and return its results.json."""
    assert main(["bench", *args]) == 0
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "results.json").read_text())


def test_digits_user_end_to_end(tmp_path: Path) -> None:
    """Every tuner runs through the CLI and the three files are written; regrets are ≥ 0;
    the hypergradient runs are charged --grad-cost each."""
    out = tmp_path / "u"
    results = run_cli([*TINY, "--grad-cost", "2", "--out", str(out)])
    for name in ("results.json", "report.md", "regret.png"):
        assert (out / name).stat().st_size > 0
    assert results["kind"] == "user-study"
    assert tuple(results["tuners"]) == USER_TUNER_NAMES
    grid = results["expected_loss_grid"]
    assert len(grid["eta"]) == 6 and grid["seeds"] == 2
    assert grid["optimum_loss"] == min(grid["smoothed"])
    for name, entry in results["tuners"].items():
        if entry["status"] != "ok":
            assert "skipped" in entry["status"], (name, entry)
            continue
        if entry["kind"] == "one-run optimizer":
            assert math.isfinite(entry["expected_val_loss"])
            assert len(entry["per_seed"]["val_loss"]) == 2
            continue
        assert len(entry["per_study"]) == 2
        for study in entry["per_study"]:
            assert study["regret"] >= 0.0
            assert study["full_run_equivalents"] <= 6 + 1e-9
            low, high = results["eta_range"]
            assert low * (1 - 1e-12) <= study["recommended_eta"] <= high * (1 + 1e-12)
        assert len(results["curves"][name]) == 2
        assert all(len(row) == 6 for row in results["curves"][name])
    l2l = results["tuners"]["l2l"]
    assert l2l["max_evaluations"] == 3 and l2l["cost_per_evaluation"] == 2.0
    # Before its first hypergradient run has finished (x = 1 < 2) l2l recommends nothing.
    assert all(row[0] is None for row in results["curves"]["l2l"])
    assert results["tuners"]["grid"]["per_study"][0]["evaluations"] == 6
    assert results["tuners"]["lr-range-test"]["kind"] == "one-run recommendation"
    report = (out / "report.md").read_text()
    assert "--task digits-user" in report and "![regret](regret.png)" in report
    head = results["headline"]
    assert set(head["runs_to_tolerance"]) == set(results["curves"]) - {"x"}
    assert head["with_gradients"]["target"] == 3.0 and "black_box" in head
    assert "## Targets" in report and "With hypergradients:" in report


def test_runs_to_tolerance_needs_the_curve_to_stay_below() -> None:
    nan = math.nan
    assert user_study.runs_to_tolerance(np.array([nan, 0.5, 0.01, 0.2, 0.01, 0.0]), 0.02) == 5
    assert user_study.runs_to_tolerance(np.array([0.01, 0.01]), 0.02) == 1
    assert user_study.runs_to_tolerance(np.array([0.5, 0.01, 0.03]), 0.02) is None
    assert user_study.runs_to_tolerance(np.array([nan, nan]), 0.02) is None


def test_headline_ratio_and_lower_bound() -> None:
    """The ratio is the best standard tuner's runs to 1 % over ours; a standard tuner that
    never gets there counts as the budget (a lower bound)."""
    budget, optimum = 6, 1.0
    good = np.array([[0.5, 0.005, 0.0, 0.0, 0.0, 0.0]] * 2)
    slow = np.array([[0.5, 0.5, 0.5, 0.5, 0.005, 0.0]] * 2)
    never = np.full((2, budget), 0.5)

    def entry(curves: np.ndarray) -> dict[str, Any]:
        final = curves[:, -1]
        return {"regret_at": {str(budget): {"mean": float(final.mean()),
                                            "max": float(final.max()),
                                            "median": float(np.median(final))}}}  # fmt: skip

    curves = {"l2l": good, "optuna-cmaes": slow, "random": never, "l2l-blackbox": good}
    entries = {name: entry(c) for name, c in curves.items()}
    head = user_study.headline(curves, entries, optimum, budget)
    grad = head["with_gradients"]
    assert (grad["l2l"], grad["best_standard"], grad["best_standard_runs"]) == (
        2,
        "optuna-cmaes",
        5,
    )
    assert grad["ratio"] == 2.5 and not grad["ratio_is_lower_bound"] and not grad["met"]
    assert head["black_box"]["mean_met"] and head["black_box"]["worst_met"]
    head = user_study.headline({"l2l": good, "random": never}, entries, optimum, budget)
    assert head["with_gradients"]["ratio"] == 3.0
    assert head["with_gradients"]["ratio_is_lower_bound"] and head["with_gradients"]["met"]


@pytest.mark.parametrize("package", ["prodigyopt", "schedulefree", "optuna"])
def test_hidden_package_skips_its_tuners(
    package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing optional package skips exactly the tuners that import it, naming the
    package and the extra that installs it."""
    real = bench_tuners.module_available

    def hidden(name: str) -> bool:
        return name != package and real(name)

    monkeypatch.setattr(bench_tuners, "module_available", hidden)
    needing = [
        n
        for n in USER_TUNER_NAMES
        if any(
            p == package
            for p, _ in (bench_tuners.TUNER_PACKAGES.get(n) or USER_TUNER_PACKAGES.get(n, ()))
        )
    ]
    assert needing
    out = tmp_path / "u"
    results = run_cli(
        [*TINY, "--seeds", "1", "--tuners", ",".join([*needing, "random"]), "--out", str(out)]
    )
    for name in needing:
        assert f"needs {package} (pip install 'l2l-tune[" in results["tuners"][name]["status"]
    assert results["tuners"]["random"]["status"] == "ok"
    assert any(package in note for note in results["notes"])


def test_one_run_packages_are_in_the_bench_all_and_test_extras() -> None:
    parser = configparser.ConfigParser()
    parser.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    extras = {
        extra: {re.split(r"[<>=\[ ]", line.strip())[0] for line in spec.splitlines() if line}
        for extra, spec in parser["options.extras_require"].items()
    }
    for tuner, packages in USER_TUNER_PACKAGES.items():
        assert tuner in USER_TUNER_NAMES
        for package, extra in packages:
            for name in (extra, "all", "test"):
                assert package in extras[name], (tuner, package, name)


def test_regret_is_nonnegative_and_zero_at_the_grid_optimum() -> None:
    eta = np.geomspace(1e-3, 10.0, 9)
    rng = np.random.default_rng(0)
    mean = (np.log10(eta) + 1.0) ** 2 + 1.0 + 0.05 * rng.standard_normal(9)
    grid = ExpectedLossGrid.from_means(eta, mean, seeds=8)
    expected = np.convolve(np.concatenate([mean[:1], mean, mean[-1:]]), [0.25, 0.5, 0.25], "valid")
    np.testing.assert_allclose(grid.smoothed, expected)
    assert grid.optimum == pytest.approx(expected.min())
    assert grid.regret(grid.optimum_eta) == 0.0
    for x in np.geomspace(1e-5, 1e3, 101):
        assert grid.regret(float(x)) >= 0.0
    # Between grid points: linear in log η; beyond the ends: the end values.
    mid = math.sqrt(eta[2] * eta[3])
    assert grid.expected_loss(mid) == pytest.approx(0.5 * (expected[2] + expected[3]))
    assert grid.expected_loss(1e-9) == pytest.approx(expected[0])
    assert math.isnan(grid.regret(math.nan))


@pytest.fixture(scope="module")
def tiny_instance() -> Any:
    settings = UserStudySettings(task="digits-user", t=12, n_train=64, n_valid=64).resolved()
    return make_instance(settings)


def test_fresh_runs_share_seeds_between_batches_and_single_runs(tiny_instance: Any) -> None:
    """A grid batch of seeds (a, b) is the mean of the single runs a and b; a new seed is a
    different run."""
    inst = tiny_instance
    both = inst.fresh([11, 22]).meta_objective(0.3, inst.t, split="valid", log=False)
    single = [inst.value(0.3, s) for s in (11, 22)]
    assert both == pytest.approx(np.mean(single), rel=1e-5)
    assert inst.value(0.3, 11) == single[0]
    assert inst.value(0.3, 33) != single[0]


def test_lr_range_test_suggests_a_step_size_in_range(tiny_instance: Any) -> None:
    inst = tiny_instance
    lr, info = lr_range_test(inst.fresh([5]), 40, 1e-3, 10.0)
    assert 1e-3 <= lr <= 10.0
    assert info["steps"] >= 1 and "rule" in info
    # Too short for the steepest descent: fastai's minimum / 10.
    lr, info = lr_range_test(inst.fresh([5]), 8, 1e-3, 10.0)
    assert "/ 10" in info["rule"] and 1e-3 <= lr <= 10.0


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--grid-seeds", "0"], "--grid-seeds"),
        (["--grid-points", "2"], "--grid-points"),
        (["--tuners", "l2l-paper"], "--tuners"),
        (["--objective", "last"], "--objective"),
        (["--ray-trial-seconds", "2"], "--ray-trial-seconds"),
        (["--eta-range", "1", "0.1"], "--eta-range"),
        (["--label-noise", "1.5"], "--label-noise"),
    ],
)
def test_bad_options_exit_2_naming_the_option(
    extra: list[str], option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", *TINY, *extra, "--out", str(tmp_path / "u")])
    assert info.value.code == 2
    assert option in capsys.readouterr().err
    assert not (tmp_path / "u").exists()


def test_grid_options_are_rejected_for_the_other_tasks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", "--task", "quadratic", "--grid-seeds", "4", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert "--grid-seeds" in capsys.readouterr().err


def test_settings_raise_value_error_naming_the_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--budget"):
        UserStudySettings(task="digits-user", budget=0).resolved()
    with pytest.raises(ValueError, match="--task"):
        UserStudySettings(task="quadratic").resolved()
    with pytest.raises(ValueError, match="--eta0"):
        UserStudySettings(task="digits-user", eta0=100.0).resolved()
    with pytest.raises(ValueError, match="--budget"):
        user_study.run_user_study(
            UserStudySettings(
                task="digits-user",
                budget=1,
                seeds=1,
                t=5,
                n_train=32,
                n_valid=32,
                grid_points=3,
                grid_seeds=1,
                grad_cost=2.0,
                tuners=("l2l",),
                progress=False,
                out=tmp_path / "u",
            ),
            log=lambda _: None,
        )
