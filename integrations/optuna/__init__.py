"""l2l-tune adapter for Optuna.

The adapter itself is not part of this release yet; importing the subpackage
works (so that the package layout is fixed) and exports nothing.
"""

from __future__ import annotations

__all__: list[str] = []
