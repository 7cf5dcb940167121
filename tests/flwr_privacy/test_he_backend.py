"""The HE backend registry: schemes found by name, loaded on first use, typed key errors."""

import subprocess
import sys

import numpy as np
import pytest

from flwr_privacy.he import (
    BundleError,
    EncodeSettings,
    KeyBundle,
    KeyMismatchError,
    PayloadError,
    backend_for,
    backend_names,
    check_compatible,
    encrypt_arrays,
    keygen,
)


def test_importing_he_loads_neither_tenseal_nor_phe() -> None:
    code = (
        "import sys, flwr_privacy.he; "
        "print(sorted(m for m in ('tenseal', 'phe', 'gmpy2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_backends_are_found_by_name() -> None:
    assert backend_names() == ("ckks", "paillier")
    assert backend_for("ckks").multiplies and not backend_for("paillier").multiplies
    with pytest.raises(ValueError, match="unknown HE backend 'bfv'"):
        backend_for("bfv")
    with pytest.raises(BundleError, match="allowed: \\('ckks', 'paillier'\\)"):
        keygen("bfv")


def test_other_key_generation_is_a_typed_error(keys: KeyBundle) -> None:
    # Prepare: a payload under a fresh key generation of the same scheme and parameters
    foreign = keygen(keys.backend, keys.params)
    payload = encrypt_arrays(
        {"w": np.ones(3)}, bundle=foreign, weight=1.0, settings=EncodeSettings()
    )
    # Execute / Assert: caught by type, and still a PayloadError for callers that refuse any
    with pytest.raises(KeyMismatchError, match="different key generations") as caught:
        check_compatible(payload, keys.public_only())
    assert isinstance(caught.value, PayloadError)


def test_paillier_cannot_score(paillier_keys: KeyBundle) -> None:
    from flwr_privacy.he import encrypted_scores

    payload = encrypt_arrays(
        {"w": np.ones(3)}, bundle=paillier_keys, weight=1.0, settings=EncodeSettings()
    )
    with pytest.raises(PayloadError, match="Paillier only adds"):
        encrypted_scores([payload], bundle=paillier_keys, kinds=("norm",), reference={})
