"""End to end: the same run with and without SecAgg+, side by side (accuracy, seconds a round).

``python -m benchmarks.secagg_e2e --task breast-cancer --clients 10 --rounds 30`` runs the app
through Flower's simulation engine once in plaintext and once per variant (``--variants``:
``secagg``, ``secagg-ddg`` = SecAgg+ with distributed DP), prints a table and writes JSON to
``benchmarks/results/secagg_e2e.json``. Extra run-config keys: ``--set key=value``.

At scale: ``python -m benchmarks.secagg_e2e --task mcsn --clients 1000 --rounds 2`` (synthetic
threat data, 200 records a client; docs/guides/secagg.md). Per run it reports
seconds per round (round 1 apart: it includes the actors' first messages), SecAgg+ stage
seconds and bytes per round, the clients that shared, masked and were recovered, the final
accuracy / macro-F1 and the peak resident memory of the whole process tree (server, Ray
actors). Give each scale its own ``--out``. On a shared machine set ``RAY_worker_niceness=0``:
Ray starts its actors at nice 15 and they starve beside other jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from app.simulation import simulate

VARIANTS: dict[str, dict[str, Any]] = {
    "plaintext": {},
    "secagg": {"secagg.enabled": True},
    "secagg-ddg": {"secagg.enabled": True, "dp.mode": "distributed", "local-epochs": 1},
}

# Task defaults for a run at ``clients`` clients (``--set`` overrides them).
TASK_DEFAULTS: dict[str, Any] = {
    "mcsn": lambda n: {
        "mcsn.dataset": "synthetic",
        "mcsn.synthetic-records": max(20_000, 200 * n),  # 160 train + 40 validation a client
        "local-epochs": 1,
        "batch-size": 32,
    },
}


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class PeakMemory:
    """Peak summed RSS of this process and all its descendants (Ray's raylet and actors)."""

    def __init__(self, every: float = 1.0) -> None:
        self.every, self.peak = every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil  # Ray's dependency

        me = psutil.Process(os.getpid())
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def summarize(results: dict[str, Any], wall: float, peak_rss: int) -> dict[str, Any]:
    """The figures of one run: per-round seconds, SecAgg+ stages and counts, final metrics."""
    rounds = results["rounds"]
    secs = [round(r.get("seconds", 0.0), 2) for r in rounds]
    later = secs[1:] or secs
    per_round = []
    stages: dict[str, dict[str, float]] = {}  # means over the rounds after the first
    steady = rounds[1:] or rounds
    for i, r in enumerate(rounds):
        sa = r.get("secagg")
        if not sa:
            continue
        per_round.append(
            {
                "round": r["round"],
                "aggregated": sa.get("aggregated"),
                **{k: sa.get(k) for k in ("sampled", "keys", "shared", "masked")},
                "recovered": len(sa.get("recovered", [])),
                "threshold": sa.get("threshold"),
                "unmask-compute-s": round(sa.get("unmask-compute-s", 0.0), 3),
                "stages": {
                    k: {f: v[f] for f in ("seconds", "messages", "bytes-down", "bytes-up")}
                    | {"failed": len(v.get("failed", {}))}
                    for k, v in sa.get("stages", {}).items()
                },
            }
        )
        if i < len(rounds) - len(steady):
            continue
        for stage, s in sa.get("stages", {}).items():
            acc = stages.setdefault(stage, {"seconds": 0.0, "bytes-down": 0.0, "bytes-up": 0.0})
            for f in acc:
                acc[f] += s[f] / len(steady)
    final = results.get("final") or {}
    return {
        "status": results["status"],
        "accuracy": final.get("accuracy"),
        "macro-f1": final.get("macro-f1"),
        "loss": final.get("loss"),
        "wall-s": round(wall, 1),
        "setup-s": round(results.get("setup", {}).get("seconds", 0.0), 2),
        "round-s": secs,
        "round-s-mean": sum(secs) / max(len(secs), 1),
        "round-s-after-first": sum(later) / max(len(later), 1),
        "secagg-stage-mean": {k: {f: round(x, 3) for f, x in v.items()} for k, v in stages.items()},
        "unmask-compute-s-mean": (
            sum(r["unmask-compute-s"] for r in per_round[-len(steady) :]) / len(steady)
            if per_round
            else None
        ),
        "secagg-rounds": per_round,
        "peak-rss-mb": round(peak_rss / 2**20),
        "epsilon-max": results.get("privacy", {}).get("epsilon-max"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--task", default="breast-cancer")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--variants", nargs="+", default=["plaintext", "secagg"], choices=VARIANTS)
    p.add_argument("--set", nargs="*", default=[], help="extra run-config key=value")
    p.add_argument(
        "--cpus-per-client", type=float, default=1.0, help="Ray resources per simulated client"
    )
    p.add_argument("--out", default="benchmarks/results/secagg_e2e.json")
    args = p.parse_args()
    extra = {k: _value(v) for k, v in (s.split("=", 1) for s in args.set)}
    defaults = TASK_DEFAULTS.get(args.task, lambda n: {})(args.clients)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: dict[str, Any] = {}
    for name in args.variants:
        cfg = {
            "task": args.task,
            "num-server-rounds": args.rounds,
            "min-clients": args.clients,
            "fraction-evaluate": 0.0,
            "output-dir": str(out.parent / f"{out.stem}_runs"),
            **defaults,
            **extra,
            **VARIANTS[name],
        }
        print(f"[{name}] {args.task}, {args.clients} clients, {args.rounds} rounds ...", flush=True)
        start = time.perf_counter()
        with PeakMemory() as mem:
            results = simulate(
                cfg, num_supernodes=args.clients, num_cpus_per_client=args.cpus_per_client
            )
        rows[name] = summarize(results, time.perf_counter() - start, mem.peak)
        print(f"[{name}] {json.dumps(rows[name])}", flush=True)
        out.write_text(
            json.dumps(
                {"args": vars(args), "run-config": {**defaults, **extra}, "runs": rows}, indent=2
            )
        )
    print(table(rows))
    print(f"wrote {out}")


def table(rows: dict[str, Any]) -> str:
    """Markdown: seconds per round and the SecAgg+ stage breakdown (rounds after the first)."""
    lines = [
        "| variant | round 1 s | later rounds s | keys s | shares s | masked+train s | unmask s "
        "| server unmask s | up MB/round | accuracy | macro-F1 | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        st = r["secagg-stage-mean"]

        def s(stage: str, st: dict[str, Any] = st) -> str:
            return f"{st[stage]['seconds']:.2f}" if stage in st else "-"

        up = sum(v["bytes-up"] for v in st.values()) / 1e6 if st else None
        acc, f1 = r["accuracy"], r["macro-f1"]
        lines.append(
            f"| {name} | {r['round-s'][0] if r['round-s'] else '-'} "
            f"| {r['round-s-after-first']:.2f} | {s('keys')} | {s('shares')} | {s('mask')} "
            f"| {s('unmask')} | {'-' if (u := r['unmask-compute-s-mean']) is None else f'{u:.2f}'} "
            f"| {'-' if up is None else f'{up:.2f}'} "
            f"| {'-' if acc is None else f'{acc:.4f}'} | {'-' if f1 is None else f'{f1:.4f}'} "
            f"| {r['peak-rss-mb']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
