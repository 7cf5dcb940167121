"""Importing the DP-SGD module leaves the root logger as it was (one line per Flower record)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository, whose flwr_privacy we test

# A fresh interpreter: Opacus adds its root handler once, on its first import.
SCRIPT = """
import logging
before = list(logging.root.handlers)
import flwr_privacy.dp.sgd
import opacus.utils.module_utils  # Opacus is loaded (imported above, this is a no-op)
after = list(logging.root.handlers)
print(len(before), len(after), after == before)
"""


def test_importing_dp_sgd_adds_no_root_log_handler() -> None:
    # Execute
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True, timeout=120, cwd=ROOT)  # fmt: skip
    # Assert: Opacus' basicConfig handler is gone again, so Flower's lines print once
    assert out.stdout.split() == ["0", "0", "True"], (
        "Opacus' root handler is back: call _drop_opacus_root_handler() right after "
        f"importing opacus; stderr: {out.stderr[-2000:]}"
    )


def test_a_handler_of_the_apps_own_stays() -> None:
    script = (
        "import logging, sys\n"
        "logging.basicConfig(format='%(message)s', stream=sys.stdout)\n"
        "import flwr_privacy.dp.sgd\n"
        "print(len(logging.root.handlers))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert out.stdout.split()[-1] == "1"
