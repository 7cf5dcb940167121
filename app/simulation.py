"""Run the app in-process through Flower's simulation engine (benchmarks, notebooks, tests).

``flwr run .`` is the user-facing path; this gives scripts the same apps with
run-config overrides and returns the parsed results.json.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.common.config import flatten_dict
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from app.client_app import app as client_app
from app.server_app import run_server

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def default_run_config() -> dict[str, Any]:
    """The run config declared in pyproject.toml, flattened as Flower does."""
    with PYPROJECT.open("rb") as f:
        return flatten_dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"])


def resolve_run_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults plus overrides; unknown keys are rejected as ``flwr run`` does."""
    cfg = default_run_config()
    unknown = sorted(set(overrides or {}) - set(cfg))
    if unknown:
        raise KeyError(f"unknown run-config keys {unknown}; known: {sorted(cfg)}")
    return {**cfg, **(overrides or {})}


def simulate(
    overrides: dict[str, Any] | None = None,
    *,
    num_supernodes: int = 10,
    num_cpus_per_client: float = 1.0,
    clients: ClientApp = client_app,
) -> dict[str, Any]:
    """Run one simulated job and return its results.json content (it records its own path).

    ``clients`` replaces the ClientApp, e.g. one wrapped in extra mods for experiments.
    """
    run_config = resolve_run_config(overrides)
    out: dict[str, Path] = {}
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        out["path"] = run_server(grid, run_config, run_id=context.run_id)

    run_simulation(
        server_app=server,
        client_app=clients,
        num_supernodes=num_supernodes,
        backend_config={
            "client_resources": {"num_cpus": num_cpus_per_client, "num_gpus": 0.0},
            "init_args": {"logging_level": "ERROR", "log_to_driver": True},
        },
    )
    if "path" not in out:
        raise RuntimeError("the simulated run failed before writing results; see the log above")
    return json.loads(out["path"].read_text())  # records its own "path" and "run-dir"
