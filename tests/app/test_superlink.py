"""app.superlink against real SuperLinks that ``flwr`` itself starts (private FLWR_HOME, port).

Every SuperLink here is started by ``flwr ls`` (the CLI's lazy start, as ``flwr run``
does it) and stopped by ``app.superlink.stop`` by its FLWR_HOME: the tests never
look at other users' SuperLinks, nor at this user's default one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.deploy.procs import alive, descendants, free_port
from app.superlink import SuperLink, flwr_home, main, port_owners, stop, superlinks
from tests.app.test_flwr_run import ROOT, local_flwr_env

pytestmark = pytest.mark.slow  # real processes or the engine: tests/conftest.py


def _start(home: Path) -> tuple[dict[str, str], SuperLink]:
    """A SuperLink started the way `flwr run` starts it, and how /proc describes it."""
    home.mkdir(parents=True, exist_ok=True)
    env = local_flwr_env(home)
    done = subprocess.run(["flwr", "ls", "--format", "json"], env=env, cwd=home,
                          capture_output=True, text=True, timeout=90)  # fmt: skip
    assert json.loads(done.stdout)["runs"] == [], done.stdout + done.stderr
    (link,) = [s for s in superlinks() if s.home == home]
    return env, link


def _command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "app.superlink", *args]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def link_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], SuperLink]]:
    home = tmp_path_factory.mktemp("flwr-home-a")
    yield _start(home)
    stop(home=home)


def test_status_lists_the_superlink_flwr_run_uses(
    link_a: tuple[dict[str, str], SuperLink],
) -> None:
    # Prepare: the SuperLink of FLWR_HOME a, found in /proc from its command line and environ
    env, link = link_a
    port = int(env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"])
    assert (link.host, link.port) == ("127.0.0.1", port)
    assert link.home == Path(env["FLWR_HOME"])
    assert link.log_file == link.home / "local-superlink" / "superlink.log"
    # Execute
    done = _command(env, "status")
    # Assert: its line names pid, port and FLWR_HOME and is the one flwr run uses
    assert done.returncode == 0, done.stderr
    (line,) = [x for x in done.stdout.splitlines() if f"pid {link.pid} " in x]
    assert f"127.0.0.1:{port}" in line and f"FLWR_HOME {env['FLWR_HOME']}" in line
    assert line.endswith("<- flwr run")
    assert "would submit" not in done.stdout


def test_status_warns_when_another_flwr_home_holds_the_port(
    link_a: tuple[dict[str, str], SuperLink], tmp_path: Path
) -> None:
    # Prepare: a second project with its own FLWR_HOME but the same (default-like) port
    env, link = link_a
    other = {**env, "FLWR_HOME": str(tmp_path)}
    # Execute
    done = _command(other, "status")
    # Assert: flwr run would reuse a's SuperLink; the fix names the variable to set
    assert f"flwr run would submit to pid {link.pid}, started with FLWR_HOME {link.home}, " \
           f"not {tmp_path}" in done.stdout  # fmt: skip
    assert "export FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=" in done.stdout


@pytest.mark.skipif(
    os.getuid() != 0 or not Path("/usr/bin/python3").exists(),
    reason="needs root to listen as another user (nobody) with the system python",
)
def test_status_warns_when_another_user_holds_the_port(tmp_path: Path) -> None:
    # Prepare: user nobody listens on the port this project's flwr would probe
    port = free_port()
    listen = f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); " \
             "s.listen(); print('ready', flush=True); time.sleep(30)"  # fmt: skip
    other = subprocess.Popen(["/usr/bin/python3", "-c", listen], user=65534, group=65534,
                             cwd="/", stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert other.stdout is not None and other.stdout.readline() == "ready\n"
        env = {**local_flwr_env(tmp_path), "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port)}
        # Execute
        done = _command(env, "status")
    finally:
        other.kill()
        other.wait()
    # Assert
    assert port_owners(port) == set()
    assert f"port {port} is held by another user (uid [65534]): flwr run would submit your " \
           "runs to their SuperLink" in done.stdout  # fmt: skip


def test_stop_stops_this_flwr_homes_superlink_and_leaves_the_other(
    link_a: tuple[dict[str, str], SuperLink], tmp_path: Path
) -> None:
    # Prepare: a second SuperLink (own FLWR_HOME and port) with its flower-superexec helper
    env_b, link_b = _start(tmp_path / "flwr-home-b")
    helpers = descendants(link_b.pid)
    assert helpers, "flower-superexec should run beside the SuperLink"
    # Execute
    done = _command(env_b, "stop")
    again = _command(env_b, "stop")
    # Assert: b and its helpers are gone, its port is free; a still runs and listens
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"stopped SuperLink pid {link_b.pid} ")
    assert not any(alive(p) for p in [link_b.pid, *helpers])
    assert not port_owners(link_b.port)
    assert alive(link_a[1].pid) and port_owners(link_a[1].port)
    assert again.returncode == 0
    assert f"no SuperLink of yours runs with FLWR_HOME {env_b['FLWR_HOME']}" in again.stdout


def test_stop_by_port_with_nothing_there_stops_nothing(
    link_a: tuple[dict[str, str], SuperLink], capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    assert main(["stop", "--port", str(port)]) == 0
    out = capsys.readouterr().out
    assert f"no SuperLink of yours runs with port {port}; nothing stopped" in out
    assert alive(link_a[1].pid)


def test_wait_refuses_a_port_nobody_listens_on(tmp_path: Path) -> None:
    env = {**local_flwr_env(tmp_path), "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port())}
    done = _command(env, "wait", "1")
    assert done.returncode == 2
    assert "no SuperLink listens on port" in done.stderr
    assert not list(tmp_path.iterdir())  # flwr ls was not run, so it started nothing


@pytest.mark.parametrize(
    ("status", "extra", "code", "printed"),
    [
        ("completed", {}, 0, "completed"),
        ("stopped", {"stopped": "budget spent"}, 0, "stopped  budget spent"),
        ("failed", {"error": "NoContributionError: no client"}, 1, "failed  NoContributionError"),
        ("running", {}, 3, "running"),
    ],
)
def test_result_exit_code_follows_results_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
    status: str, extra: dict[str, str], code: int, printed: str,
) -> None:  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps({"status": status, **extra}))
    assert main(["result", str(tmp_path)]) == code  # the run directory
    assert main(["result", str(tmp_path / "results.json")]) == code
    assert capsys.readouterr().out.startswith(printed)


def test_flwr_home_and_port_follow_flwr(tmp_path: Path) -> None:
    assert flwr_home({"FLWR_HOME": str(tmp_path)}) == tmp_path
    assert flwr_home({"HOME": str(tmp_path)}) == tmp_path / ".flwr"
