"""SecAgg+ in a real deployment: a SuperNode killed between its masked input and unmasking.

A SuperLink (TLS, node authentication) and 4 SuperNodes run 2 SecAgg+ rounds
(4 clients: the complete graph, threshold 2). The victim's SuperNode starts its
ClientApp processes through a ``flwr-clientapp`` wrapper first on its PATH: the
process for its 11th train message (round 2's ``unmask``; round 1 is hello, keys,
shares, masked input, sign, unmask, round 2 the same without hello) freezes instead of
running and leaves a file; the test then SIGKILLs that SuperNode and everything it started. The
timing is fixed by the protocol, not by a race: the masked input was sent
before the server could ask for unmasking, and the frozen process never answers.

The server must treat the victim as a survivor (its masked input is in the sum)
and rebuild its self-mask seed from the other three nodes' shares; the model
must equal plaintext FedAvg over all 4 clients (a simulation with the same seed)
up to the fixed-point quantization. The module takes about 8 minutes on 2 busy cores
(set-up, two ~140 s rounds of which ~60 s wait for the SuperLink to declare the victim
unavailable, and the reference simulation).
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.deploy.deployment import LocalDeployment, Node
from app.deploy.local import run_config_for, wait_for_run
from app.deploy.procs import alive
from app.results import PLAIN_MODEL
from app.simulation import simulate

pytestmark = pytest.mark.slow(seconds=300)  # real processes or the engine: tests/conftest.py

NODES, ROUNDS, VICTIM = 4, 2, 3
# train messages a node gets: round 1 hello (its roster identity), keys, shares, masked input,
# sign (the survivor set), unmask; round 2 the same without hello
FREEZE_AT = 6 + 5  # round 2's unmask request
TRAIN_IN, TRAIN_OUT = "Receiving: train message", "Sending: train message"
RUN = {"num-server-rounds": ROUNDS, "local-epochs": 1, "fraction-evaluate": 0.0,
       "min-clients": NODES, "seed": 0, "secagg.enabled": True}  # fmt: skip
# 16-bit fixed point with clip 4: one step is 8 / 2^16 = 1.2e-4 per weighted value; two rounds
# of stochastic rounding stay well inside this.
TOLERANCE = 5e-4

WRAPPER = """#!/bin/bash
# flwr-clientapp of the victim SuperNode: freeze on its {at}th train message (never answer it).
n=$(grep -c "{pattern}" "{log}")
if [ "$n" -ge {at} ]; then echo "$n" > "{frozen}"; exec sleep 900; fi
exec "{real}" "$@"
"""


def _wrapper_dir(tmp: Path, node_log: Path) -> tuple[Path, Path]:
    """A bin dir whose ``flwr-clientapp`` freezes at FREEZE_AT; and the file it leaves then."""
    bin_dir, frozen = tmp / "bin", tmp / "frozen"
    bin_dir.mkdir()
    script = bin_dir / "flwr-clientapp"
    real = Path(sys.executable).parent / "flwr-clientapp"
    script.write_text(WRAPPER.format(at=FREEZE_AT, pattern=TRAIN_IN, log=node_log,
                                     frozen=frozen, real=real))  # fmt: skip
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir, frozen


def _wait_file(path: Path, node: Node, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert node.proc is not None and node.proc.alive(), node.proc and node.proc.tail()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{node.name} never reached its unmask stage:\n{node.proc.tail()}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    deployment = LocalDeployment(tmp_path_factory.mktemp("secagg-kill"), backend="none")
    try:
        deployment.start_superlink()
        yield deployment
    finally:
        pids = deployment.stop()
        assert not [p for p in pids if alive(p)]


@pytest.fixture(scope="module")
def killed_run(dep: LocalDeployment, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """2 SecAgg+ rounds; the victim is killed after its round-2 masked input, before unmasking."""
    for i in range(NODES):
        dep.add_node(node_config=dep.node_config(i, NODES))
    victim = dep.nodes[VICTIM]
    node_log = dep.out / "logs" / f"{victim.name}.log"
    bin_dir, frozen = _wrapper_dir(tmp_path_factory.mktemp("fault"), node_log)
    victim.env = {"PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent),
                                           os.environ.get("PATH", "")])}  # fmt: skip
    for node in dep.nodes:
        dep.start_node(node)
    assert victim.proc is not None and victim.proc.log_path == node_log
    run_id = dep.cli.submit(dep.app_dir, run_config_for(dep, RUN))
    _wait_file(frozen, victim, timeout=400)
    log = victim.proc.log_text()
    seen = {"in": len(re.findall(TRAIN_IN, log)), "out": len(re.findall(TRAIN_OUT, log))}
    dep.crash_node(victim)  # SIGKILL: the SuperNode and its frozen ClientApp, no goodbye
    path = wait_for_run(dep, run_id, timeout=420)
    return {
        "results": json.loads(path.read_text()),
        "model": path.parent / PLAIN_MODEL,
        "victim": victim,
        "nodes": list(dep.nodes),
        "seen": seen,
        "frozen": frozen.read_text().strip(),
    }


def test_killed_node_sent_its_masked_input_and_never_answered_unmasking(
    killed_run: dict[str, Any],
) -> None:
    victim: Node = killed_run["victim"]
    # 10 train replies out (round 1's six stages, then round 2's keys, shares, masked input and
    # its signature on the survivors), the 11th request (round 2's unmask) in and frozen.
    assert killed_run["seen"] == {"in": FREEZE_AT, "out": FREEZE_AT - 1}
    assert killed_run["frozen"] == str(FREEZE_AT)
    assert victim.events[-1]["event"] == "crashed"
    assert victim.proc is not None and not alive(victim.proc.pid)


def test_round_with_the_kill_unmasks_the_victim_as_a_survivor(killed_run: dict[str, Any]) -> None:
    results, victim = killed_run["results"], killed_run["victim"]
    assert results["status"] == "completed", results.get("error")
    rounds = results["rounds"]
    assert len(rounds) == ROUNDS
    first, killed = rounds[0]["secagg"], rounds[1]["secagg"]
    print(
        f"\nround 2 secagg: masked {killed['masked']}, recovered {killed['recovered']}, "
        f"unmask failed {killed['stages']['unmask']['failed']}, threshold "
        f"{killed['threshold']}; round seconds {[round(r['seconds']) for r in rounds]}"
    )
    assert first["aggregated"] and first["masked"] == NODES and first["trust"] == "roster"
    assert killed["signed"] == NODES  # the victim signed the survivor set, then froze
    assert all(not s["failed"] for s in first["stages"].values())
    assert killed["aggregated"] is True
    assert killed["sampled"] == killed["shared"] == killed["masked"] == NODES  # victim's input used
    assert killed["recovered"] == []  # nobody dropped between sharing and masking
    assert killed["not-aggregated"] == {}
    for stage in ("keys", "shares", "mask"):
        assert killed["stages"][stage]["failed"] == {}, stage
    failed = killed["stages"]["unmask"]["failed"]
    assert str(victim.node_id) in failed  # the other 3 answered: t = 2 shares of every seed
    others = {str(n.node_id) for n in killed_run["nodes"] if n is not victim}
    assert not others & set(failed), failed


def test_unmask_failure_names_the_victim_and_the_superlinks_reason(
    killed_run: dict[str, Any],
) -> None:
    # The SuperLink answers for a node that stopped its heartbeats, from its own node id;
    # the report must name the node the unmask request went to, with that reason.
    failed = killed_run["results"]["rounds"][1]["secagg"]["stages"]["unmask"]["failed"]
    victim = str(killed_run["victim"].node_id)
    assert list(failed) == [victim], failed
    assert "Node Unavailable" in failed[victim]


def test_aggregate_equals_plaintext_fedavg_over_all_four_clients(
    killed_run: dict[str, Any], tmp_path: Path
) -> None:
    # Prepare
    deployed = dict(np.load(killed_run["model"]))
    # Execute: the same run in plaintext (same seed, partitions, rounds), nobody killed
    plain = simulate({**RUN, "secagg.enabled": False, "output-dir": str(tmp_path)},
                     num_supernodes=NODES)  # fmt: skip
    reference = dict(np.load(Path(plain["path"]).parent / PLAIN_MODEL))
    # Assert
    assert deployed.keys() == reference.keys()
    gap = max(float(np.max(np.abs(deployed[k] - reference[k]))) for k in reference)
    loss = (killed_run["results"]["final"]["loss"], plain["final"]["loss"])
    print(
        f"\nmodel vs plaintext FedAvg: max |diff| {gap:.2e} (tolerance {TOLERANCE}); "
        f"loss {loss[0]:.6f} vs {loss[1]:.6f}"
    )
    assert gap <= TOLERANCE
    assert abs(loss[0] - loss[1]) <= 1e-4
