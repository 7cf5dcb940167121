"""Scripted local deployment: a real SuperLink and N SuperNodes on 127.0.0.1, one run.

    python -m app.deploy.local --nodes 3 --rounds 3 --out outputs/deploy

Deals TLS certificates, SuperNode keys and HE keys, starts ``flower-superlink``
(TLS, node authentication) on a free port, registers and starts the SuperNodes,
submits ``flwr run . <connection>``, prints each finished round, and writes
``deployment.json`` next to ``results.json``. Every process it started is
stopped by PID on the way out: after the run, on an error, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from logging import INFO
from pathlib import Path
from typing import Any

from flwr.common import log

from app.deploy.deployment import LocalDeployment, fab_secrets

RoundFn = Callable[[dict[str, Any]], None]


class RunFailed(RuntimeError):
    """The run ended in another state than ``finished:completed`` (log tail inside)."""


def run_config_for(dep: LocalDeployment, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The run config the SuperLink gets: HE backend, the *server* bundle, absolute output dir;
    SecAgg+ with the SuperNodes' own keys (``secagg.trust = "roster"``)."""
    he: dict[str, Any] = {"he.backend": dep.backend, "secagg.trust": "roster"}
    if dep.server_bundle is not None:
        he["he.server-bundle"] = str(dep.server_bundle)
    return {**he, "output-dir": str(dep.out / "results"), **overrides}


def results_path(dep: LocalDeployment, run_id: int) -> Path | None:
    found = sorted((dep.out / "results").glob(f"*-run{run_id}/results.json"))
    return found[0] if found else None


def _report_rounds(path: Path | None, seen: int, on_round: RoundFn | None) -> int:
    if path is None or on_round is None:
        return seen
    rounds = json.loads(path.read_text())["rounds"]
    for entry in rounds[seen:]:
        on_round(entry)
    return len(rounds)


def wait_for_run(
    dep: LocalDeployment, run_id: int, *, timeout: float, on_round: RoundFn | None = None
) -> Path:
    """Follow a run until it ends; return its results.json, or raise RunFailed / TimeoutError."""
    stream = dep.track(dep.cli.stream_logs(run_id, dep.out / "logs" / f"run-{run_id}.log"))
    deadline, seen = time.monotonic() + timeout, 0
    while stream.alive():  # `flwr log --stream` returns when the run has finished
        seen = _report_rounds(results_path(dep, run_id), seen, on_round)
        if time.monotonic() > deadline:
            dep.cli.stop_run(run_id)
            raise TimeoutError(f"run {run_id} not finished after {timeout:.0f} s:\n{stream.tail()}")
        time.sleep(2.0)
    status = dep.cli.run_status(run_id)
    for _ in range(15):  # the stream may end a moment before the status is final
        if status.startswith("finished"):
            break
        time.sleep(2.0)
        status = dep.cli.run_status(run_id)
    _report_rounds(results_path(dep, run_id), seen, on_round)
    path = results_path(dep, run_id)
    if status != "finished:completed" or path is None:
        raise RunFailed(f"run {run_id} ended as {status!r}; ServerApp log:\n{stream.tail(40)}")
    return path


def write_summary(
    dep: LocalDeployment, run_id: int, results: Path, run_config: Mapping[str, Any], **extra: Any
) -> Path:
    """``deployment.json`` beside results.json: processes, node ids, what the server side got."""
    data = json.loads(results.read_text())
    summary = {
        "run-id": run_id,
        "status": data["status"],
        "final": data["final"],
        "superlink": {
            "address": dep.address,
            "pid": dep.superlink.pid if dep.superlink else None,
            "argv": dep.superlink.argv if dep.superlink else [],
            "log": str(dep.superlink.log_path) if dep.superlink else None,
        },
        "server-side-files": [str(p) for p in server_side_files(dep)],
        "run-config": dict(run_config),
        "supernodes": [
            {
                "name": n.name,
                "node-id": n.node_id,
                "node-config": n.node_config,
                "log": str(n.proc.log_path) if n.proc else None,
                "events": n.events,
            }
            for n in dep.nodes
        ],  # fmt: skip
        **extra,
    }
    path = results.parent / "deployment.json"
    path.write_text(json.dumps(summary, indent=2))
    return path


def server_side_files(dep: LocalDeployment) -> list[Path]:
    """Every file the SuperLink and its ServerApp are given: TLS material, HE server bundle."""
    files = [dep.tls.ca_cert, dep.tls.server_cert, dep.tls.server_key]
    return files + ([dep.server_bundle] if dep.server_bundle else [])


def _print_round(entry: dict[str, Any]) -> None:
    metrics = entry.get("server") or entry.get("evaluate") or {}
    shown = {k: round(v, 4) for k, v in metrics.items() if k in ("accuracy", "loss")}
    train = (entry.get("train") or {}).get("num-replies", 0)
    failed = [f["node-id"] for f in entry.get("failures", [])]
    print(f"round {entry['round']}: {train} updates aggregated, {entry['seconds']:.1f} s, "
          f"{shown}{f', failed nodes {failed}' if failed else ''}", flush=True)  # fmt: skip


def deploy_and_run(args: argparse.Namespace) -> Path:
    """Start everything, run once, write the summary; always stop what was started."""
    start = time.monotonic()
    with LocalDeployment(args.out, backend=args.backend) as dep:
        if leaks := fab_secrets(dep.app_dir):
            raise RuntimeError(f"the app bundle flwr run uploads holds secret keys: {leaks}; "
                               "move them out of the app directory or into .gitignore")  # fmt: skip
        print(f"starting SuperLink (TLS, node auth) in {dep.out}", flush=True)
        dep.start_superlink()
        extra = {f"{args.task}.data-dir": str(args.data_dir)} if args.data_dir else {}
        for i in range(args.nodes):
            dep.start_node(dep.add_node(node_config=dep.node_config(i, args.nodes, **extra)))
            print(f"SuperNode {i} joined as node {dep.nodes[-1].node_id}", flush=True)
        run_config = run_config_for(dep, _overrides(args))
        run_id = dep.cli.submit(dep.app_dir, run_config)
        print(f"run {run_id} submitted; ServerApp log: {dep.out / 'logs'}/run-{run_id}.log")
        results = wait_for_run(dep, run_id, timeout=args.timeout, on_round=_print_round)
        summary = write_summary(dep, run_id, results, run_config,
                                wall_seconds=round(time.monotonic() - start, 1))  # fmt: skip
    log(INFO, "deploy_and_run: all processes stopped")
    print(f"results: {results}\nsummary: {summary}", flush=True)
    return summary


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """--rounds, --min-clients, --seed, --task and free-form --run-config 'k=v ...'."""
    extra = tomllib.loads("\n".join(args.run_config.split())) if args.run_config else {}
    base = {"num-server-rounds": args.rounds, "min-clients": args.min_clients,
            "seed": args.seed, "task": args.task}  # fmt: skip
    return {**base, **_flatten(extra)}


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.deploy.local", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--out", type=Path, default=Path("outputs/deploy"))
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-clients", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", default="breast-cancer")
    parser.add_argument("--backend", choices=("ckks", "paillier", "none"), default="ckks")
    parser.add_argument("--data-dir", type=Path, help="node config <task>.data-dir of every node")
    parser.add_argument("--run-config", default="", help='more overrides: "local-epochs=1 ..."')
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds for the run")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill <launcher>` unwinds like Ctrl-C
    try:
        deploy_and_run(args)
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError) as e:
        print(f"deployment failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
