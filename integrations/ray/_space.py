"""Ray Tune search spaces resolved as Ray resolves them, for the l2l-tune searchers.

A searcher fixes the hyperparameters it tunes (the step size, or several floats for
:class:`~l2l_tune.integrations.ray.HypergradientSearch`) and hands everything else of
the ``param_space`` to Ray's own machinery:
:func:`ray.tune.search.variant_generator.parse_spec_vars` finds every domain wherever
it sits (nested dicts, lists, tuples),
:meth:`~ray.tune.search.sample.Domain.sample` draws it (quantized domains keep their
quantum) and :func:`~ray.tune.search.variant_generator.assign_value` writes it back.
``tune.sample_from`` functions run last, on the config resolved so far, so they may
depend on the step size (``lambda config: config["lr"] * 0.1``, or the older
``lambda spec: spec.config.lr * 0.1``); a function that depends on another function is
retried once that one is resolved, as Ray retries it. Inside a ``Tuner`` Ray replaces
``sample_from`` by placeholders and resolves them itself, so the searcher sees them only
when the space is given to it directly.

Hyperparameters are named by their path in the space, joined by ``/`` as Ray flattens
results (``"optimizer/lr"`` for ``{"optimizer": {"lr": tune.loguniform(...)}}``).

A ``tune.grid_search`` is refused with a ``ValueError``, as Ray's other searchers
(Optuna, HyperOpt, …) refuse it: a searcher proposes one configuration per trial and
has no grid to walk.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

try:
    from ray.tune.search.sample import Domain, Float, Function, Quantized
    from ray.tune.search.variant_generator import assign_value, parse_spec_vars
except ImportError as exc:  # pragma: no cover - exercised only without ray
    raise ImportError(
        "l2l_tune.integrations.ray needs Ray Tune: pip install 'l2l-tune[ray]'"
    ) from exc

__all__ = [
    "PATH_SEPARATOR",
    "check_space",
    "config_value",
    "find_path",
    "float_domain",
    "is_log",
    "path_name",
    "resolve_config",
    "step_size_domains",
]

#: Separator of the parts of a hyperparameter's path, as Ray flattens results and configs.
PATH_SEPARATOR = "/"

#: Passes over the ``tune.sample_from`` functions (Ray's own resolver allows as many).
_MAX_FUNCTION_PASSES = 1000

Path = tuple[Any, ...]


def path_name(path: Path) -> str:
    """``("optimizer", "lr")`` → ``"optimizer/lr"`` (Ray's flattened key)."""
    return PATH_SEPARATOR.join(str(part) for part in path)


def find_path(space: Mapping[str, Any], name: str) -> Path | None:
    """The path of ``name`` in ``space``: a top-level key as it is, else ``/``-separated
    parts (list and tuple positions as integers); ``None`` if there is no such entry."""
    if name in space:
        return (name,)
    node: Any = space
    path: list[Any] = []
    for part in name.split(PATH_SEPARATOR):
        if isinstance(node, Mapping) and part in node:
            key: Any = part
        elif isinstance(node, list | tuple) and part.isdigit() and int(part) < len(node):
            key = int(part)
        else:
            return None
        path.append(key)
        node = node[key]
    return tuple(path)


def _value_at(space: Mapping[str, Any], path: Path) -> Any:
    node: Any = space
    for key in path:
        node = node[key]
    return node


def config_value(config: Mapping[str, Any], name: str) -> Any:
    """The entry ``name`` (a key or a ``/``-separated path) of a trial's config.

    Raises:
        ValueError: when the config has no such entry.
    """
    path = find_path(config, name)
    if path is None:
        raise ValueError(f"the trial's config has no entry {name!r}; its keys: {list(config)}")
    return _value_at(config, path)


def is_log(domain: Float) -> bool:
    """Whether a float domain samples on a log scale (``tune.loguniform``)."""
    sampler = domain.get_sampler()
    if isinstance(sampler, Quantized):
        sampler = sampler.get_sampler()
    return "LogUniform" in type(sampler).__name__


def _is_candidate(domain: Any) -> bool:
    """A continuous float domain with ``0 ≤ lower`` (what can be tuned by gradient)."""
    return (
        isinstance(domain, Float)
        and domain.lower is not None
        and domain.lower >= 0.0
        and not isinstance(domain.get_sampler(), Quantized)
    )


def step_size_domains(space: Mapping[str, Any]) -> list[str]:
    """The names (paths) of every continuous float domain with ``0 ≤ lower`` in ``space``."""
    _, domains, _ = parse_spec_vars(dict(space))
    return [path_name(path) for path, domain in domains if _is_candidate(domain)]


def float_domain(space: Mapping[str, Any], name: str, what: str) -> tuple[Path, Float]:
    """The path and domain of the tuned hyperparameter ``name``.

    Args:
        space: The search space.
        name: Its key or ``/``-separated path.
        what: How an error names it (``"param 'lr'"``).

    Raises:
        ValueError: when ``name`` is not in ``space``, or is not a ``tune.uniform`` or
            ``tune.loguniform`` with ``0 ≤ lower`` (a quantized ``tune.quniform`` /
            ``tune.qloguniform`` is refused: the meta-gradient needs a continuous step size).
    """
    path = find_path(space, name)
    domain = None if path is None else _value_at(space, path)
    if path is None or not _is_candidate(domain):
        detail = ""
        if isinstance(domain, Float) and isinstance(domain.get_sampler(), Quantized):
            quantum = domain.get_sampler().q
            detail = (
                f" (it is quantized, q={quantum}: the meta-gradient needs a continuous "
                "domain; round the step size in the trainable if it must be quantized)"
            )
        found = "no such key" if path is None else repr(domain)
        raise ValueError(
            f"{what} must be a tune.uniform or tune.loguniform domain with lower >= 0 in "
            f"the search space, got {found}{detail}; continuous float domains there: "
            f"{step_size_domains(space)}"
        )
    assert isinstance(domain, Float)
    return path, domain


def check_space(space: Mapping[str, Any], owner: str, reserved: str | None = None) -> None:
    """Refuse what a searcher cannot resolve: grid searches and a key it sets itself.

    Raises:
        ValueError: for a ``tune.grid_search`` anywhere in ``space`` (naming its path),
            or for a top-level key ``reserved`` (the task-seed key the searcher writes).
    """
    _, _, grids = parse_spec_vars(dict(space))
    if grids:
        names = [path_name(path) for path, _ in grids]
        raise ValueError(
            f"{owner} cannot walk a tune.grid_search (found at {names}): a searcher proposes "
            "one configuration per trial. Use tune.choice(...) to sample those values, or run "
            "one Tuner per grid value."
        )
    if reserved is not None and reserved in space:
        raise ValueError(
            f"the search space has its own key {reserved!r}, which {owner} sets to the task "
            f"index of each trial of a meta-step; pass seed_key='...' to {owner} (and to "
            "task_trainable) to use another key for it"
        )


def resolve_config(
    space: Mapping[str, Any],
    fixed: Mapping[Path, Any],
    rng: np.random.RandomState,
) -> dict[str, Any]:
    """A trial's config: the entries at the paths of ``fixed`` set to their values,
    every other domain sampled with ``rng`` as Ray samples it, constants as they are.

    ``tune.sample_from`` functions run after the other domains, on the config resolved
    so far (so they may use the fixed step size); one that needs another function's
    value is retried once that value is there.

    Raises:
        ValueError: when a ``tune.sample_from`` function fails (naming its path), or
            depends on itself through other functions.
    """
    config: dict[str, Any] = copy.deepcopy(dict(space))
    for path, value in fixed.items():
        assign_value(config, path, value)
    _, domains, _ = parse_spec_vars(config)
    functions: list[tuple[Path, Domain]] = []
    for path, domain in domains:
        if isinstance(domain, Function):
            functions.append((path, domain))
        else:
            assign_value(config, path, domain.sample(random_state=rng))
    last_error: tuple[Path, Exception] = ((), ValueError())
    for _ in range(_MAX_FUNCTION_PASSES):
        if not functions:
            break
        pending: list[tuple[Path, Domain]] = []
        for path, function in functions:
            try:
                value = function.sample(config=config, random_state=rng)
            except Exception as exc:  # noqa: BLE001 - any failure of a user function
                pending.append((path, function))
                last_error = (path, exc)
            else:
                if isinstance(value, Domain):  # a function returning a domain: sample it
                    value = value.sample(random_state=rng)
                assign_value(config, path, value)
        if len(pending) == len(functions):
            failed_path, error = last_error
            raise ValueError(
                f"tune.sample_from at {path_name(failed_path)!r} failed on the config "
                f"resolved so far ({type(error).__name__}: {error}); it may read the step "
                "size and every other entry, but not itself"
            ) from error
        functions = pending
    return config
