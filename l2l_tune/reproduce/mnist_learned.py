"""Figs 4–5 as the paper has them: the MLP optimizer meta-trained train-by-train vs by validation.

In each setting the MLP optimizer of Metz et al. (:mod:`l2l_tune.learned`) is
meta-trained twice by truncated backprop (first order, RMSProp, random truncations):

- MLP-TbT on ``n`` training samples (the meta-objective is their loss),
- MLP-TbV on ``n`` training + ``n_valid`` validation samples (the validation loss),

and SGD's step size is chosen by grid search on the validation loss (the paper's SGD
baseline) at the test horizon. Each then trains ``runs`` new problems (new samples,
label noise, the authors' initialisation ``N(0, 1)·1.2/√fan_in`` and mini-batch
orders) for ``test_steps`` steps on their training samples, recording test accuracy
(true labels; the authors' code noised the test labels too) and training accuracy
(the problem's labels, noisy ones included) along the way.

Three budgets: ``quick`` (scikit-learn's 8×8 digits, a smoke test of the whole
pipeline in about a minute per target), ``default`` (MNIST, sized for two CPU cores:
shorter and fewer truncations than the paper's, the meta-objective of all of MNIST on a
random 1,000 of its samples per truncation, meta-parameters started fan-in scaled and the
meta-learning rate annealed to 0 by a cosine) and ``full`` (the paper's schedule: 300
trajectories of ``10 + Exp(30)`` truncations of ``50 + Exp(100)`` steps, tests of
4,000 steps; for a GPU).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..baselines import GridSearch
from .base import Check, RunContext, TargetReport, checkpointed, register, register_option
from .mnist import (
    _OPTIONS,
    MNISTSetting,
    MNISTSettings,
    _accuracy,
    _accuracy_lines,
    _BySetting,
    _dataset_threads,
    _distribution,
    _network,
    _run_settings,
    _setting_text,
    _step_size_text,
    data_fingerprint,
    plot_accuracy_curves,
    sha256_of,
)

__all__ = [
    "BUDGETS",
    "LearnedProtocol",
    "MetaTrainingJob",
    "compare_learned_on_mnist",
    "meta_training_jobs",
    "run_meta_training_jobs",
]

#: The budgets of the learned-optimizer protocol.
BUDGETS = ("quick", "default", "full")

register_option(
    "meta_lr_schedule",
    help="fig4/fig5: RMSProp's meta-learning rate over meta-training: constant (the paper's; "
    "the default of --quick and --full) or cosine (to 0, so the last trajectories run the final "
    "optimizer; the default budget's default)",
    choices=("constant", "cosine"),
)
register_option(
    "meta_init",
    help="fig4/fig5: the MLP optimizer's initial meta-parameters: authors (weights N(0, 1), "
    "biases 0.1: the paper's; the default of --quick and --full) or fan-in (weights "
    "N(0, 1/fan_in), biases 0; the default budget's default)",
    choices=("authors", "fan-in"),
)
_LEARNED_OPTIONS = (*_OPTIONS, "meta_lr_schedule", "meta_init")


@dataclass(frozen=True)
class LearnedProtocol:
    """How the MLP optimizer is meta-trained and tested in Figs 4–5.

    Attributes:
        budget: ``"quick"``, ``"default"`` or ``"full"``.
        problems: Inner problems per meta-batch (the paper: 1).
        trajectories: Trajectories of meta-training (the paper: 300).
        min_truncations, mean_extra_truncations: Truncations per trajectory,
            ``min + Exp(mean)`` (the paper: 10 and 30).
        min_steps, mean_extra_steps: Steps per truncation (the paper: 50 and 100).
        lr: RMSProp's learning rate (the paper: 1e-2).
        meta_set_size: Cap on the meta-set samples whose loss is the meta-objective
            (a new random subset per truncation; ``None``: every sample, the paper's).
        test_steps: Steps of every test run (the paper: 4000).
        runs: Test runs per method (the paper: 5).
        eval_every: Steps between points of the accuracy curves (the paper: 100).
        grid: ``(low, high, points)`` of SGD's log grid of step sizes.
        grid_tasks: Problems averaged by each grid point's validation loss.
        lr_schedule: The meta-learning rate's schedule (``"constant"``: the paper's;
            ``"cosine"`` in the default budget).
        init: The initial meta-parameters (``"authors"``: the paper's; ``"fan-in"`` in
            the default budget, where the authors' start leaves the CPU budget on the
            ln 10 plateau: docs/learned.md).
    """

    budget: str
    problems: int
    trajectories: int
    min_truncations: int
    mean_extra_truncations: float
    min_steps: int
    mean_extra_steps: float
    lr: float
    meta_set_size: int | None
    test_steps: int
    runs: int
    eval_every: int
    grid: tuple[float, float, int]
    grid_tasks: int
    lr_schedule: str = "constant"
    init: str = "authors"

    @classmethod
    def for_budget(cls, budget: str) -> LearnedProtocol:
        """The protocol of ``budget`` (see the module's docstring)."""
        if budget == "quick":
            return cls("quick", 1, 10, 30, 0.0, 10, 0.0, 1e-2, None, 300, 3, 25,
                       (1e-2, 3.0, 7), 2)  # fmt: skip
        if budget == "default":
            return cls("default", 1, 8, 100, 0.0, 10, 0.0, 1e-2, 1000, 1000, 5, 50,
                       (1e-3, 3.0, 9), 2, lr_schedule="cosine", init="fan-in")  # fmt: skip
        if budget == "full":
            return cls("full", 1, 300, 10, 30.0, 50, 100.0, 1e-2, None, 4000, 5, 100,
                       (1e-3, 3.0, 15), 4)  # fmt: skip
        raise ValueError(f"budget must be one of {', '.join(map(repr, BUDGETS))}; got {budget!r}")

    def schedule(self, split: str, n_train: int, n_valid: int, label_noise: float) -> Any:
        """The :class:`~l2l_tune.learned.MetaTrainingSchedule` of one meta-training."""
        from ..learned import MetaTrainingSchedule

        meta_set = n_train if split == "train" else n_valid
        cap = self.meta_set_size
        return MetaTrainingSchedule(
            split=split,
            n_train=n_train,
            n_valid=n_valid,
            label_noise=label_noise,
            problems=self.problems,
            trajectories=self.trajectories,
            min_truncations=self.min_truncations,
            mean_extra_truncations=self.mean_extra_truncations,
            min_steps=self.min_steps,
            mean_extra_steps=self.mean_extra_steps,
            lr=self.lr,
            lr_schedule=self.lr_schedule,
            init=self.init,
            meta_set_size=cap if cap is not None and cap < meta_set else None,
        )

    def distance_from_the_paper(self) -> str:
        """One sentence: how much less meta-training and testing than the paper's."""
        mean_steps = (self.min_truncations + self.mean_extra_truncations) * (
            self.min_steps + self.mean_extra_steps
        )
        meta_steps = self.trajectories * (self.min_truncations + self.mean_extra_truncations)
        paper_steps, paper_meta = 300 * 40 * 150, 300 * 40
        return (
            f"{self.trajectories} trajectories × {self.problems} problem(s) of "
            f"{self.min_truncations}+Exp({self.mean_extra_truncations:g}) truncations of "
            f"{self.min_steps}+Exp({self.mean_extra_steps:g}) steps: about "
            f"{meta_steps * 1.0:,.0f} meta-steps and "
            f"{self.trajectories * self.problems * mean_steps:,.0f} meta-trained inner steps "
            f"({meta_steps / paper_meta:.1%} and "
            f"{self.trajectories * self.problems * mean_steps / paper_steps:.2%} of the "
            f"paper's {paper_meta:,} and {paper_steps:,}); tests {self.runs} × "
            f"{self.test_steps} steps (the paper: 5 × 4000)"
            + ("" if self.lr_schedule == "constant" else "; meta-learning rate: cosine to 0")
            + ("" if self.init == "authors" else "; meta-parameters start fan-in scaled")
        )


@dataclass(frozen=True)
class MetaTrainingJob:
    """One meta-training of Figs 4–5: a setting's MLP-TbT or MLP-TbV.

    Attributes:
        setting: The setting's key.
        method: ``"MLP-TbT"`` or ``"MLP-TbV"``.
        label: Its label in tables and plots.
        n_train: Training samples of its inner problems.
        schedule: The :class:`~l2l_tune.learned.MetaTrainingSchedule`.
        seed: Its seed.
    """

    setting: str
    method: str
    label: str
    n_train: int
    schedule: Any
    seed: int


def meta_training_jobs(
    settings: tuple[MNISTSetting, ...], protocol: LearnedProtocol, seed: int
) -> list[MetaTrainingJob]:
    """MLP-TbT and MLP-TbV of every setting, both from ``seed``.

    The same seed gives both the same initial meta-parameters and the same trajectory
    lengths, so the two differ only in their meta-objective (and the problems drawn).
    """
    jobs = []
    for st in settings:
        noise = st.label_noise
        jobs += [
            MetaTrainingJob(st.key, "MLP-TbT", f"MLP-TbT({st.n_tbt})", st.n_tbt,
                            protocol.schedule("train", st.n_tbt, 0, noise), seed),
            MetaTrainingJob(st.key, "MLP-TbV", f"MLP-TbV({st.n_tbv}+{st.n_valid})", st.n_tbv,
                            protocol.schedule("valid", st.n_tbv, st.n_valid, noise), seed),
        ]  # fmt: skip
    return jobs


def _run_job(
    job: MetaTrainingJob, distribution_args: dict[str, Any], checkpoint: Path | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Meta-train ``job`` (in this process or a pool's): its meta-parameters and record."""
    import torch

    from ..learned import meta_train
    from ..tasks import MNIST

    threads = distribution_args.pop("threads", None)
    if threads:
        torch.set_num_threads(threads)
    distribution = MNIST(**distribution_args)
    start = time.perf_counter()
    meta, records = meta_train(distribution, job.schedule, seed=job.seed, checkpoint=checkpoint)
    losses = [r.meta_loss for r in records]
    summary = {
        "meta_steps": len(records),
        "inner_steps": sum(r.steps for r in records) * job.schedule.problems,
        "diverged_truncations": sum(not r.finite for r in records),
        "meta_loss_first": losses[0],
        "meta_loss_last_tenth": float(np.mean(losses[-max(1, len(losses) // 10) :])),
        "train_seconds": time.perf_counter() - start,
    }
    return {k: v.cpu() for k, v in meta.state_dict().items()}, summary


def run_meta_training_jobs(
    jobs: list[MetaTrainingJob],
    distribution_args: dict[str, Any],
    *,
    processes: int = 1,
    checkpoint_dir: Path | None = None,
    on_done: Callable[[MetaTrainingJob], None] | None = None,
) -> dict[tuple[str, str], tuple[Any, dict[str, Any]]]:
    """Every job's meta-parameters and record, ``processes`` jobs at a time.

    With ``processes > 1`` the jobs run in a pool of spawned processes of one PyTorch
    thread each (on a CPU, one problem per core is the fastest way to meta-train:
    ``benchmarks/results/learned.md``). With ``checkpoint_dir`` every job checkpoints
    there after each trajectory and a run started again resumes (a finished job is
    read back, not rerun).

    Args:
        jobs: The :class:`MetaTrainingJob` list.
        distribution_args: Keyword arguments of :class:`~l2l_tune.tasks.MNIST`.
        processes: Jobs run at once (``1``: one after the other in this process).
        checkpoint_dir: Folder of the checkpoints (``None``: none).
        on_done: Called with each job as it ends.

    Returns:
        ``{(setting, method): (MetaParameters, record)}``.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from ..learned import MetaParameters

    def path(job: MetaTrainingJob) -> Path | None:
        if checkpoint_dir is None:
            return None
        return checkpoint_dir / f"{job.setting}-{job.method}.pt"

    out: dict[tuple[str, str], tuple[Any, dict[str, Any]]] = {}

    def done(job: MetaTrainingJob, state: dict[str, Any], summary: dict[str, Any]) -> None:
        out[job.setting, job.method] = (MetaParameters.from_state_dict(state), summary)
        if on_done is not None:
            on_done(job)

    if processes <= 1 or len(jobs) <= 1:
        for job in jobs:
            done(job, *_run_job(job, dict(distribution_args), path(job)))
        return out
    args = {**distribution_args, "threads": 1}
    with ProcessPoolExecutor(min(processes, len(jobs)), mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_run_job, job, dict(args), path(job)): job for job in jobs}
        for future in as_completed(futures):
            done(futures[future], *future.result())
    return out


def compare_learned_on_mnist(
    distribution: Any,
    setting: MNISTSetting,
    protocol: LearnedProtocol,
    trained: dict[tuple[str, str], tuple[Any, dict[str, Any]]],
    jobs: list[MetaTrainingJob],
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """Test MLP-TbT, MLP-TbV (meta-trained) and SGD (grid on the validation loss) in a setting.

    Args:
        distribution: An :class:`~l2l_tune.tasks.MNIST`.
        setting: Sample sizes and label noise.
        protocol: The :class:`LearnedProtocol`.
        trained: :func:`run_meta_training_jobs`' result.
        jobs: The jobs it ran (for labels and sizes).
        seed: Seed of the grid's problems (``seed``) and of the test problems
            (``seed + 1000``, the same for every method).

    Returns:
        Per method (``MLP-TbT``, ``MLP-TbV``, ``SGD-grid``): label, meta-training
        record or the chosen step size, the test summary and the accuracy curves.
    """
    from ..learned import LearnedRule, evaluate_on_new_problems

    noise = setting.label_noise
    methods: dict[str, dict[str, Any]] = {}
    for job in jobs:
        if job.setting != setting.key:
            continue
        meta, summary = trained[job.setting, job.method]
        methods[job.method] = {"label": job.label, "step_size": None, "n_train": job.n_train,
                               **summary, "rule": LearnedRule(meta)}  # fmt: skip
    low, high, points = protocol.grid
    start = time.perf_counter()
    grid_batch = distribution.sample(
        protocol.grid_tasks, setting.n_tbv, setting.n_valid, noise, seed=seed, init="paper"
    )
    search = GridSearch(grid=np.geomspace(low, high, points).tolist()).fit(
        grid_batch, protocol.test_steps, split="valid", log=True
    )
    methods["SGD-grid"] = {
        "label": f"SGD, grid on valid. loss ({setting.n_tbv}+{setting.n_valid})",
        "step_size": search.step_size_,
        "n_train": setting.n_tbv,
        "grid": [(r.eta, r.value) for r in search.history_],
        "train_seconds": time.perf_counter() - start,
        "rule": "sgd",
    }
    for method in methods.values():
        method.update(
            evaluate_on_new_problems(
                distribution, method.pop("rule"), method["step_size"], n_train=method["n_train"],
                label_noise=noise, runs=protocol.runs, steps=protocol.test_steps,
                eval_every=protocol.eval_every, seed=seed + 1000,
            )
        )  # fmt: skip
    return {"label": setting.label, "t": protocol.test_steps, "label_noise": noise,
            "methods": methods}  # fmt: skip


def _budget(ctx: RunContext) -> str:
    return "quick" if ctx.quick else "full" if ctx.full else "default"


def _run_learned(
    ctx: RunContext, keys: tuple[str, ...], name: str
) -> tuple[LearnedProtocol, str, _BySetting, list[str]]:
    """Meta-train every setting's MLP-TbT and MLP-TbV (in parallel) and test them.

    Returns the protocol, the data set, the results by setting and the checkpoint files
    an earlier run had written into ``ctx.out_dir`` (meta-trainings resumed or read
    back, tests read back).
    """
    import os

    budget = LearnedProtocol.for_budget(_budget(ctx))
    protocol = replace(
        budget,
        lr_schedule=ctx.option("meta_lr_schedule", budget.lr_schedule),
        init=ctx.option("meta_init", budget.init),
    )
    s = MNISTSettings.for_run(ctx.quick, keys=keys)
    dataset = ctx.option("dataset", s.dataset)
    distribution = _distribution(ctx, dataset)
    jobs = meta_training_jobs(s.settings, protocol, ctx.seed)
    distribution_args = {
        "dataset": distribution.data,
        "device": ctx.option("device", "cpu"),
    }
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = ctx.out_dir / "meta-training"
    read_back_files = [
        f"meta-training/{job.setting}-{job.method}.pt (resumed or read back)"
        for job in jobs
        if (checkpoints / f"{job.setting}-{job.method}.pt").exists()
    ]
    results = {}
    with ctx.bar(len(jobs) + len(s.settings), f"{name}: meta-training, then tests") as bar:
        trained = run_meta_training_jobs(
            jobs,
            distribution_args,
            processes=os.cpu_count() or 1,
            checkpoint_dir=checkpoints,
            on_done=lambda job: bar.update(),
        )
        for (key, method), (meta, _) in trained.items():
            meta.save(ctx.out_dir / f"{key}-{method}.meta.pt")
        with _dataset_threads(dataset):
            for st in s.settings:
                fingerprint = {
                    "protocol": asdict(protocol), "setting": asdict(st), "seed": ctx.seed,
                    "data": data_fingerprint(distribution),
                    "meta_parameters": {
                        method: sha256_of(t.detach().cpu().numpy() for t in meta.tensors())
                        for (key, method), (meta, _) in trained.items() if key == st.key
                    },
                }  # fmt: skip
                path = ctx.out_dir / "tests" / f"{st.key}.json"
                results[st.key], read_back = checkpointed(
                    path,
                    fingerprint,
                    partial(compare_learned_on_mnist, distribution, st, protocol, trained,
                            jobs, seed=ctx.seed),
                )  # fmt: skip
                if read_back:
                    read_back_files.append(f"tests/{path.name}")
                bar.update()
    return protocol, dataset, results, read_back_files


def _meta_training_text(method: dict[str, Any]) -> str:
    if method["step_size"] is not None:
        return f"({_step_size_text(method)})"
    return (
        f"({method['meta_steps']} meta-steps, meta-loss {method['meta_loss_first']:.3g}"
        f" → {method['meta_loss_last_tenth']:.3g} (last tenth))"
    )


def _learned_setting_text(protocol: LearnedProtocol, dataset: str, ctx: RunContext) -> str:
    network = _network(dataset)
    return (
        f"{dataset}, {network} ReLU, cross entropy, batch 32, every tensor initialised "
        "N(0, 1)·1.2/√fan_in; the MLP optimizer (Metz et al. 2019) meta-trained by first-order "
        f"truncated backprop, budget {protocol.budget}: "
        f"{protocol.distance_from_the_paper()}; RMSProp lr {protocol.lr:g}, decay 0.9; "
        + (
            f"meta-objective on ≤ {protocol.meta_set_size} meta-set samples per truncation; "
            if protocol.meta_set_size
            else "meta-objective on the whole meta-set; "
        )
        + f"SGD: {protocol.grid[2]} step sizes in [{protocol.grid[0]}, {protocol.grid[1]}] "
        f"by the validation loss after {protocol.test_steps} steps; seed {ctx.seed}"
    )


#: ``(learned, step_size) -> (checks, notes)``: a target's checks on the results of the
#: learned optimizer and of SGD's learned step size, by setting.
_Judge = Callable[[_BySetting, _BySetting], tuple[list[Check], list[str]]]


def _learned_target(
    ctx: RunContext, name: str, keys: tuple[str, ...], kind: str, judge: _Judge
) -> TargetReport:
    """Fig 4 or 5 in the settings ``keys``: the learned optimizer's table first, then SGD's
    step size learned TbT/TbV (forward-mode meta-gradients), their ``kind`` accuracy curves
    (``name.png`` and ``name_step_size.png``) and ``judge``'s checks."""
    protocol, dataset, learned, read_back_files = _run_learned(ctx, keys, name)
    figure = plot_accuracy_curves(
        learned, ctx.figure_path(name), kind=kind, runs=protocol.runs,
        optimizer="MLP optimizer / SGD", network=_network(dataset),
    )  # fmt: skip
    s, step_size, step_read_back = _run_settings(ctx, keys, name)
    step_figure = plot_accuracy_curves(
        step_size, ctx.figure_path(f"{name}_step_size"), kind=kind, runs=s.runs,
        network=_network(s.dataset),
    )  # fmt: skip
    checks, notes = judge(learned, step_size)
    read_back_files += step_read_back
    if read_back_files:
        notes.append(
            "From an earlier run into this folder (its work is not in this run's time): "
            + ", ".join(read_back_files)
            + "; delete them to recompute."
        )
    return TargetReport(
        setting=_learned_setting_text(protocol, dataset, ctx),
        measured=[
            *_accuracy_lines(learned, _meta_training_text),
            "Second table, SGD's step size learned TbT/TbV (" + _setting_text(s, ctx) + "):",
            *_accuracy_lines(step_size),
        ],
        checks=checks,
        settings={"learned": asdict(protocol), "step_size": asdict(s), "seed": ctx.seed},
        results={"learned": learned, "step_size": step_size},
        figures=[figure, step_figure],
        notes=[
            "Test accuracy is on the clean test labels (the authors' code noised them too).",
            *notes,
        ],
    )


@register(
    "fig4",
    title="MNIST: test accuracy of the MLP optimizer learned TbT vs TbV (3 settings)",
    reference="Fig 4, Section 5",
    claim=(
        "An MLP optimizer meta-trained train-by-validation generalises better than one "
        "meta-trained train-by-train when the samples are few and noisy (20 % label noise), "
        "at least as well with few clean samples, and the two are close with all samples."
    ),
    options=_LEARNED_OPTIONS,
    full=True,
)
def fig4(ctx: RunContext) -> TargetReport:
    """Fig 4: test accuracy of MLP-TbT, MLP-TbV and grid-searched SGD in three settings."""
    keys = ("small", "noisy", "all")

    def judge(learned: _BySetting, step_size: _BySetting) -> tuple[list[Check], list[str]]:
        gap = {k: _accuracy(learned[k], "MLP-TbV") - _accuracy(learned[k], "MLP-TbT") for k in keys}
        checks = [
            Check(
                f"{learned['small']['label']}: MLP-TbV's test accuracy ≥ MLP-TbT's",
                gap["small"] >= 0.0,
                f"MLP-TbV − MLP-TbT = {gap['small']:+.4f}",
            ),
            Check(
                f"{learned['noisy']['label']}: MLP-TbV's test accuracy ≥ MLP-TbT's + 0.03",
                gap["noisy"] >= 0.03,
                f"MLP-TbV − MLP-TbT = {gap['noisy']:+.4f}",
            ),
            Check(
                f"{learned['all']['label']}: |MLP-TbV − MLP-TbT| test accuracy ≤ 0.01",
                abs(gap["all"]) <= 0.01,
                f"MLP-TbV − MLP-TbT = {gap['all']:+.4f}",
            ),
        ]
        step_gap = {
            k: _accuracy(step_size[k], "TbV") - _accuracy(step_size[k], "TbT") for k in keys
        }
        note = "SGD's step size learned TbT/TbV (second table, fig4_step_size.png): TbV − TbT = "
        return checks, [note + ", ".join(f"{k} {v:+.4f}" for k, v in step_gap.items())]

    return _learned_target(ctx, "fig4", keys, "test", judge)


@register(
    "fig5",
    title="MNIST with 20 % label noise: training accuracy of the MLP optimizer TbT vs TbV",
    reference="Fig 5, Section 5",
    claim=(
        "With 1000 samples and 20 % label noise, the MLP optimizer meta-trained train-by-train "
        "fits the noisy labels (training accuracy far above TbV's) and tests worse than the "
        "one meta-trained train-by-validation."
    ),
    options=_LEARNED_OPTIONS,
    full=True,
)
def fig5(ctx: RunContext) -> TargetReport:
    """Fig 5: training-accuracy curves of MLP-TbT, MLP-TbV and SGD in the noisy setting."""

    def judge(learned: _BySetting, step_size: _BySetting) -> tuple[list[Check], list[str]]:
        noisy = learned["noisy"]
        train_tbt, train_tbv = (_accuracy(noisy, m, "train") for m in ("MLP-TbT", "MLP-TbV"))
        test_tbt, test_tbv = (_accuracy(noisy, m) for m in ("MLP-TbT", "MLP-TbV"))
        checks = [
            Check(
                "MLP-TbT's training accuracy (noisy labels) ≥ MLP-TbV's + 0.10",
                train_tbt >= train_tbv + 0.10,
                f"training accuracy MLP-TbT {train_tbt:.4f} vs MLP-TbV {train_tbv:.4f}",
            ),
            Check(
                "MLP-TbV's clean test accuracy ≥ MLP-TbT's + 0.03",
                test_tbv >= test_tbt + 0.03,
                f"test accuracy MLP-TbV {test_tbv:.4f} vs MLP-TbT {test_tbt:.4f}",
            ),
        ]
        return checks, []

    return _learned_target(ctx, "fig5", ("noisy",), "train", judge)
