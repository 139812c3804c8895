"""The MNIST task: exact step-size meta-gradients through SGD, TbT vs TbV, the CLI."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from l2l_tune import StepSizeTuner  # noqa: E402
from l2l_tune.cli import main  # noqa: E402
from l2l_tune.meta import NonFiniteMetaGradientWarning  # noqa: E402
from l2l_tune.tasks import MNIST, MetaObjectiveTask, MNISTBatch  # noqa: E402

MNIST_DIR = Path(
    os.environ.get(
        "L2L_TUNE_TEST_MNIST_DIR", Path(__file__).resolve().parents[1].parent / "shared/data/mnist"
    )
)
needs_mnist = pytest.mark.skipif(
    not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason=f"real MNIST files not found in {MNIST_DIR}",
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread: None) -> None:
    """One PyTorch thread for the whole module."""


@pytest.fixture(scope="module")
def digits64() -> MNIST:
    return MNIST("digits", dtype=torch.float64)


@pytest.fixture(scope="module")
def digits32() -> MNIST:
    return MNIST("digits")


@pytest.fixture(scope="module")
def mnist64() -> MNIST:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST files not found in {MNIST_DIR}")
    return MNIST("mnist", data_dir=MNIST_DIR, dtype=torch.float64)


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


# ---------------------------------------------------------------------- exactness
@pytest.mark.parametrize("split", ["train", "valid"])
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize(("eta", "t"), [(0.05, 30), (0.5, 100)])
def test_forward_matches_backprop_and_finite_differences_digits(
    digits64: MNIST, split: str, log: bool, eta: float, t: int
) -> None:
    """float64: forward = reverse mode to rounding, = central differences (h = √ε) to 1e-5."""
    batch = digits64.sample(2, 200, 100, label_noise=0.1, seed=1)
    forward = batch.meta_gradient(eta, t, split=split, log=log)
    backprop = batch.meta_gradient(eta, t, split=split, log=log, method="backprop")
    fd = batch.meta_gradient(eta, t, split=split, log=log, method="finite-difference")
    assert _relative(backprop, forward) < 1e-12
    assert _relative(fd, forward) < 1e-5


@needs_mnist
@pytest.mark.parametrize(("eta", "t", "split"), [(0.05, 100, "valid"), (0.5, 100, "train")])
def test_forward_matches_finite_differences_on_mnist(
    mnist64: MNIST, eta: float, t: int, split: str
) -> None:
    """The real 784-100-20-10 network, 100 SGD steps: relative error ≤ 1e-5 (issue's criterion)."""
    batch = mnist64.sample(2, 200, 100, label_noise=0.1, seed=1)
    forward = batch.meta_gradient(eta, t, split=split, log=True)
    fd = batch.meta_gradient(eta, t, split=split, log=True, method="finite-difference")
    backprop = batch.meta_gradient(eta, t, split=split, log=True, method="backprop")
    assert _relative(fd, forward) < 1e-5
    assert _relative(backprop, forward) < 1e-12


def test_kinks_make_wide_finite_differences_wrong(digits64: MNIST) -> None:
    """The meta-objective of a ReLU network is piecewise smooth with dense kinks: at t = 100,
    η = 0.5 a relative step of 1e-6 misses the derivative, √ε does not (why √ε is the default)."""
    batch = digits64.sample(2, 200, 100, label_noise=0.1, seed=1)
    forward = batch.meta_gradient(0.5, 100, log=True)
    wide = batch.meta_gradient(0.5, 100, log=True, method="finite-difference", fd_step=1e-6)
    narrow = batch.meta_gradient(0.5, 100, log=True, method="finite-difference")
    assert _relative(narrow, forward) < 1e-5
    assert _relative(wide, forward) > 1.0


def test_value_and_gradient_value_equals_meta_objective(digits32: MNIST) -> None:
    """Forward mode does not change the training run: same value as a plain run (float32)."""
    batch = digits32.sample(3, 150, 50, seed=2)
    for split in ("train", "valid"):
        value, _ = batch.value_and_gradient(0.2, 60, split=split, log=True)
        assert value == batch.meta_objective(0.2, 60, split=split, log=True)


def test_log_objective_is_scaled_log_of_plain(digits64: MNIST) -> None:
    """(1/t)·log F̂ and its derivative F̂'/(t F̂)."""
    batch = digits64.sample(2, 100, 0, seed=3)
    value, grad = batch.value_and_gradient(0.1, 40)
    log_value, log_grad = batch.value_and_gradient(0.1, 40, log=True)
    assert log_value == pytest.approx(math.log(value) / 40, rel=1e-13)
    assert log_grad == pytest.approx(grad / value / 40, rel=1e-12)


def test_same_seed_same_batch_and_prefix_property(digits32: MNIST) -> None:
    """Common random numbers: a seed fixes the samples, the init and the mini-batch order;
    a longer run repeats the shorter one's first steps."""
    a = digits32.sample(2, 120, 30, label_noise=0.2, seed=5)
    b = digits32.sample(2, 120, 30, label_noise=0.2, seed=5)
    assert a.meta_objective(0.3, 50) == b.meta_objective(0.3, 50)
    long_first = a.meta_objective(0.3, 80)
    c = digits32.sample(2, 120, 30, label_noise=0.2, seed=5)
    c.meta_objective(0.3, 80)  # caches an 80-step order first
    assert c.meta_objective(0.3, 50) == a.meta_objective(0.3, 50)
    assert a.meta_objective(0.3, 80) == long_first


def test_label_noise_replaces_the_asked_fraction(digits32: MNIST) -> None:
    """p = 0.2 replaces round(0.2 n) labels by uniform ones: ~90 % of those change."""
    batch = digits32.sample(4, 400, 100, label_noise=0.2, seed=0)
    true = torch.as_tensor(digits32.data.train_labels)[batch._indices.cpu()]
    changed = (true != batch._labels.cpu()).sum(dim=1).numpy()
    assert np.all(changed <= 100)
    assert np.all(changed >= 70)
    clean = digits32.sample(4, 400, 100, seed=0)
    assert bool(
        torch.equal(
            torch.as_tensor(digits32.data.train_labels)[clean._indices.cpu()], clean._labels.cpu()
        )
    )


def test_training_and_validation_samples_are_disjoint(digits32: MNIST) -> None:
    batch = digits32.sample(3, 200, 100, seed=4)
    for row in batch._indices.cpu().numpy():
        assert len(set(row.tolist())) == 300


# ---------------------------------------------------------------------- divergence
def test_diverging_runs_are_truncated_never_nan(digits32: MNIST) -> None:
    """η far above the stable range: every task is frozen at the 40·ln C bound, value finite,
    meta-gradient 0, evaluation flags the tasks."""
    batch = digits32.sample(2, 100, 50, seed=0)
    value, grad = batch.value_and_gradient(1e4, 50, split="valid", log=True)
    assert value == pytest.approx(math.log(batch.truncation_loss) / 50)
    assert grad == 0.0
    evaluation = batch.evaluate(1e4, 50)
    assert evaluation.truncated.all()
    assert np.all(np.isfinite(evaluation.test_accuracy))
    assert np.all(np.isfinite(evaluation.test_loss))


@pytest.mark.slow
@needs_mnist
def test_chaotic_tangent_is_reported_as_too_large() -> None:
    """Near the edge of stability (float32, 1000 steps) the tangent of one task overflows: the
    value stays finite and the meta-gradient is +inf with a warning (the tuner reads "too
    large")."""
    batch = MNIST("mnist", data_dir=MNIST_DIR).sample(4, 1000, 0, label_noise=0.2, seed=0)
    with pytest.warns(NonFiniteMetaGradientWarning, match="chaotic"):
        value, grad = batch.value_and_gradient(1.5, 1000, log=True)
    assert math.isfinite(value)
    assert grad == math.inf


# ---------------------------------------------------------------------- evaluation
def test_evaluate_curves_and_summary(digits32: MNIST) -> None:
    batch = digits32.sample(2, 200, 0, seed=1)
    evaluation = batch.evaluate(0.3, 100, eval_every=25)
    assert evaluation.curve_steps.tolist() == [25, 50, 75, 100]
    assert evaluation.test_accuracy_curve.shape == (2, 4)
    np.testing.assert_allclose(evaluation.test_accuracy_curve[:, -1], evaluation.test_accuracy)
    summary = evaluation.summary()
    assert 0.5 < summary["test_accuracy"] <= 1.0
    assert summary["truncated"] == 0
    noisy = batch.evaluate(0.3, 100, test_label_noise=1.0)
    assert noisy.test_accuracy.mean() < 0.3


def test_step_size_scale_is_inverse_top_curvature(digits32: MNIST) -> None:
    """1/L from power iteration: cached, positive; one step at 10/L already hurts."""
    batch = digits32.sample(2, 200, 0, seed=0)
    scale = batch.step_size_scale()
    assert scale > 0 and batch.step_size_scale() == scale
    assert batch.meta_objective(scale, 1) < batch.meta_objective(10 * scale, 1)


def test_batch_satisfies_the_task_protocol(digits32: MNIST) -> None:
    assert isinstance(digits32.sample(1, 10, seed=0), MetaObjectiveTask)


# ---------------------------------------------------------------------- tuning
@pytest.mark.parametrize("seed", [0, 1])
def test_tbv_learns_a_smaller_step_size_under_label_noise(digits32: MNIST, seed: int) -> None:
    """Paper Section 5 / Theorem 5 in miniature: with 20 % noisy labels, the step size learned
    train-by-validation is well below the train-by-train one (which fits the noise), on each
    of two seeds (the default meta-optimizer, the model, keeps both out of the chaotic regime
    where the bracket used to settle)."""
    chosen = {}
    for split, n_valid in (("train", 0), ("valid", 300)):
        batch = digits32.sample(2, 300, n_valid, label_noise=0.2, seed=seed)
        tuner = StepSizeTuner(max_evals=12, tol=1e-2).fit(batch, 300, split=split, log=True)
        chosen[split] = tuner.step_size_
    assert chosen["valid"] < 0.5 * chosen["train"]


@pytest.mark.slow
@needs_mnist
def test_cli_tbv_test_accuracy_clearly_above_tbt_on_noisy_mnist(tmp_path: Path) -> None:
    """The issue's acceptance run on several seeds (a tuner's result on one seed is an
    anecdote): 1000 + 1000 samples, 20 % label noise. On every seed TbV's step size stays
    out of the chaotic regime (below ½ of TbT's) and TbV's test accuracy is not below
    TbT's; on average TbV beats TbT by ≥ 2 points (the paper's Fig 4b)."""
    gaps = []
    for seed in (0, 1):
        out = tmp_path / f"r{seed}.json"
        argv = [
            "tune", "--task", "mnist", "--data-dir", str(MNIST_DIR), "--n-train", "1000",
            "--n-valid", "1000", "--label-noise", "0.2", "--no-progress", "--json", str(out),
            "--seed", str(seed),
        ]  # fmt: skip
        assert main(argv) == 0
        tbt, tbv = json.loads(out.read_text())["results"]
        assert tbv["step_size"] < 0.5 * tbt["step_size"], (seed, tbv, tbt)
        assert tbv["test_accuracy"] >= tbt["test_accuracy"], (seed, tbv, tbt)
        gaps.append(tbv["test_accuracy"] - tbt["test_accuracy"])
    assert sum(gaps) / len(gaps) >= 0.02, gaps


def test_optuna_sampler_tunes_the_mnist_task(digits32: MNIST, tmp_path: Path) -> None:
    """The task drops into the Optuna adapter like the closed forms."""
    optuna = pytest.importorskip("optuna")
    from l2l_tune.integrations.optuna import MetaGradientSampler, task_objective

    batch = digits32.sample(2, 200, 100, seed=0)
    study = optuna.create_study(
        sampler=MetaGradientSampler(eta0=0.1),
        storage=f"sqlite:///{tmp_path / 'study.db'}",
    )
    study.optimize(task_objective(batch, t=100, split="valid"), n_trials=8)
    assert all(math.isfinite(tr.value) for tr in study.trials if tr.value is not None)
    assert study.best_value <= min(
        batch.meta_objective(e, 100, split="valid") for e in (0.025, 0.1, 0.4)
    )


# ---------------------------------------------------------------------- CLI
def test_cli_mnist_digits_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    argv = [
        "tune", "--task", "mnist", "--dataset", "digits", "--t", "150", "--m", "2",
        "--m-test", "2", "--n-train", "200", "--n-valid", "200", "--label-noise", "0.2",
        "--no-progress", "--json", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    payload = json.loads(out.read_text())
    labels = [r["label"] for r in payload["results"]]
    assert labels == ["TbT(200)", "TbV(200+200)"]
    for result in payload["results"]:
        for key in ("step_size", "meta_objective", "test_accuracy", "test_loss"):
            assert math.isfinite(result[key])
    assert "test acc." in capsys.readouterr().out


def test_cli_mnist_missing_data_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["tune", "--task", "mnist", "--data-dir", str(tmp_path), "--no-progress"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "download" in err


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--label-noise", "1.5"], "--label-noise"),
        (["--device", "tpu"], "device"),
        (["--split", "valid", "--n-valid", "0"], "--n-valid"),
    ],
)
def test_cli_mnist_bad_arguments(
    extra: list[str], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["tune", "--task", "mnist", "--dataset", "digits", "--no-progress", *extra])
    assert info.value.code == 2
    assert match in capsys.readouterr().err


def test_cli_label_noise_only_for_mnist(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["tune", "--task", "quadratic", "--label-noise", "0.1", "--no-progress"])
    assert "--label-noise" in capsys.readouterr().err


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "cifar"}, "dataset"),
        ({"dataset": "digits", "dtype": "float16"}, "dtype"),
        ({"dataset": "digits", "device": "tpu"}, "device"),
        ({"dataset": "digits", "hidden": (100, 0)}, "hidden"),
        ({"dataset": "digits", "batch_size": 0}, "batch_size"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MNIST(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_without_a_device_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="device"):
        MNIST("digits", device="cuda")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"m": 0, "n_train": 10}, "m must"),
        ({"m": 1, "n_train": 0}, "n_train"),
        ({"m": 1, "n_train": 10, "n_valid": -1}, "n_valid"),
        ({"m": 1, "n_train": 1500, "n_valid": 1}, "n_train \\+ n_valid"),
        ({"m": 1, "n_train": 10, "label_noise": 1.5}, "label_noise"),
        ({"m": 1, "n_train": 10, "label_noise": True}, "label_noise"),
    ],
)
def test_sample_rejects_bad_arguments(digits32: MNIST, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        digits32.sample(**kwargs)


def test_batch_methods_reject_bad_arguments(digits32: MNIST) -> None:
    batch: MNISTBatch = digits32.sample(1, 20, 0, seed=0)
    with pytest.raises(ValueError, match="eta"):
        batch.meta_objective(-0.1, 5)
    with pytest.raises(ValueError, match="t must"):
        batch.meta_objective(0.1, 0)
    with pytest.raises(ValueError, match="n_valid > 0"):
        batch.meta_objective(0.1, 5, split="valid")
    with pytest.raises(ValueError, match="split"):
        batch.meta_objective(0.1, 5, split="test")
    with pytest.raises(ValueError, match="method"):
        batch.meta_gradient(0.1, 5, method="adjoint")
    with pytest.raises(ValueError, match="fd_step"):
        batch.meta_gradient(0.1, 5, method="finite-difference", fd_step=0.0)
    with pytest.raises(ValueError, match="eta must be > 0"):
        batch.meta_gradient(0.0, 5, method="finite-difference")
    with pytest.raises(ValueError, match="eval_every"):
        batch.evaluate(0.1, 5, eval_every=0)
    with pytest.raises(ValueError, match="test_label_noise"):
        batch.evaluate(0.1, 5, test_label_noise=2.0)


# ---------------------------------------------------------------------- GPU
@pytest.mark.gpu
@needs_cuda
def test_cuda_matches_cpu_float64() -> None:
    """Same seed, same arithmetic up to rounding: CUDA float64 agrees with the CPU."""
    cpu = MNIST("digits", dtype="float64").sample(2, 200, 100, seed=0)
    gpu = MNIST("digits", dtype="float64", device="cuda").sample(2, 200, 100, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = cpu.value_and_gradient(0.2, 100, split="valid", log=True)
        b = gpu.value_and_gradient(0.2, 100, split="valid", log=True)
    assert b[0] == pytest.approx(a[0], rel=1e-10)
    assert b[1] == pytest.approx(a[1], rel=1e-6)
