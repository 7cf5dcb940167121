"""ClientApp: the privacy mods, then this node's train / evaluate / describe handlers.

The handlers' work (partition, task, torch) lives in ``app/client_handlers.py`` and
is imported on the first message that needs it. In a deployment Flower 1.41 starts
a fresh ClientApp process for every message, and five of a SecAgg+ round's six
messages (keys, shares, masked input's survivors, signature, unmasking) are
answered by the SecAgg+ mod alone: those processes import neither torch nor the
task code (``tests/app/test_client_app_imports.py``).
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from app.records import SETUP_ACTION
from flwr_privacy.he.protocol import SCORES_ACTION
from flwr_privacy.mods.he import decrypt_scores, make_he_mod
from flwr_privacy.mods.local_dp import local_dp_mod
from flwr_privacy.mods.secagg import make_secagg_mod
from flwr_privacy.mods.tamper import tamper_mod

# Outermost first: the SecAgg+ mod answers its protocol stages and masks last; the HE mod
# decrypts first and encrypts last, after DP noise and any attack. Both are optional in this
# app: without the server's record a mod passes messages through. SecAgg+ signs with the
# SuperNode's node-config key (secagg-key, secagg-roster); without one, it accepts the per-run
# keys a simulation deals (secagg.trust = "simulated": no protection against a lying server).
secagg_mod = make_secagg_mod(required=False, simulated_trust=True)
he_mod = make_he_mod(required=False)
app = ClientApp(mods=[secagg_mod, he_mod, local_dp_mod, tamper_mod])
app.query(SCORES_ACTION)(decrypt_scores)  # encrypted box plot: decrypt score scalars only


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on the local training split."""
    from app import client_handlers

    return client_handlers.train(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on the local validation split."""
    from app import client_handlers

    return client_handlers.evaluate(msg, context)


@app.query(SETUP_ACTION)
def describe(msg: Message, context: Context) -> Message:
    """Partition id, declared edge, training-set size and, for tabular tasks, feature moments."""
    from app import client_handlers

    return client_handlers.describe(msg, context)
