"""One path: this repository's app, strategies and tasks use only the toolkit's public API.

Public means listed in ``__all__`` (PEP 8): ``flwr_privacy.__all__`` or the ``__all__`` of
the documented toolkit module a name is imported from, and documented itself when it is
a function or a class. So every mode this app runs (Laplace DP-SGD, input perturbation,
distributed DP, server-keyed HE, ...) is reachable from another Flower app through the
same names; an import of a private helper fails here, naming the module and the name.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
USERS = ("app", "strategies", "tasks")


def _toolkit_imports() -> list[tuple[str, int, str, str]]:
    """(file, line, module, name) of every toolkit name imported by app/strategies/tasks."""
    found = []
    for package in USERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                where = str(path.relative_to(ROOT))
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "flwr_privacy"
                ):
                    found += [(where, node.lineno, node.module or "", a.name) for a in node.names]
                elif isinstance(node, ast.Import):
                    found += [(where, node.lineno, a.name, "*") for a in node.names
                              if a.name.startswith("flwr_privacy.")]  # fmt: skip
    return found


def test_the_app_imports_the_toolkit_at_all() -> None:  # the rule below is not vacuous
    modules = {module for _, _, module, _ in _toolkit_imports()}
    assert len(_toolkit_imports()) > 50 and "flwr_privacy.dp.distributed" in modules


@pytest.mark.parametrize("package", USERS)
def test_only_public_documented_names_are_imported(package: str) -> None:
    private = []
    for where, line, module_name, name in _toolkit_imports():
        if not where.startswith(package + "/"):
            continue
        module = importlib.import_module(module_name)
        public = getattr(module, "__all__", None)
        if not (module.__doc__ or "").strip():
            private.append(f"{where}:{line}: {module_name} has no module docstring")
        elif public is None:
            private.append(f"{where}:{line}: {module_name} declares no __all__ ({name})")
        elif name != "*" and name not in public:
            private.append(f"{where}:{line}: {module_name}.{name} is not in its __all__")
        elif name != "*":
            value = getattr(module, name)
            if (inspect.isfunction(value) or inspect.isclass(value)) and not inspect.getdoc(value):
                private.append(f"{where}:{line}: {module_name}.{name} has no docstring")
    assert not private, "non-public toolkit names used:\n" + "\n".join(private)


def test_every_public_toolkit_name_resolves() -> None:
    import flwr_privacy

    for name in flwr_privacy.__all__:
        assert getattr(flwr_privacy, name) is not None, name
