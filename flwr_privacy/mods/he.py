"""Client-side HE mod: decrypt the incoming global model, encrypt the outgoing update.

Outermost of the client mods, so DP noise (an inner mod) is added to the
plaintext update before it is encrypted here. Task code only ever sees
plaintext arrays. Settings arrive as the ``flwr-privacy.he`` record that the
server's ``EncryptedFedAvg`` writes on every message; the key bundle comes from
``make_he_mod(client_bundle=...)``, the node config ``he-client-bundle``
(deployment) or, in a simulation, the per-run path the server's record names.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import cast

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from flwr_privacy.he import (
    BundleError,
    KeyBundle,
    Payload,
    PayloadError,
    decrypt_arrays,
    encrypt_arrays,
    is_encrypted,
    load_bundle,
)
from flwr_privacy.he.protocol import FINGERPRINT_KEY, SCORES_ACTION, SCORES_KEY
from flwr_privacy.records import (
    ARRAYS,
    CONFIG,
    HE_RECORD,
    METRICS,
    as_float,
    as_int,
    settings_record,
)
from flwr_privacy.settings import SERVER_FIX, HeRound, SettingsError

__all__ = ["Mod", "NODE_BUNDLE_KEY", "decrypt_scores", "he_mod", "make_he_mod", "node_bundle"]

NODE_BUNDLE_KEY = "he-client-bundle"
Mod = Callable[[Message, Context, ClientAppCallable], Message]


@lru_cache(maxsize=4)
def _bundle(path: str) -> KeyBundle:
    return load_bundle(path, expect_private=True)


def node_bundle(he: HeRound, context: Context, explicit: str | Path | None = None) -> KeyBundle:
    """This node's key bundle (with secret key), checked against the server's backend.

    A bundle of another key generation is not refused here: the server refuses
    what it encrypts, naming the mismatch ("different key generations").
    """
    path = explicit or context.node_config.get(NODE_BUNDLE_KEY) or he.client_bundle
    if not path:
        raise BundleError(
            f"no key bundle; start the SuperNode with --node-config '{NODE_BUNDLE_KEY}=<path>' "
            "or build the mod with make_he_mod(client_bundle=<path>)"
        )
    bundle = _bundle(str(path))
    if bundle.backend != he.backend:
        raise BundleError(f"the server uses {he.backend}, this node's bundle is {bundle.backend}")
    return bundle


def _failed(msg: Message, reason: str) -> Message:
    return Message(
        Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=f"he_mod: {reason}"), reply_to=msg
    )


def make_he_mod(*, client_bundle: str | Path | None = None, required: bool = True) -> Mod:
    """The HE client mod.

    Parameters
    ----------
    client_bundle : str or Path, optional
        This node's bundle (with secret key). Default: node config
        ``he-client-bundle``, else the path a simulation's server names.
    required : bool
        A train or evaluate message without the server's HE record is an
        error reply (the server is not encrypting: refuse to send plaintext).
        ``False`` passes such messages through (apps where HE is optional).
    """

    def he_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        kind = msg.metadata.message_type
        if kind not in (MessageType.TRAIN, MessageType.EVALUATE):
            return call_next(msg, context)
        record = settings_record(msg, HE_RECORD)
        if record is None:
            if not required:
                return call_next(msg, context)
            return _failed(msg, f"the message has no '{HE_RECORD}' record; {SERVER_FIX}")
        try:
            he = HeRound.from_record(record)
            bundle = node_bundle(he, context, client_bundle)
        except (SettingsError, BundleError) as e:
            return _failed(msg, str(e))
        arrays = msg.content.array_records.get(ARRAYS)
        if arrays is not None and is_encrypted(arrays):
            try:
                plain = decrypt_arrays(
                    Payload.from_arrays(arrays), bundle=bundle, workers=he.workers
                )
            except PayloadError as e:
                return _failed(msg, f"cannot decrypt the global model: {e}")
            msg.content[ARRAYS] = ArrayRecord(
                {k: Array(np.ascontiguousarray(v)) for k, v in plain.items()}
            )
        reply = call_next(msg, context)
        if kind != MessageType.TRAIN or reply.has_error():
            return reply
        return _encrypt_reply(reply, bundle, he, context)

    return he_mod


he_mod = make_he_mod()
he_mod.__doc__ = "The HE client mod with default settings: see ``make_he_mod``."


def _encrypt_reply(reply: Message, bundle: KeyBundle, he: HeRound, context: Context) -> Message:
    metrics = reply.content.metric_records.get(METRICS)
    if metrics is None or he.weight_key not in metrics or ARRAYS not in reply.content:
        return _failed(reply, f"the train reply needs '{ARRAYS}' and a '{METRICS}' record "
                       f"with '{he.weight_key}' (the aggregation weight)")  # fmt: skip
    weight = min(as_float(metrics[he.weight_key]) / he.weight_scale, 1.0)
    start = time.perf_counter()
    plain = {k: a.numpy() for k, a in reply.content.array_records[ARRAYS].items()}
    # Stochastic rounding only needs reproducible randomness, not secret randomness.
    node = int(context.node_config.get("partition-id", context.node_id))
    rng = np.random.default_rng([he.seed, he.server_round, node])
    payload = encrypt_arrays(plain, bundle=bundle, weight=weight, settings=he.encoding, rng=rng)
    reply.content[ARRAYS] = payload.to_arrays()
    _score_state(context)["trained-round"] = he.server_round
    metrics["he-weight"] = weight
    metrics["he-clipped"] = payload.header.clipped
    metrics["he-encrypt-s"] = time.perf_counter() - start
    return reply


def _score_state(context: Context) -> ConfigRecord:
    """Rounds this node trained in and answered a score query in (kept across rounds)."""
    if SCORES_ACTION not in context.state:
        context.state[SCORES_ACTION] = ConfigRecord({"trained-round": 0, "answered-round": 0})
    return context.state.config_records[SCORES_ACTION]


def decrypt_scores(msg: Message, context: Context) -> Message:
    """Answer the encrypted box plot's score query: decrypt one-value ciphertexts only.

    Only in a round this node trained in, once, under its own key generation,
    at most two scores per client of the round; values are rounded to 3
    significant digits (coarser than the CKKS error, which key-recovery attacks
    on CKKS decryptions exploit). Anything else gets an error reply.
    """
    cfg = msg.content.config_records[CONFIG]
    state = _score_state(context)
    record = settings_record(msg, HE_RECORD)
    try:
        if record is None:
            raise SettingsError(f"the query has no '{HE_RECORD}' record; {SERVER_FIX}")
        he = HeRound.from_record(record)
        bundle = node_bundle(he, context)
        fingerprint = cfg.get(FINGERPRINT_KEY)
        if fingerprint != bundle.fingerprint:
            raise BundleError(
                f"scores are under key {fingerprint!s}, this node holds {bundle.fingerprint}"
            )
        server_round, sent = as_int(cfg["server-round"]), cfg[SCORES_KEY]
        if not isinstance(sent, list) or not all(isinstance(c, bytes) for c in sent):
            raise PayloadError(f"'{SCORES_KEY}' must be a list of serialized ciphertexts")
        chunks = cast(list[bytes], sent)  # checked just above
        if server_round != as_int(state["trained-round"]):
            raise PayloadError(f"this node did not train in round {server_round}")
        if server_round <= as_int(state["answered-round"]):
            raise PayloadError(f"scores of round {server_round} were already decrypted")
        if len(chunks) > 2 * he.max_count:
            raise PayloadError(f"{len(chunks)} scores exceed 2 per client of the round")
        from flwr_privacy.he import ckks  # only filtering runs need it

        values = [float(f"{v:.3g}") for v in ckks.decrypt_scalars(chunks, bundle)]
    except (BundleError, PayloadError, SettingsError, KeyError) as e:
        return _failed(msg, f"score query refused: {e}")
    state["answered-round"] = server_round
    return Message(RecordDict({METRICS: MetricRecord({SCORES_KEY: values})}), reply_to=msg)
