"""Task registry: one Flower App serves every task, selected by the ``task`` run-config key.

A task may read its own run-config sub-table (``mcsn.*``); ``get_task`` builds
one instance per task and options per process, so data loads once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks.base import ClientData, Task, TrainSettings
from tasks.breast_cancer import BreastCancer
from tasks.dp_cnn import DpCnn
from tasks.mcsn import Mcsn

_REGISTRY: dict[str, type[Task]] = {cls.name: cls for cls in (BreastCancer, Mcsn, DpCnn)}
_CACHE: dict[tuple[str, tuple[tuple[str, Any], ...]], Task] = {}

TASK_NAMES = tuple(_REGISTRY)


def _task_class(name: str) -> type[Task]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; registered tasks: {', '.join(TASK_NAMES)}")
    return _REGISTRY[name]


def task_config(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``config`` that task ``name`` reads: its ``<name>.`` sub-table."""
    prefix = f"{_task_class(name).name}."
    return {k: v for k, v in config.items() if k.startswith(prefix)}


def get_task(name: str, config: Mapping[str, Any] | None = None) -> Task:
    """The task registered under ``name``, configured by its sub-table of ``config``."""
    own = task_config(name, config or {})
    key = (name, tuple(sorted(own.items())))
    if key not in _CACHE:
        _CACHE[key] = _task_class(name).from_config(own)
    return _CACHE[key]


__all__ = ["TASK_NAMES", "ClientData", "Task", "TrainSettings", "get_task", "task_config"]
