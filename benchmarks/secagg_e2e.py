"""End to end: the same run with and without SecAgg+, side by side (accuracy, seconds a round).

``python -m benchmarks.secagg_e2e --task breast-cancer --clients 10 --rounds 30`` runs the app
through Flower's simulation engine once in plaintext and once per variant (``--variants``:
``secagg``, ``secagg-ddg`` = SecAgg+ with distributed DP), prints a table and writes JSON to
``benchmarks/results/secagg_e2e.json``. Extra run-config keys: ``--set key=value``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from app.simulation import simulate

VARIANTS: dict[str, dict[str, Any]] = {
    "plaintext": {},
    "secagg": {"secagg.enabled": True},
    "secagg-ddg": {"secagg.enabled": True, "dp.mode": "distributed", "local-epochs": 1},
}


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--task", default="breast-cancer")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--variants", nargs="+", default=["plaintext", "secagg"], choices=VARIANTS)
    p.add_argument("--set", nargs="*", default=[], help="extra run-config key=value")
    p.add_argument("--out", default="benchmarks/results/secagg_e2e.json")
    args = p.parse_args()
    extra = {k: _value(v) for k, v in (s.split("=", 1) for s in args.set)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: dict[str, Any] = {}
    for name in args.variants:
        cfg = {
            "task": args.task,
            "num-server-rounds": args.rounds,
            "min-clients": args.clients,
            "fraction-evaluate": 0.0,
            "output-dir": str(out.parent / "secagg_e2e_runs"),
            **extra,
            **VARIANTS[name],
        }
        print(f"[{name}] {args.task}, {args.clients} clients, {args.rounds} rounds ...", flush=True)
        start = time.perf_counter()
        results = simulate(cfg, num_supernodes=args.clients)
        wall = time.perf_counter() - start
        rounds = results["rounds"]
        secs = [r.get("seconds", 0.0) for r in rounds]
        stages: dict[str, float] = {}
        for r in rounds:
            for stage, s in r.get("secagg", {}).get("stages", {}).items():
                stages[stage] = stages.get(stage, 0.0) + s["seconds"] / len(rounds)
        rows[name] = {
            "status": results["status"],
            "final": results.get("final"),
            "wall-s": wall,
            "round-s-mean": sum(secs) / max(len(secs), 1),
            "secagg-stage-s-mean": stages,
            "epsilon-max": results.get("privacy", {}).get("epsilon-max"),
        }
        print(f"[{name}] {json.dumps(rows[name])}", flush=True)
        out.write_text(json.dumps({"args": vars(args), "runs": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
