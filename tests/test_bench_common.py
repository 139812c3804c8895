"""The harness's shared pieces (:mod:`l2l_tune.bench.common`): machine record, JSON, tables,
thread limits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from l2l_tune import __version__
from l2l_tune.bench.common import (
    dumps_json,
    evals_within,
    limit_threads,
    machine_info,
    machine_line,
    markdown_table,
    text_table,
)


def test_machine_info_records_installed_versions_and_thread_pools() -> None:
    info = machine_info()
    assert info["l2l_tune"] == __version__
    assert info["packages"]["numpy"] == np.__version__
    assert info["cpu_count"] >= 1
    assert all("num_threads" in pool for pool in info["blas"])
    assert "not-a-package" not in machine_info(("numpy", "not-a-package"))["packages"]
    line = machine_line(info)
    assert f"numpy {np.__version__}" in line and "CPUs" in line


def test_dumps_json_is_strict_json_with_flat_lists_on_one_line() -> None:
    payload = {"a": [1.0, math.inf, np.float32(2.5)], "b": {"c": np.arange(3)}}
    text = dumps_json(payload)
    assert '"a": [1.0, "inf", 2.5]' in text and '"c": [0, 1, 2]' in text
    assert json.loads(text)["a"][1] == "inf"
    assert json.loads(dumps_json(payload, nonfinite="null"))["a"][1] is None


def test_tables_align_columns() -> None:
    header, rows = ["name", "value"], [["l2l", "1"], ["random", "22"]]
    assert markdown_table(header, rows).splitlines()[1] == "|---|---|"
    lines = text_table(header, rows).splitlines()
    assert lines[0] == "name    value" and lines[1] == "------  -----"
    assert lines[3] == "random  22"


def test_evals_within_counts_the_evaluation_that_reaches_the_tolerance() -> None:
    errors = [1.0, 0.05, 0.5, 0.05, 0.01]  # errors[k] after k + 1 evaluations
    assert evals_within(errors, 0.1) == 2
    assert evals_within(errors, 0.1, stay=True) == 4
    assert evals_within(errors, 1e-3) is None


def test_limit_threads_rejects_negative_and_zero_keeps_defaults() -> None:
    with pytest.raises(ValueError, match="threads must be an integer >= 0"):
        limit_threads(-1)
    assert limit_threads(0) == {"requested": 0, "description": "library default threads"}
