"""``l2l-tune bench``: small runs through the CLI, the results schema, the headline, errors."""

from __future__ import annotations

import configparser
import json
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from l2l_tune.bench import TUNER_NAMES, BenchSettings
from l2l_tune.bench import tuners as bench_tuners
from l2l_tune.bench.recording import EvalPoint, GradientView, Recorder, TunerRun, ValueView
from l2l_tune.bench.report import headline, run_record
from l2l_tune.bench.settings import parse_tuners
from l2l_tune.bench.tasks import make_task
from l2l_tune.bench.tuners import TUNER_PACKAGES
from l2l_tune.cli import main

#: The tuner names the issue asks for, in report order.
ALL_TUNERS = (
    "l2l",
    "l2l-paper",
    "l2l-blackbox",
    "grid",
    "random",
    "optuna-grid",
    "optuna-random",
    "optuna-tpe",
    "optuna-cmaes",
    "optuna-gp",
    "optuna-l2l",
    "optuna-l2l-blackbox",
    "ray-random",
    "ray-tpe",
    "ray-l2l",
    "ray-l2l-blackbox",
)
#: The in-process tuners but the GP (about 0.2 s per trial here: it gets its own small test).
IN_PROCESS = ",".join(n for n in ALL_TUNERS if not n.startswith("ray-") and n != "optuna-gp")
PER_TUNER_KEYS = ("evals_to_1pct", "evals_to_1e-4", "final_test_metric", "wall_s")


def run_cli(args: list[str]) -> dict[str, Any]:
    """Run ``l2l-tune bench`` with ``args`` and return its results.json."""
    assert main(["bench", *args]) == 0
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "results.json").read_text())


def check_schema(results: dict[str, Any], task: str, budget: int, seeds: int) -> None:
    assert results["task"] == task
    assert results["budget"] == budget
    assert results["seeds"] == seeds
    assert len(results["seed_values"]) == seeds
    assert results["gradient_cost"]["cost"] >= 1.0
    for name, entry in results["tuners"].items():
        assert name in ALL_TUNERS
        for key in PER_TUNER_KEYS:
            assert key in entry, (name, key)
        if entry["status"] != "ok":
            continue
        assert len(entry["per_seed"]) == seeds
        for record in entry["per_seed"]:
            assert record["inner_run_equivalents"] <= budget + 1e-9
            assert record["evaluations"] == len(record["points"]["eta"])
            low = min(i["low"] for i in results["instances"])
            high = max(i["high"] for i in results["instances"])
            assert all(
                low * (1 - 1e-12) <= e <= high * (1 + 1e-12) for e in record["points"]["eta"]
            )
        for key in ("evals_to_1pct", "evals_to_1e-4", "final_test_metric", "wall_s"):
            assert key in entry["spread"]


def reaches_first(results: dict[str, Any], ours: str, theirs: str) -> bool:
    a = results["tuners"][ours]["evals_to_1pct"]
    b = results["tuners"][theirs]["evals_to_1pct"]
    return a is not None and (b is None or a < b)


# ---------------------------------------------------------------------------- runs
def test_quadratic_bench(tmp_path: Path) -> None:
    """The in-process tuners on the Fig 1 quadratic: schema, files, l2l first to 1 %."""
    out = tmp_path / "bench-q"
    results = run_cli(
        [*"--task quadratic --budget 30 --seeds 2 --no-progress --tuners".split(), IN_PROCESS]
        + ["--out", str(out)]
    )
    check_schema(results, "quadratic", 30, 2)
    assert tuple(results["tuners"]) == tuple(IN_PROCESS.split(","))
    assert all(e["status"] == "ok" for e in results["tuners"].values())
    # The closed forms compute value and gradient in one pass: cost ≈ 1 inner run.
    assert 1.0 <= results["gradient_cost"]["cost"] < 1.5
    assert reaches_first(results, "l2l", "grid")
    assert reaches_first(results, "l2l", "random")
    l2l = results["tuners"]["l2l"]
    assert l2l["evals_to_1e-4"] is not None
    assert l2l["final_test_metric"] < 1e-6  # |η − η*|/η*
    assert results["headline"]["l2l_evals_to_1pct"] == l2l["evals_to_1pct"]
    for name in ("report.md", "results.json", "meta_loss_ratio.png", "eta_error.png"):
        assert (out / name).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "![best meta-loss ratio](meta_loss_ratio.png)" in report
    assert "| **l2l** |" in report


def test_optuna_suite_runs_our_sampler_in_optuna_studies(tmp_path: Path) -> None:
    """``optuna-l2l`` (meta-gradients reported to ``MetaGradientSampler``) and
    ``optuna-l2l-blackbox`` on 3 quadratic instances, beside Optuna's random sampler: both
    reach 0.01 % of F* on every seed, before random search reaches 1 %, and the headline
    is about ``optuna-l2l`` since ``l2l`` did not run."""
    out = tmp_path / "bench-optuna"
    results = run_cli(
        "--task quadratic --objective last --budget 60 --seeds 3 --no-progress "
        "--tuners optuna-l2l,optuna-l2l-blackbox,optuna-random".split()
        + ["--out", str(out)]
    )
    check_schema(results, "quadratic", 60, 3)
    for name in ("optuna-l2l", "optuna-l2l-blackbox"):
        entry = results["tuners"][name]
        assert entry["status"] == "ok"
        for record in entry["per_seed"]:
            assert record["evals_to_1e-4"] is not None, (name, record["seed"])
            assert record["extra"]["failed_trials"] == 0
            assert record["final_test_metric"] < 1e-4  # |η − η*|/η*
        assert reaches_first(results, name, "optuna-random")
    # Exact meta-gradients: converged, the step size itself to 1e-6 on every seed.
    for record in results["tuners"]["optuna-l2l"]["per_seed"]:
        assert record["extra"]["converged"] is True and record["final_test_metric"] < 1e-6
    assert results["headline"]["ours"] == "optuna-l2l"
    assert "`optuna-l2l` reaches 1 % of F*" in (out / "report.md").read_text()


def test_least_squares_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A small TbV least-squares bench with the progress bar: l2l first to 1 %."""
    out = tmp_path / "bench-ls"
    results = run_cli(
        "--task least-squares --d 60 --m 6 --n-train 30 --n-valid 30 --t 30 --budget 30 "
        "--seeds 2 --m-test 3 --tuners l2l,l2l-blackbox,grid,random,optuna-tpe "
        "--grad-cost 1".split()
        + ["--out", str(out)]
    )
    check_schema(results, "least-squares", 30, 2)
    assert results["gradient_cost"]["method"] == "given by --grad-cost"
    assert reaches_first(results, "l2l", "grid")
    assert reaches_first(results, "l2l", "random")
    for inst in results["instances"]:
        assert inst["split"] == "valid"
        assert inst["low"] < inst["eta_star"] < inst["high"]
        # The refinement never ends above the grid's best point.
        assert inst["refined_log_objective"] >= inst["log_f_star"] / inst["t"] - 1e-15
    assert all(
        r["final_test_metric"] > 0.9 for r in results["tuners"]["l2l"]["per_seed"]
    )  # RMSE ≥ σ = 1 up to sampling
    assert "bench least-squares" in capsys.readouterr().err  # the tqdm bar


def test_all_tuners_listed_and_ray_skipped_without_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Default --tuners is all 16; without Ray the ray-* tuners are skipped with a message."""
    real = bench_tuners.module_available

    def no_ray(name: str) -> bool:
        return name != "ray" and real(name)

    monkeypatch.setattr(bench_tuners, "module_available", no_ray)
    out = tmp_path / "b"
    results = run_cli(
        "--budget 8 --seeds 1 --d 8 --t 20 --grad-cost 2 --no-progress".split()
        + ["--out", str(out)]
    )
    assert tuple(results["tuners"]) == ALL_TUNERS
    for name in ("ray-random", "ray-tpe", "ray-l2l", "ray-l2l-blackbox"):
        assert "needs ray" in results["tuners"][name]["status"]
        assert results["tuners"][name]["evals_to_1pct"] is None
    err = capsys.readouterr().err
    assert "ray-l2l skipped: needs ray" in err
    # --grad-cost 2: the gradient tuners get ⌊8/2⌋ evaluations, each counted as 2.
    assert results["tuners"]["l2l"]["max_evaluations"] == 4
    assert results["tuners"]["l2l"]["inner_run_equivalents"] <= 8
    assert results["tuners"]["grid"]["evaluations"] == 8


@pytest.mark.parametrize("package", ["optuna", "cmaes", "torch", "ray"])
def test_each_missing_package_skips_exactly_its_tuners(
    package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hiding one optional package skips the tuners that import it, naming the package
    and the extra to install; the others still run."""
    real = bench_tuners.module_available

    def hidden(name: str) -> bool:
        return name != package and real(name)

    monkeypatch.setattr(bench_tuners, "module_available", hidden)
    needing = [
        name for name, packages in TUNER_PACKAGES.items() if any(p == package for p, _ in packages)
    ]
    assert needing
    out = tmp_path / "b"
    results = run_cli(
        "--budget 6 --seeds 1 --d 8 --t 20 --no-progress".split()
        + ["--tuners", ",".join([*needing, "grid"]), "--out", str(out)]
    )
    for name in needing:
        status = results["tuners"][name]["status"]
        assert f"needs {package} (pip install 'l2l-tune[" in status, status
    assert results["tuners"]["grid"]["status"] == "ok"


def test_every_tuner_dependency_is_in_its_extra_and_in_all() -> None:
    """The extra named in a skip message installs the package (and so does [all])."""
    parser = configparser.ConfigParser()
    parser.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    extras = {
        extra: {re.split(r"[<>=\[ ]", line.strip())[0] for line in spec.splitlines() if line}
        for extra, spec in parser["options.extras_require"].items()
    }
    for tuner, packages in TUNER_PACKAGES.items():
        assert tuner in ALL_TUNERS
        for package, extra in packages:
            assert package in extras[extra], (tuner, package, extra)
            assert package in extras["all"], (tuner, package)
            assert package in extras["test"], (tuner, package)


def test_plain_objective_nothing_crashes(tmp_path: Path) -> None:
    """--objective last: huge and underflowing values (GP included) are handled."""
    results = run_cli(
        "--objective last --budget 12 --seeds 1 --tuners l2l,optuna-gp,optuna-cmaes,random "
        "--grad-cost 1 --eta-range 1e-3 100 --eta0 1 --no-progress".split()
        + ["--out", str(tmp_path / "last")]
    )
    assert all(e["status"] == "ok" for e in results["tuners"].values())
    assert results["objective"] == "last"
    # --eta0 1: the meta-gradient tuners start at 1/L.
    inst = results["instances"][0]
    assert inst["eta0"] == pytest.approx(inst["step_size_scale"])
    assert results["tuners"]["l2l"]["per_seed"][0]["points"]["eta"][0] == inst["eta0"]
    assert results["tuners"]["optuna-gp"]["evaluations"] == 12


def test_mnist_bench_tiny(tmp_path: Path) -> None:
    """The mnist branch on scikit-learn's digits at toy size: forward-mode cost measured."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    results = run_cli(
        "--task mnist --m 1 --n-train 64 --n-valid 64 --t 8 --budget 8 --seeds 1 "
        "--tuners l2l,random --no-progress".split()
        + ["--out", str(tmp_path / "mnist")]
    )
    assert results["metric_name"] == "test_accuracy"
    assert results["gradient_cost"]["cost"] >= 1.0
    inst = results["instances"][0]
    assert inst["low"] <= inst["eta_star"] <= inst["high"]
    for entry in results["tuners"].values():
        assert 0.0 <= entry["final_test_metric"] <= 1.0
        assert entry["inner_run_equivalents"] <= 8


def test_cli_import_stays_light() -> None:
    """Building the parser imports neither Optuna, Ray, PyTorch nor Matplotlib."""
    code = (
        "import sys; from l2l_tune.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('optuna', 'ray', 'torch', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--budget", "0"], "--budget"),
        (["--budget", "-3"], "--budget"),
        (["--seeds", "0"], "--seeds"),
        (["--tuners", "l2l,adam"], "--tuners"),
        (["--tuners", ""], "--tuners"),
        (["--eta-range", "10", "1"], "--eta-range"),
        (["--grad-cost", "0.5"], "--grad-cost"),
        (["--eta0", "100"], "--eta0"),
        (["--task", "least-squares", "--split", "valid", "--n-valid", "0"], "--n-valid"),
        (["--task", "quadratic", "--split", "valid"], "--split"),
        (["--budget", "1", "--grad-cost", "2", "--tuners", "l2l"], "--budget"),
        (["--ray-trial-seconds", "-1"], "--ray-trial-seconds"),
        (["--ray-trial-seconds", "nan"], "--ray-trial-seconds"),
    ],
)
def test_bad_arguments_exit_2(
    args: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", *args, "--d", "4", "--out", str(tmp_path / "x"), "--no-progress"])
    assert exc.value.code == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--budget", "abc"], ["--task", "cifar"], ["--seeds", "1.5"]])
def test_unparsable_arguments_exit_2(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", *args])
    assert exc.value.code == 2


def test_unknown_tuner_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="--tuners") as exc:
        parse_tuners("l2l, optuna-nsga")
    for name in ALL_TUNERS:
        assert name in str(exc.value)
    assert parse_tuners(None) == ALL_TUNERS == TUNER_NAMES
    assert parse_tuners("random,l2l,l2l") == ("l2l", "random")


def test_settings_validation_names_the_option() -> None:
    with pytest.raises(ValueError, match="--budget"):
        BenchSettings(budget=0).resolved()
    with pytest.raises(ValueError, match="--seeds"):
        BenchSettings(seeds=-1).resolved()
    resolved = BenchSettings(task="least-squares").resolved()
    assert (resolved.t, resolved.d, resolved.split, resolved.budget) == (40, 1000, "valid", 60)


# ---------------------------------------------------------------------------- report logic
def test_thresholds_count_inner_run_equivalents_on_the_unlogged_loss() -> None:
    """1 % means F ≤ 1.01·F* (not the log objective); costs accumulate per evaluation."""
    task = make_task(BenchSettings(budget=10, seeds=1).resolved(), 0)
    t = task.t
    # Log-objective values with F/F* = 1.5, 1.02, 1.005, 1.00005.
    excess = [1.5, 1.02, 1.005, 1.00005]
    points = [
        EvalPoint(
            eta=task.eta_star * (1 + 0.1 / (i + 1)),
            objective=(task.log_f_star + math.log(r)) / t,
            log_loss=task.log_f_star + math.log(r),
            cost=2.5,
            end_s=0.1 * (i + 1),
            gradient=True,
        )
        for i, r in enumerate(excess)
    ]
    record = run_record(TunerRun("l2l", 0, points, 1.0), task)
    assert record["evals_to_1pct"] == pytest.approx(7.5)  # third evaluation, 3 × 2.5
    assert record["wall_to_1pct"] == pytest.approx(0.3)
    assert record["evals_to_1e-4"] == pytest.approx(10.0)
    assert record["final_meta_loss_ratio"] == pytest.approx(5e-5, rel=1e-6)
    assert record["chosen_eta"] == points[-1].eta


def _entry(evals: list[float | None]) -> dict[str, Any]:
    finite = sorted(e if e is not None else math.inf for e in evals)
    median = finite[len(finite) // 2]
    return {
        "status": "ok",
        "evals_to_1pct": None if math.isinf(median) else median,
        "final_meta_loss_ratio": 0.5,
        "per_seed": [{"evals_to_1pct": e} for e in evals],
    }


def test_headline_ratio_and_lower_bound() -> None:
    tuners = {"l2l": _entry([4.0, 5.0, 6.0]), "random": _entry([30.0, 40.0, None])}
    head = headline(tuners, budget=60)
    assert head["ratio"] == pytest.approx(8.0) and head["meets_target"] is True
    assert head["best_other_tuner"] == "random"
    tuners["random"] = _entry([None, None, None])
    head = headline(tuners, budget=60)
    assert head["ratio"] is None and head["ratio_lower_bound"] == pytest.approx(12.0)
    assert head["meets_target"] is True
    assert head["per_seed_ratio_is_lower_bound"] == [True, True, True]
    head = headline(tuners, budget=20)
    assert head["ratio_lower_bound"] == pytest.approx(4.0) and head["meets_target"] is None


# ---------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One local Ray instance for the module, in a private temp dir (tests/_ray_helpers)."""
    pytest.importorskip("ray")
    from _ray_helpers import ray_environment

    with ray_environment(tmp_path_factory, "rb") as base:
        import ray

        assert not ray.is_initialized(), "another test left Ray running"
        ray.init(num_cpus=2, include_dashboard=False)
        try:
            yield base
        finally:
            ray.shutdown()


@pytest.mark.slow
def test_ray_tuners(ray_started: Path, tmp_path: Path) -> None:
    """The three ray-* tuners run through Ray Tune; experiment files stay in the temp dir."""
    import ray

    results = run_cli(
        "--budget 20 --seeds 1 --tuners l2l,ray-random,ray-tpe,ray-l2l --grad-cost 1 "
        "--no-progress".split()
        + ["--out", str(tmp_path / "ray")]
    )
    assert ray.is_initialized()  # the bench used the running instance and left it running
    for name in ("ray-random", "ray-tpe", "ray-l2l"):
        entry = results["tuners"][name]
        assert entry["status"] == "ok"
        record = entry["per_seed"][0]
        assert record["evaluations"] == 20
        assert record["extra"]["errored_trials"] == 0
    assert results["tuners"]["ray-l2l"]["evals_to_1pct"] is not None
    # RaySession removed its storage directory under RAY_TMPDIR.
    assert not list(ray_started.glob("l2lbench*"))


@pytest.mark.slow
def test_ray_suite_with_overlapping_trials(ray_started: Path, tmp_path: Path) -> None:
    """ray-l2l and ray-l2l-blackbox with 2 workers and 2 s trials (Ray ran 1.5–2 s trials
    two at a time in every run of benchmarks/bench_ray.py): the trials overlap, every trial
    is an evaluation, and the gradient searcher reaches 1 % of F*."""
    results = run_cli(
        "--objective last --budget 30 --seeds 1 --ray-workers 2 --ray-trial-seconds 2 "
        "--grad-cost 1 --tuners ray-l2l,ray-l2l-blackbox --no-progress".split()
        + ["--out", str(tmp_path / "ray2")]
    )
    peaks = []
    for name in ("ray-l2l", "ray-l2l-blackbox"):
        record = results["tuners"][name]["per_seed"][0]
        assert record["evaluations"] == 30 and record["extra"]["errored_trials"] == 0
        assert record["extra"]["trial_seconds"] == 2.0
        assert isinstance(record["extra"]["completed_in_start_order"], bool)
        peaks.append(record["extra"]["peak_concurrency"])
    assert max(peaks) == 2 and min(peaks) >= 1
    assert results["tuners"]["ray-l2l"]["evals_to_1pct"] is not None
    assert results["headline"]["ours"] == "ray-l2l"


def test_concurrency_of_trial_intervals() -> None:
    """Peak overlap and completion order from (start, end) times; touching intervals do
    not overlap."""
    from l2l_tune.bench.raytune import _concurrency

    assert _concurrency([(0, 1), (1, 2), (2, 3)]) == {
        "peak_concurrency": 1,
        "completed_in_start_order": True,
    }
    assert _concurrency([(0, 3), (1, 2), (1.5, 4)]) == {
        "peak_concurrency": 3,
        "completed_in_start_order": False,
    }
    assert _concurrency([]) == {"peak_concurrency": 0, "completed_in_start_order": True}


def test_report_notes_say_how_ray_trials_overlapped() -> None:
    """The report names each Ray tuner's peak overlap and its out-of-order seeds; tuners
    without the record get no such note."""
    from l2l_tune.bench.run import _notes

    def entry(*extras: dict[str, Any]) -> dict[str, Any]:
        return {"status": "ok", "per_seed": [{"warnings": {}, "extra": e} for e in extras]}

    notes = _notes(
        {
            "ray-l2l": entry(
                {"peak_concurrency": 2, "completed_in_start_order": False},
                {"peak_concurrency": 1, "completed_in_start_order": True},
            ),
            "l2l": entry({}),
        },
        {},
    )
    assert (
        "`ray-l2l`: peak number of trials running at once 2; trials finished out of the order "
        "they started in 1 of 2 seeds." in notes
    )
    assert not any(n.startswith("`l2l`") for n in notes)


def test_task_views_refuse_another_horizon_split_or_objective() -> None:
    """The tuners' views evaluate the bench task's own objective: a different ``t``, ``split``
    or ``log`` is a ValueError naming it, not a silently different measurement."""
    task = make_task(BenchSettings(budget=10, seeds=1).resolved(), 0)
    recorder = Recorder(task, gradient_cost=2.0)
    value_view, gradient_view = ValueView(recorder), GradientView(recorder)
    eta = task.eta0
    assert value_view.meta_objective(eta, task.t, split=task.split, log=task.log) == task.value(eta)
    value, _ = gradient_view.value_and_gradient(eta, task.t, split=task.split, log=task.log)
    assert value == task.value(eta)
    assert len(recorder.points) == 2
    for view in (value_view, gradient_view):
        with pytest.raises(ValueError, match="^t must be the bench task's t="):
            view.meta_objective(eta, task.t + 1, split=task.split, log=task.log)
        with pytest.raises(ValueError, match="^split must be"):
            view.meta_objective(eta, task.t, split="valid", log=task.log)
        with pytest.raises(ValueError, match="^log must be"):
            view.meta_objective(eta, task.t, split=task.split, log=not task.log)
    with pytest.raises(ValueError, match="^t must be"):
        gradient_view.value_and_gradient(eta, 1, split=task.split, log=task.log)
    assert len(recorder.points) == 2  # nothing recorded for a refused call
