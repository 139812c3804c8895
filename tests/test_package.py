"""Packaging: the public surface, ``__all__`` lists, and the integrations mapping."""

from __future__ import annotations

import importlib

import pytest

import l2l_tune

MODULES = [
    "l2l_tune",
    "l2l_tune.tasks",
    "l2l_tune.meta",
    "l2l_tune.tuner",
    "l2l_tune.baselines",
    "l2l_tune.cli",
    "l2l_tune.integrations",
    "l2l_tune.integrations.optuna",
    "l2l_tune.integrations.ray",
]


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_and_all_resolves(name: str) -> None:
    """Every module imports and every name in its ``__all__`` exists."""
    module = importlib.import_module(name)
    assert isinstance(module.__all__, list)
    for attr in module.__all__:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"


def test_integrations_are_mapped_from_top_level_folder() -> None:
    """``integrations/`` installs as ``l2l_tune.integrations`` (setup.cfg package_dir)."""
    integrations = importlib.import_module("l2l_tune.integrations")
    assert integrations.__file__ is not None
    assert "integrations" in integrations.__file__


def test_importing_integrations_does_not_import_frameworks() -> None:
    """The adapters' package imports neither Optuna nor Ray by itself."""
    import subprocess
    import sys

    code = "import sys, l2l_tune.integrations; print('optuna' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_version_string() -> None:
    """The package exposes a PEP 440 version."""
    assert l2l_tune.__version__.count(".") == 2
