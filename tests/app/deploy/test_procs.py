"""Stopping by PID reaches helpers in other sessions; failures carry the log tail."""

import socket
import sys
import time
from pathlib import Path

import pytest

from app.deploy.procs import ProcessFailed, alive, descendants, free_port, start, stop

# A parent that starts a child in a new session and one "monitor" that only names it.
TREE = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "--parent-pid",
                  str(os.getpid())], start_new_session=True)
print("ready", flush=True)
time.sleep(300)
"""


@pytest.mark.parametrize("crash", [False, True])
def test_stop_reaches_every_process_started(tmp_path: Path, crash: bool) -> None:
    # Prepare
    proc = start("tree", [sys.executable, "-c", TREE], tmp_path / "tree.log", env={})
    proc.wait_for_line("ready", timeout=30)
    time.sleep(0.5)
    family = descendants(proc.pid)
    assert len(family) == 2
    # Execute
    pids = stop(proc, grace=5, crash=crash)
    # Assert
    assert set(pids) == {proc.pid, *family}
    assert not any(alive(p) for p in pids)
    assert proc.stopped


def test_a_process_that_exits_early_fails_with_its_log_tail(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "print('port 1234 in use'); raise SystemExit(3)"]
    proc = start("early", argv, tmp_path / "early.log", env={})
    with pytest.raises(ProcessFailed, match=r"(?s)exited with code 3.*port 1234 in use"):
        proc.wait_for_line("never printed", timeout=30)


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
