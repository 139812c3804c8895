"""Adapters that plug l2l-tune's meta-optimizers into other tuning frameworks.

The folder ``integrations/`` at the top of the repository installs as the
subpackage ``l2l_tune.integrations`` (see ``package_dir`` in ``setup.cfg``):

* ``l2l_tune.integrations.optuna``: a sampler for existing Optuna studies;
* ``l2l_tune.integrations.ray``: a searcher for Ray Tune.

Both are thin adapters over the ask/tell meta-optimizers in
:mod:`l2l_tune.meta`; importing this package imports neither framework.
"""

from __future__ import annotations

__all__: list[str] = []
