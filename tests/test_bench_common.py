"""The harness's shared pieces (:mod:`l2l_tune.bench.common`): machine record, JSON, tables,
thread limits, timers and output files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from l2l_tune import __version__
from l2l_tune.bench.common import (
    Column,
    command_line,
    dumps_json,
    evals_within,
    limit_threads,
    machine_info,
    machine_line,
    markdown_table,
    medians,
    records_table,
    relative_error,
    sync_device,
    text_table,
    time_interleaved,
    torch_threads,
    write_results,
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


def test_time_interleaved_times_the_calls_in_turn_per_unit() -> None:
    order: list[str] = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    times = time_interleaved(calls, 3, per=4)
    assert order == ["a", "b"] * 3
    assert [len(v) for v in times.values()] == [3, 3]
    assert all(0.0 <= s < 1.0 for v in times.values() for s in v)
    assert medians({"x": [3.0, 1.0, 2.0]}) == {"x": 2.0}
    sync_device("cpu")  # nothing to wait for
    with pytest.raises(ValueError, match="rounds must be an integer >= 1"):
        time_interleaved(calls, 0)
    with pytest.raises(ValueError, match="per must be an integer >= 1"):
        time_interleaved(calls, 1, per=0)


def test_records_table_fills_format_strings_and_calls_functions() -> None:
    columns: dict[str, Column] = {
        "t": "{t}",
        "plain s": "{seconds[plain]:.2f}",
        "ok": lambda r: "yes" * r["ok"],
    }
    records = [{"t": 5, "seconds": {"plain": 0.125}, "ok": True}]
    assert records_table(columns, records) == markdown_table(
        ["t", "plain s", "ok"], [["5", "0.12", "yes"]]
    )
    assert records_table(columns, records, style="text").splitlines()[2] == "5  0.12     yes"
    with pytest.raises(ValueError, match="style must be 'markdown' or 'text'"):
        records_table(columns, records, style="html")  # type: ignore[arg-type]


def test_write_results_writes_json_and_markdown_beside_it(tmp_path: Path) -> None:
    out = tmp_path / "new" / "run.json"
    assert write_results(out, {"x": [1.0, math.nan]}, "# Run\n") == out.with_suffix(".md")
    assert json.loads(out.read_text()) == {"x": [1.0, "nan"]}
    assert out.with_suffix(".md").read_text() == "# Run\n"
    elsewhere = tmp_path / "report.md"
    assert (
        write_results(out, {}, "text", elsewhere) == elsewhere and elsewhere.read_text() == "text"
    )
    assert command_line("benchmarks/x.py", ["--quick"]) == "python benchmarks/x.py --quick"
    assert command_line("benchmarks/x.py", []) == "python benchmarks/x.py"


def test_relative_error_conventions() -> None:
    assert relative_error(1.1, 1.0) == pytest.approx(0.1)
    assert relative_error(-2.0, 2.0) == 2.0
    assert relative_error(0.0, 0.0) == 0.0
    assert relative_error(1e-300, 0.0) == math.inf
    assert relative_error(math.nan, 1.0) == math.inf
    assert math.isnan(relative_error(math.inf, 1.0, nonfinite=math.nan))


def test_torch_threads_sets_and_restores_pytorch_threads() -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("restored on the way out")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
