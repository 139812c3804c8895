"""Bad input, fuzzed (``hypothesis``): the public API and the CLI end in a result or a
``ValueError`` / usage error naming the argument, never a traceback from deep inside, and
never propose a NaN step size.

Each property draws from ordinary values and from what users get wrong: zero, negative,
NaN and infinite numbers, bounds the wrong way round, non-numeric strings, metrics and
meta-gradients that are NaN or infinite. The case counts (``max_examples``) add up to
2,100 per run of the default suite (about 40 s on 2 cores); ``derandomize=True`` keeps the
suite reproducible, and a failure prints the minimal case.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import warnings
from typing import Any

import numpy as np
import optuna
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from l2l_tune.integrations.optuna import MetaGradientSampler, report_meta_gradient
from l2l_tune.integrations.ray import MetaGradientSearch
from ray import tune

from l2l_tune import LeastSquares, Quadratic, StepSizeTuner, make_meta_optimizer
from l2l_tune.cli import main as cli_main
from l2l_tune.meta import META_OPTIMIZERS

#: Every property: reproducible, no per-example deadline (the machine is shared).
FUZZ = settings(
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

WEIRD_FLOATS = st.sampled_from(
    [0.0, -0.0, -1.0, -1e-12, 1e-300, 1e300, math.nan, math.inf, -math.inf, 1e-8, 0.5, 3.0]
)
ANY_FLOAT = st.one_of(WEIRD_FLOATS, st.floats(allow_nan=True, allow_infinity=True))
STEP_SIZE_FLOAT = st.one_of(WEIRD_FLOATS, st.floats(1e-6, 10.0))
#: Bounds: as often valid (a range in [0, 10]) as weird.
BOUND = st.one_of(WEIRD_FLOATS, st.floats(0.0, 10.0), ANY_FLOAT)
METRIC = st.one_of(
    st.floats(-1e6, 1e6), st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e-300])
)
GRADIENT = st.one_of(st.none(), METRIC)

#: A ValueError must say what is wrong: it names an argument, a parameter or a value.
NAMED = re.compile(r"[a-z_]+\b.*(must|should|got|expected|needs|outside|not )", re.I | re.S)


def check_named(error: ValueError) -> None:
    assert NAMED.search(str(error)), f"unclear ValueError: {error}"


def finite_in(eta: float, low: float, high: float) -> None:
    assert isinstance(eta, float | np.floating) and math.isfinite(eta), eta
    assert low - 1e-12 * abs(low) <= eta <= high + 1e-12 * abs(high), (eta, low, high)


# ---------------------------------------------------------------------- meta-optimizers
@settings(FUZZ, max_examples=600)
@given(
    name=st.sampled_from(sorted(META_OPTIMIZERS)),
    eta0=ANY_FLOAT,
    low=BOUND,
    high=BOUND,
    told=st.lists(st.tuples(STEP_SIZE_FLOAT, METRIC, GRADIENT), max_size=8),
)
def test_meta_optimizers_take_anything_and_never_propose_nan(
    name: str, eta0: float, low: float, high: float, told: list[tuple[float, float, Any]]
) -> None:
    """Construction with any ``eta0`` and bounds ends in an optimizer or a named
    ``ValueError``; any told history (NaN and infinite values and gradients included) is
    taken, or refused by name; every proposal is a finite step size within the bounds."""
    try:
        optimizer = make_meta_optimizer(name, eta0=eta0, bounds=(low, high))
    except ValueError as error:
        check_named(error)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for eta, value, grad in told:
            try:
                optimizer.tell(eta, value, grad)
            except ValueError as error:
                check_named(error)
            proposal = optimizer.ask()
            finite_in(proposal, low, high)
        finite_in(optimizer.estimate(), low, high)


# ---------------------------------------------------------------------- the tuner
@settings(FUZZ, max_examples=300)
@given(
    meta_optimizer=st.sampled_from(["auto", *sorted(META_OPTIMIZERS), "nope", ""]),
    eta0=st.one_of(st.none(), ANY_FLOAT),
    max_evals=st.one_of(st.integers(-2, 6), st.sampled_from([2.5, math.nan, "3"])),
    tol=st.one_of(st.none(), ANY_FLOAT),
    t=st.one_of(st.integers(-2, 12), st.sampled_from([0.5, math.nan, "8"])),
    split=st.sampled_from(["train", "valid", "test", ""]),
    task_kind=st.sampled_from(["quadratic", "least-squares"]),
)
def test_step_size_tuner_ends_in_a_result_or_a_named_error(
    meta_optimizer: str,
    eta0: float | None,
    max_evals: Any,
    tol: float | None,
    t: Any,
    split: str,
    task_kind: str,
) -> None:
    """``StepSizeTuner(...).fit(task, t, split)`` with any options: a finite step size or a
    named ``ValueError`` (the quadratic has no validation split: that is an error too)."""
    task: Any = (
        Quadratic.random(4, 0)
        if task_kind == "quadratic"
        else LeastSquares(4, 1.0).sample(2, 6, 6, seed=0)
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            tuner = StepSizeTuner(
                meta_optimizer=meta_optimizer, eta0=eta0, max_evals=max_evals, tol=tol
            )
            tuner.fit(task, t, split=split)
    except ValueError as error:
        check_named(error)
        return
    assert math.isfinite(tuner.step_size_) and tuner.step_size_ > 0


@settings(FUZZ, max_examples=200)
@given(
    d=st.integers(-1, 6),
    n_train=st.integers(-1, 6),
    n_valid=st.integers(-1, 6),
    m=st.integers(-1, 3),
    sigma=ANY_FLOAT,
    poison=st.sampled_from([None, math.nan, math.inf, 1e200]),
    eta=STEP_SIZE_FLOAT,
)
def test_least_squares_tasks_refuse_bad_shapes_and_data(
    d: int, n_train: int, n_valid: int, m: int, sigma: float, poison: float | None, eta: float
) -> None:
    """Least-squares tasks sampled with any sizes and noise, or built from data with NaN,
    infinity or 1e200 written into it, at any step size: a meta-objective and meta-gradient
    without NaN (an infinite value is a reported divergence) or a named ``ValueError``."""
    try:
        batch = LeastSquares(d, sigma).sample(m, n_train, n_valid, seed=0)
        if poison is not None:
            rng = np.random.default_rng(0)
            x = rng.normal(size=(max(m, 1), max(n_train, 1), max(d, 1)))
            y = rng.normal(size=(max(m, 1), max(n_train, 1)))
            x[0, 0, 0] = poison
            batch = LeastSquares.from_data(x, y, sigma=sigma)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            value, grad = batch.value_and_gradient(eta, 5, split="train", log=False)
    except ValueError as error:
        check_named(error)
        return
    assert not math.isnan(value) and not math.isnan(grad)


# ---------------------------------------------------------------------- Optuna
@settings(FUZZ, max_examples=250)
@given(
    low=BOUND,
    high=BOUND,
    log=st.booleans(),
    meta_optimizer=st.sampled_from(["auto", "bracket", "model", "paper", "adam"]),
    eta0=st.one_of(st.none(), ANY_FLOAT),
    fd_step=st.one_of(st.just(0.02), ANY_FLOAT),
    outcomes=st.lists(st.tuples(METRIC, GRADIENT), min_size=1, max_size=6),
)
def test_optuna_sampler_never_proposes_nan(
    low: float,
    high: float,
    log: bool,
    meta_optimizer: str,
    eta0: float | None,
    fd_step: float,
    outcomes: list[tuple[float, Any]],
) -> None:
    """Any sampler options and any study bounds: a named ``ValueError`` (from the sampler,
    or Optuna's for impossible bounds) or a study whose every trial got a finite step size
    within the bounds, whatever the objective returned (NaN, ±inf values and gradients)."""
    try:
        sampler = MetaGradientSampler(
            param="lr", meta_optimizer=meta_optimizer, eta0=eta0, fd_step=fd_step, seed=0
        )
    except ValueError as error:
        check_named(error)
        return
    study = optuna.create_study(sampler=sampler)
    seen: list[float] = []

    def objective(trial: optuna.trial.Trial) -> float:
        lr = trial.suggest_float("lr", low, high, log=log)
        seen.append(lr)
        value, grad = outcomes[trial.number % len(outcomes)]
        if grad is not None:
            report_meta_gradient(trial, grad)
        return value

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study.optimize(objective, n_trials=len(outcomes) + 2)
    except ValueError as error:
        check_named(error)
        return
    if low == high:  # Optuna returns a one-value range itself, without the sampler
        assert all(lr == low for lr in seen)
        return
    for lr in seen:
        finite_in(lr, low, high)


# ---------------------------------------------------------------------- Ray
@settings(FUZZ, max_examples=350)
@given(
    low=BOUND,
    high=BOUND,
    log=st.booleans(),
    meta_optimizer=st.sampled_from(["auto", "bracket", "model", "paper", "adam"]),
    tasks_per_step=st.one_of(st.integers(-1, 3), st.sampled_from([1.5, "2"])),
    outcomes=st.lists(
        st.tuples(METRIC, GRADIENT, st.booleans(), st.sampled_from(["loss", "other"])),
        min_size=1,
        max_size=6,
    ),
)
def test_ray_searcher_never_proposes_nan(
    low: float,
    high: float,
    log: bool,
    meta_optimizer: str,
    tasks_per_step: Any,
    outcomes: list[tuple[float, Any, bool, str]],
) -> None:
    """Any bounds (Ray's own domain constructors refuse some: a named error too), any
    ``tasks_per_step``, and any results (NaN/inf metrics and gradients, errored trials,
    a missing metric): every suggestion's step size is finite and within the bounds."""
    try:
        domain = tune.loguniform(low, high) if log else tune.uniform(low, high)
    except (ValueError, AssertionError):  # Ray's own check of impossible bounds
        return
    try:
        search = MetaGradientSearch(
            metric="loss",
            mode="min",
            space={"lr": domain},
            meta_optimizer=meta_optimizer,
            tasks_per_step=tasks_per_step,
            seed=0,
        )
    except ValueError as error:
        check_named(error)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, (value, grad, error, key) in enumerate(outcomes * 2):
            try:
                config = search.suggest(f"t{i}")
            except ValueError as failure:
                check_named(failure)
                return
            assert config is not None
            finite_in(config["lr"], low, high)
            result = {key: value, f"{key}_grad": grad}
            search.on_trial_complete(f"t{i}", result=result, error=error)


# ---------------------------------------------------------------------- CLI
ARG_VALUES = st.sampled_from(
    ["0", "-1", "-0.5", "nan", "inf", "-inf", "abc", "", "1e-300", "2", "3", "0.05", "1.5"]
)


@settings(FUZZ, max_examples=400, suppress_health_check=list(HealthCheck))
@given(
    task=st.sampled_from(["quadratic", "least-squares"]),
    options=st.dictionaries(
        st.sampled_from(
            [
                "--t",
                "--d",
                "--sigma",
                "--eta0",
                "--max-evals",
                "--tol",
                "--seed",
                "--m",
                "--n-train",
                "--n-valid",
                "--m-test",
                "--threads",
            ]
        ),
        ARG_VALUES,
        max_size=4,
    ),
    split=st.sampled_from([None, "train", "valid", "both", "bogus"]),
    meta_optimizer=st.sampled_from([None, "auto", "bracket", "model", "nope"]),
)
def test_cli_tune_ends_in_a_result_or_a_usage_error(
    task: str, options: dict[str, str], split: str | None, meta_optimizer: str | None
) -> None:
    """``l2l-tune tune`` with fuzzed numbers (small sizes where valid, so each run is quick):
    exit 0 with a finite step size in its output, or exit 2 with ``error:`` and the option's
    name on stderr; never another status or a traceback."""
    argv = ["tune", "--task", task, "--no-progress", "--d", "3", "--t", "3", "--max-evals", "3"]
    if task == "least-squares":
        argv += ["--m", "2", "--n-train", "3", "--n-valid", "3", "--m-test", "2"]
    for option, value in options.items():
        argv += [f"{option}={value}"]
    if split is not None:
        argv += ["--split", split]
    if meta_optimizer is not None:
        argv += ["--meta-optimizer", meta_optimizer]
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        try:
            status = cli_main(argv)
        except SystemExit as exit_:
            status = int(exit_.code or 0)
    assert "Traceback" not in err.getvalue(), err.getvalue()
    if status == 2:
        assert "error" in err.getvalue().lower(), err.getvalue()
        assert re.search(r"--[a-z-]+|argument", err.getvalue()), err.getvalue()
    else:
        assert status == 0, (argv, status, err.getvalue())
        assert "nan" not in out.getvalue().lower().split(), out.getvalue()
