"""Figs 4–5 (Section 5): train-by-train vs train-by-validation on MNIST, for the SGD step size.

The paper trains a neural-network optimizer; here the learned optimizer is SGD's
step size, tuned by exact forward-mode meta-gradients
(:class:`~l2l_tune.tasks.MNIST`). In each setting — 1000 samples; 1000 samples
with 20 % label noise; all samples — the step size is

- learned train-by-train (TbT) on ``n`` training samples,
- learned train-by-validation (TbV) on ``n`` training + ``n_valid`` validation samples,
- chosen by grid search on the validation loss (the paper's SGD baseline),

each by the meta-objective ``(1/t)·log`` of the final loss averaged over ``m``
tasks. Each chosen step size then trains ``runs`` new tasks (new samples,
initialisations and mini-batch orders) for ``t`` steps on their training
samples, recording test accuracy (true labels) and training accuracy (the task's
labels, noisy ones included) along the way.
"""

from __future__ import annotations

import textwrap
import time
import warnings
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .._plotting import pyplot, save_figure
from ..baselines import GridSearch
from ..bench.common import torch_threads
from ..meta import NonFiniteMetaGradientWarning
from ..tuner import EvalRecord, StepSizeTuner
from .base import RunContext, checkpointed, label_axes, register_option

__all__ = [
    "MNISTSetting",
    "MNISTSettings",
    "compare_on_mnist",
    "data_fingerprint",
    "plot_accuracy_curves",
    "sha256_of",
]

_OPTIONS = ("dataset", "data_dir", "device")
register_option(
    "dataset",
    help="data of fig4/fig5: the MNIST IDX files (default) or scikit-learn's bundled 8x8 "
    "digits (the --quick default)",
    choices=("mnist", "digits"),
)
register_option(
    "data_dir",
    help="fig4/fig5: directory with the MNIST IDX files (default: $L2L_TUNE_DATA or the "
    "user cache; see docs/data.md)",
)
register_option("device", help="fig4/fig5: cpu (default), cuda or cuda:N")

#: Results by setting key (``small``, ``noisy``, ``all``), as :func:`compare_on_mnist` returns.
_BySetting = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class MNISTSetting:
    """One of the paper's three settings.

    Attributes:
        key: Short name (``small``, ``noisy``, ``all``).
        label: Title for tables and plots.
        n_tbt: Training samples of train-by-train.
        n_tbv: Training samples of train-by-validation (and of the grid baseline).
        n_valid: Validation samples of train-by-validation.
        label_noise: Fraction of training and validation labels made random.
    """

    key: str
    label: str
    n_tbt: int
    n_tbv: int
    n_valid: int
    label_noise: float


@dataclass(frozen=True)
class MNISTSettings:
    """Protocol of Figs 4–5.

    Attributes:
        dataset: ``"mnist"`` or ``"digits"``.
        t: SGD steps of every run (the learned step size's horizon).
        m: Tasks averaged by the meta-objective (``m_large`` for settings with more
            than 5000 training samples).
        runs: New tasks each chosen step size is tested on.
        eval_every: Steps between points of the accuracy curves.
        max_evals: Meta-gradient evaluations of each tuning run.
        tol: Not passed to the tuner (kept in the recorded settings): the relative
            bracket width of the bracket that tuned MNIST before ``"auto"`` chose the
            model-based search, which keeps its own default.
        grid: ``(low, high, points)`` of the log grid of the SGD baseline.
        settings: The settings run.
    """

    dataset: str
    t: int
    m: int
    m_large: int
    runs: int
    eval_every: int
    max_evals: int
    tol: float
    grid: tuple[float, float, int]
    settings: tuple[MNISTSetting, ...]

    @classmethod
    def for_run(
        cls, quick: bool, keys: tuple[str, ...] = ("small", "noisy", "all")
    ) -> MNISTSettings:
        """The paper's protocol on MNIST, or a seconds-long one on the 8×8 digits."""
        if quick:
            table = {
                "small": MNISTSetting("small", "300 samples", 300, 300, 300, 0.0),
                "noisy": MNISTSetting("noisy", "300 samples, 20% label noise", 300, 300, 300, 0.2),
                "all": MNISTSetting("all", "all 1500 samples", 1500, 1200, 300, 0.0),
            }
            return cls("digits", 600, 2, 2, 3, 100, 10, 2e-2, (1e-2, 3.0, 7),
                       tuple(table[k] for k in keys))  # fmt: skip
        table = {
            "small": MNISTSetting("small", "1000 samples", 1000, 1000, 1000, 0.0),
            "noisy": MNISTSetting("noisy", "1000 samples, 20% label noise", 1000, 1000, 1000, 0.2),
            "all": MNISTSetting("all", "all 60000 samples", 60000, 50000, 10000, 0.0),
        }
        return cls("mnist", 1000, 4, 2, 5, 100, 20, 1e-2, (1e-3, 3.0, 15),
                   tuple(table[k] for k in keys))  # fmt: skip


def _dataset_threads(dataset: str) -> AbstractContextManager[None]:
    """One PyTorch thread for the 8×8 digits (a 64-wide network: threads only add overhead)."""
    return torch_threads(1 if dataset == "digits" else None)


def _distribution(ctx: RunContext, dataset: str) -> Any:
    from ..tasks import MNIST

    dataset = ctx.option("dataset", dataset)
    data_dir = ctx.option("data_dir", None)
    return MNIST(dataset, data_dir=data_dir, device=ctx.option("device", "cpu"))


def sha256_of(arrays: Iterable[Any]) -> str:
    """SHA-256 of the raw bytes of ``arrays`` (NumPy arrays or CPU tensors), in order."""
    import hashlib

    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def data_fingerprint(distribution: Any) -> dict[str, Any]:
    """What a checkpointed result depends on in an :class:`~l2l_tune.tasks.MNIST`.

    The data set's name and sizes, a SHA-256 of its arrays, the network, the batch
    size, the dtype and the device (float results differ between CPU and CUDA).
    """
    data = distribution.data
    arrays = (data.train_images, data.train_labels, data.test_images, data.test_labels)
    return {"name": data.name, "train": len(data.train_labels), "test": len(data.test_labels),
            "sha256": sha256_of(arrays), "device": str(distribution.device),
            "dtype": str(distribution.dtype), "sizes": list(distribution.sizes),
            "batch_size": distribution.batch_size}  # fmt: skip


def compare_on_mnist(
    distribution: Any,
    setting: MNISTSetting,
    s: MNISTSettings,
    *,
    seed: int = 0,
    bar: Any = None,
    callback: Callable[[EvalRecord], None] | None = None,
) -> dict[str, Any]:
    """Tune TbT, TbV and the grid baseline in one setting; test each on ``s.runs`` new tasks.

    Args:
        distribution: An :class:`~l2l_tune.tasks.MNIST`.
        setting: Sample sizes and label noise.
        s: The protocol.
        seed: Seed of the tuning tasks (test tasks: ``seed + 1000``).
        bar: Optional progress bar, advanced once per method.
        callback: Called with every tuning evaluation (for logs).

    Returns:
        Per method (``TbT``, ``TbV``, ``SGD-grid``): step size, evaluations (and, for
        TbT and TbV, the meta-optimizer ``"auto"`` resolved to), seconds, test summary
        and accuracy curves.
    """
    t = s.t
    noise = setting.label_noise
    m = s.m if setting.n_tbt <= 5000 else s.m_large
    tbt_batch = distribution.sample(m, setting.n_tbt, 0, noise, seed=seed)
    tbv_batch = distribution.sample(m, setting.n_tbv, setting.n_valid, noise, seed=seed)
    methods: dict[str, dict[str, Any]] = {}
    plans = [
        ("TbT", f"TbT({setting.n_tbt})", tbt_batch, "train", setting.n_tbt),
        ("TbV", f"TbV({setting.n_tbv}+{setting.n_valid})", tbv_batch, "valid", setting.n_tbv),
    ]
    for name, label, batch, split, n_train in plans:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
            tuner = StepSizeTuner(max_evals=s.max_evals, callback=callback).fit(
                batch, t, split=split, log=True
            )
        methods[name] = {
            "label": label,
            "step_size": tuner.step_size_,
            "meta_objective": tuner.meta_objective_,
            "evals": tuner.n_evals_,
            "meta_optimizer": tuner.meta_optimizer_.name,
            "tune_seconds": time.perf_counter() - start,
            "n_train": n_train,
            "history": [(r.eta, r.value, r.grad) for r in tuner.history_],
        }
        if bar is not None:
            bar.update()
    low, high, points = s.grid
    start = time.perf_counter()
    grid = np.geomspace(low, high, points).tolist()
    search = GridSearch(grid=grid).fit(tbv_batch, t, split="valid", log=True)
    methods["SGD-grid"] = {
        "label": f"SGD, grid on valid. loss ({setting.n_tbv}+{setting.n_valid})",
        "step_size": search.step_size_,
        "meta_objective": search.meta_objective_,
        "evals": search.n_evals_,
        "tune_seconds": time.perf_counter() - start,
        "n_train": setting.n_tbv,
        "history": [(r.eta, r.value, None) for r in search.history_],
    }
    if bar is not None:
        bar.update()
    for method in methods.values():
        test_batch = distribution.sample(s.runs, method["n_train"], 0, noise, seed=seed + 1000)
        evaluation = test_batch.evaluate(method["step_size"], t, eval_every=s.eval_every)
        method["test"] = evaluation.summary()
        method["curve_steps"] = evaluation.curve_steps.tolist()
        method["test_accuracy_curve"] = evaluation.test_accuracy_curve.tolist()
        method["train_accuracy_curve"] = evaluation.train_accuracy_curve.tolist()
        method["test_accuracy_runs"] = evaluation.test_accuracy.tolist()
    return {"label": setting.label, "t": t, "label_noise": noise, "methods": methods}


def plot_accuracy_curves(
    settings: dict[str, dict[str, Any]],
    path: Path,
    *,
    kind: str = "test",
    runs: int = 5,
    optimizer: str = "SGD",
    network: str = "784-100-20-10",
) -> Path:
    """Accuracy against SGD steps per setting: mean over runs and min–max band.

    Args:
        settings: Results of :func:`compare_on_mnist` by setting key.
        path: PNG file to write.
        kind: ``"test"`` (Fig 4) or ``"train"`` (Fig 5).
        runs: Number of runs (for the title).
        optimizer: What the curves train with (for the title and x label).
        network: The network's widths (for the title).
    """
    plt = pyplot()
    key_curve = f"{kind}_accuracy_curve"
    width = max(5.0 * len(settings), 6.0)
    fig, axes = plt.subplots(1, len(settings), figsize=(width, 4.0), squeeze=False)
    ylabel = "test accuracy" if kind == "test" else "training accuracy (task labels)"
    for ax, setting in zip(axes[0], settings.values(), strict=True):
        for method in setting["methods"].values():
            curves = np.asarray(method[key_curve])
            steps = method["curve_steps"]
            eta = method.get("step_size")
            label = method["label"] if eta is None else f"{method['label']} η={eta:.3g}"
            (line,) = ax.plot(steps, curves.mean(axis=0), label=label)
            ax.fill_between(steps, curves.min(axis=0), curves.max(axis=0), alpha=0.2,
                            color=line.get_color())  # fmt: skip
        label_axes(ax, setting["label"], f"{optimizer} step", ylabel)
        ax.grid(alpha=0.3)
    title = (
        f"{optimizer}: {kind} accuracy of the {network} network (mean and min–max of {runs} runs)"
    )
    fig.suptitle(textwrap.fill(title, width=int(10 * width)))
    fig.tight_layout()
    return save_figure(fig, path)


def _accuracy(setting: dict[str, Any], method: str, kind: str = "test") -> float:
    return float(setting["methods"][method]["test"][f"{kind}_accuracy"])


def _step_size_text(method: dict[str, Any]) -> str:
    return f"η = {method['step_size']:.4g}"


def _accuracy_lines(
    settings: _BySetting, training: Callable[[dict[str, Any]], str] = _step_size_text
) -> list[str]:
    """A line per setting and method: how it trained (``training``) → its test summary."""
    lines = []
    for setting in settings.values():
        for name, method in setting["methods"].items():
            test = method["test"]
            lines.append(
                f"{setting['label']}: {name} {training(method)} → test accuracy "
                f"{test['test_accuracy']:.4f} ± {test['test_accuracy_std']:.4f}, training "
                f"accuracy {test['train_accuracy']:.4f}"
            )
    return lines


def _network(dataset: str) -> str:
    return "784-100-20-10" if dataset == "mnist" else "64-100-20-10"


def _setting_text(s: MNISTSettings, ctx: RunContext) -> str:
    source = "IDX files" if s.dataset == "mnist" else "scikit-learn, bundled"
    return (
        f"{s.dataset} ({source}), "
        f"{_network(s.dataset)} ReLU, cross entropy, batch 32; t = {s.t} SGD steps; meta-objective "
        f"(1/t)·log of the final loss over m = {s.m} tasks ({s.m_large} with > 5000 samples), "
        f"StepSizeTuner (auto: the model-based search, ≤ {s.max_evals} forward-mode "
        "meta-gradients); "
        f"grid baseline {s.grid[2]} points in [{s.grid[0]}, {s.grid[1]}] on validation loss; "
        f"{s.runs} new test tasks per step size; seed {ctx.seed}"
    )


def _run_settings(
    ctx: RunContext, keys: tuple[str, ...], name: str
) -> tuple[MNISTSettings, _BySetting, list[str]]:
    """The protocol for ``ctx`` and :func:`compare_on_mnist` of each setting in ``keys``.

    Each setting's result is checkpointed in ``ctx.out_dir / "step-size"`` (keyed by
    the protocol, the setting, the seed and the data), so a run started again skips
    the settings it finished, and fig4 and fig5 share the noisy setting's result when
    the folder is copied. The third value lists the files read back.
    """
    s = MNISTSettings.for_run(ctx.quick, keys=keys)
    s = replace(s, dataset=ctx.option("dataset", s.dataset))
    distribution = _distribution(ctx, s.dataset)
    protocol = {k: v for k, v in asdict(s).items() if k != "settings"}
    results = {}
    read_back_files = []
    bar = ctx.bar(3 * len(s.settings), f"{name} (setting, method)")
    with bar, _dataset_threads(s.dataset):
        for st in s.settings:
            fingerprint = {"protocol": protocol, "setting": asdict(st), "seed": ctx.seed,
                           "data": data_fingerprint(distribution)}  # fmt: skip
            path = ctx.out_dir / "step-size" / f"{st.key}.json"
            results[st.key], read_back = checkpointed(
                path,
                fingerprint,
                partial(compare_on_mnist, distribution, st, s, seed=ctx.seed, bar=bar),
            )
            if read_back:
                bar.update(3)
                read_back_files.append(f"step-size/{path.name}")
    return s, results, read_back_files
