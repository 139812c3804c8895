"""Several GPUs on one machine: one device per concurrent trial (``docs/production.md``).

Two recipes, one per framework:

* **Optuna** runs ``n_jobs`` trials at once in threads of one process. A
  :class:`DevicePool` of the machine's devices hands each running trial its own device
  and takes it back when the trial ends, so ``n_jobs = len(pool)`` keeps every GPU busy
  with exactly one trial::

      pool = DevicePool.cuda()                      # ["cuda:0", "cuda:1", ...]
      def objective(trial):
          with pool.device() as device:
              return train(trial.suggest_float("lr", 1e-4, 1.0, log=True), device)
      study.optimize(objective, n_trials=60, n_jobs=len(pool))

* **Ray Tune** places trials itself; a trial asks for a fraction of a GPU
  (``with_resources(trainable, {"gpu": fraction})``) and Ray packs ``1/fraction`` of
  them on each GPU. :func:`gpu_fraction` sizes the fraction from the peak memory one
  trial measured (``torch.cuda.max_memory_allocated()`` after one hypergradient run),
  so that the packed trials fit in the GPU's memory.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ._validation import check_positive

__all__ = ["DevicePool", "gpu_fraction"]


class DevicePool:
    """A pool of devices, each lent to one trial at a time (thread-safe).

    Args:
        devices: Device names (``"cuda:0"``, ``"cuda:1"``, … or ``"cpu"`` repeated for
            CPU slots); at least one, no repeats unless they are slots of one device
            that may run several trials (then name them ``"cpu"``, ``"cpu"``).
        timeout: Seconds :meth:`device` waits for a free device before it raises
            ``TimeoutError`` (``None``: wait for ever).

    Raises:
        ValueError: for no devices, a device that is not a non-empty string, or a
            ``timeout`` that is not ``None`` or ``> 0``.
    """

    def __init__(self, devices: Sequence[str], *, timeout: float | None = 600.0) -> None:
        if isinstance(devices, str) or not isinstance(devices, Sequence) or not devices:
            raise ValueError(f"devices must be a non-empty list of device names, got {devices!r}")
        for name in devices:
            if not isinstance(name, str) or not name:
                raise ValueError(f"devices must be device names (str), got {name!r}")
        self.devices = list(devices)
        self.timeout = None if timeout is None else check_positive(timeout, "timeout")
        self._free: queue.Queue[str] = queue.Queue()
        for name in self.devices:
            self._free.put(name)
        self._lock = threading.Lock()
        self._lent: dict[str, int] = {}

    @classmethod
    def cuda(cls, *, timeout: float | None = 600.0) -> DevicePool:
        """Every CUDA device of this machine (``torch.cuda.device_count()``).

        Raises:
            ValueError: when torch sees no CUDA device.
        """
        import torch

        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(
                "DevicePool.cuda() found no CUDA device (torch.cuda.device_count() == 0); "
                "pass devices=['cpu', ...] to run the trials on the CPU"
            )
        return cls([f"cuda:{i}" for i in range(count)], timeout=timeout)

    def __len__(self) -> int:
        return len(self.devices)

    @contextmanager
    def device(self) -> Iterator[str]:
        """Lend a free device for the ``with`` block (wait while all are lent).

        Raises:
            TimeoutError: when no device came free within ``timeout`` seconds (more
                concurrent trials than devices for too long: ``n_jobs > len(pool)``).
        """
        try:
            name = self._free.get(timeout=self.timeout)
        except queue.Empty:
            raise TimeoutError(
                f"no device of {self.devices} came free within {self.timeout} s; run at most "
                f"n_jobs={len(self)} trials at once"
            ) from None
        with self._lock:
            self._lent[name] = self._lent.get(name, 0) + 1
        try:
            yield name
        finally:
            with self._lock:
                self._lent[name] -= 1
            self._free.put(name)

    def lent(self) -> dict[str, int]:
        """How many trials hold each device now."""
        with self._lock:
            return {name: count for name, count in self._lent.items() if count}


def gpu_fraction(peak_bytes: float, gpu_bytes: float, *, headroom: float = 0.8) -> float:
    """The GPU fraction a Ray trial should ask for so that packed trials fit in memory.

    ``k = floor(headroom · gpu_bytes / peak_bytes)`` trials fit on one GPU; the fraction
    is ``1/k`` (and 1 when not even one fits with the headroom: one trial per GPU, its
    memory is then the trial's own business).

    Args:
        peak_bytes: Peak GPU memory of one trial (``torch.cuda.max_memory_allocated()``
            after running it once), ``> 0``.
        gpu_bytes: Memory of one GPU (``torch.cuda.get_device_properties(0).total_memory``),
            ``> 0``.
        headroom: Share of the GPU's memory the trials may fill, in ``(0, 1]``.

    Returns:
        ``1/k`` for ``with_resources(trainable, {"gpu": fraction})``.

    Raises:
        ValueError: for a non-positive size or ``headroom`` outside ``(0, 1]``.
    """
    peak = check_positive(peak_bytes, "peak_bytes")
    total = check_positive(gpu_bytes, "gpu_bytes")
    share = check_positive(headroom, "headroom")
    if share > 1.0:
        raise ValueError(f"headroom must be in (0, 1], got {headroom!r}")
    per_gpu = max(1, math.floor(share * total / peak))
    return 1.0 / per_gpu
