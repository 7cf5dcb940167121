"""The ClientApp module a deployment imports for every message stays light.

Flower 1.41 starts a fresh ClientApp process per message; SecAgg+ protocol stages
are answered by the mod alone, so the module must not import torch or the task code
until a handler runs.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "tenseal", "phe", "opacus", "opendp", "pandas", "sklearn", "scipy",
         "matplotlib", "tasks", "app.config", "app.client_handlers")  # fmt: skip


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=ROOT)  # fmt: skip
    return list(ast.literal_eval(out.stdout.strip().splitlines()[-1]))


def test_client_app_imports_no_torch_or_task_code() -> None:
    assert _loaded_after("import app.client_app") == []


def test_each_lazy_handler_delegates_to_its_namesake() -> None:
    import inspect

    from app import client_app, client_handlers

    for name in ("train", "evaluate", "describe"):
        lazy, real = getattr(client_app, name), getattr(client_handlers, name)
        assert f"client_handlers.{name}(msg, context)" in inspect.getsource(lazy)
        assert inspect.signature(lazy) == inspect.signature(real)
