"""The key dealer: files, permissions, and per-run simulation keys."""

import os
import stat
from pathlib import Path

import pytest

from app.keys import CLIENT_FILE, SERVER_FILE, main, simulation_keys
from flwr_privacy.he import BundleError, load_bundle


def test_generate_writes_public_server_and_private_client_bundle(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert main(["generate", "--backend", "paillier", "--out", str(tmp_path)]) == 0
    server = load_bundle(tmp_path / SERVER_FILE, expect_private=False)
    client = load_bundle(tmp_path / CLIENT_FILE, expect_private=True)
    assert server.fingerprint == client.fingerprint
    assert stat.S_IMODE(os.stat(tmp_path / CLIENT_FILE).st_mode) == 0o600
    assert server.fingerprint in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / SERVER_FILE)]) == 0
    assert "server bundle (public only)" in capsys.readouterr().out


def test_simulation_keys_are_dealt_in_another_process_and_removed() -> None:
    with simulation_keys("ckks", {"poly-modulus-degree": 8192}) as (server, client_path):
        assert not server.is_private
        assert stat.S_IMODE(os.stat(client_path.parent).st_mode) == 0o700
        assert load_bundle(client_path, expect_private=True).fingerprint == server.fingerprint
    assert not client_path.parent.exists()


def test_server_refuses_a_client_bundle(tmp_path: Path) -> None:
    main(["generate", "--backend", "ckks", "--out", str(tmp_path)])
    with pytest.raises(BundleError, match="server must get the server bundle only"):
        load_bundle(tmp_path / CLIENT_FILE, expect_private=False)


def test_cli_refuses_bad_parameters_with_the_reason_not_a_traceback(
    tmp_path: Path,
    capsys,  # noqa: ANN001
) -> None:
    # Execute: evaluation keys need two multiplicative levels, the default moduli give one
    code = main(["generate", "--backend", "ckks", "--eval-keys", "--out", str(tmp_path)])
    # Assert
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: eval-keys needs 2 multiplicative levels") and "60,40,40,60" in err
    assert not (tmp_path / SERVER_FILE).exists()
