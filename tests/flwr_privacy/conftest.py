"""One key generation per backend for the whole test session (Paillier keygen takes seconds)."""

import pytest

from flwr_privacy.he import KeyBundle, keygen


@pytest.fixture(scope="session")
def ckks_keys() -> KeyBundle:
    return keygen("ckks")


@pytest.fixture(scope="session")
def paillier_keys() -> KeyBundle:
    return keygen("paillier")


@pytest.fixture(params=["ckks", "paillier"])
def keys(
    request: pytest.FixtureRequest, ckks_keys: KeyBundle, paillier_keys: KeyBundle
) -> KeyBundle:
    return ckks_keys if request.param == "ckks" else paillier_keys


@pytest.fixture(scope="session")
def ckks_eval_keys() -> KeyBundle:
    """CKKS keys for encrypted box-plot scores: two levels and server evaluation keys."""
    return keygen("ckks", {"coeff-mod-bit-sizes": [60, 40, 40, 60], "eval-keys": True})
