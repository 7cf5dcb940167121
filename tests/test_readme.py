"""README names only what exists: its modules, functions and run-config keys."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from app.simulation import default_run_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
OURS = ("app", "benchmarks", "data", "examples", "flwr_privacy", "strategies", "tasks")


def _ours(name: str) -> bool:
    return name.split(".")[0] in OURS


def test_every_python_m_module_in_readme_exists() -> None:
    modules = {m for m in re.findall(r"python -m ([A-Za-z_][\w.]*)", README) if _ours(m)}
    assert len(modules) > 10  # the pattern still finds README's commands
    missing = sorted(m for m in modules if importlib.util.find_spec(m) is None)
    assert not missing, f"README runs modules that do not exist: {missing}"


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_every_dotted_name_of_ours_in_readme_resolves() -> None:
    names = {n for n in re.findall(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)[`(]", README) if _ours(n)}
    assert len(names) > 5
    broken = []
    for name in sorted(names):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as e:
            broken.append(f"{name} ({type(e).__name__}: {e})")
    assert not broken, f"README names what does not exist: {broken}"


@pytest.mark.parametrize("key", sorted(default_run_config()))
def test_every_run_config_key_is_documented(key: str) -> None:
    assert f"`{key}`" in README or f"`{key.rsplit('.', 1)[0]}.{{" in README, key


def test_every_file_of_ours_that_readme_names_exists() -> None:
    paths = {p for p in re.findall(r"`((?:[\w-]+/)+[\w-]+\.(?:py|ipynb|toml))`", README)}
    ours = {p for p in paths if p.split("/")[0] in (*OURS, "tests", "notebooks")}
    assert len(ours) > 5
    missing = sorted(p for p in ours if not (ROOT / p).exists())
    assert not missing, f"README names files that do not exist: {missing}"
