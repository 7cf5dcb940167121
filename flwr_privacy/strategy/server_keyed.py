"""Server-keyed HE on the server: encrypt the global model out, decrypt client models in.

A wrapper (it holds a FedAvg-family strategy, as Flower's DP wrappers do): the
inner strategy samples clients, builds messages and averages plaintext
models; this layer swaps the outgoing model for [[w]] and decrypts each
client's [[w']] before the inner strategy sees it. The server keeps the key
pair, so it evaluates centrally and re-encrypts every round (which also
resets CKKS levels and Paillier scales). Clients cannot evaluate a model they
cannot read: there is no federated evaluation in this mode.

What it protects and what it does not (docs/guides/he-server-keyed.md): the model
stays hidden from clients and eavesdroppers; the server reads every client's
updated model.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import INFO, WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from flwr_privacy.he import KeyBundle, Payload, PayloadError
from flwr_privacy.he.model import check_params, decrypt_model, encrypt_model
from flwr_privacy.strategy.validation import RejectFn
from flwr_privacy.strategy.wrapper import StrategyWrapper

__all__ = ["ServerKeyedModel"]


class ServerKeyedModel(StrategyWrapper):
    """Encrypted-model training around ``strategy`` (FedAvg or FedProx).

    Parameters
    ----------
    strategy : Strategy
        A FedAvg-family strategy, possibly inside other layers. Does sampling,
        config and (plaintext) averaging.
    bundle : KeyBundle
        The server's own key pair (with the secret key; clients never get it).
    on_reject : callable, optional
        Told ``(node, reason)`` for each reply that cannot be decrypted.
    """

    def __init__(
        self, strategy: Strategy, *, bundle: KeyBundle, on_reject: RejectFn | None = None
    ) -> None:
        if not bundle.is_private:
            raise ValueError("server-keyed HE: the server must hold its own secret key")
        check_params(bundle)
        super().__init__(strategy)
        self.strategy = strategy
        self.bundle = bundle
        self.on_reject = on_reject

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        start = time.perf_counter()
        encrypted = encrypt_model({k: a.numpy() for k, a in arrays.items()}, self.bundle)
        log(INFO, "configure_train: encrypted the global model in %.3fs",
            time.perf_counter() - start)  # fmt: skip
        record = encrypted.to_arrays()
        for message in messages:
            message.content[self.strategy.arrayrecord_key] = record  # type: ignore[attr-defined]  # FedAvg setting, not on Strategy
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        key, kept = self.strategy.arrayrecord_key, []  # type: ignore[attr-defined]  # FedAvg setting, not on Strategy
        start = time.perf_counter()
        for reply in replies:
            if reply.has_error():
                kept.append(reply)  # the inner strategy logs it
                continue
            try:
                plain = decrypt_model(
                    Payload.from_arrays(reply.content.array_records[key]), self.bundle
                )
            except (PayloadError, KeyError) as e:
                node, reason = reply.metadata.src_node_id, f"invalid encrypted model: {e}"
                log(WARNING, "aggregate_train: rejected reply from node %d: %s", node, reason)
                if self.on_reject is not None:
                    self.on_reject(node, reason)
                continue
            reply.content[key] = ArrayRecord(
                {k: Array(np.ascontiguousarray(v)) for k, v in plain.items()}
            )
            kept.append(reply)
        seconds = time.perf_counter() - start
        arrays, metrics = self.strategy.aggregate_train(server_round, kept)
        if metrics is not None:
            metrics["he-decrypt-s"] = seconds
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return []  # clients cannot read the model; the server evaluates centrally

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return None

    def summary(self) -> None:
        log(INFO, "\t├──> Server-keyed HE: %s key %s held by the server",
            self.bundle.backend, self.bundle.fingerprint)  # fmt: skip
        log(INFO, "\t│\t└── clients train on [[w]]; evaluation is centralized")
        self.strategy.summary()
