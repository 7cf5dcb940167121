"""The ``flwr`` CLI calls a deployment needs: connection, node registration, runs.

flwr 1.41 reads SuperLink connections from ``$FLWR_HOME/config.toml``
(``[superlink.<name>]`` with ``address`` and ``root-certificates``), not from
pyproject.toml; ``flwr run . <name>`` submits to that connection.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.deploy.procs import Proc, start


def write_connection(flwr_home: Path, name: str, address: str, root_certificates: Path) -> Path:
    """Write ``config.toml`` with one TLS connection ``name``, made the default."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(
        f'[superlink]\ndefault = "{name}"\n\n'
        f'[superlink.{name}]\naddress = "{address}"\n'
        f"root-certificates = {json.dumps(str(root_certificates))}\n"
    )
    return path


def toml_value(value: Any) -> str:
    """One run-config value as ``--run-config`` wants it (strings quoted, floats with a dot)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def toml_overrides(run_config: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())


class FlwrCli:
    """Runs ``flwr`` against one named connection with a private FLWR_HOME."""

    def __init__(self, env: Mapping[str, str], connection: str, cwd: Path) -> None:
        self.env = dict(env)
        self.connection = connection
        self.cwd = cwd

    def _json(self, *args: str, timeout: float = 120.0) -> dict[str, Any]:
        cmd = ["flwr", *args, "--format", "json"]
        try:
            done = subprocess.run(
                cmd, cwd=self.cwd, env=self.env, capture_output=True, text=True,
                timeout=timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"`{' '.join(cmd)}` did not answer within {timeout:.0f} s") from e
        out = done.stdout
        try:
            data = json.loads(out[out.index("{") :])
        except ValueError:
            data = {}
        if done.returncode != 0 or not data.get("success", False):
            detail = (data.get("error-message") or done.stderr or out).strip()[-2000:]
            raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {done.returncode}): {detail}")
        return data

    def register(self, public_key: Path) -> int:
        """Register a SuperNode's public key; return the node id the SuperLink assigned."""
        data = self._json("supernode", "register", str(public_key), self.connection)
        return int(data["node-id"])

    def nodes(self) -> dict[int, str]:
        """Node id -> status (``registered``, ``online``, ``offline``, ...)."""
        data = self._json("supernode", "list", self.connection)
        return {int(n["node-id"]): str(n["status"]) for n in data["nodes"]}

    def submit(self, app_dir: Path, run_config: Mapping[str, Any]) -> int:
        """``flwr run <app> <connection>`` without streaming; return the run id."""
        args = ["run", str(app_dir), self.connection]
        if run_config:
            args += ["--run-config", toml_overrides(run_config)]
        return int(self._json(*args, timeout=300.0)["run-id"])

    def run_status(self, run_id: int) -> str:
        """``pending``, ``running``, ``finished:completed``, ``finished:failed`` ..."""
        data = self._json("list", self.connection, "--run-id", str(run_id))
        return str(data["runs"][0]["status"])

    def stream_logs(self, run_id: int, log_path: Path) -> Proc:
        """``flwr log --stream`` into a file; the process exits when the run ends."""
        argv = ["flwr", "log", str(run_id), self.connection, "--stream"]
        return start(f"flwr log {run_id}", argv, log_path, env=self.env, cwd=self.cwd)

    def stop_run(self, run_id: int) -> None:
        subprocess.run(
            ["flwr", "stop", str(run_id), self.connection], cwd=self.cwd, env=self.env,
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
