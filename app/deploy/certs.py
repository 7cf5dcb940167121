"""TLS certificates and SuperNode authentication keys for a real deployment.

    python -m app.deploy.certs tls --out deploy/tls --host 127.0.0.1 --host localhost
    python -m app.deploy.certs node-keys --out deploy/auth --nodes 3

``tls`` writes a private CA (``ca.crt``; ``ca.key`` stays with the operator)
and the SuperLink's certificate (``server.pem``, ``server.key``) whose SANs
name every address SuperNodes and ``flwr`` dial, which TLS checks. SuperNodes
and the ``flwr`` CLI get ``ca.crt`` only. ``node-keys`` writes one EC P-384 key
pair per SuperNode in the OpenSSH format flwr 1.41 reads: the private key goes
to ``flower-supernode --auth-supernode-private-key``, the public one to
``flwr supernode register``. Private keys are written with mode 0600.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class TlsFiles:
    """What the SuperLink is started with; SuperNodes and ``flwr`` need ``ca_cert`` only."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class NodeKey:
    """One SuperNode's authentication key pair (OpenSSH format)."""

    private: Path
    public: Path


def _write(path: Path, data: bytes, *, secret: bool = False) -> Path:
    """Write a file; secrets are created with mode 0600 so no other user can read them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _builder(
    subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int
) -> x509.CertificateBuilder:
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )


def write_tls(
    out_dir: str | Path, hosts: Sequence[str] = DEFAULT_HOSTS, *, days: int = 365
) -> TlsFiles:
    """Write a private CA and a SuperLink server certificate valid for ``hosts``."""
    if not hosts:
        raise ValueError("hosts is empty; name every address SuperNodes use, e.g. 127.0.0.1")
    out = Path(out_dir)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flower-privacy deployment CA")])
    ca_cert = (
        _builder("flower-privacy deployment CA", ca_name, ca_key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(hosts[0], ca_name, key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(_san(hosts), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(out / "ca.key", _pem_key(ca_key), secret=True)
    return TlsFiles(
        ca_cert=_write(out / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM)),
        server_cert=_write(out / "server.pem", cert.public_bytes(serialization.Encoding.PEM)),
        server_key=_write(out / "server.key", _pem_key(key), secret=True),
    )


def write_node_key(out_dir: str | Path, name: str) -> NodeKey:
    """Write ``<name>`` (private, OpenSSH) and ``<name>.pub`` for one SuperNode."""
    key = ec.generate_private_key(ec.SECP384R1())
    out = Path(out_dir)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return NodeKey(
        private=_write(out / name, private, secret=True),
        public=_write(out / f"{name}.pub", public + f" {name}\n".encode()),
    )


def write_node_keys(out_dir: str | Path, count: int, prefix: str = "supernode") -> list[NodeKey]:
    """One key pair per SuperNode: ``<prefix>-0`` ... ``<prefix>-<count-1>``."""
    if count < 1:
        raise ValueError(f"count = {count}; allowed: at least 1 SuperNode")
    return [write_node_key(out_dir, f"{prefix}-{i}") for i in range(count)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.deploy.certs", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="command", required=True)
    tls = sub.add_parser("tls", help="write ca.crt, ca.key, server.pem, server.key")
    tls.add_argument("--out", type=Path, required=True)
    tls.add_argument("--host", action="append", help="SAN of the SuperLink (repeatable)")
    tls.add_argument("--days", type=int, default=365)
    keys = sub.add_parser("node-keys", help="write supernode-<i> and supernode-<i>.pub")
    keys.add_argument("--out", type=Path, required=True)
    keys.add_argument("--nodes", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "tls":
        files = write_tls(args.out, args.host or DEFAULT_HOSTS, days=args.days)
        print(f"CA {files.ca_cert}; SuperLink {files.server_cert} + {files.server_key}")
        return 0
    for key in write_node_keys(args.out, args.nodes):
        print(f"{key.private} (give to the SuperNode), {key.public} (register)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
