"""Key provisioning for this app: the toolkit's dealer (``flwr_privacy.keys``) under its old name.

    python -m app.keys generate --backend ckks --out keys/
    python -m app.keys inspect keys/server.json
    python -m app.keys decrypt --bundle keys/client.json <run dir>/global-model.he.json --out m.npz
    python -m app.final_model <run dir> --bundle keys/client.json   # decrypt and test it

``generate`` writes ``server.json`` (public material only: give it to the
ServerApp) and ``client.json`` (with the secret key, mode 0600: give it to
every SuperNode through its node config ``he-client-bundle``). In simulation
the ServerApp runs this dealer in a separate process per run and loads only
the server bundle.
"""

from __future__ import annotations

import sys

from flwr_privacy.keys import CLIENT_FILE, SERVER_FILE, decrypt_model, generate
from flwr_privacy.keys import deal_keys as simulation_keys
from flwr_privacy.keys import main as _main

__all__ = ["CLIENT_FILE", "SERVER_FILE", "decrypt_model", "generate", "main", "simulation_keys"]


def main(argv: list[str] | None = None) -> int:
    return _main(argv, prog="python -m app.keys")


if __name__ == "__main__":
    sys.exit(main())
