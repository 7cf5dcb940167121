"""`flwr run .` end to end: the FAB, a real local SuperLink and its simulation runtime.

Each test module run starts its own SuperLink (own FLWR_HOME and port) and
stops it by PID when done (``app.superlink.stop``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.deploy.procs import free_port
from app.superlink import stop, wait

pytestmark = pytest.mark.slow(seconds=60)  # real processes or the engine: tests/conftest.py

ROOT = Path(__file__).resolve().parents[2]


def local_flwr_env(home: Path) -> dict[str, str]:
    """Environment for ``flwr`` with a private FLWR_HOME and SuperLink port (README's recipe)."""
    # The CLI spawns flower-superlink by name: put this interpreter's scripts first.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if shutil.which("flwr", path=path) is None:
        pytest.fail("the flwr CLI is not installed; install the project as README says")
    return {
        **os.environ,
        "PATH": path,
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
    }


@pytest.fixture(scope="module")
def flwr_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("flwr-home")
    yield local_flwr_env(home)
    stop(home=home)  # the SuperLink the first `flwr run` started, by PID, with its helpers


def _flwr_run(env: dict[str, str], run_config: str) -> tuple[int, str]:
    cmd = [
        "flwr", "run", ".", "--stream",
        "--federation-config", "num-supernodes=4",
        "--run-config", run_config,
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    return done.returncode, done.stdout + done.stderr


def _run_id(out: str) -> int:
    found = re.search(r"Successfully started run (\d+)", out)
    assert found, out[-3000:]
    return int(found.group(1))


def test_flwr_run_writes_results(flwr_env: dict[str, str], tmp_path: Path) -> None:
    _, out = _flwr_run(flwr_env, f"num-server-rounds=2 output-dir='{tmp_path}'")
    assert "results written to" in out, out[-3000:]
    (results_file,) = tmp_path.glob("*/results.json")
    results = json.loads(results_file.read_text())
    assert results["status"] == "completed"
    assert [r["round"] for r in results["rounds"]] == [1, 2]
    assert results["config"]["num-server-rounds"] == 2
    assert results["final"]["accuracy"] >= 0.9
    assert wait(_run_id(out), env=flwr_env, timeout=60)["status"] == "finished:completed"


def test_flwr_run_rejects_bad_value_before_round_one(
    flwr_env: dict[str, str], tmp_path: Path
) -> None:
    code, out = _flwr_run(flwr_env, f"learning-rate=-0.5 output-dir='{tmp_path}'")
    assert "run-config key 'learning-rate' = -0.5 is invalid; allowed: a float > 0" in out
    assert "[ROUND 1" not in out
    assert not list(tmp_path.iterdir())
    # `flwr run --stream` exits 0 (README says so), but the SuperLink records the failure
    assert code == 0
    run = wait(_run_id(out), env=flwr_env, timeout=60)
    assert run["status"] == "finished:failed"
    assert "'learning-rate' = -0.5 is invalid" in str(run["status-details"])
