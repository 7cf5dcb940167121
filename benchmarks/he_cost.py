"""Cost of encrypted aggregation per backend: client encrypt, server aggregate, client decrypt.

Usage: python -m benchmarks.he_cost [--sizes 100000 1000000] [--clients 10] [--workers 2]
       [--naive-sample 200] [--out FILE]

For each update size and N clients it measures one client's encryption, the
server's sum of N payloads (N copies of one payload: the cost does not depend
on the values) and one client's decryption of the sum, plus bytes per
parameter on the wire (ciphertext chunks + header). Naive Paillier is measured
on a sample of values and extrapolated linearly ("extrapolated": true).
Writes JSON (default benchmarks/results/he_cost.json) and prints a table
against plaintext float32 (4 bytes per parameter).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.results import environment
from flwr_privacy.he import EncodeSettings, aggregate, decrypt_arrays, encrypt_arrays, keygen
from flwr_privacy.he.payload import Payload

SETTINGS: list[tuple[str, str, dict[str, Any]]] = [
    ("plaintext", "none", {}),
    ("ckks", "ckks", {}),
    ("paillier-packed-16bit", "paillier", {"bits": 16, "packed": True}),
    ("paillier-packed-11bit", "paillier", {"bits": 11, "packed": True}),
    ("paillier-naive-16bit", "paillier", {"bits": 16, "packed": False}),
]


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _wire_bytes(payload: Payload) -> int:
    return len(payload.header.to_bytes()) + sum(len(c) for c in payload.chunks)


def measure(
    name: str, backend: str, opts: dict, size: int, clients: int, workers: int, sample: int
) -> dict:
    rng = np.random.default_rng(0)
    update = {"w": rng.uniform(-1, 1, size).astype(np.float32)}
    row: dict[str, Any] = {
        "setting": name,
        "params": size,
        "clients": clients,
        "extrapolated": False,
    }
    if backend == "none":
        stack = [update["w"].astype(np.float64) for _ in range(clients)]
        _, agg = _timed(
            lambda: sum(w * s for w, s in zip(np.full(clients, 1 / clients), stack, strict=True))
        )
        return row | {
            "encrypt-s": 0.0,
            "aggregate-s": agg,
            "decrypt-s": 0.0,
            "bytes-per-param": 4.0,
        }
    keys = keygen(backend)
    measured = size
    if not opts.get("packed", True):
        measured = min(size, sample)
        update = {"w": update["w"][:measured]}
        row["extrapolated"] = measured < size
    settings = EncodeSettings(clip=1.0, max_count=clients, workers=workers, **opts)
    payload, enc = _timed(
        lambda: encrypt_arrays(update, bundle=keys, weight=1.0, settings=settings, rng=rng)
    )
    summed, agg = _timed(lambda: aggregate([payload] * clients, bundle=keys.public_only()))
    _, dec = _timed(lambda: decrypt_arrays(summed, bundle=keys, workers=workers))
    scale = size / measured
    return row | {
        "measured-params": measured,
        "encrypt-s": enc * scale,
        "aggregate-s": agg * scale,
        "decrypt-s": dec * scale,
        "bytes-per-param": _wire_bytes(payload) / measured,
        "aggregate-bytes-per-param": _wire_bytes(summed) / measured,
        "params-per-ciphertext": (
            keys.params["poly-modulus-degree"] // 2
            if backend == "ckks"
            else payload.header.extra["packing"]["per-ct"]
        ),
    }


def _row(r: dict) -> str:
    times = f"enc {r['encrypt-s']:9.3f}s  agg {r['aggregate-s']:8.3f}s  dec {r['decrypt-s']:8.3f}s"
    size = f"{r['bytes-per-param']:8.2f} B/param ({r['bytes-per-param'] / 4:.2f}x float32)"
    note = "  extrapolated" if r["extrapolated"] else ""
    return f"{r['params']:>9} {r['setting']:<24} {times}  {size}{note}"


def build_parser() -> argparse.ArgumentParser:
    """The command line; notebooks build their arguments with it too."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--naive-sample", type=int, default=512)
    parser.add_argument("--settings", nargs="+", default=[s[0] for s in SETTINGS])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/he_cost.json"))
    return parser


def main() -> None:
    args = build_parser().parse_args()
    rows = []
    for size in args.sizes:
        for name, backend, opts in SETTINGS:
            if name in args.settings:
                rows.append(
                    measure(
                        name, backend, opts, size, args.clients, args.workers, args.naive_sample
                    )
                )
                r = rows[-1]
                print(_row(r), flush=True)
    naive = {r["params"]: r for r in rows if r["setting"] == "paillier-naive-16bit"}
    for r in rows:
        if r["setting"] == "paillier-packed-16bit" and r["params"] in naive:
            r["speedup-vs-naive-encrypt"] = naive[r["params"]]["encrypt-s"] / r["encrypt-s"]
            speedup = r["speedup-vs-naive-encrypt"]
            print(f"{r['params']:>9} packed vs naive Paillier encrypt: {speedup:.0f}x faster")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"args": vars(args) | {"out": str(args.out)}, "environment": environment()}
    args.out.write_text(json.dumps(meta | {"rows": rows}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
