"""Worker processes of the multi-process tests: wait for one and fail with its stderr."""

from __future__ import annotations

import subprocess

import pytest

__all__ = ["finish"]


def finish(process: subprocess.Popen[str], timeout: float) -> str:
    """Wait for ``process``; fail with its stderr unless it exits with 0; return stdout."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"worker timed out:\n{err[-3000:]}")
    assert process.returncode == 0, f"worker exited with {process.returncode}:\n{err[-3000:]}"
    return out
