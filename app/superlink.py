"""The local SuperLink that ``flwr run`` starts: list yours, stop this project's by PID.

``flwr run .`` (a ``:local:`` connection) treats *any* server answering on
``127.0.0.1:$FLWR_LOCAL_SUPERLINK_HTTP_API_PORT`` (default 39091) as its SuperLink
and starts ``flower-superlink --simulation`` only when nothing answers there. So a
second project, or a second user on a shared machine, with its own ``FLWR_HOME``
still submits to whoever holds that port. This command shows which SuperLink
``flwr run`` would use, stops the one of this ``FLWR_HOME`` by its PID (never by
name), and gives scripts an exit code for a run's outcome, since
``flwr run --stream`` exits 0 when the run failed::

    python -m app.superlink status
    python -m app.superlink stop [--port P | --pid N]
    python -m app.superlink wait <run-id>      # exit 0: finished:completed, 1: not
    python -m app.superlink result <results.json or run dir>   # exit 1: failed, 3: running
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.deploy.procs import alive, descendants, free_port, signal_all

PORT_VAR = "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"
DEFAULT_PORT = 39091  # flwr.cli.constant.LOCAL_SUPERLINK_HTTP_API_PORT without the variable


def flwr_home(env: Mapping[str, str] = os.environ) -> Path:
    """The FLWR_HOME ``flwr`` uses under ``env`` (flwr.supercore.utils.get_flwr_home)."""
    home = env.get("FLWR_HOME") or str(Path(env.get("HOME") or Path.home()) / ".flwr")
    return Path(home).expanduser().absolute()


def flwr_port(env: Mapping[str, str] = os.environ) -> int:
    """The port ``flwr`` probes and starts its local SuperLink on under ``env``."""
    return int(env.get(PORT_VAR) or DEFAULT_PORT)


@dataclass(frozen=True)
class SuperLink:
    """One running ``flower-superlink`` of this user, as /proc shows it."""

    pid: int
    host: str
    port: int
    home: Path | None  # the FLWR_HOME in its environment (None: unreadable)
    log_file: Path | None

    def describe(self) -> str:
        return (f"pid {self.pid}  {self.host}:{self.port}  FLWR_HOME {self.home or '?'}"
                f"  log {self.log_file or '-'}")  # fmt: skip


def _option(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _read(pid: int) -> SuperLink | None:
    """The SuperLink ``pid`` if it is a live ``flower-superlink`` of this user, else None."""
    proc = Path(f"/proc/{pid}")
    try:
        if proc.stat().st_uid != os.getuid() or not alive(pid):
            return None
        argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        raw = (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    if not any(Path(a).name == "flower-superlink" for a in argv[:2]):
        return None
    env = dict(e.decode(errors="replace").split("=", 1) for e in raw if b"=" in e)
    log_file = _option(argv, "--log-file")
    return SuperLink(
        pid=pid,
        host=_option(argv, "--host") or "0.0.0.0",
        port=int(_option(argv, "--port") or 8000),  # flower-superlink's own default
        home=flwr_home(env) if env else None,
        log_file=Path(log_file) if log_file else None,
    )


def superlinks() -> list[SuperLink]:
    """This user's running SuperLinks (other users' are neither read nor touched)."""
    found = (_read(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit())
    return sorted((s for s in found if s is not None), key=lambda s: s.pid)


def port_owners(port: int) -> set[int]:
    """UIDs of the sockets listening on TCP ``port`` (any address), from /proc/net/tcp*."""
    uids = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                uids.add(int(cols[7]))
    return uids


def status_lines(env: Mapping[str, str] = os.environ) -> list[str]:
    """What ``status`` prints: this user's SuperLinks and which one ``flwr run`` would use."""
    home, port, links = flwr_home(env), flwr_port(env), superlinks()
    lines = [f"flwr run uses 127.0.0.1:{port} ({PORT_VAR}); this FLWR_HOME: {home}"]
    lines += [f"  {s.describe()}" + ("  <- flwr run" if s.port == port else "") for s in links]
    if not links:
        lines.append("  no SuperLink of yours is running")
    used = [s for s in links if s.port == port]
    others = port_owners(port) - {os.getuid()}
    fix = f"give this project its own port: export {PORT_VAR}={free_port()}"
    if others:
        lines.append(f"port {port} is held by another user (uid {sorted(others)}): flwr run "
                     f"would submit your runs to their SuperLink; {fix}")  # fmt: skip
    elif used and used[0].home != home:
        lines.append(f"flwr run would submit to pid {used[0].pid}, started with FLWR_HOME "
                     f"{used[0].home}, not {home}; {fix}")  # fmt: skip
    elif not used:
        lines.append(f"nothing listens on port {port}: the next flwr run starts a SuperLink there")
    return lines


def stop(
    *, home: Path | None = None, port: int | None = None, pid: int | None = None,
    grace: float = 10.0,
) -> list[SuperLink]:  # fmt: skip
    """Stop this user's SuperLinks matching ``pid``, else ``port``, else ``home``; wait for exit.

    SIGTERM goes to the SuperLink and its helpers (``flower-superexec`` and the
    simulation it runs, found by parent PID in /proc); whatever is left after
    ``grace`` seconds gets SIGKILL.
    """
    links = superlinks()
    if pid is not None:
        chosen = [s for s in links if s.pid == pid]
    elif port is not None:
        chosen = [s for s in links if s.port == port]
    else:
        chosen = [s for s in links if s.home == home]
    for link in chosen:
        pids = [*descendants(link.pid), link.pid]
        signal_all(pids, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        signal_all([p for p in pids if alive(p)], signal.SIGKILL)
    return chosen


def run_status(run_id: int, env: Mapping[str, str] = os.environ) -> dict[str, object]:
    """``flwr ls --run-id`` as JSON, from the SuperLink ``flwr run`` uses under ``env``."""
    port = flwr_port(env)
    if not port_owners(port):  # flwr ls would start a fresh, empty SuperLink
        raise RuntimeError(f"no SuperLink listens on port {port} ({PORT_VAR}); "
                           "set the port the run was submitted to")  # fmt: skip
    here = Path(sys.executable).parent
    flwr = shutil.which("flwr", path=f"{here}{os.pathsep}{env.get('PATH', '')}") or "flwr"
    cmd = [flwr, "ls", "--run-id", str(run_id), "--format", "json"]
    out = subprocess.run(cmd, env=dict(env), capture_output=True, text=True, timeout=60)
    try:
        reply = json.loads(out.stdout)
    except json.JSONDecodeError:
        reply = {"error-message": (out.stdout + out.stderr)[-500:]}
    if not reply.get("runs"):
        why = str(reply.get("error-message", "")).splitlines()[-1:]
        raise RuntimeError(f"flwr ls on port {port} has no run {run_id}: {''.join(why)}")
    return dict(reply["runs"][0])


def wait(
    run_id: int, *, env: Mapping[str, str] = os.environ, timeout: float = 3600.0, poll: float = 2.0
) -> dict[str, object]:
    """Poll ``flwr ls`` until run ``run_id`` has finished (or ``timeout``); return its record."""
    deadline = time.monotonic() + timeout
    while True:
        run = run_status(run_id, env)
        if str(run.get("status", "")).startswith("finished") or time.monotonic() > deadline:
            return run
        time.sleep(poll)


def result(path: Path) -> tuple[str, str]:
    """(status, error) of a results.json, or of the one in a run directory."""
    path = path / "results.json" if path.is_dir() else path
    data = json.loads(path.read_text())
    return str(data.get("status")), str(data.get("error") or data.get("stopped") or "")


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m app.superlink",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("status", help="list your SuperLinks; say which one flwr run uses")
    p_stop = sub.add_parser("stop", help="stop the SuperLink of this FLWR_HOME (or --port/--pid)")
    which = p_stop.add_mutually_exclusive_group()
    which.add_argument("--port", type=int, help="the one on this port")
    which.add_argument("--pid", type=int, help="the one with this PID")
    p_wait = sub.add_parser("wait", help="wait for a run; exit 0 only if it completed")
    p_wait.add_argument("run_id", type=int)
    p_wait.add_argument("--timeout", type=float, default=3600.0, help="seconds (default 3600)")
    p_result = sub.add_parser("result", help="a results.json's status; exit 1 failed, 3 running")
    p_result.add_argument("path", type=Path, help="results.json or its run directory")
    args = parser.parse_args(argv)

    if args.cmd == "status":
        print("\n".join(status_lines()))
    elif args.cmd == "stop":
        home = flwr_home()
        stopped = stop(home=home, port=args.port, pid=args.pid)
        for link in stopped:
            print(f"stopped SuperLink {link.describe()}")
        if not stopped:
            what = f"FLWR_HOME {home}"
            if args.pid is not None or args.port is not None:
                what = f"PID {args.pid}" if args.pid is not None else f"port {args.port}"
            print(f"no SuperLink of yours runs with {what}; nothing stopped "
                  "(python -m app.superlink status lists yours)")  # fmt: skip
    elif args.cmd == "wait":
        try:
            run = wait(args.run_id, timeout=args.timeout)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        details = "" if run.get("status-details") in (None, "N/A") else run["status-details"]
        print(f"run {args.run_id}: {run.get('status')}  {details}".rstrip())
        return 0 if run.get("status") == "finished:completed" else 1
    else:
        status, why = result(args.path)
        print(f"{status}  {why}".rstrip())
        return {"completed": 0, "stopped": 0, "failed": 1}.get(status, 3)  # 3: still running
    return 0


if __name__ == "__main__":
    sys.exit(main())
