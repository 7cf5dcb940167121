"""What SecAgg+ against a lying server costs, side by side with the curious-server protocol.

Usage: python -m benchmarks.secagg_lying_cost [--clients 10 100 1000] [--params 1000000]
       [--params-1000 10000] [--repeats 2] [--baseline-ref a963a6d] [--out FILE]

Every party of one round runs in one process (the staged round: clients' key generation,
sharing, masking, the new signing and consistency stages, the server's unmasking), once
with this checkout's protocol and once with the protocol at ``--baseline-ref`` (checked
out with ``git worktree`` into a temporary directory), alternating, each in its own
subprocess so neither warms the other's caches. Both use the same n, degree
``default_degree(n)``, majority threshold, 16-bit values and 10 % of the clients dropping
after sharing; the unmasked sum is checked against the plain sum. Reported per n: the
median seconds of each stage summed over all clients (what a round costs on one machine),
the round total and its ratio new / baseline, the critical path (the slowest client of
each client stage, clients in parallel, plus the server's serial work; no network) and its
ratio, the upload bytes per parameter of a masked
input, and the extra protocol bytes (signatures, commitments, the survivor set and the
quorum of signatures). n = 1000 uses ``--params-1000`` values (the added stages do not
depend on the model size).

``--engine`` instead runs ``benchmarks.secagg_e2e`` (variant ``secagg``) in both checkouts
through Flower's simulation engine: breast cancer with 10 clients (10 rounds) and the
synthetic threat task with 100 clients (3 rounds), and reports seconds a round after the
first, alternating the two.

Writes JSON (default benchmarks/results/secagg_lying_cost.json).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
QUANT_BITS, DROP = 16, 0.1
CLIENT_STAGES = ("keys", "shares", "mask", "sign", "unmask-replies")


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _record_bytes(values: dict[str, Any]) -> int:
    from flwr.app import ConfigRecord, RecordDict
    from flwr.common.serde import recorddict_to_proto

    return int(recorddict_to_proto(RecordDict({"r": ConfigRecord(values)})).ByteSize())


def staged(n: int, size: int, seed: int) -> dict[str, Any]:
    """One round of whichever protocol ``flwr_privacy`` on sys.path has: seconds per stage."""
    from flwr_privacy.secagg import protocol as P
    from flwr_privacy.secagg.crypto import new_session
    from flwr_privacy.secagg.encoding import modulus_bits
    from flwr_privacy.secagg.graph import default_degree, harary

    new = hasattr(P, "RoundParams")
    where = str(Path(P.__file__).resolve().parents[2])
    rng = np.random.default_rng(seed)
    nodes = sorted(random.Random(seed).sample(range(1, 2**63), n))
    k = default_degree(n)
    t = k // 2 + 1
    mod_bits = modulus_bits(QUANT_BITS, n)
    inputs = {i: rng.integers(0, 2**QUANT_BITS, size=size).astype(np.uint32) for i in nodes}
    dropped = set(random.Random(seed + 1).sample(nodes, round(DROP * n)))
    sec: dict[str, float] = {}
    peak: dict[str, float] = {}  # the slowest client's seconds in each client stage
    extra_bytes: dict[str, float] = {}

    def add(stage: str, dt: float) -> None:
        sec[stage] = sec.get(stage, 0.0) + dt
        peak[stage] = max(peak.get(stage, 0.0), dt)

    if new:
        from flwr_privacy.secagg.floors import ClientFloors
        from flwr_privacy.secagg.graph import new_graph_seed

        trust = P.simulated_trust(nodes)  # the operator's roster: made once, not per round
        floors = ClientFloors(min_neighbours=1)
        params, dt = _timed(lambda: P.RoundParams(
            session=new_session(), round=1, participants=tuple(nodes),
            identities=tuple(trust[i].key.identity for i in nodes), degree=k,
            graph_seed=new_graph_seed(), threshold=t, mod_bits=mod_bits, size=size,
            encoding={"kind": "fixed", "quant-bits": QUANT_BITS}))  # fmt: skip
        server = P.ServerRound(params)
        add("keys", dt)
        clients = {}
        for i in nodes:
            clients[i], dt = _timed(lambda i=i: P.ClientSession.start(
                node=i, params=params, trust=trust[i], floors=floors))  # fmt: skip
            add("keys", dt)
            advert, dt = _timed(lambda i=i: clients[i].advert(trust[i]))
            add("keys", dt)
            server.add_advert(i, advert)
        extra_bytes["keys-down-participants"] = _record_bytes(params.to_record())
        extra_bytes["keys-up-commit-signature"] = 32 + 64
        for i in nodes:
            cts, dt = _timed(lambda i=i: clients[i].share_keys(
                server.adverts_for(i), trust[i], round_=1, session=params.session))  # fmt: skip
            add("shares", dt)
            server.add_shares(i, cts)
    else:
        session = new_session()
        server = P.ServerRound(round=1, session=session, threshold=t, mod_bits=mod_bits,
                               size=size, graph=harary(nodes, k))  # fmt: skip
        clients = {}
        for i in nodes:
            clients[i], dt = _timed(lambda i=i: P.ClientSession.start(
                node=i, round_=1, session=session, threshold=t, neighbours=server.graph[i],
                mod_bits=mod_bits, size=size))  # fmt: skip
            add("keys", dt)
            server.add_keys(i, clients[i].public_keys)
        for i in nodes:
            cts, dt = _timed(lambda i=i: clients[i].share_keys(
                server.keys_for(i), round_=1, session=session))  # fmt: skip
            add("shares", dt)
            server.add_shares(i, cts)
    upload = 0
    for i in nodes:
        if i in dropped:
            continue
        masked, dt = _timed(lambda i=i: clients[i].mask_input(
            inputs[i], server.shares_for(i), round_=1, session=server.session))  # fmt: skip
        add("mask", dt)
        upload = len(masked)
        _, dt = _timed(lambda i=i, m=masked: server.add_masked(i, m))
        add("server-collect", dt)
    responses = {}
    if new:
        alive = server.close_inputs()
        for i in alive:
            sig, dt = _timed(lambda i=i: clients[i].sign_survivors(
                alive, trust[i], round_=1, session=server.session))  # fmt: skip
            add("sign", dt)
            server.add_signature(i, sig)
        extra_bytes["sign-up"] = 64
        extra_bytes["unmask-down-survivors-and-quorum"] = _record_bytes(
            {"survivors": P.ids_to_bytes(alive), "signer-ids": P.ids_to_bytes(server.signatures),
             "signatures": list(server.signatures.values())})  # fmt: skip
        for i in alive:
            responses[i], dt = _timed(lambda i=i: clients[i].unmask(
                alive, server.signatures, trust[i], round_=1, session=server.session))  # fmt: skip
            add("unmask-replies", dt)
    else:
        for i in sorted(server.masked):
            alive_i, gone = server.unmask_request(i)
            responses[i], dt = _timed(lambda i=i, a=alive_i, g=gone: clients[i].unmask(
                a, g, round_=1, session=server.session))  # fmt: skip
            add("unmask-replies", dt)
    total, dt = _timed(lambda: server.unmask(responses))
    add("server-unmask", dt)
    expected = sum(inputs[i].astype(np.uint64) for i in nodes if i not in dropped)
    correct = np.array_equal(total, (expected & np.uint64((1 << mod_bits) - 1)).astype(np.uint32))
    return {
        "protocol": "lying-server" if new else "curious-server", "code": where,
        "clients": n, "params": size - 1, "degree": k, "threshold": t,
        "quorum": params.quorum if new else None,
        "seconds": sec, "round-s": sum(sec.values()),
        # clients in parallel (each on its own machine), the server serial; no network
        "critical-path-s": sum(peak[s] for s in CLIENT_STAGES if s in peak)
        + sum(v for s, v in sec.items() if s not in CLIENT_STAGES),
        "slowest-client-s": {s: peak[s] for s in CLIENT_STAGES if s in peak},
        "upload-bytes-per-param": upload / (size - 1),
        "extra-bytes-per-client": extra_bytes, "sum-correct": bool(correct),
    }  # fmt: skip


def _worker() -> None:
    n, size, seed, out = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
    out.write_text(json.dumps(staged(n, size, seed)))


def _run(path: Path, n: int, size: int, seed: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    env = {**os.environ, "PYTHONPATH": str(path)}
    # this script by path: sys.path[0] is benchmarks/, so flwr_privacy comes from PYTHONPATH
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(n), str(size),
           str(seed), str(out)]  # fmt: skip
    subprocess.run(cmd, cwd=path, env=env, check=True)
    result = json.loads(out.read_text())
    out.unlink()
    return result


ENGINE_RUNS = (("breast-cancer", 10, 10), ("mcsn", 100, 3))  # task, clients, rounds


def engine(base: Path, repeats: int, out_dir: Path) -> list[dict[str, Any]]:
    """Seconds a round through Flower's simulation engine (``benchmarks.secagg_e2e``, variant
    ``secagg``), this checkout and the baseline alternating; rounds after the first."""
    rows = []
    for task, n, rounds in ENGINE_RUNS:
        got: dict[str, list[float]] = {"curious-server": [], "lying-server": []}
        for rep in range(repeats):
            for label, path in (("curious-server", base), ("lying-server", ROOT)):
                out = out_dir / f"engine-{task}-{n}-{label}-{rep}.json"
                cmd = [sys.executable, "-m", "benchmarks.secagg_e2e", "--task", task,
                       "--clients", str(n), "--rounds", str(rounds), "--variants", "secagg",
                       "--out", str(out)]  # fmt: skip
                env = {**os.environ, "PYTHONPATH": str(path)}
                subprocess.run(cmd, cwd=path, env=env, check=True, capture_output=True)
                run = json.loads(out.read_text())["runs"]["secagg"]
                got[label].append(run["round-s-after-first"])
                print(f"engine {task} n={n} rep={rep} {label}: {run['round-s-after-first']:.2f} "
                      f"s/round, accuracy {run['accuracy']:.4f}", flush=True)  # fmt: skip
        med = {k: statistics.median(v) for k, v in got.items()}
        rows.append({"task": task, "clients": n, "rounds": rounds, "round-s-after-first": got,
                     "median": med, "ratio": med["lying-server"] / med["curious-server"]})
        print(f"engine {task} n={n}: {med['curious-server']:.2f} -> {med['lying-server']:.2f} "
              f"s/round, ratio {rows[-1]['ratio']:.3f}", flush=True)  # fmt: skip
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker()
        return
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--params", type=int, default=1_000_000)
    ap.add_argument("--params-1000", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--baseline-ref", default="a963a6d")
    ap.add_argument("--engine", action="store_true",
                    help="only the simulation-engine comparison (secagg_e2e, 10 and 100 clients)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/secagg_lying_cost.json")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="secagg-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline_ref],
                   cwd=ROOT, check=True, capture_output=True)  # fmt: skip
    rows: list[dict[str, Any]] = []
    try:
        if args.engine:
            rows = engine(base, args.repeats, Path(tempfile.mkdtemp(prefix="secagg-engine-")))
        for n in [] if args.engine else args.clients:
            size = (args.params if n < 1000 else args.params_1000) + 1
            runs: dict[str, list[dict[str, Any]]] = {"curious-server": [], "lying-server": []}
            for rep in range(args.repeats if n < 1000 else 1):
                for label, path in (("curious-server", base), ("lying-server", ROOT)):
                    r = _run(path, n, size, seed=rep)
                    runs[label].append(r)
                    print(f"n={n} rep={rep} {label}: round {r['round-s']:.2f} s "
                          f"{ {k: round(v, 3) for k, v in r['seconds'].items()} } "
                          f"correct={r['sum-correct']}", flush=True)  # fmt: skip
            med = {k: statistics.median(r["round-s"] for r in v) for k, v in runs.items()}
            crit = {k: statistics.median(r["critical-path-s"] for r in v)
                    for k, v in runs.items()}  # fmt: skip
            new = runs["lying-server"][-1]
            rows.append({
                "clients": n, "params": size - 1, "runs": runs,
                "median-round-s": med,
                "ratio-lying-over-curious": med["lying-server"] / med["curious-server"],
                "median-critical-path-s": crit,
                "critical-path-ratio": crit["lying-server"] / crit["curious-server"],
                "added-stages-s": {k: statistics.median(r["seconds"].get(k, 0.0) for r in
                                                        runs["lying-server"])
                                   for k in ("sign", "unmask-replies")},
                "upload-bytes-per-param": new["upload-bytes-per-param"],
                "extra-bytes-per-client": new["extra-bytes-per-client"],
            })  # fmt: skip
            print(f"n={n}: median round (all parties, one process) {med['curious-server']:.2f} s "
                  f"-> {med['lying-server']:.2f} s, "
                  f"ratio {rows[-1]['ratio-lying-over-curious']:.3f}; "
                  f"critical path {crit['curious-server']:.2f} -> {crit['lying-server']:.2f} s, "
                  f"ratio {rows[-1]['critical-path-ratio']:.3f}", flush=True)  # fmt: skip
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT,
                       capture_output=True)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"baseline-ref": args.baseline_ref, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
