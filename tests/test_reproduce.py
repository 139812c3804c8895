"""``l2l-tune reproduce``: every quick target reproduces its claim; registry and CLI behaviour.

The quick runs are the CI check of the paper's qualitative claims: each writes its
PNG, JSON and TXT and must come out ``SUPPORTED`` — except Figs 4–5, whose quick runs
meta-train the MLP optimizer on 0.2 % of the paper's budget: they check the pipeline
(meta-training both ways, tests beside SGD, saved optimizers, resuming), not the verdict.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import l2l_tune.reproduce as reproduce
from l2l_tune.bench.common import first_index_within, to_jsonable
from l2l_tune.cli import main
from l2l_tune.reproduce import TARGETS, Check, RunContext, Target, TargetReport, register

EXPECTED = ("fig1", "fig2", "fig3", "fig4", "fig5", "thm3", "thm4", "thm5", "thm6")


def test_registry_lists_every_target() -> None:
    """The registry holds the nine targets, each with a claim and a paper reference."""
    for name in EXPECTED:
        assert name in TARGETS
        target = TARGETS[name]
        assert target.claim and target.reference and target.title


@pytest.mark.parametrize("name", [n for n in EXPECTED if n not in ("fig4", "fig5")])
def test_quick_target_is_supported(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``reproduce NAME --quick`` writes PNG/JSON/TXT and its checks support the paper."""
    out = tmp_path / name
    code = main(["reproduce", name, "--quick", "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    payload = json.loads((out / f"{name}.json").read_text())
    text = (out / f"{name}.txt").read_text()
    pngs = sorted(out.glob("*.png"))
    assert pngs and all(p.stat().st_size > 10_000 for p in pngs)
    assert payload["target"] == name and payload["quick"] is True
    assert payload["checks"], "a verdict needs explicit checks"
    failed = [c for c in payload["checks"] if not c["passed"]]
    assert payload["supported"] is True, failed
    assert "Verdict: SUPPORTED" in text and "Verdict: SUPPORTED" in printed
    assert payload["claim"] in text


def test_unknown_target_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad target name is a usage error naming the accepted targets."""
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "fig9", "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "TARGET" in err and "fig1" in err and "all" in err and "'fig9'" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["reproduce"], "TARGET is required"),
        (["reproduce", "fig2", "--variant", "paper"], "--variant applies to"),
        (["reproduce", "thm3", "--variant", "other"], "--variant must be one of"),
        (["reproduce", "thm3", "--seed", "-1"], "--seed must be"),
        (["reproduce", "thm3", "--full"], "--full applies to fig4, fig5 only"),
        (["reproduce", "fig4", "--quick", "--full"], "not allowed with argument"),
        (["reproduce", "fig5", "--meta-lr-schedule", "linear"], "must be one of 'constant'"),
        (["reproduce", "thm3", "--meta-lr-schedule", "cosine"], "applies to fig4, fig5 only"),
        (["reproduce", "fig4", "--meta-init", "xavier"], "must be one of 'authors'"),
        (["reproduce", "fig2", "--meta-init", "fan-in"], "applies to fig4, fig5 only"),
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Bad arguments exit with status 2 and say what is accepted."""
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path), "--no-progress"])
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_out_must_be_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--out`` naming an existing file is a usage error, not a traceback."""
    path = tmp_path / "file.txt"
    path.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "thm3", "--quick", "--out", str(path), "--no-progress"])
    assert exc.value.code == 2
    assert "--out must be a folder" in capsys.readouterr().err


def test_backprop_contrast_without_torch_exits_1_naming_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fig 1's unrolled-backprop contrast is PyTorch autodiff (the library's one unrolled
    backprop); without PyTorch the command stops with the extra to install, not a traceback."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "fig1", "--quick", "--out", str(tmp_path), "--no-progress"])
    assert exc.value.code == 1
    assert "l2l-tune[torch]" in capsys.readouterr().err


def test_list_shows_targets_and_claims(capsys: pytest.CaptureFixture[str]) -> None:
    """``reproduce --list`` names every target with its claim."""
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for name in EXPECTED:
        assert name in out
    assert "within ~300" in out


def _fake_target(name: str, passed: bool) -> Target:
    def run(ctx: RunContext) -> TargetReport:
        return TargetReport(
            setting="a fake",
            measured=[f"seed {ctx.seed}"],
            checks=[Check("always", passed, "by construction")],
            settings={"quick": ctx.quick},
            results={"values": np.array([1.0, math.inf, math.nan])},
        )

    return Target(name, f"fake {name}", "nowhere", "a claim", run)


def test_all_runs_every_target_and_reports_unsupported_honestly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``reproduce all`` runs each registered target into DIR/<name>; NOT SUPPORTED exits 0."""
    fake = {"good": _fake_target("good", True), "bad": _fake_target("bad", False)}
    monkeypatch.setattr(reproduce, "TARGETS", fake)
    code = main(["reproduce", "all", "--quick", "--seed", "3", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "Verdict: NOT SUPPORTED" in out and "Verdict: SUPPORTED" in out
    good = json.loads((tmp_path / "good" / "good.json").read_text())
    bad = json.loads((tmp_path / "bad" / "bad.json").read_text())
    assert good["supported"] is True and bad["supported"] is False
    assert bad["verdict"] == "NOT SUPPORTED"
    assert good["seed"] == 3 and good["results"]["values"] == [1.0, "inf", "nan"]
    assert "--seed 3" in good["command"]


def test_register_rejects_duplicates_and_reserved_names() -> None:
    """Names are unique identifiers; 'all' is reserved."""
    with pytest.raises(ValueError, match="already registered"):
        register("fig1", title="x", reference="x", claim="x")(lambda ctx: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="identifier other than 'all'"):
        register("all", title="x", reference="x", claim="x")


def test_first_index_within_first_hit_and_stay() -> None:
    """The first index within the tolerance, and the first after which every error stays
    within it (a NaN counts as outside); the harness's one counting convention."""
    errors = np.array([1.0, 0.05, 0.5, 0.05, 0.01])
    assert first_index_within(errors, 0.1, stay=True) == 3
    assert first_index_within(errors, 0.1) == 1
    assert first_index_within(errors, 1.0, stay=True) == 0
    assert first_index_within(errors, 1e-3, stay=True) is None
    assert first_index_within(errors, 1e-3) is None
    assert first_index_within(np.array([0.5, math.nan, 0.01]), 0.1, stay=True) == 2
    assert first_index_within(np.array([]), 0.1, stay=True) is None


def test_to_jsonable_converts_numpy_and_non_finite() -> None:
    """NumPy scalars and arrays become JSON types; inf/nan become strings, or null."""
    data = {"a": np.float64(1.5), "b": np.int64(2), "c": np.array([math.inf]), "d": (np.bool_(1),)}
    assert to_jsonable(data) == {"a": 1.5, "b": 2, "c": ["inf"], "d": [True]}
    assert to_jsonable(data, nonfinite="null")["c"] == [None]
    json.dumps(to_jsonable(data), allow_nan=False)
    with pytest.raises(ValueError, match="nonfinite must be"):
        to_jsonable(data, nonfinite="zero")  # type: ignore[arg-type]


def test_checkpointed_reads_back_only_a_matching_fingerprint(tmp_path: Path) -> None:
    """A part is computed once per fingerprint; another fingerprint recomputes and replaces."""
    from l2l_tune.reproduce.base import checkpointed

    calls: list[int] = []

    def compute() -> dict[str, Any]:
        calls.append(1)
        return {"value": len(calls), "pair": (1.0, float("nan"))}

    path = tmp_path / "part" / "noisy.json"
    first, read_back = checkpointed(path, {"seed": 0, "grid": (1e-3, 3.0)}, compute)
    assert not read_back and first["value"] == 1 and path.exists()
    again, read_back = checkpointed(path, {"seed": 0, "grid": (1e-3, 3.0)}, compute)
    assert read_back and again["value"] == 1 and again["pair"] == [1.0, "nan"]
    other, read_back = checkpointed(path, {"seed": 1, "grid": (1e-3, 3.0)}, compute)
    assert not read_back and other["value"] == 2 and len(calls) == 2
    assert checkpointed(path, {"seed": 1, "grid": (1e-3, 3.0)}, compute)[0]["value"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["noisy.json"]
    for damaged in ('{"fingerprint": ', "[1, 2]"):  # cut short, or not a checkpoint
        path.write_text(damaged)
        result, read_back = checkpointed(path, {"seed": 1, "grid": (1e-3, 3.0)}, compute)
        assert not read_back and result["value"] == len(calls)
    assert checkpointed(path, {"seed": 1, "grid": (1e-3, 3.0)}, compute)[1]


def _learned_quick_run(name: str, out: Path) -> dict[str, Any]:
    """``reproduce NAME --quick`` of Fig 4 or 5: the files and the structure of the JSON."""
    code = main(["reproduce", name, "--quick", "--out", str(out), "--no-progress"])
    assert code == 0
    payload = json.loads((out / f"{name}.json").read_text())
    assert {p.name for p in out.glob("*.png")} == {f"{name}.png", f"{name}_step_size.png"}
    assert payload["quick"] is True and payload["full"] is False and payload["checks"]
    assert payload["supported"] == all(c["passed"] for c in payload["checks"])
    for setting in payload["results"]["learned"].values():
        assert set(setting["methods"]) == {"MLP-TbT", "MLP-TbV", "SGD-grid"}
        for name_, method in setting["methods"].items():
            test = method["test"]
            assert 0.0 <= test["test_accuracy"] <= 1.0 and 0.0 <= test["train_accuracy"] <= 1.0
            assert len(method["curve_steps"]) == 300 // 25
            if name_ != "SGD-grid":
                assert method["meta_steps"] == 10 * 30 and method["step_size"] is None
                assert math.isfinite(method["meta_loss_last_tenth"])
    return payload


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_quick_fig5_meta_trains_the_mlp_optimizer_both_ways(
    tmp_path: Path, one_torch_thread: None
) -> None:
    """``reproduce fig5 --quick`` (digits, ~1.5 min): MLP-TbT and MLP-TbV meta-trained (10
    trajectories of 30 truncations of 10 steps each), tested beside grid-searched SGD, the
    meta-trained optimizers saved (they load into ``MLPOptimizer``) and resumable.

    The verdict is not asserted: the quick budget is 0.2 % of the paper's meta-training and
    whether its learned optimizers show the paper's gap depends on the seed (docs/learned.md
    has the default budget's figures). The step-size table's ordering, deterministic at this
    seed, is.
    """
    torch = pytest.importorskip("torch")
    from l2l_tune.learned import MetaParameters, MLPOptimizer

    out = tmp_path / "fig5"
    payload = _learned_quick_run("fig5", out)
    steps = payload["results"]["step_size"]["noisy"]["methods"]
    assert steps["TbV"]["test"]["test_accuracy"] > steps["TbT"]["test"]["test_accuracy"]
    assert steps["TbT"]["test"]["train_accuracy"] > steps["TbV"]["test"]["train_accuracy"]
    meta = MetaParameters.load(out / "noisy-MLP-TbV.meta.pt")
    model = torch.nn.Linear(3, 2)
    MLPOptimizer(model.parameters(), meta)
    assert sorted(p.name for p in (out / "meta-training").iterdir()) == [
        "noisy-MLP-TbT.pt",
        "noisy-MLP-TbV.pt",
    ]
    # Run again into the folder: every part (meta-training, the learned optimizers' tests,
    # the step-size table) is read back, not rewritten, and the report is the same.
    parts = [out / "tests" / "noisy.json", out / "step-size" / "noisy.json"]
    written = [p.stat().st_mtime_ns for p in parts]
    again = _learned_quick_run("fig5", out)
    assert [p.stat().st_mtime_ns for p in parts] == written
    assert again["results"] == payload["results"] and again["checks"] == payload["checks"]
    assert not any("earlier run" in note for note in payload["notes"])
    (note,) = (note for note in again["notes"] if "earlier run" in note)
    assert "meta-training/noisy-MLP-TbV.pt" in note and "step-size/noisy.json" in note


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_quick_fig4_runs_three_settings_and_resumes(tmp_path: Path) -> None:
    """``reproduce fig4 --quick`` (digits, ~4 min): three settings of MLP-TbT/MLP-TbV/SGD; run
    again into the same folder it reads the finished meta-training back (same results)."""
    out = tmp_path / "fig4"
    first = _learned_quick_run("fig4", out)
    assert set(first["results"]["learned"]) == {"small", "noisy", "all"}
    again = _learned_quick_run("fig4", out)
    for key, setting in first["results"]["learned"].items():
        for name, method in setting["methods"].items():
            assert again["results"]["learned"][key]["methods"][name]["test"] == method["test"]


def test_target_settings_and_options_of_the_scaffolding(tmp_path: Path) -> None:
    """``TargetSettings.for_run`` applies ``QUICK`` only with ``quick``; ``RunContext.option``
    rejects a value outside the option's described choices, naming the option."""
    from l2l_tune.reproduce.quadratic import Fig1Settings, StabilitySettings

    assert Fig1Settings.for_run(False) == Fig1Settings()
    quick = Fig1Settings.for_run(True)
    assert (quick.meta_steps, quick.extra_seeds, quick.t) == (1000, 2, Fig1Settings().t)
    assert StabilitySettings.for_run(True).ts[-1] == 2560
    ctx = RunContext(out_dir=tmp_path, options={"variant": "other"})
    assert ctx.option("seedless", 3) == 3
    with pytest.raises(ValueError, match="variant must be one of 'paper', 'authors'"):
        ctx.option("variant", "paper")
