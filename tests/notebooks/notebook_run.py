"""Run a notebook top to bottom (papermill, a real kernel) with small parameters.

The parameters cell of each notebook holds the full experiment; the tests
(``test_0*.py``, one file a notebook so xdist can run them on different workers)
override it with few rounds, few clients and small data, and check the files each
notebook promises to write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import papermill

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"


def execute(name: str, tmp_path: Path, **params: Any) -> Path:
    """Run ``notebooks/<name>.ipynb`` from the repository root; return its output folder."""
    out = tmp_path / "out"
    papermill.execute_notebook(
        NOTEBOOKS / f"{name}.ipynb", tmp_path / f"{name}.ipynb",
        parameters=params | {"OUT_DIR": str(out)}, cwd=str(ROOT), kernel_name="python3",
        progress_bar=False,
    )  # fmt: skip
    return out
