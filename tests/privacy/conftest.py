"""One key generation per backend for the whole test session (Paillier keygen takes seconds)."""

import pytest

from privacy.he import KeyBundle, keygen


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
