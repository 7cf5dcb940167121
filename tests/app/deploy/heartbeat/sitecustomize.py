"""Test-only: a SuperNode's heartbeat every few seconds, for the processes deployment tests start.

Flower 1.41 hard-codes ``HEARTBEAT_DEFAULT_INTERVAL = 30`` (a killed SuperNode is
declared offline after 2 x 30 s) and exposes no option. The deployment tests put this
folder first on ``PYTHONPATH`` with ``FLWR_TEST_HEARTBEAT_INTERVAL`` set. Then, as
Flower loads them, the two modules that *send* heartbeats take that interval: the
SuperNode's fleet connection (the interval it declares, which the SuperLink accepts
from 10 s) and the sender loop. The receiving side is untouched: the SuperLink marks a
node offline after 2 x the interval the node declared, and the task tokens of
ServerApp and ClientApp processes keep Flower's 30 s lifetimes (a shorter one expires
while a ClientApp still imports torch on busy cores). The system ``sitecustomize``
this shadows runs afterwards.
"""

import importlib.abc
import importlib.machinery
import os
import runpy
import sys
from pathlib import Path
from types import ModuleType

SENDERS = ("flwr.supernode.fleet_http_connection", "flwr.supercore.heartbeat")


class _SetInterval(importlib.abc.MetaPathFinder):
    """After a sender module executes, set its copy of the interval."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds

    def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201
        if name not in SENDERS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader, seconds = spec.loader, self.seconds

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec):  # noqa: ANN001, ANN202
                return loader.create_module(spec)

            def exec_module(self, module: ModuleType) -> None:
                loader.exec_module(module)
                module.HEARTBEAT_DEFAULT_INTERVAL = seconds

        spec.loader = _Loader()
        return spec


_interval = os.environ.get("FLWR_TEST_HEARTBEAT_INTERVAL")
if _interval:
    sys.meta_path.insert(0, _SetInterval(int(_interval)))

_here = str(Path(__file__).resolve().parent)
for _entry in sys.path:
    _system = Path(_entry or ".") / "sitecustomize.py"
    if _entry and str(Path(_entry).resolve()) != _here and _system.is_file():
        runpy.run_path(str(_system))
        break
