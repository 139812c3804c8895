"""``l2l-tune bench``."""

from __future__ import annotations

__all__: list[str] = []
