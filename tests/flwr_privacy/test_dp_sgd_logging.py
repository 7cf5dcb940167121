"""Loading Opacus through the DP code leaves the root logger as it was (one Flower line each)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real processes or the engine: tests/conftest.py

ROOT = Path(__file__).resolve().parents[2]  # the repository, whose flwr_privacy we test

# A fresh interpreter: Opacus adds its root handler once, on its first import.
SCRIPT = """
import logging, sys
before = list(logging.root.handlers)
import flwr_privacy.dp.sgd
from flwr_privacy.dp import gaussian_epsilon
assert "opacus" not in sys.modules, "importing the DP code must not load Opacus"
gaussian_epsilon([(1.0, 0.1, 10)], delta=1e-5, accountant="rdp")  # loads Opacus
assert "opacus.utils.module_utils" in sys.modules
after = list(logging.root.handlers)
print(len(before), len(after), after == before)
"""


def test_loading_opacus_through_the_dp_code_adds_no_root_log_handler() -> None:
    # Execute
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True, timeout=120, cwd=ROOT)  # fmt: skip
    # Assert: Opacus' basicConfig handler is gone again, so Flower's lines print once
    assert out.stdout.split() == ["0", "0", "True"], (
        "Opacus' root handler is back: call ledger.quiet_opacus() right after "
        f"importing opacus; stderr: {out.stderr[-2000:]}"
    )


def test_a_handler_of_the_apps_own_stays() -> None:
    script = (
        "import logging, sys\n"
        "logging.basicConfig(format='%(message)s', stream=sys.stdout)\n"
        "from flwr_privacy.dp.sgd import planned_noise\n"
        "planned_noise(target_epsilon=3.0, delta=1e-5, sample_rate=0.1, steps=10, "
        "accountant='rdp')\n"
        "print(len(logging.root.handlers))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert out.stdout.split()[-1] == "1"
