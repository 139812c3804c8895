"""``HypergradientSampler``: several float parameters of a study tuned with their gradients."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

from l2l_tune.integrations.optuna import (  # noqa: E402
    HypergradientSampler,
    report_meta_gradient,
)
from optuna.trial import Trial, TrialState  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)

OPTIMUM = {"lr": 0.03, "weight_decay": 1e-3}


def bowl(lr: float, wd: float) -> tuple[float, dict[str, float]]:
    """1 + (log lr − log 0.03)² + ½(log wd − log 1e-3)² and its gradient in (lr, wd)."""
    a, b = math.log(lr / OPTIMUM["lr"]), math.log(wd / OPTIMUM["weight_decay"])
    return 1.0 + a * a + 0.5 * b * b, {"lr": 2 * a / lr, "weight_decay": b / wd}


def objective(trial: Trial) -> float:
    lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
    wd = trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True)
    trial.suggest_categorical("activation", ["relu", "tanh"])  # another parameter
    value, grads = bowl(lr, wd)
    report_meta_gradient(trial, grads)
    return value


def _study(**kwargs: Any) -> Any:
    return optuna.create_study(
        sampler=HypergradientSampler(params=("lr", "weight_decay"), seed=0, **kwargs)
    )


def test_two_hyperparameters_reach_the_optimum() -> None:
    """From the geometric means of the ranges, 60 trials bring both within 10 % of the optimum;
    the categorical parameter is sampled by the independent sampler."""
    study = _study()
    study.optimize(objective, n_trials=60)
    sampler = study.sampler
    assert isinstance(sampler, HypergradientSampler)
    got = sampler.recommended_params(study)
    for name in ("lr", "weight_decay"):
        assert abs(math.log(got[name] / OPTIMUM[name])) <= 0.1, (name, got)
    assert {t.params["activation"] for t in study.trials} == {"relu", "tanh"}
    first = study.trials[0].params
    assert first["lr"] == pytest.approx(math.sqrt(1e-5), rel=1e-12)
    assert first["weight_decay"] == pytest.approx(math.sqrt(1e-7), rel=1e-12)


def test_a_new_sampler_on_the_same_storage_proposes_the_same(tmp_path: Any) -> None:
    """The sampler keeps no state: a second process (a new sampler on the loaded study)
    continues exactly where the first stopped."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = optuna.create_study(
        study_name="s", storage=url, sampler=HypergradientSampler(("lr", "weight_decay"))
    )
    first.optimize(objective, n_trials=8)
    reference = _study()
    reference.optimize(objective, n_trials=12)
    loaded = optuna.load_study(
        study_name="s", storage=url, sampler=HypergradientSampler(("lr", "weight_decay"))
    )
    loaded.optimize(objective, n_trials=4)
    assert [t.params["lr"] for t in loaded.trials] == [t.params["lr"] for t in reference.trials]


def test_a_failed_trial_sends_the_search_back() -> None:
    """An objective that raises at large lr (a diverged run, caught by Optuna): the trial is
    FAIL, the next proposal is the last finite point, and the search goes on to the optimum."""

    def diverging(trial: Trial) -> float:
        lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
        wd = trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True)
        if lr > 0.1:
            raise FloatingPointError("loss overflowed")
        value, grads = bowl(lr, wd)
        report_meta_gradient(trial, grads)
        return value

    study = optuna.create_study(
        sampler=HypergradientSampler(
            ("lr", "weight_decay"), start={"lr": 0.5, "weight_decay": 1e-3}
        )
    )
    study.optimize(diverging, n_trials=40, catch=(FloatingPointError,))
    states = [t.state for t in study.trials]
    assert states[0] == TrialState.FAIL
    assert TrialState.COMPLETE in states
    sampler = study.sampler
    assert isinstance(sampler, HypergradientSampler)
    got = sampler.recommended_params(study)
    assert abs(math.log(got["lr"] / OPTIMUM["lr"])) <= 0.2, got


@pytest.mark.parametrize("meta_optimizer", ["adam", "model"])
def test_trials_without_every_gradient_are_value_only(meta_optimizer: str) -> None:
    """A mapping without a number for every tuned parameter (or a NaN one) is a value-only
    trial: Adam's proposal does not move; the model takes it as a black-box value (its
    design moves on, never repeating a point)."""

    def partial(trial: Trial) -> float:
        lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
        wd = trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True)
        value, grads = bowl(lr, wd)
        report_meta_gradient(trial, {"lr": grads["lr"], "weight_decay": math.nan})
        return value

    study = _study(meta_optimizer=meta_optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(partial, n_trials=3)
    distinct = len({t.params["lr"] for t in study.trials})
    assert distinct == (1 if meta_optimizer == "adam" else 3)
    records = study.sampler.meta_optimizer_for(study).history
    assert [r.gradients for r in records] == [None] * 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"params": ()}, "params"),
        ({"params": ("lr", "lr")}, "distinct"),
        ({"params": ("lr",), "meta_optimizer": "bracket"}, "meta_optimizer"),
        ({"params": ("lr", "wd"), "start": {"lr": 0.1}}, "start"),
        ({"params": ("lr",), "start": {"lr": math.nan}}, r"start\['lr'\]"),
        ({"params": ("lr",), "start": [0.1]}, "mapping"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HypergradientSampler(**kwargs)


def test_a_tuned_parameter_that_is_not_a_continuous_float_goes_to_the_independent_sampler() -> None:
    """An int among the tuned names: sampled by the independent sampler (one warning); the
    float is still tuned with its gradient."""

    def mixed(trial: Trial) -> float:
        lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
        batch = trial.suggest_int("batch", 8, 64)
        value, grads = bowl(lr, OPTIMUM["weight_decay"])
        report_meta_gradient(trial, {"lr": grads["lr"], "batch": 0.0})
        return value + 1e-3 * batch

    study = optuna.create_study(sampler=HypergradientSampler(("lr", "batch"), seed=0))
    with pytest.warns(UserWarning, match="'batch' is suggested as IntDistribution"):
        study.optimize(mixed, n_trials=40)
    sampler = study.sampler
    assert isinstance(sampler, HypergradientSampler)
    assert set(sampler.recommended_params(study)) == {"lr"}
    assert abs(math.log(sampler.recommended_params(study)["lr"] / OPTIMUM["lr"])) <= 0.1
    assert len({t.params["batch"] for t in study.trials}) > 5


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_adamw_training_loop_reports_its_hypergradients() -> None:
    """The user's story end to end: a small AdamW loop with HypergradAdamW reports
    ``opt.hypergradients(val_loss)``; the study runs and moves both parameters."""
    torch = pytest.importorskip("torch")
    from torch.nn import functional as F

    from l2l_tune.data import load_digits
    from l2l_tune.hypergrad import HypergradAdamW

    data = load_digits()
    x = torch.as_tensor(data.train_images[:400], dtype=torch.float64) / data.max_pixel
    y = torch.as_tensor(data.train_labels[:400])

    def train(trial: Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        wd = trial.suggest_float("weight_decay", 1e-5, 1.0, log=True)
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10)
        )
        model = model.double()
        opt = HypergradAdamW(model.parameters(), lr=lr, weight_decay=wd)
        for i in range(0, 300, 30):
            opt.zero_grad()
            F.cross_entropy(model(x[i : i + 30]), y[i : i + 30]).backward(create_graph=True)
            opt.step()
        val_loss = F.cross_entropy(model(x[300:]), y[300:])
        report_meta_gradient(trial, opt.hypergradients(val_loss))
        return val_loss.item()

    study = _study()
    study.optimize(train, n_trials=6)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert len({t.params["lr"] for t in study.trials}) == 6
    assert len({t.params["weight_decay"] for t in study.trials}) == 6


@pytest.mark.parametrize("seed", range(3))
def test_hyperparameter_objective_tunes_heavy_ball(seed: int, tmp_path: Path) -> None:
    """A library task in a study: (lr, momentum) of heavy ball on a quadratic, with the
    gradients the objective reports, reaches at least twice GD's best log-rate in 30
    trials on every seed (the closed form is exact: no noise)."""
    from l2l_tune.integrations.optuna import hyperparameter_objective

    from l2l_tune.tasks import Quadratic

    q = Quadratic.random(20, seed=seed)
    best_gd = q.value_and_gradient(q.optimal_step_size(200), 200, log=True)[0]
    sampler = HypergradientSampler(
        params=("lr", "momentum"), start={"lr": 1 / q.smoothness, "momentum": 0.0}
    )
    study = optuna.create_study(sampler=sampler, storage=f"sqlite:///{tmp_path / 's.db'}")
    study.optimize(hyperparameter_objective(q, ("lr", "momentum"), 200), n_trials=30)
    assert math.log(study.best_value) / 200 <= 2.0 * best_gd
    space = q.hyperparameter_space()
    for trial in study.trials:
        assert set(trial.params) == {"lr", "momentum"}
        assert space.parameters[0].low <= trial.params["lr"] <= space.parameters[0].high


def test_hyperparameter_objective_rejects_unknown_names() -> None:
    from l2l_tune.integrations.optuna import hyperparameter_objective

    from l2l_tune.tasks import Quadratic

    with pytest.raises(ValueError, match="not in the space"):
        hyperparameter_objective(Quadratic.random(5, seed=0), ("lr", "beta1"), 10)
    with pytest.raises(ValueError, match="split"):
        hyperparameter_objective(Quadratic.random(5, seed=0), "lr", 10, split="test")
    with pytest.raises(ValueError, match="t must be an integer"):
        hyperparameter_objective(Quadratic.random(5, seed=0), "lr", 0)
