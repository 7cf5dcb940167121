"""Fixtures shared across test packages, and the suite's two tiers.

Tiers (README "Tests", docs/development.md): ``python -m pytest -q`` runs everything (CI);
``python -m pytest -q -m "not slow"`` is the fast tier. A test is ``slow`` when it
starts Flower's simulation engine (Ray), starts real processes (a SuperLink,
SuperNodes, ``flwr run``, a subprocess), executes a notebook, or takes over 10 s;
mark the module (``pytestmark = pytest.mark.slow``) or the test. The one engine run
the fast tier keeps is marked ``smoke`` instead. A test that starts the engine
unmarked fails; one that takes over 10 s unmarked is listed after the run.

``--durations-json PATH`` writes every test's setup, call and teardown seconds to
PATH, to compare runs (``python -m tests.durations OLD NEW``).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SLOW_SECONDS = 10.0
DEFAULT_SLOW_SECONDS = 20.0
RAY_BACKEND = "flwr.server.superlink.fleet.vce.backend.raybackend"
_engine = {"builds": 0, "patched": False}
_BUILDS_BEFORE = pytest.StashKey[int]()


@pytest.fixture
def server_identity() -> Iterator[None]:
    """Flower stamps new messages with the sending task's identity; play the server."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--durations-json",
        metavar="PATH",
        default=None,
        help="write every test's setup/call/teardown seconds to PATH (JSON) to compare runs",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: starts the engine or processes, or takes > 10 s")
    config.addinivalue_line("markers", "smoke: the fast tier's real simulation-engine run")
    config._durations = {}  # type: ignore[attr-defined]
    config._started = time.time()  # type: ignore[attr-defined]


def _count_engine_runs() -> None:
    """Count Flower simulation-engine runs (one ``RayBackend`` each) to check the marks.

    ``app.simulation.simulate`` keeps one Ray runtime and its idle actors for the
    next run of the same process (its ``warm`` flag): each xdist worker has its own.
    """
    if _engine["patched"]:
        return
    import importlib

    backend = importlib.import_module(RAY_BACKEND).RayBackend
    init = backend.__init__

    def counted_init(self: Any, *args: Any, **kwargs: Any) -> None:
        _engine["builds"] += 1
        init(self, *args, **kwargs)

    backend.__init__ = counted_init
    _engine["patched"] = True


def _own_seconds(marks: list[pytest.Mark]) -> float:
    slow = [m for m in marks if m.name == "slow"]
    return float(slow[0].kwargs.get("seconds", DEFAULT_SLOW_SECONDS)) if slow else 0.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules longest first: xdist runs each module on one worker (``--dist loadfile``).

    A module's expected seconds: its ``slow(seconds=...)`` mark plus each test's own
    (``slow`` without seconds counts 20 s, an unmarked test 0.5 s). With
    ``--no-loadscope-reorder`` (pyproject addopts) xdist hands the modules out in this
    order, so the longest start first and the short ones fill in at the end.
    """
    groups: dict[str, list[pytest.Item]] = {}
    cost: dict[str, float] = {}
    for item in items:
        group = item.nodeid.split("::")[0]
        marks = getattr(getattr(item, "module", None), "pytestmark", [])
        module_seconds = _own_seconds([m.mark for m in (marks if isinstance(marks, list)
                                                        else [marks])])  # fmt: skip
        if group not in groups:
            groups[group], cost[group] = [], module_seconds
        groups[group].append(item)
        cost[group] += _own_seconds(item.own_markers) or (0.0 if module_seconds else 0.5)
    ordered = sorted(groups, key=lambda g: -cost[g])  # stable: collection order among equals
    items[:] = [item for group in ordered for item in groups[group]]


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker a core, at most 4 (each may hold a Ray runtime and actors)."""
    return max(1, min(os.cpu_count() or 1, 4))


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.items:
        _count_engine_runs()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    simulation = sys.modules.get("app.simulation")
    if simulation is not None:
        simulation.stop_warm_engine()  # the kept actors and Ray runtime of this process
    path = session.config.getoption("--durations-json")
    if path and not hasattr(session.config, "workerinput"):  # the controller writes, once
        _write_durations(session.config, Path(path), exitstatus)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_BUILDS_BEFORE] = _engine["builds"]  # before any fixture, module ones too


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Fail a test that started Flower's simulation engine without ``slow`` or ``smoke``."""
    report = yield
    marked = item.get_closest_marker("slow") or item.get_closest_marker("smoke")
    started = _engine["builds"] > item.stash.get(_BUILDS_BEFORE, _engine["builds"])
    if call.when == "teardown" and started and not marked and report.outcome == "passed":
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} started Flower's simulation engine (here or in a fixture) but is not "
            "marked slow: mark the test or its module (tests/conftest.py: the tiers)"
        )
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    config = _CONFIG.get("config")
    if config is None:
        return
    entry = config._durations.setdefault(  # type: ignore[attr-defined]
        report.nodeid, {"setup": 0.0, "call": 0.0, "teardown": 0.0}
    )
    entry[report.when] = round(report.duration, 3)
    entry["slow"] = "slow" in report.keywords or "smoke" in report.keywords
    if report.when == "call" or report.outcome != "passed":
        entry["outcome"] = report.outcome


_CONFIG: dict[str, pytest.Config] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _CONFIG["config"] = session.config


def _totals(durations: dict[str, dict[str, Any]]) -> dict[str, float]:
    return {
        test: round(sum(d.get(w, 0.0) for w in ("setup", "call", "teardown")), 3)
        for test, d in durations.items()
    }


def _write_durations(config: pytest.Config, path: Path, exitstatus: int) -> None:
    durations: dict[str, dict[str, Any]] = config._durations  # type: ignore[attr-defined]
    totals = _totals(durations)
    files: dict[str, float] = {}
    for test, seconds in totals.items():
        files[test.split("::")[0]] = round(files.get(test.split("::")[0], 0.0) + seconds, 3)
    payload = {
        "args": config.invocation_params.args,
        "workers": getattr(config.option, "numprocesses", None) or 0,
        "wall-seconds": round(time.time() - config._started, 1),  # type: ignore[attr-defined]
        "exit-status": int(exitstatus),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "test-seconds": round(sum(totals.values()), 1),
        "files": dict(sorted(files.items(), key=lambda kv: -kv[1])),
        "tests": {t: {**durations[t], "total": totals[t]} for t in sorted(durations)},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    durations: dict[str, dict[str, Any]] = config._durations  # type: ignore[attr-defined]
    unmarked = sorted(
        ((s, t) for t, s in _totals(durations).items()
         if s > SLOW_SECONDS and not durations[t].get("slow")),
        reverse=True,
    )  # fmt: skip
    if unmarked:
        terminalreporter.section(f"over {SLOW_SECONDS:.0f} s but not marked slow")
        for seconds, test in unmarked:
            terminalreporter.line(f"{seconds:7.1f} s  {test}")
    path = config.getoption("--durations-json")
    if path and not hasattr(config, "workerinput"):
        terminalreporter.line(f"per-test durations: {path}")
