"""Every deployment test's SuperNodes declare a 10 s Flower heartbeat (``heartbeat/``).

A SuperNode killed by a test is then declared offline after about 20 s instead of
60 s; task-token lifetimes stay Flower's. The test process's own environment is
restored when the package's tests end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

HEARTBEAT_SECONDS = 10  # the smallest interval Flower's SuperLink accepts
SHIM = Path(__file__).resolve().parent / "heartbeat"


@pytest.fixture(scope="package", autouse=True)
def fast_heartbeat() -> Iterator[int]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLWR_TEST_HEARTBEAT_INTERVAL", str(HEARTBEAT_SECONDS))
        path = [str(SHIM), *filter(None, [os.environ.get("PYTHONPATH")])]
        mp.setenv("PYTHONPATH", os.pathsep.join(path))
        yield HEARTBEAT_SECONDS
