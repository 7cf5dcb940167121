"""Run the app in-process through Flower's simulation engine (benchmarks, notebooks, tests).

``flwr run .`` is the user-facing path; this gives scripts the same apps with
run-config overrides and returns the parsed results.json.

Flower's simulation engine starts a Ray runtime and a pool of actor processes for
every run and stops both at its end: about 10 s of a small run on 2 cores, mostly
the actors importing torch and the app. ``simulate(warm=True)`` (the default) keeps
both for the next ``simulate`` call of the same process (a notebook, a benchmark
sweep, the test suite): the actors are the engine's own, they only serve the next
run as they serve many nodes within one run. They are stopped when the process exits
(or by ``stop_warm_engine``); a run that ends with an actor still busy or lost
returns none. ``warm=False`` is Flower's behaviour.
"""

from __future__ import annotations

import atexit
import json
import logging
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


class _WarmEngine:
    """One Ray runtime and one idle actor pool kept between simulations of this process.

    Flower's ``RayBackend`` starts Ray only when none runs, builds a fresh actor pool
    per run and stops actors and Ray in ``terminate``. While ``active`` (inside
    ``simulate(warm=True)``) ``build`` takes the kept pool when the client resources
    match, and ``terminate`` keeps a pool whose actors are all back and idle.
    """

    def __init__(self) -> None:
        self.active = False
        self.patched = False
        self.pool: Any = None
        self.key: tuple[Any, ...] | None = None

    def install(self) -> bool:
        """Wrap ``RayBackend.build`` and ``terminate`` once; False where Flower differs."""
        if self.patched:
            return True
        try:
            from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend
        except ImportError:
            return False
        if not all(hasattr(RayBackend, a) for a in ("build", "terminate", "init_ray")):
            return False
        build, terminate, engine = RayBackend.build, RayBackend.terminate, self

        def warm_build(backend: Any, app_fn: Any) -> None:
            key = (tuple(sorted(backend.client_resources.items())), repr(backend.actor_kwargs))
            if engine.active and engine.pool is not None and engine.key == key:
                backend.pool, backend.app_fn = engine.pool, app_fn
                engine.pool = None  # in use until this run's terminate
                return
            engine.drop()
            build(backend, app_fn)
            engine.key = key

        def warm_terminate(backend: Any) -> None:
            pool = backend.pool
            idle = pool is not None and not pool._future_to_actor
            idle = idle and len(pool.pool) == pool.num_actors
            if not (engine.active and idle):
                terminate(backend)
                return
            engine.pool = pool  # Ray and the idle actors stay for the next run

        setattr(RayBackend, "build", warm_build)  # noqa: B010 - a patch mypy should not type
        setattr(RayBackend, "terminate", warm_terminate)  # noqa: B010
        atexit.register(self.stop)
        self.patched = True
        return True

    def drop(self) -> None:
        """Stop the kept actors (Ray stays)."""
        if self.pool is not None:
            self.pool.terminate_all_actors()
        self.pool, self.key = None, None

    def stop(self) -> None:
        """Stop the kept actors and the Ray runtime."""
        self.drop()
        try:
            import ray
        except ImportError:
            return
        if ray.is_initialized():
            ray.shutdown()


_WARM = _WarmEngine()


def stop_warm_engine() -> None:
    """Stop the Ray runtime and actors that ``simulate(warm=True)`` kept (also at exit)."""
    _WARM.stop()


def simulate(
    overrides: dict[str, Any] | None = None,
    *,
    num_supernodes: int = 10,
    num_cpus_per_client: float = 1.0,
    clients: ClientApp = client_app,
    warm: bool = True,
) -> dict[str, Any]:
    """Run one simulated job and return its results.json content (it records its own path).

    ``clients`` replaces the ClientApp, e.g. one wrapped in extra mods for experiments.
    ``warm`` keeps Flower's Ray runtime and idle actors for the next call (module
    docstring); ``False`` starts and stops them for this run only, as Flower does.
    """
    run_config = resolve_run_config(overrides)
    out: dict[str, Path] = {}
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        out["path"] = run_server(grid, run_config, run_id=context.run_id)

    if warm and not _WARM.install():
        logging.getLogger(__name__).warning(
            "this Flower version's RayBackend differs: simulate(warm=True) runs cold"
        )
    _WARM.active = warm
    try:
        run_simulation(
            server_app=server,
            client_app=clients,
            num_supernodes=num_supernodes,
            backend_config={
                "client_resources": {"num_cpus": num_cpus_per_client, "num_gpus": 0.0},
                "init_args": {"logging_level": "ERROR", "log_to_driver": True},
            },
        )
    finally:
        _WARM.active = False
    if "path" not in out:
        raise RuntimeError("the simulated run failed before writing results; see the log above")
    return json.loads(out["path"].read_text())  # records its own "path" and "run-dir"
