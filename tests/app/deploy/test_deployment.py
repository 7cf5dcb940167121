"""Failures in a real deployment: refused nodes, wrong HE keys, a crashed and restarted node.

One SuperLink (TLS, node authentication) and 3 SuperNodes with CKKS keys serve
the module; every process is stopped by PID at the end, also on failure.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.deploy.deployment import LocalDeployment, Node, NodeRefused
from app.deploy.local import results_path, run_config_for, wait_for_run
from app.deploy.procs import alive, stop
from app.keys import CLIENT_FILE, generate

pytestmark = pytest.mark.slow(seconds=200)  # real processes or the engine: tests/conftest.py

TRAIN_RECEIVED = "Receiving: train message"


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    deployment = LocalDeployment(tmp_path_factory.mktemp("faults"))
    try:
        deployment.start_superlink()
        for i in range(3):
            deployment.start_node(deployment.add_node(node_config=deployment.node_config(i, 3)))
        yield deployment
    finally:
        pids = deployment.stop()
        assert not [p for p in pids if alive(p)]


def _good(dep: LocalDeployment) -> list[Node]:
    return dep.nodes[:3]


def _submit(dep: LocalDeployment, rounds: int) -> int:
    overrides = {"num-server-rounds": rounds, "local-epochs": 1, "fraction-evaluate": 0.0}
    return dep.cli.submit(dep.app_dir, run_config_for(dep, overrides))


def _results(dep: LocalDeployment, run_id: int) -> dict[str, Any]:
    return json.loads(wait_for_run(dep, run_id, timeout=420).read_text())


def _wait_rounds(path: Path, count: int, timeout: float = 180.0) -> None:
    """Wait until results.json holds ``count`` rounds.

    The SuperLink answers "Node Unavailable" only while the node is offline when the
    ServerApp polls (every 3 s in flwr 1.41); a node back online before that poll
    leaves its in-flight message unanswered until ``round-timeout``.
    """
    deadline = time.monotonic() + timeout
    while len(json.loads(path.read_text())["rounds"]) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} has fewer than {count} rounds after {timeout:.0f} s")
        time.sleep(1.0)


def test_unregistered_node_is_refused_and_the_others_stay_online(dep: LocalDeployment) -> None:
    # Prepare
    rogue = dep.add_node(node_config=dep.node_config(0, 3), register=False, name="rogue")
    # Execute
    with pytest.raises(NodeRefused) as refused:
        dep.start_node(rogue)
    # Assert
    print(f"\n{refused.value}")
    assert "Failed to activate SuperNode" in str(refused.value)
    assert "was never registered (flwr supernode register)" in str(refused.value)
    statuses = dep.cli.nodes()
    assert {statuses[n.node_id] for n in _good(dep)} == {"online"}  # type: ignore[index]
    assert len(statuses) == 3  # the rogue key is unknown to the SuperLink


@pytest.fixture(scope="module")
def faulty_run(dep: LocalDeployment, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """4 rounds with a 4th node on another key generation; node 2 crashes in round 2 and restarts.

    One run for both faults keeps the module near 3 minutes on 2 cores.
    """
    keys = tmp_path_factory.mktemp("stale-keys")
    generate("ckks", keys)
    config = {**dep.node_config(0, 3), "he-client-bundle": str(keys / CLIENT_FILE)}
    stale = dep.add_node(node_config=config, name="stale-keys")
    victim = _good(dep)[2]
    assert victim.proc is not None
    dep.start_node(stale)
    seen = len(re.findall(TRAIN_RECEIVED, victim.proc.log_text()))
    run_id = _submit(dep, rounds=4)
    victim.proc.wait_for_line(TRAIN_RECEIVED, timeout=300, count=seen + 2)  # round 2 started
    path = results_path(dep, run_id)
    assert path is not None
    before = json.loads(path.read_text())["rounds"]
    dep.crash_node(victim)  # SIGKILL mid-round: no goodbye reaches the SuperLink
    waited = dep.wait_offline(victim)
    _wait_rounds(path, len(before) + 1)  # the lost round closes before the node returns
    dep.restart_node(victim)  # same key, so the same node id
    results = _results(dep, run_id)
    stop(stale.proc)  # type: ignore[arg-type]
    return {"results": results, "before": before, "waited": waited, "victim": victim,
            "stale": stale}  # fmt: skip


def test_node_with_another_key_generation_is_refused_every_round(
    faulty_run: dict[str, Any],
) -> None:
    results, stale = faulty_run["results"], faulty_run["stale"]
    assert results["status"] == "completed"
    for entry in results["rounds"]:
        reasons = {f["node-id"]: f["reason"] for f in entry["failures"]}
        assert "different key generations" in reasons[stale.node_id], entry["failures"]
    print(f"\nrefusals: {[f for f in results['rounds'][0]['failures']]} ... "
          f"{[f['reason'] for f in results['rounds'][1]['failures']]}")  # fmt: skip


def test_crashed_node_is_skipped_then_rejoins_after_restart(faulty_run: dict[str, Any]) -> None:
    results, before, victim = faulty_run["results"], faulty_run["before"], faulty_run["victim"]
    rounds = results["rounds"]
    assert results["status"] == "completed" and len(rounds) == 4
    assert rounds[: len(before)] == before  # what was written before the crash is intact
    assert [r["train"]["num-replies"] for r in before] == [3]
    lost = rounds[len(before)]
    assert lost["train"]["num-replies"] == 2  # the two remaining good nodes (min-clients = 2)
    unavailable = [f for f in lost["failures"] if f["node-id"] == victim.node_id]
    assert len(unavailable) == 1 and "Node Unavailable" in unavailable[0]["reason"]
    later = [r["round"] for r in rounds[len(before) + 1 :] if r["train"]["num-replies"] == 3]
    seconds = [round(r["seconds"]) for r in rounds]
    waited = faulty_run["waited"]
    print(f"\nnode lost in round {lost['round']} (offline after {waited:.0f} s), rejoined in "
          f"rounds {later}; round seconds {seconds}; events {victim.events}")  # fmt: skip
    assert later, [r["train"]["num-replies"] for r in rounds]
    assert lost["seconds"] < 120  # bounded by Flower's heartbeat: 2 x 30 s, plus the round
    assert TRAIN_RECEIVED in victim.proc.log_text()  # the restarted process trained
