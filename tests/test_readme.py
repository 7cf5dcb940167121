"""README and the docs site name only what exists: modules, functions, files, run-config keys."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
TEXT = {p.relative_to(ROOT).as_posix(): p.read_text() for p in PAGES}
ALL = "\n".join(TEXT.values())
OURS = ("app", "benchmarks", "data", "examples", "flwr_privacy", "strategies", "tasks")


def _ours(name: str) -> bool:
    return name.split(".")[0] in OURS


def _where(pattern: str, found: str) -> str:
    return ", ".join(page for page, text in TEXT.items() if found in re.findall(pattern, text))


def test_the_docs_are_there() -> None:
    assert len(PAGES) > 20, "docs/ holds the site's pages"
    assert len(TEXT["README.md"].splitlines()) <= 250, "README is the front door: <= 250 lines"


PYTHON_M = r"python -m ([A-Za-z_][\w.]*)"


def test_every_python_m_module_in_the_docs_exists() -> None:
    modules = {m for m in re.findall(PYTHON_M, ALL) if _ours(m)}
    assert len(modules) > 10  # the pattern still finds the docs' commands
    missing = [f"{m} ({_where(PYTHON_M, m)})" for m in sorted(modules)
               if importlib.util.find_spec(m) is None]  # fmt: skip
    assert not missing, f"the docs run modules that do not exist: {missing}"


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


DOTTED = r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)[`(]"


def test_every_dotted_name_of_ours_in_the_docs_resolves() -> None:
    names = {n for n in re.findall(DOTTED, ALL) if _ours(n)}
    names |= set(re.findall(r"^::: ([\w.]+)", ALL, flags=re.M))  # the API reference's
    assert len(names) > 60
    broken = []
    for name in sorted(names):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as e:
            broken.append(f"{name} in {_where(DOTTED, name) or 'an API page'} "
                          f"({type(e).__name__}: {e})")  # fmt: skip
    assert not broken, f"the docs name what does not exist: {broken}"


FILES = r"`((?:[\w-]+/)+[\w-]+\.(?:py|ipynb|toml|md|yml|patch))`"


def test_every_file_of_ours_that_the_docs_name_exists() -> None:
    paths = set(re.findall(FILES, ALL))
    ours = {p for p in paths if p.split("/")[0] in (*OURS, "tests", "notebooks", "docs")}
    assert len(ours) > 5
    missing = [f"{p} ({_where(FILES, p)})" for p in sorted(ours) if not (ROOT / p).exists()]
    assert not missing, f"the docs name files that do not exist: {missing}"


LINK = r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)"


def test_readme_links_into_the_site_resolve() -> None:
    links = re.findall(LINK, TEXT["README.md"])
    assert len(links) > 10
    missing = sorted({link for link in links if not (ROOT / link).exists()})
    assert not missing, f"README links to pages that do not exist: {missing}"
