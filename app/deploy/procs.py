"""Processes the local deployment starts: logs, readiness, and stopping them by PID.

Flower's SuperLink and SuperNodes start helpers of their own (``flower-superexec``,
``flwr-serverapp``, ``flwr-clientapp``), some in new sessions, so stopping a
process group is not enough: ``stop`` signals the process and every descendant
it finds in ``/proc``, by PID, and reaps what it started.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class ProcessFailed(RuntimeError):
    """A process exited or did not become ready; the message carries its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it when binding port 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _monitors(pid: int) -> list[int]:
    """Flower helpers started with ``--parent-pid <pid>``: they outlive a killed parent briefly."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        pairs = zip(argv, argv[1:], strict=False)
        if any(a == b"--parent-pid" and b == str(pid).encode() for a, b in pairs):
            out.append(int(entry.name))
    return out


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, and of the helpers that monitor it, from /proc."""
    tree, out, todo = _children(), [], [pid, *_monitors(pid)]
    out.extend(todo[1:])
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in out:
                out.append(child)
                todo.append(child)
    return out


@dataclass
class Proc:
    """One started process with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str] = field(default_factory=list)
    stopped: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 25) -> str:
        """The end of the log, for error messages."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def fail(self, what: str) -> ProcessFailed:
        state = "running" if self.alive() else f"exited with code {self.popen.returncode}"
        return ProcessFailed(
            f"{self.name} {what} ({state}); log {self.log_path}, last lines:\n{self.tail()}"
        )

    def wait_for(
        self, ready: Callable[[], bool], timeout: float, what: str, poll: float = 0.5
    ) -> None:
        """Wait until ``ready()``; raise with the log tail if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.alive():
                raise self.fail(f"exited before it {what}")
            if time.monotonic() > deadline:
                raise self.fail(f"did not {what} within {timeout:.0f} s")
            time.sleep(poll)

    def wait_for_line(
        self, pattern: str, timeout: float, count: int = 1, what: str | None = None
    ) -> re.Match[str]:
        """Wait until the log holds ``count`` lines matching ``pattern``; return the last match."""
        found: list[re.Match[str]] = []

        def ready() -> bool:
            found[:] = list(re.finditer(pattern, self.log_text()))
            return len(found) >= count

        self.wait_for(ready, timeout, what or f"logged /{pattern}/ {count} time(s)")
        return found[count - 1]

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit on its own; raise with the log tail if it does not."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise self.fail(f"did not exit within {timeout:.0f} s") from None


def start(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
) -> Proc:
    """Start ``argv`` in its own session with stdout and stderr into ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        try:
            popen = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dict(env), cwd=cwd, start_new_session=True,
            )  # fmt: skip
        except OSError as e:
            raise ProcessFailed(f"cannot start {name} ({argv[0]}): {e}") from e
    return Proc(name, popen, log_path, list(argv))


def signal_all(pids: Sequence[int], sig: signal.Signals) -> None:
    """Send ``sig`` to each pid that is still there (and ours to signal)."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if alive(p)]
    return left


def stop(proc: Proc, *, grace: float = 10.0, crash: bool = False) -> list[int]:
    """Stop ``proc`` and its descendants by PID; return the PIDs signalled.

    ``crash`` sends SIGKILL at once (a machine failure: no goodbye to the
    SuperLink); otherwise SIGTERM, then SIGKILL for whatever is left after ``grace``.
    """
    pids = [*descendants(proc.pid), proc.pid] if proc.alive() else descendants(proc.pid)
    signal_all(pids, signal.SIGKILL if crash else signal.SIGTERM)
    if proc.alive():
        try:
            proc.popen.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    left = _wait_gone(pids, 0 if crash else grace)
    signal_all(left + descendants(proc.pid), signal.SIGKILL)
    try:
        proc.popen.wait(5)
    except subprocess.TimeoutExpired:
        pass
    _wait_gone(pids, 5)
    proc.stopped = True
    return pids
