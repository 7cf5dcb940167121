"""Run an example Flower app through Flower's simulation engine, in its own process.

    python tests/examples/run_example.py APP_DIR NUM_SUPERNODES '{"num-server-rounds": 2}'

The app's own top-level packages (``app``, ...) must win over this repository's
``app``/``tasks``: this script is started with a neutral working directory, puts
``APP_DIR`` first on ``sys.path`` and exits with an error if ``app`` resolves
anywhere else. ``run_simulation`` leaves ``context.run_config`` empty, so the
ServerApp and the ClientApp are called with the config that ``flwr run`` would
give them: the app's pyproject.toml defaults plus the overrides (unknown keys are
rejected, as ``flwr run`` does).
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Any


def fused_run_config(app_dir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The app's declared run config with ``overrides`` applied."""
    from flwr.common.config import flatten_dict

    with (app_dir / "pyproject.toml").open("rb") as f:
        defaults = flatten_dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"])
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise KeyError(f"unknown run-config keys {unknown}; the app declares {sorted(defaults)}")
    return {**defaults, **overrides}


def main(app_dir: Path, num_supernodes: int, overrides: dict[str, Any]) -> None:
    sys.path.insert(0, str(app_dir))
    with (app_dir / "pyproject.toml").open("rb") as f:
        components = tomllib.load(f)["tool"]["flwr"]["app"]["components"]
    server_mod, server_attr = components["serverapp"].split(":")
    client_mod, client_attr = components["clientapp"].split(":")
    server_app = getattr(importlib.import_module(server_mod), server_attr)
    client_app = getattr(importlib.import_module(client_mod), client_attr)
    top = server_mod.split(".")[0]
    origin = Path(sys.modules[top].__file__ or "").resolve()
    if app_dir.resolve() not in origin.parents:
        raise SystemExit(f"package {top!r} was imported from {origin}, not from {app_dir}")

    from flwr.app import Context, Message
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    run_config = fused_run_config(app_dir, overrides)
    failures: list[BaseException] = []
    server = ServerApp()

    @server.main()
    def _server(grid: Grid, context: Context) -> None:
        context.run_config = dict(run_config)
        # As in a deployment whose SuperNodes are up before `flwr run`: Flower's
        # strategies size a round's sample from the nodes connected when it starts, so a
        # node still registering on a loaded machine would be left out of round 1.
        deadline = time.monotonic() + 120
        while len(list(grid.get_node_ids())) < num_supernodes:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(list(grid.get_node_ids()))} of {num_supernodes} "
                                 "simulated SuperNodes connected within 120 s")  # fmt: skip
            time.sleep(0.2)
        try:
            server_app(grid, context)
        except BaseException as e:  # noqa: BLE001 - reported as this process' exit status
            failures.append(e)
            raise

    client = ClientApp()

    def _forward(msg: Message, context: Context) -> Message:
        # The engine refuses a changed run_config: the app gets a view of the node's
        # context with the run config filled in and the same (persistent) state.
        view = Context(
            run_id=context.run_id,
            node_id=context.node_id,
            node_config=context.node_config,
            state=context.state,
            run_config=dict(run_config),
        )
        return client_app(msg, view)

    client.train()(_forward)
    client.evaluate()(_forward)

    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=num_supernodes,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"logging_level": "ERROR", "log_to_driver": True},
        },
    )
    if failures:
        raise SystemExit(f"the ServerApp failed: {failures[0]!r}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), int(sys.argv[2]), json.loads(sys.argv[3]))
