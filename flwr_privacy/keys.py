"""Key custody: the HE key dealer, the key holder's decryption, and SecAgg+ client identities.

    python -m flwr_privacy.keys generate --backend ckks --out keys/
    python -m flwr_privacy.keys inspect keys/server.json
    python -m flwr_privacy.keys decrypt --bundle keys/client.json model.he.json --out model.npz
    python -m flwr_privacy.keys roster --clients hospital-a,hospital-b,hospital-c --out roster/

``generate`` writes ``server.json`` (public material only: give it to the
server strategy) and ``client.json`` (with the secret key, mode 0600: give it to
every SuperNode through its node config ``he-client-bundle``). ``deal_keys``
does the same for a simulation in a private temp dir. ``decrypt_model`` is what
a key holder runs on a saved or returned encrypted model. ``roster`` makes the SecAgg+
trust anchor (``flwr_privacy.secagg.identity``): a signing key per client and the roster.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord

from flwr_privacy.he import (
    BACKENDS,
    BundleError,
    KeyBundle,
    Payload,
    PayloadError,
    decrypt_arrays,
    is_encrypted,
    keygen,
    load_bundle,
    load_payload,
)
from flwr_privacy.secagg.crypto import SecAggError
from flwr_privacy.secagg.identity import ROSTER_FILE, make_roster

__all__ = [
    "CLIENT_FILE",
    "SERVER_FILE",
    "build_parser",
    "deal_keys",
    "decrypt_model",
    "generate",
    "main",
]

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


def _dealer_args(backend: str, out: Path, params: Mapping[str, Any]) -> list[str]:
    cmd = [sys.executable, "-m", "flwr_privacy.keys", "generate", "--backend", backend]
    cmd += ["--out", str(out)]
    for key, value in params.items():
        if isinstance(value, bool):
            cmd += [f"--{key}"] if value else []
        else:
            cmd += [
                f"--{key}",
                ",".join(map(str, value)) if isinstance(value, list) else str(value),
            ]
    return cmd


@contextmanager
def deal_keys(
    backend: str, params: Mapping[str, Any] | None = None
) -> Iterator[tuple[KeyBundle, Path]]:
    """Per-run keys for a simulation: a dealer process writes them to a private temp dir.

    Yields the server bundle (loaded without secret key: the secret never enters
    this process) and the client bundle's path; the directory is removed on exit.

    Parameters
    ----------
    backend : str
        ``"ckks"`` or ``"paillier"``.
    params : mapping, optional
        The backend's key parameters as ``python -m flwr_privacy.keys generate`` takes
        them (``poly-modulus-degree``, ``coeff-mod-bit-sizes``, ``scale-bits``,
        ``eval-keys``; ``key-bits``); default: the backend's defaults.

    Examples
    --------
    >>> with deal_keys("ckks") as (server_bundle, client_path):  # doctest: +SKIP
    ...     strategy = EncryptedFedAvg(bundle=server_bundle)
    """
    tmp = Path(tempfile.mkdtemp(prefix="flwr-privacy-keys-"))
    os.chmod(tmp, 0o700)
    try:
        root = str(Path(__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
        }
        cmd = _dealer_args(backend, tmp, params or {})
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"key dealer failed: {done.stderr.strip()[-2000:]}")
        yield load_bundle(tmp / SERVER_FILE, expect_private=False), tmp / CLIENT_FILE
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def decrypt_model(
    model: ArrayRecord | Payload | str | Path, bundle: KeyBundle | str | Path, *, workers: int = 1
) -> dict[str, np.ndarray]:
    """The plaintext global model, for a key holder.

    Parameters
    ----------
    model : ArrayRecord, Payload, str or Path
        What the strategy returned (``result.arrays``), a payload, or a saved
        ``*.he.json`` file (``global-model.he.json`` of a run directory).
    bundle : KeyBundle, str or Path
        A client bundle (with the secret key) or its path; the server bundle is refused.
    workers : int
        Processes for Paillier decryption.

    Returns
    -------
    dict[str, numpy.ndarray]
        The model's arrays by name, in the order and shapes of the layout the clients
        encrypted (for a PyTorch model: its ``state_dict`` names), already divided by the
        summed client weight: FedAvg's weighted mean. A plaintext ArrayRecord's arrays are
        returned as they are.

    Raises
    ------
    ValueError
        A bundle without a secret key, or one of another key generation (both fingerprints
        named).
    """
    if isinstance(bundle, str | Path):
        bundle = load_bundle(bundle, expect_private=True)
    if isinstance(model, str | Path):
        payload = load_payload(model)
    elif isinstance(model, ArrayRecord):
        if not is_encrypted(model):
            return {k: a.numpy() for k, a in model.items()}
        payload = Payload.from_arrays(model)
    else:
        payload = model
    return decrypt_arrays(payload, bundle=bundle, workers=workers)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    if args.backend == "ckks":
        return {
            "poly-modulus-degree": args.poly_modulus_degree,
            "coeff-mod-bit-sizes": [int(b) for b in args.coeff_mod_bit_sizes.split(",")],
            "scale-bits": args.scale_bits,
            "eval-keys": args.eval_keys,
        }
    return {"key-bits": args.key_bits}


def build_parser(prog: str = "python -m flwr_privacy.keys") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").splitlines()[0])
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
    ros = sub.add_parser(
        "roster",
        help="SecAgg+ against a lying server: a signing key per client and the roster",
        description="Write <identity>.key (secret, mode 0600) for each client and roster.json "
        "(every client's verifying key). Give each SuperNode its own key and the roster through "
        "its node config: --node-config \"secagg-key='<out>/<identity>.key' "
        "secagg-roster='<out>/roster.json'\". Never give them to the server.",
    )
    ros.add_argument("--out", type=Path, required=True)
    who = ros.add_mutually_exclusive_group(required=True)
    who.add_argument("--clients", help="comma-separated identities, e.g. hospital-a,hospital-b")
    who.add_argument("--count", type=int, help="N clients named client-0 .. client-(N-1)")
    ins = sub.add_parser("inspect", help="print a bundle's backend, parameters, fingerprint")
    ins.add_argument("path", type=Path)
    dec = sub.add_parser("decrypt", help="decrypt a saved encrypted model into an .npz file")
    dec.add_argument("model", type=Path, help="an encrypted model, e.g. global-model.he.json")
    dec.add_argument("--bundle", type=Path, required=True, help="client bundle (secret key)")
    dec.add_argument("--out", type=Path, required=True, help="where to write the .npz")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m flwr_privacy.keys") -> int:
    """Run the CLI; a refused bundle, parameter or payload exits 2 with its reason, no traceback."""
    args = build_parser(prog).parse_args(argv)
    try:
        return _run(args)
    except (BundleError, PayloadError, SecAggError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "generate":
        server = generate(args.backend, args.out, _params(args))
        sys.stdout.write(
            f"{args.backend} keys {server.fingerprint}: {args.out / SERVER_FILE} (server), "
            f"{args.out / CLIENT_FILE} (clients, secret)\n"
        )
        return 0
    if args.command == "roster":
        if args.count is not None and args.count < 1:
            raise SecAggError(f"--count {args.count}: a roster needs at least one client")
        names = (args.clients.split(",") if args.clients
                 else [f"client-{i}" for i in range(args.count)])  # fmt: skip
        roster = make_roster([n.strip() for n in names], args.out)
        sys.stdout.write(f"SecAgg+ roster of {len(roster.members)} clients: "
                         f"{args.out / ROSTER_FILE}; keys (secret): {args.out}/<identity>.key\n")
        return 0
    if args.command == "decrypt":
        arrays = decrypt_model(args.model, args.bundle)
        np.savez(args.out, **arrays)  # type: ignore[arg-type]  # stub types **kwds as allow_pickle
        sys.stdout.write(f"decrypted {len(arrays)} arrays to {args.out}\n")
        return 0
    bundle = load_bundle(args.path)
    kind = "client bundle (secret key)" if bundle.is_private else "server bundle (public only)"
    sys.stdout.write(
        f"{bundle.backend} {kind}, fingerprint {bundle.fingerprint}, params {bundle.params}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
