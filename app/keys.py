"""Key provisioning: the trusted key dealer of the seed papers.

    python -m app.keys generate --backend ckks --out keys/
    python -m app.keys inspect keys/server.json

``generate`` writes ``server.json`` (public material only: give it to the
ServerApp) and ``client.json`` (with the secret key, mode 0600: give it to
every SuperNode through its node config ``he-client-bundle``). In simulation
the ServerApp runs this dealer in a separate process per run and loads only
the server bundle.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flwr_privacy.he import BACKENDS, KeyBundle, keygen, load_bundle

SERVER_FILE = "server.json"
CLIENT_FILE = "client.json"


def generate(backend: str, out_dir: str | Path, params: dict[str, Any] | None = None) -> KeyBundle:
    """Write a server and a client bundle of one fresh key generation; return the server one."""
    out = Path(out_dir)
    keys = keygen(backend, params)
    keys.for_client().save(out / CLIENT_FILE)
    server = keys.public_only()
    server.save(out / SERVER_FILE)
    return server


@contextmanager
def simulation_keys(backend: str, params: dict[str, Any]) -> Iterator[tuple[KeyBundle, Path]]:
    """Per-run keys for simulation: a dealer process writes them to a private temp dir.

    Yields the server bundle (loaded without secret key) and the client bundle's
    path; the directory is removed when the run ends.
    """
    tmp = Path(tempfile.mkdtemp(prefix="flower-privacy-keys-"))
    os.chmod(tmp, 0o700)
    try:
        root = Path(__file__).resolve().parents[1]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
        }
        cmd = [
            sys.executable,
            "-m",
            "app.keys",
            "generate",
            "--backend",
            backend,
            "--out",
            str(tmp),
        ]
        for key, value in params.items():
            if isinstance(value, bool):
                cmd += [f"--{key}"] if value else []
                continue
            cmd += [
                f"--{key}",
                ",".join(map(str, value)) if isinstance(value, list) else str(value),
            ]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"key dealer failed: {done.stderr.strip()[-2000:]}")
        yield load_bundle(tmp / SERVER_FILE, expect_private=False), tmp / CLIENT_FILE
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    if args.backend == "ckks":
        return {
            "poly-modulus-degree": args.poly_modulus_degree,
            "coeff-mod-bit-sizes": [int(b) for b in args.coeff_mod_bit_sizes.split(",")],
            "scale-bits": args.scale_bits,
            "eval-keys": args.eval_keys,
        }
    return {"key-bits": args.key_bits}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.keys", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write server.json and client.json")
    gen.add_argument("--backend", choices=BACKENDS, required=True)
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument("--key-bits", type=int, default=2048, help="Paillier modulus size")
    gen.add_argument("--poly-modulus-degree", type=int, default=8192, help="CKKS ring degree")
    gen.add_argument("--coeff-mod-bit-sizes", default="60,40", help="CKKS moduli, e.g. 60,40")
    gen.add_argument("--scale-bits", type=int, default=40, help="CKKS scale (log2)")
    gen.add_argument(
        "--eval-keys",
        action="store_true",
        help="CKKS: add relinearization/Galois keys to server.json for encrypted box-plot "
        "filtering (needs --coeff-mod-bit-sizes 60,40,40,60)",
    )
    ins = sub.add_parser("inspect", help="print a bundle's backend, parameters, fingerprint")
    ins.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    if args.command == "generate":
        server = generate(args.backend, args.out, _params(args))
        print(
            f"{args.backend} keys {server.fingerprint}: {args.out / SERVER_FILE} (server), "
            f"{args.out / CLIENT_FILE} (clients, secret)"
        )
        return 0
    bundle = load_bundle(args.path)
    kind = "client bundle (secret key)" if bundle.is_private else "server bundle (public only)"
    print(f"{bundle.backend} {kind}, fingerprint {bundle.fingerprint}, params {bundle.params}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
