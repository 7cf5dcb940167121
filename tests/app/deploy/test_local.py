"""`python -m app.deploy.local`: real SuperLink and 3 SuperNodes (TLS, node auth, CKKS).

One launch (about 1.5 minutes on 2 cores) serves every test here: results match
a simulation with the same seed, the SuperLink side never saw a secret HE key,
and every process the launcher started is gone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from app.deploy.deployment import fab_secrets
from app.deploy.procs import alive
from app.simulation import simulate
from flwr_privacy.he import ckks, load_bundle

pytestmark = pytest.mark.slow(seconds=120)  # real processes or the engine: tests/conftest.py

ROOT = Path(__file__).resolve().parents[3]
ROUNDS = 1  # encrypt, add, decrypt (evaluation); the fault tests train on later rounds


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("deploy")
    cmd = [
        sys.executable, "-m", "app.deploy.local", "--nodes", "3", "--rounds", str(ROUNDS),
        "--out", str(out), "--run-config", "local-epochs=1",
    ]  # fmt: skip
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    log = done.stdout[-4000:] + done.stderr[-4000:]
    assert done.returncode == 0, log
    (summary_path,) = out.glob("results/*/deployment.json")
    return {
        "out": out,
        "summary": json.loads(summary_path.read_text()),
        "results": json.loads((summary_path.parent / "results.json").read_text()),
        "stdout": done.stdout,
        "seconds": time.monotonic() - start,
    }


def test_encrypted_deployment_matches_a_simulation_with_the_same_seed(
    launched: dict[str, Any], tmp_path: Path
) -> None:
    # Prepare
    results = launched["results"]
    # Execute
    simulated = simulate(
        {"num-server-rounds": ROUNDS, "local-epochs": 1, "he.backend": "ckks", "seed": 0,
         "min-clients": 2, "output-dir": str(tmp_path)},
        num_supernodes=3,
    )  # fmt: skip
    # Assert
    assert results["status"] == "completed", results.get("error")
    assert [r["train"]["num-replies"] for r in results["rounds"]] == [3] * ROUNDS
    assert all(r["failures"] == [] for r in results["rounds"])
    assert results["config"]["he.backend"] == "ckks"
    deployed, reference = results["final"]["accuracy"], simulated["final"]["accuracy"]
    print(f"\naccuracy deployed {deployed:.4f}, simulated {reference:.4f}; "
          f"launch {launched['seconds']:.0f} s")  # fmt: skip
    assert abs(deployed - reference) <= 0.005
    assert f"round {ROUNDS}: 3 updates aggregated" in launched["stdout"]


def test_superlink_side_never_gets_a_secret_key(launched: dict[str, Any]) -> None:
    # Prepare
    out, summary = launched["out"], launched["summary"]
    client_bundle = out / "supernodes" / "he-client.json"
    secret = json.loads(client_bundle.read_text())["secret"]
    assert secret  # the nodes' bundle does hold one
    # Execute
    server_bundle = load_bundle(summary["run-config"]["he.server-bundle"], expect_private=False)
    given = [Path(p) for p in summary["server-side-files"]]
    stored = [p for p in (out / "superlink").rglob("*") if p.is_file()]
    # Assert
    assert not server_bundle.is_private
    ckks.context(server_bundle, secret=False)  # raises if the TenSEAL context is private
    assert Path(summary["run-config"]["he.server-bundle"]) in given
    for path in [*given, *stored]:  # files handed over, and all the SuperLink stored
        assert secret.encode() not in path.read_bytes(), path
    handed = json.dumps([summary["run-config"], summary["superlink"]["argv"]])
    assert str(client_bundle) not in handed and secret not in handed
    assert fab_secrets(ROOT) == []  # the app bundle `flwr run .` uploads
    # nor a SecAgg+ signing key: those go to each SuperNode's node config only
    signing = [p.read_text() for p in (out / "supernodes" / "secagg").glob("*.key")]
    assert signing and all(k not in handed for k in signing)
    assert all(not path.is_relative_to(out / "supernodes") for path in given)


def test_launcher_stopped_every_process_it_started(launched: dict[str, Any]) -> None:
    summary = launched["summary"]
    pids = [summary["superlink"]["pid"]]
    pids += [e["pid"] for n in summary["supernodes"] for e in n["events"] if "pid" in e]
    assert len(pids) == 4
    assert not [p for p in pids if alive(p)]
    leftovers = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
        except OSError:
            continue
        if str(launched["out"]).encode() in cmd and alive(int(proc.name)):
            leftovers.append(cmd.replace(b"\0", b" ").decode())
    assert leftovers == []
