"""Client-side HE mod: decrypt the incoming global model, encrypt the outgoing update.

Outermost of the client mods, so DP noise (an inner mod) is added to the
plaintext update before it is encrypted here. Task code only ever sees
plaintext arrays. Settings arrive in the message config (``he.*``); the key
bundle comes from the node config ``he-client-bundle`` (deployment) or, in
simulation only, from the per-run path the server sends as ``he.client-bundle``.
"""

from __future__ import annotations

import time
from functools import lru_cache

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

from flwr_privacy.records import ARRAYS, CONFIG, METRICS, NUM_EXAMPLES
from flwr_privacy.he import (
    BundleError,
    EncodeSettings,
    KeyBundle,
    Payload,
    PayloadError,
    ckks,
    decrypt_arrays,
    encrypt_arrays,
    is_encrypted,
    load_bundle,
)
from flwr_privacy.he.protocol import FINGERPRINT_KEY, SCORES_ACTION, SCORES_KEY

NODE_BUNDLE_KEY = "he-client-bundle"


@lru_cache(maxsize=4)
def _bundle(path: str) -> KeyBundle:
    return load_bundle(path, expect_private=True)


def client_bundle(cfg: ConfigRecord, context: Context) -> KeyBundle:
    """This node's key bundle (with secret key), checked against the server's backend."""
    path = context.node_config.get(NODE_BUNDLE_KEY) or cfg.get("he.client-bundle")
    if not path:
        raise BundleError(
            f"no key bundle; start the SuperNode with --node-config '{NODE_BUNDLE_KEY}=<path>'"
        )
    bundle = _bundle(str(path))
    if bundle.backend != cfg["he.backend"]:
        raise BundleError(
            f"the server uses {cfg['he.backend']}, this node's bundle is {bundle.backend}"
        )
    return bundle


def _failed(msg: Message, reason: str) -> Message:
    return Message(
        Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=f"he_mod: {reason}"), reply_to=msg
    )


def _settings(cfg: dict) -> EncodeSettings:
    return EncodeSettings(
        clip=float(cfg["he.clip"]),
        bits=int(cfg["he.bits"]),
        max_count=int(cfg["he.max-count"]),
        packed=bool(cfg["he.packed"]),
        workers=int(cfg["he.workers"]),
    )


def he_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Encrypt train replies and decrypt encrypted global models when ``he.backend`` is set."""
    kind = msg.metadata.message_type
    cfg = msg.content.config_records.get(CONFIG) if msg.has_content() else None
    if kind not in (MessageType.TRAIN, MessageType.EVALUATE) or cfg is None:
        return call_next(msg, context)
    if cfg.get("he.backend", "none") == "none" or cfg.get("he.mode") == "server-keyed":
        return call_next(msg, context)  # server-keyed: no client key; the train handler works
    try:
        bundle = client_bundle(cfg, context)
    except BundleError as e:
        return _failed(msg, str(e))
    arrays = msg.content.array_records.get(ARRAYS)
    if arrays is not None and is_encrypted(arrays):
        try:
            plain = decrypt_arrays(
                Payload.from_arrays(arrays), bundle=bundle, workers=int(cfg["he.workers"])
            )
        except PayloadError as e:
            return _failed(msg, f"cannot decrypt the global model: {e}")
        msg.content[ARRAYS] = ArrayRecord(
            {k: Array(np.ascontiguousarray(v)) for k, v in plain.items()}
        )

    reply = call_next(msg, context)
    if kind != MessageType.TRAIN or reply.has_error():
        return reply
    return _encrypt_reply(reply, bundle, cfg, context)


def _encrypt_reply(reply: Message, bundle: KeyBundle, cfg: dict, context: Context) -> Message:
    metrics = reply.content[METRICS]
    weight = min(float(metrics[NUM_EXAMPLES]) / float(cfg["he.weight-scale"]), 1.0)
    start = time.perf_counter()
    plain = {k: a.numpy() for k, a in reply.content[ARRAYS].items()}
    # Stochastic rounding only needs reproducible randomness, not secret randomness.
    node = int(context.node_config.get("partition-id", context.node_id))
    rng = np.random.default_rng([int(cfg["seed"]), int(cfg["server-round"]), node])
    payload = encrypt_arrays(plain, bundle=bundle, weight=weight, settings=_settings(cfg), rng=rng)
    reply.content[ARRAYS] = payload.to_arrays()
    _score_state(context)["trained-round"] = int(cfg["server-round"])
    metrics["he-weight"] = weight
    metrics["he-clipped"] = payload.header.clipped
    metrics["he-encrypt-s"] = time.perf_counter() - start
    return reply


def _score_state(context: Context) -> ConfigRecord:
    """Rounds this node trained in and answered a score query in (kept across rounds)."""
    if SCORES_ACTION not in context.state:
        context.state[SCORES_ACTION] = ConfigRecord({"trained-round": 0, "answered-round": 0})
    return context.state[SCORES_ACTION]


def decrypt_scores(msg: Message, context: Context) -> Message:
    """Answer the encrypted box plot's score query: decrypt one-value ciphertexts only.

    Only in a round this node trained in, once, under its own key generation,
    at most two scores per client of the round; values are rounded to 3
    significant digits (coarser than the CKKS error, which key-recovery attacks
    on CKKS decryptions exploit). Anything else gets an error reply.
    """
    cfg = msg.content[CONFIG]
    state = _score_state(context)
    try:
        bundle = client_bundle(cfg, context)
        if cfg.get(FINGERPRINT_KEY) != bundle.fingerprint:
            raise BundleError(
                f"scores are under key {cfg.get(FINGERPRINT_KEY)}, "
                f"this node holds {bundle.fingerprint}"
            )
        server_round, chunks = int(cfg["server-round"]), list(cfg[SCORES_KEY])
        if server_round != int(state["trained-round"]):
            raise PayloadError(f"this node did not train in round {server_round}")
        if server_round <= int(state["answered-round"]):
            raise PayloadError(f"scores of round {server_round} were already decrypted")
        if len(chunks) > 2 * int(cfg["he.max-count"]):
            raise PayloadError(f"{len(chunks)} scores exceed 2 per client of the round")
        values = [float(f"{v:.3g}") for v in ckks.decrypt_scalars(chunks, bundle)]
    except (BundleError, PayloadError, KeyError) as e:
        return _failed(msg, f"score query refused: {e}")
    state["answered-round"] = server_round
    return Message(RecordDict({METRICS: MetricRecord({SCORES_KEY: values})}), reply_to=msg)
