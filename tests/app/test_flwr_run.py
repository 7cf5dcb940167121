"""`flwr run .` end to end: the FAB, a real local SuperLink and its simulation runtime.

Each test module run starts its own SuperLink (own FLWR_HOME and ports) and
stops it by its process group when done.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.deploy.procs import free_port

ROOT = Path(__file__).resolve().parents[2]


def _superlink_pids(flwr_home: Path) -> list[int]:
    """PIDs of SuperLinks whose command line names this FLWR_HOME (their log file)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "flower-superlink" in cmd and str(flwr_home) in cmd:
            pids.append(int(proc.name))
    return pids


@pytest.fixture(scope="module")
def flwr_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    # The CLI spawns flower-superlink by name: put this interpreter's scripts first.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if shutil.which("flwr", path=path) is None:
        pytest.fail("the flwr CLI is not installed; install the project as README says")
    home = tmp_path_factory.mktemp("flwr-home")
    env = {
        **os.environ,
        "PATH": path,
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
    }
    yield env
    for pid in _superlink_pids(home):
        try:
            os.killpg(pid, signal.SIGTERM)  # the SuperLink leads its own session
        except ProcessLookupError:
            pass


def _flwr_run(env: dict[str, str], run_config: str) -> str:
    cmd = [
        "flwr", "run", ".", "--stream",
        "--federation-config", "num-supernodes=4",
        "--run-config", run_config,
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    return done.stdout + done.stderr


def test_flwr_run_writes_results(flwr_env: dict[str, str], tmp_path: Path) -> None:
    out = _flwr_run(flwr_env, f"num-server-rounds=2 output-dir='{tmp_path}'")
    assert "results written to" in out, out[-3000:]
    (results_file,) = tmp_path.glob("*/results.json")
    results = json.loads(results_file.read_text())
    assert results["status"] == "completed"
    assert [r["round"] for r in results["rounds"]] == [1, 2]
    assert results["config"]["num-server-rounds"] == 2
    assert results["final"]["accuracy"] >= 0.9


def test_flwr_run_rejects_bad_value_before_round_one(
    flwr_env: dict[str, str], tmp_path: Path
) -> None:
    out = _flwr_run(flwr_env, f"learning-rate=-0.5 output-dir='{tmp_path}'")
    assert "run-config key 'learning-rate' = -0.5 is invalid; allowed: a float > 0" in out
    assert "[ROUND 1" not in out
    assert not list(tmp_path.iterdir())
