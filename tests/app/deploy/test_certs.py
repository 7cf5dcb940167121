"""TLS material and SuperNode keys: a real TLS handshake, and the key format flwr reads."""

import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.cli.supernode.register import try_load_public_key

from app.deploy.certs import main, write_node_keys, write_tls


def _handshake(tls_dir: Path, server_name: str) -> str:
    """Serve one TLS connection with the SuperLink certificate; connect trusting only the CA."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tls_dir / "server.pem", tls_dir / "server.key")
    client_ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                data = tls.recv(2).decode()
        thread.join(timeout=10)
    return data


def test_superlink_certificate_verifies_against_the_ca_for_its_sans(tmp_path: Path) -> None:
    # Prepare
    files = write_tls(tmp_path, ("127.0.0.1", "localhost"))
    # Execute
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # Assert
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert _handshake(tmp_path, "127.0.0.1") == "ok"
    assert _handshake(tmp_path, "localhost") == "ok"
    for secret in (files.server_key, tmp_path / "ca.key"):
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600


def test_a_name_outside_the_sans_is_refused(tmp_path: Path) -> None:
    write_tls(tmp_path, ("127.0.0.1",))
    with pytest.raises(ssl.SSLCertVerificationError, match="match|mismatch"):
        _handshake(tmp_path, "localhost")


def test_node_keys_are_p384_openssh_pairs_flwr_accepts(tmp_path: Path) -> None:
    # Execute
    keys = write_node_keys(tmp_path, 2)
    # Assert
    assert [k.private.name for k in keys] == ["supernode-0", "supernode-1"]
    private = load_ssh_private_key(keys[0].private.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(private.curve, ec.SECP384R1)
    assert stat.S_IMODE(os.stat(keys[0].private).st_mode) == 0o600
    # What `flwr supernode register` sends to the SuperLink:
    assert b"PUBLIC KEY" in try_load_public_key(keys[0].public)
    assert try_load_public_key(keys[0].public) != try_load_public_key(keys[1].public)


def test_cli_writes_both_and_refuses_zero_nodes(tmp_path: Path) -> None:
    assert main(["tls", "--out", str(tmp_path / "tls"), "--host", "superlink"]) == 0
    assert main(["node-keys", "--out", str(tmp_path / "auth"), "--nodes", "1"]) == 0
    assert (tmp_path / "tls" / "server.pem").exists()
    assert (tmp_path / "auth" / "supernode-0").exists()
    with pytest.raises(ValueError, match="count = 0"):
        write_node_keys(tmp_path, 0)
