"""A real Flower deployment on one machine: SuperLink and SuperNodes with TLS, node auth, HE keys.

Layout under ``out``: ``tls/`` (CA, SuperLink certificate), ``auth/`` (SuperNode
key pairs), ``superlink/`` (what the server side gets: the HE *server* bundle,
its state database, its FLWR_HOME), ``supernodes/`` (the HE client bundle,
mode 0600, and one FLWR_HOME per node), ``flwr-home/`` (the operator's ``flwr``
connection), ``logs/`` and ``results/``. The SuperLink side never gets a file
holding a secret HE key; ``fab_secrets`` checks that the app bundle that
``flwr run`` uploads holds none either.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import httpx
from flwr.cli.build import build_fab_from_disk
from flwr.common import log

from app.deploy.certs import NodeKey, write_node_key, write_tls
from app.deploy.flwr_cli import FlwrCli, toml_overrides, write_connection
from app.deploy.procs import Proc, ProcessFailed, free_port, start, stop
from app.keys import CLIENT_FILE, SERVER_FILE, generate
from flwr_privacy.he import BundleError, KeyBundle
from flwr_privacy.secagg.identity import NODE_KEY, NODE_ROSTER, enrol

ROOT = Path(__file__).resolve().parents[2]
CONNECTION = "local-deploy"
NODE_READY = r"SuperNode ID: (\d+)"
PEM_PRIVATE = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")


class NodeRefused(RuntimeError):
    """A SuperNode could not join: not registered, bad key, TLS failure ... (log tail inside)."""


@dataclass
class Node:
    """One SuperNode: its key pair, node config and (once started) process."""

    name: str
    key: NodeKey
    node_config: dict[str, Any]
    node_id: int | None = None
    port: int = 0
    proc: Proc | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    # Extra environment of the SuperNode and the ClientApp processes it starts (they inherit
    # it); tests put a fault-injecting ``flwr-clientapp`` first on one node's PATH.
    env: dict[str, str] = field(default_factory=dict)


def fab_secrets(app_dir: Path) -> list[str]:
    """Files of the app bundle ``flwr run`` would upload that hold a secret key (should be none).

    The FAB takes every ``*.json`` not excluded by ``.gitignore``: a client
    bundle written inside the app directory would travel to the SuperLink.
    """
    fab = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(app_dir)))
    leaks = []
    for name in fab.namelist():
        data = fab.read(name)
        if PEM_PRIVATE.search(data):
            leaks.append(name)
        elif name.endswith(".json"):
            try:
                if KeyBundle.from_json(data.decode(errors="replace"), source=name).is_private:
                    leaks.append(name)
            except BundleError:
                pass
    return leaks


class LocalDeployment:
    """Start, break and stop a SuperLink and SuperNodes on ``host``; every process is stopped
    by PID in ``stop()`` (also called by ``with``), whatever happened."""

    def __init__(
        self,
        out: str | Path,
        *,
        backend: str = "ckks",
        app_dir: Path = ROOT,
        host: str = "127.0.0.1",
        startup_timeout: float = 90.0,
    ) -> None:
        self.out = Path(out).resolve()
        self.backend = backend
        self.app_dir = app_dir.resolve()
        self.host = host
        self.startup_timeout = startup_timeout
        self.port = 0
        self.superlink: Proc | None = None
        self.nodes: list[Node] = []
        self._procs: list[Proc] = []
        self._t0 = time.monotonic()
        self.tls = write_tls(self.out / "tls", (host, "localhost"))
        self.server_bundle, self.client_bundle = self._he_keys()
        self.cli = FlwrCli(self._env(self.out / "flwr-home"), CONNECTION, self.app_dir)

    # Files ---------------------------------------------------------------------------
    def _he_keys(self) -> tuple[Path | None, Path | None]:
        """Deal HE keys; the server bundle goes to the SuperLink side, the client one apart."""
        if self.backend == "none":
            return None, None
        server, client = self.out / "superlink" / "he-server.json", self.out / "supernodes"
        client.mkdir(parents=True, exist_ok=True)
        os.chmod(client, 0o700)
        with tempfile.TemporaryDirectory(prefix="he-dealer-") as tmp:
            generate(self.backend, tmp)
            server.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(Path(tmp) / SERVER_FILE, server)
            shutil.move(Path(tmp) / CLIENT_FILE, client / "he-client.json")
        return server, client / "he-client.json"

    def _env(self, flwr_home: Path) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        return {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(flwr_home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_TELEMETRY_ENABLED": "0",
        }

    def elapsed(self) -> float:
        return round(time.monotonic() - self._t0, 2)

    # SuperLink -------------------------------------------------------------------------
    def start_superlink(self) -> None:
        """Start the SuperLink with TLS and node authentication; wait for its /health."""
        self.port = free_port(self.host)
        (self.out / "superlink" / "state.db").unlink(missing_ok=True)  # each launch starts fresh
        argv = [
            "flower-superlink",
            "--ssl-ca-certfile", str(self.tls.ca_cert),
            "--ssl-certfile", str(self.tls.server_cert),
            "--ssl-keyfile", str(self.tls.server_key),
            "--enable-supernode-auth",
            "--host", self.host, "--port", str(self.port),
            "--database", str(self.out / "superlink" / "state.db"),
            "--disable-runtime-dependency-installation",
        ]  # fmt: skip
        env = self._env(self.out / "superlink" / "flwr-home")
        self.superlink = self._start("superlink", argv, env)
        self.superlink.wait_for(self._healthy, self.startup_timeout, "answered /health over TLS")
        home = Path(self.cli.env["FLWR_HOME"])
        write_connection(home, CONNECTION, self.address, self.tls.ca_cert)
        log(INFO, "start_superlink: SuperLink on %s (pid %d)", self.address, self.superlink.pid)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _healthy(self) -> bool:
        try:
            url = f"https://{self.address}/health"
            return httpx.get(url, verify=str(self.tls.ca_cert), timeout=2).is_success
        except httpx.HTTPError:
            return False

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        """Start and remember a process; a restarted one logs to ``<name>-<k>.log``."""
        starts = sum(p.name == name for p in self._procs)
        log_name = f"{name}-{starts + 1}.log" if starts else f"{name}.log"
        proc = start(name, argv, self.out / "logs" / log_name, env=env, cwd=self.out)
        self._procs.append(proc)
        return proc

    def track(self, proc: Proc) -> Proc:
        """Have ``stop()`` stop a process started elsewhere (e.g. ``flwr log --stream``)."""
        self._procs.append(proc)
        return proc

    # SuperNodes ------------------------------------------------------------------------
    def add_node(
        self, *, node_config: dict[str, Any], register: bool = True, name: str | None = None
    ) -> Node:
        """A new SuperNode key pair, registered with the SuperLink unless ``register`` is off."""
        name = name or f"supernode-{len(self.nodes)}"
        node = Node(name, write_node_key(self.out / "auth", name), dict(node_config))
        if register:
            node.node_id = self.cli.register(node.key.public)
        self.nodes.append(node)
        return node

    def node_config(self, partition_id: int, num_partitions: int, **extra: Any) -> dict[str, Any]:
        """Partition, HE client bundle, SecAgg+ key and roster, task keys (``mcsn.data-dir``)."""
        bundle = {"he-client-bundle": str(self.client_bundle)} if self.client_bundle else {}
        # SecAgg+ trust anchor: the operator's roster and this node's own signing key
        key, roster = enrol(self.out / "supernodes" / "secagg", f"supernode-{partition_id}")
        anchor = {NODE_KEY: str(key), NODE_ROSTER: str(roster)}
        return {"partition-id": partition_id, "num-partitions": num_partitions, **bundle,
                **anchor, **extra}  # fmt: skip

    def start_node(self, node: Node) -> None:
        """Start a SuperNode and wait until the SuperLink accepted it; raise NodeRefused if not."""
        node.port = free_port(self.host)
        argv = [
            "flower-supernode",
            "--root-certificates", str(self.tls.ca_cert),
            "--superlink", self.address,
            "--auth-supernode-private-key", str(node.key.private),
            "--node-config", toml_overrides(node.node_config),
            "--host", self.host, "--port", str(node.port),
        ]  # fmt: skip
        env = {**self._env(self.out / "supernodes" / node.name / "flwr-home"), **node.env}
        node.proc = self._start(node.name, argv, env)
        try:
            node.proc.wait_for_line(NODE_READY, self.startup_timeout, what="joined the SuperLink")
        except ProcessFailed as e:
            node.events.append({"event": "refused", "t": self.elapsed()})
            hint = (
                f"its public key {node.key.public} is registered as node {node.node_id}"
                if node.node_id
                else f"its public key {node.key.public} was never registered "
                "(flwr supernode register)"
            )
            raise NodeRefused(f"{node.name} could not join {self.address}; {hint}. {e}") from e
        node.events.append({"event": "started", "t": self.elapsed(), "pid": node.proc.pid})
        log(INFO, "start_node: %s joined as node %s (pid %d)", node.name, node.node_id,
            node.proc.pid)  # fmt: skip

    def crash_node(self, node: Node) -> None:
        """SIGKILL a SuperNode and everything it started: no goodbye reaches the SuperLink."""
        if node.proc is None:
            raise ValueError(f"{node.name} was never started")
        pids = stop(node.proc, crash=True)
        node.events.append({"event": "crashed", "t": self.elapsed(), "pids": pids})
        log(WARNING, "crash_node: killed %s (pids %s)", node.name, pids)

    def wait_offline(self, node: Node, timeout: float = 120.0) -> float:
        """Wait until the SuperLink marks ``node`` offline (missed heartbeats); return seconds."""
        start_t = time.monotonic()
        while self.cli.nodes().get(node.node_id or -1) == "online":
            if time.monotonic() - start_t > timeout:
                raise TimeoutError(f"{node.name} still online after {timeout:.0f} s")
            time.sleep(2.0)
        node.events.append({"event": "offline", "t": self.elapsed()})
        return time.monotonic() - start_t

    def restart_node(self, node: Node, timeout: float = 120.0) -> float:
        """Start a crashed node again once the SuperLink saw it go (flwr 1.41 refuses to
        activate a node it still counts online); it keeps its node id. Return the wait."""
        seen_offline = bool(node.events) and node.events[-1]["event"] == "offline"
        waited = 0.0 if seen_offline else self.wait_offline(node, timeout)
        self.start_node(node)
        node.events[-1]["event"] = "restarted"
        return waited

    # Stop ------------------------------------------------------------------------------
    def stop(self) -> list[int]:
        """Stop every process this deployment started (nodes first), by PID."""
        pids: list[int] = []
        for proc in reversed(self._procs):
            if not proc.stopped:
                pids += stop(proc)
        return pids

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
