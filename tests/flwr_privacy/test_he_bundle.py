"""Key bundles: the server side holds no secret key; files are checked on load."""

import os
from pathlib import Path

import numpy as np
import pytest

from flwr_privacy.he import (
    BundleError,
    EncodeSettings,
    KeyBundle,
    decrypt_arrays,
    encrypt_arrays,
    load_bundle,
)
from flwr_privacy.he.ckks import context


def test_server_bundle_cannot_decrypt(keys: KeyBundle) -> None:
    # Prepare
    server = keys.public_only()
    payload = encrypt_arrays({"w": np.ones(3)}, bundle=keys, weight=1.0, settings=EncodeSettings())
    # Assert
    assert not server.is_private and server.fingerprint == keys.fingerprint
    with pytest.raises(BundleError, match="public-only"):
        decrypt_arrays(payload, bundle=server)


def test_ckks_server_context_is_public() -> None:
    from flwr_privacy.he import keygen

    server = keygen("ckks").public_only()
    assert not context(server, secret=False).is_private()


def test_files_round_trip_and_secret_file_is_private(keys: KeyBundle, tmp_path: Path) -> None:
    keys.save(tmp_path / "client.json")
    keys.public_only().save(tmp_path / "server.json")
    assert os.stat(tmp_path / "client.json").st_mode & 0o777 == 0o600
    assert load_bundle(tmp_path / "client.json", expect_private=True) == keys
    assert load_bundle(tmp_path / "server.json", expect_private=False).secret is None
    with pytest.raises(BundleError, match="holds a secret key"):
        load_bundle(tmp_path / "client.json", expect_private=False)
    with pytest.raises(BundleError, match="clients need the client bundle"):
        load_bundle(tmp_path / "server.json", expect_private=True)


def test_corrupted_or_missing_files_are_named(tmp_path: Path, paillier_keys: KeyBundle) -> None:
    path = paillier_keys.public_only().save(tmp_path / "server.json")
    path.write_text(path.read_text().replace('"key-bits": 2048', '"key-bits": 1024'))
    with pytest.raises(BundleError, match="fingerprint does not match"):
        load_bundle(path)
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(BundleError, match="malformed key bundle"):
        load_bundle(tmp_path / "junk.json")
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "absent.json")
