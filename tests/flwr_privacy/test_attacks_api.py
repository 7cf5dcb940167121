"""The attacks subpackage: every exported name resolves; importing it loads no torch."""

import subprocess
import sys

import flwr_privacy.attacks as attacks


def test_every_exported_name_resolves() -> None:
    missing = [name for name in attacks.__all__ if not callable(getattr(attacks, name))]
    assert not missing and len(attacks.__all__) >= 25


def test_importing_the_subpackage_loads_neither_torch_nor_scipy() -> None:
    code = (
        "import sys, flwr_privacy.attacks\n"
        "print(sorted(m for m in ('torch', 'scipy', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
