"""Optuna's reusable sampler conformance suites run against ``MetaGradientSampler``."""

from __future__ import annotations

from collections.abc import Callable

import optuna
import pytest
from optuna.samplers import BaseSampler
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    RelativeSamplerTestCase,
    SingleOnlySamplerTestCase,
)

from l2l_tune.integrations.optuna import MetaGradientSampler

_FILTER = pytest.mark.filterwarnings("ignore:The parameter .* is not the step size:UserWarning")


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


class _Factory:
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return lambda: MetaGradientSampler(seed=0)


@_FILTER
class TestBasic(_Factory, BasicSamplerTestCase):
    pass


@_FILTER
class TestRelative(_Factory, RelativeSamplerTestCase):
    pass


@_FILTER
class TestSingleOnly(_Factory, SingleOnlySamplerTestCase):
    pass
