"""``l2l-tune reproduce``."""

from __future__ import annotations

__all__: list[str] = []
