"""Task registry: one Flower App serves every task, selected by the ``task`` run-config key.

A task may read its own run-config sub-table (``mcsn.*``); ``get_task`` builds
one instance per task and options per process, so data loads once.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from tasks.base import ClientData, Task, TrainSettings

# Task name -> (module, class). A task's module is imported when the run uses it
# (a fresh ClientApp process per message pays for every import it makes).
_REGISTRY: dict[str, tuple[str, str]] = {
    "breast-cancer": ("tasks.breast_cancer", "BreastCancer"),
    "mcsn": ("tasks.mcsn", "Mcsn"),
    "dp-cnn": ("tasks.dp_cnn", "DpCnn"),
}
_CACHE: dict[tuple[str, tuple[tuple[str, Any], ...]], Task] = {}

TASK_NAMES = tuple(_REGISTRY)


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; registered tasks: {', '.join(TASK_NAMES)}")


def task_class(name: str) -> type[Task]:
    """The class registered under ``name`` (imports its module on first use)."""
    _check_name(name)
    module, attr = _REGISTRY[name]
    cls: type[Task] = getattr(importlib.import_module(module), attr)
    return cls


def task_config(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``config`` that task ``name`` reads: its ``<name>.`` sub-table."""
    _check_name(name)
    prefix = f"{name}."
    return {k: v for k, v in config.items() if k.startswith(prefix)}


def get_task(name: str, config: Mapping[str, Any] | None = None) -> Task:
    """The task registered under ``name``, configured by its sub-table of ``config``."""
    own = task_config(name, config or {})
    key = (name, tuple(sorted(own.items())))
    if key not in _CACHE:
        _CACHE[key] = task_class(name).from_config(own)
    return _CACHE[key]


__all__ = [
    "TASK_NAMES",
    "ClientData",
    "Task",
    "TrainSettings",
    "get_task",
    "task_class",
    "task_config",
]
