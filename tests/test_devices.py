"""``DevicePool`` (one device per concurrent Optuna trial) and ``gpu_fraction`` (Ray packing).

The pool is tested on CPU slots with Optuna's ``n_jobs`` threads (the recipe of
docs/production.md, "GPUs"); with CUDA (skipped without), once on the machine's GPUs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import optuna
import pytest

from l2l_tune import Quadratic
from l2l_tune.devices import DevicePool, gpu_fraction

T = 80


def test_device_pool_lends_each_device_to_one_trial_at_a_time() -> None:
    """Two devices, ``n_jobs=4`` threads, 16 trials: a trial waits for a free device, no
    device is ever held by two trials, both devices are used, every trial completes."""
    pool = DevicePool(["slot:0", "slot:1"])
    task = Quadratic.random(20, 0, variant="authors")
    used: Counter[str] = Counter()
    overlaps: list[dict[str, int]] = []
    lock = threading.Lock()

    def objective(trial: optuna.trial.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        with pool.device() as device:
            held = pool.lent()
            if any(count > 1 for count in held.values()) or len(held) > 2:
                overlaps.append(held)
            with lock:
                used[device] += 1
            time.sleep(0.02)
            return float(task.meta_objective(lr, T, log=False))

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=16, n_jobs=4)
    assert overlaps == []
    assert set(used) == {"slot:0", "slot:1"} and sum(used.values()) == 16
    assert all(tr.state == optuna.trial.TrialState.COMPLETE for tr in study.trials)
    assert pool.lent() == {}


def test_device_pool_times_out_naming_the_devices() -> None:
    pool = DevicePool(["cuda:0"], timeout=0.1)
    with pool.device() as first:
        assert first == "cuda:0"
        with pytest.raises(TimeoutError, match=r"no device of \['cuda:0'\] came free"):
            with pool.device():
                pass
    with pool.device() as again:  # given back after the block, even after the error
        assert again == "cuda:0"


@pytest.mark.parametrize(
    ("devices", "kwargs", "match"),
    [
        ([], {}, "non-empty list"),
        ("cuda:0", {}, "non-empty list"),
        (["cuda:0", ""], {}, "device names"),
        (["cuda:0"], {"timeout": 0}, "timeout"),
    ],
)
def test_device_pool_rejects_bad_arguments(devices: object, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DevicePool(devices, **kwargs)  # type: ignore[arg-type]


def test_gpu_fraction_packs_what_fits() -> None:
    """10 GiB trials on a 140 GiB GPU with 80 % headroom: 11 per GPU; a trial bigger than
    the GPU gets a whole one; bad sizes and headroom are named."""
    gib = 2**30
    assert gpu_fraction(10 * gib, 140 * gib) == pytest.approx(1 / 11)
    assert gpu_fraction(200 * gib, 140 * gib) == 1.0
    assert gpu_fraction(1, 140 * gib, headroom=1.0) == pytest.approx(1 / (140 * gib))
    with pytest.raises(ValueError, match="peak_bytes"):
        gpu_fraction(0, gib)
    with pytest.raises(ValueError, match="headroom"):
        gpu_fraction(gib, gib, headroom=1.5)


def test_device_pool_cuda_without_gpus_says_so() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA devices")
    with pytest.raises(ValueError, match="found no CUDA device"):
        DevicePool.cuda()


@pytest.mark.gpu
def test_device_pool_on_the_machines_gpus() -> None:
    """With CUDA: one trial per GPU at a time, each running a tensor computation on the
    device it was lent; the peak memory of a trial sizes the Ray fraction."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    pool = DevicePool.cuda()
    seen: set[str] = set()

    def objective(trial: optuna.trial.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        with pool.device() as device:
            seen.add(device)
            x = torch.full((256, 256), lr, device=device)
            return float((x @ x).sum().item())

    study = optuna.create_study()
    study.optimize(objective, n_trials=4 * len(pool), n_jobs=len(pool))
    assert seen == set(pool.devices)
    peak = torch.cuda.max_memory_allocated(0)
    total = torch.cuda.get_device_properties(0).total_memory
    assert 0 < gpu_fraction(peak, total) <= 1
