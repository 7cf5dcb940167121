"""Typed run-config values whose errors name the key, the value and what is allowed.

Shared by every parser of a run-config sub-table (``app.config``, ``app.dp_config``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


class ConfigError(ValueError):
    """A run-config value is missing, of the wrong type or out of range."""


_KIND_NAMES = {int: "an integer", float: "a float", str: "a string", bool: "true or false"}


def get(cfg: Mapping[str, Any], key: str, kind: type) -> Any:
    if key not in cfg:
        raise ConfigError(f"run-config key '{key}' is missing (declare it in pyproject.toml)")
    value = cfg[key]
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"run-config key '{key}' must be {_KIND_NAMES[kind]}, got {value!r}")
    return value


def check(key: str, value: Any, ok: bool, allowed: str) -> Any:
    if not ok:
        raise ConfigError(f"run-config key '{key}' = {value!r} is invalid; allowed: {allowed}")
    return value


def choice(cfg: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = get(cfg, key, str)
    return check(key, value, value in choices, " | ".join(choices))


def number(
    cfg: Mapping[str, Any], key: str, kind: type, ok: Callable[[Any], bool], allowed: str
) -> Any:
    value = get(cfg, key, kind)
    return check(key, value, ok(value), allowed)
