"""Optuna's reusable sampler suites, and the OptunaHub packaging, for ``MetaGradientSampler``.

The suites (``optuna.testing.pytest_samplers``) take a ``sampler`` fixture that returns a
*factory* (each test calls it to build a fresh sampler); they are not parametrized over
samplers. With ``param=None`` the sampler tunes the study's first continuous float with
``0 ≤ low < high`` as the step size and hands every other parameter to its independent
``RandomSampler``, announcing each one with a ``UserWarning`` (and warning once when several
floats compete for the step size); both warnings are expected here and filtered.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import optuna
import optunahub
import pytest
import yaml
from l2l_tune.integrations.optuna import HypergradientSampler, MetaGradientSampler
from optuna.samplers import BaseSampler
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    RelativeSamplerTestCase,
    SingleOnlySamplerTestCase,
)
from optuna.trial import Trial, TrialState

from l2l_tune import Quadratic

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO / "integrations" / "optuna"

_FILTERS = [
    pytest.mark.filterwarnings("ignore:The parameter .* is not the step size:UserWarning"),
    pytest.mark.filterwarnings("ignore:MetaGradientSampler.param=None. found several:UserWarning"),
]


class _Factory:
    """Provides the suites' ``sampler`` fixture: a factory of seeded samplers."""

    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return lambda: MetaGradientSampler(seed=0)


@_FILTERS[0]
@_FILTERS[1]
class TestBasicSampler(_Factory, BasicSamplerTestCase):
    """Optuna's basic suite: bounds, native Python types, NaN values, partial fixing,
    conditional and dynamic search spaces, every distribution kind."""


@_FILTERS[0]
@_FILTERS[1]
class TestRelativeSampler(_Factory, RelativeSamplerTestCase):
    """Optuna's relative suite: ``sample_relative`` on arbitrary search spaces returns a
    native value within bounds for every key, also with ``n_jobs=2``."""


@_FILTERS[0]
@_FILTERS[1]
class TestSingleOnlySampler(_Factory, SingleOnlySamplerTestCase):
    """Optuna's single-objective-only suite: multi-objective studies raise ValueError in
    ``sample_independent`` and in ``sample_relative``."""


# ---------------------------------------------------------------------- OptunaHub
def test_optunahub_local_module_loads_and_samples() -> None:
    """``optunahub.load_local_module(package="optuna", registry_root=<repo>/integrations)``
    loads the package; its ``MetaGradientSampler`` and ``report_meta_gradient`` drive a
    study to the quadratic's ``η*``."""
    module = optunahub.load_local_module(package="optuna", registry_root=str(REPO / "integrations"))
    assert module.__name__ == "optunahub_registry.package.optuna"
    q = Quadratic.random(20, 0, variant="authors")
    eta_star = q.optimal_step_size(80)

    def objective(trial: Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        value, grad = q.value_and_gradient(lr, 80, log=False)
        module.report_meta_gradient(trial, grad)
        return value

    sampler = module.MetaGradientSampler(param="lr", eta0=0.1, deterministic=True)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=30)
    assert all(tr.state == TrialState.COMPLETE for tr in study.trials)
    assert abs(study.best_params["lr"] - eta_star) <= 1e-6 * eta_star


def test_optunahub_readme_front_matter() -> None:
    """The package's README.md starts with YAML front-matter holding the keys OptunaHub
    requires (author, title, description, tags, optuna_versions, license)."""
    readme = PACKAGE_DIR / "README.md"
    if not readme.exists():
        pytest.skip("integrations/optuna/README.md is not written yet")
    match = re.match(r"---\n(.*?)\n---\n", readme.read_text(encoding="utf-8"), re.DOTALL)
    assert match, "README.md must start with a '---' front-matter block"
    meta = yaml.safe_load(match.group(1))
    assert isinstance(meta, dict)
    for key in ("author", "title", "description", "tags", "optuna_versions", "license"):
        assert meta.get(key), f"front-matter key {key!r} missing or empty"
    assert isinstance(meta["tags"], list)
    assert isinstance(meta["optuna_versions"], list)


class _VectorFactory:
    """The suites' ``sampler`` fixture for :class:`HypergradientSampler` tuning ``x`` and ``y``
    (names the suites suggest as floats, and as other kinds in some tests)."""

    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return lambda: HypergradientSampler(("x", "y"), seed=0)


_VECTOR_FILTER = pytest.mark.filterwarnings("ignore:.* is suggested as .*:UserWarning")


@_VECTOR_FILTER
class TestVectorBasicSampler(_VectorFactory, BasicSamplerTestCase):
    """Optuna's basic suite for the vector sampler."""


@_VECTOR_FILTER
class TestVectorRelativeSampler(_VectorFactory, RelativeSamplerTestCase):
    """Optuna's relative suite for the vector sampler."""


@_VECTOR_FILTER
class TestVectorSingleOnlySampler(_VectorFactory, SingleOnlySamplerTestCase):
    """Optuna's single-objective-only suite for the vector sampler."""
