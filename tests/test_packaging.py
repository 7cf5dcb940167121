"""The installed project exposes one import name, ``flwr_privacy``; nothing of it shadows a
user's own ``app``/``tasks``/``data``/``strategies`` modules or Opacus' ``benchmarks``."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import importlib.util, json, sys
names = ["flwr_privacy", "app", "tasks", "data", "strategies", "benchmarks", "tests", "notebooks"]
out = {}
for n in names:
    spec = importlib.util.find_spec(n)
    out[n] = None if spec is None else (spec.origin or str(list(spec.submodule_search_locations)))
print(json.dumps(out))
"""


def _probe(cwd: Path) -> dict[str, str | None]:
    import json

    # What the installed project exposes: without a PYTHONPATH some earlier test's Ray or
    # Flower runtime may have exported into this process's environment.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, capture_output=True,
                          text=True, check=True, env=env)  # fmt: skip
    return json.loads(done.stdout)


def test_only_the_toolkit_is_importable_outside_the_repository(tmp_path: Path) -> None:
    found = _probe(tmp_path)
    assert found["flwr_privacy"] is not None and str(ROOT) in found["flwr_privacy"]
    for name in ("app", "tasks", "data", "strategies", "benchmarks", "tests", "notebooks"):
        assert found[name] is None or str(ROOT / name) not in found[name], (name, found[name])


def test_repository_packages_still_run_from_its_root() -> None:
    found = _probe(ROOT)
    for name in ("app", "tasks", "strategies", "benchmarks"):
        assert found[name] is not None and str(ROOT / name) in found[name], (name, found[name])
