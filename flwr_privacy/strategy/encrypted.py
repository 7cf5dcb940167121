"""EncryptedFedAvg / EncryptedFedProx: weighted aggregation on ciphertexts only.

The strategy holds a public-only key bundle. Clients encrypt weighted updates
(``he_mod``); ``aggregate_train`` checks each payload's tag (scheme, parameters,
key fingerprint) and adds ciphertexts; the encrypted sum becomes the global
model that clients decrypt in the next round. The server never decrypts, so
centralized evaluation is impossible: evaluation is federated.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import INFO, WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx

from flwr_privacy.he import (
    EncodeSettings,
    KeyBundle,
    KeyMismatchError,
    Payload,
    PayloadError,
    aggregate,
    check_contribution,
    is_encrypted,
    layout_of,
)
from flwr_privacy.strategy.validation import ReplyValidation, reply_problem, reply_weight


class AllKeysMismatched(RuntimeError):
    """Every reply of a round was made under another key generation than the server's.

    Ends the run (no round can succeed); one bad reply is only refused (``KeyMismatchError``).
    """


class EncryptedAggregation(ReplyValidation):
    """Mixin over Flower's FedAvg family that aggregates encrypted payloads.

    Parameters
    ----------
    bundle : KeyBundle
        Public-only key material (a bundle with a secret key is refused).
    num_examples : dict[int, int], optional
        Known training-set sizes per node; the largest sets each round's weight
        scale, so every client weight ``n_i / scale`` is at most 1.
    min_contributions : int
        A round whose valid updates are fewer is not aggregated (the model
        stays): distributed DP needs every released sum to hold that many
        noise shares.
    """

    def __init__(
        self,
        *args: object,
        bundle: KeyBundle,
        num_examples: dict[int, int] | None = None,
        min_contributions: int = 1,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)
        if bundle.is_private:
            raise ValueError(
                "the server-side bundle holds a secret key; give the server the server bundle"
            )
        self.bundle = bundle
        self.num_examples = dict(num_examples or {})
        self.min_contributions = min_contributions

    def summary(self) -> None:
        log(
            INFO,
            "\t├──> Encrypted aggregation: %s key %s",
            self.bundle.backend,
            self.bundle.fingerprint,
        )
        log(INFO, "\t│\t└── no centralized evaluation: the server cannot decrypt")
        super().summary()  # type: ignore[misc]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = len(list(grid.get_node_ids()))
        config["he.max-count"] = max(int(nodes * self.fraction_train), self.min_train_nodes, 1)  # type: ignore[attr-defined]
        config["he.weight-scale"] = max(self.num_examples.values(), default=1)
        # What every reply of this round must match: the global model's layout, our clip.
        self._layout = (
            Payload.from_arrays(arrays).header.layout
            if is_encrypted(arrays)
            else layout_of({k: a.numpy() for k, a in arrays.items()})
        )
        self._clip = float(config["he.clip"])
        self._settings = EncodeSettings(
            clip=self._clip,
            bits=int(config["he.bits"]),
            max_count=int(config["he.max-count"]),
            packed=bool(config["he.packed"]),
        )
        return super().configure_train(server_round, arrays, config, grid)

    def _check(self, payload: Payload) -> None:
        """Refuse a payload this round's sum cannot take, before it meets the others.

        Every header field is compared with this server's own expectations: its
        key, the global model's layout, its clip and encoding settings (the
        Paillier packing plan), the weight bounds and one contribution.
        """
        check_contribution(
            payload, bundle=self.bundle, settings=self._settings, layout=self._layout
        )

    def _payloads(
        self, replies: Iterable[Message]
    ) -> tuple[list[Message], list[Payload], list[str]]:
        """The replies whose payloads pass ``_check``; any failure refuses that reply only."""
        kept, payloads, mismatches = [], [], []
        for reply in replies:
            if reply.has_error():
                log(
                    WARNING,
                    "aggregate_train: node %d failed: %s",
                    reply.metadata.src_node_id,
                    reply.error.reason,
                )
                continue
            node = reply.metadata.src_node_id
            try:
                problem = reply_problem(
                    reply.content, weight_key=self.weighted_by_key, arrays_key=None, expected=None
                )
                if problem is not None:
                    raise PayloadError(problem)
                payload = Payload.from_arrays(reply.content.array_records[self.arrayrecord_key])
                self._check(payload)
            except Exception as e:  # noqa: BLE001 - a reply can be refused, never crash the run
                detail = str(e) if isinstance(e, PayloadError) else f"{type(e).__name__}: {e}"
                reason = f"invalid encrypted update: {detail}"
                log(WARNING, "aggregate_train: rejected reply from node %d: %s", node, reason)
                if self.on_reject is not None:
                    self.on_reject(node, reason)
                if isinstance(e, KeyMismatchError):
                    mismatches.append(reason)
                continue
            kept.append(reply)
            payloads.append(payload)
        return kept, payloads, mismatches

    def _select(
        self, server_round: int, kept: list[Message], payloads: list[Payload]
    ) -> tuple[list[Message], list[Payload]]:
        """Which valid replies to add up; all of them here, filters override this."""
        return kept, payloads

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        kept, payloads, mismatches = self._payloads(replies)
        if not payloads:
            if mismatches and len(mismatches) == len([r for r in replies if not r.has_error()]):
                raise AllKeysMismatched(
                    f"round {server_round}: every client encrypted under another key than the "
                    f"server's ({self.bundle.fingerprint}); {mismatches[0]}"
                )
            return None, None
        kept, payloads = self._select(server_round, kept, payloads)
        if len(payloads) < max(self.min_contributions, 1):
            if payloads:
                log(WARNING, "aggregate_train: round %d not aggregated: %d valid updates, fewer "
                    "than the %d its sum must hold", server_round, len(payloads),
                    self.min_contributions)  # fmt: skip
            return None, None
        for reply in kept:  # only aggregated clients set the next round's weight scale
            size = int(reply_weight(reply.content, self.weighted_by_key))
            self.num_examples[reply.metadata.src_node_id] = size
        start = time.perf_counter()
        try:
            summed = aggregate(payloads, bundle=self.bundle)
        except PayloadError as e:  # checked per reply above; never end the run over it
            log(WARNING, "aggregate_train: round %d not aggregated: %s", server_round, e)
            return None, None
        seconds = time.perf_counter() - start
        log(INFO, "aggregate_train: added %d encrypted updates in %.3fs", len(payloads), seconds)
        metrics = self.train_metrics_aggr_fn([r.content for r in kept], self.weighted_by_key)  # type: ignore[attr-defined]
        metrics["he-aggregate-s"] = seconds
        return summed.to_arrays(), metrics


class EncryptedFedAvg(EncryptedAggregation, FedAvg):
    """FedAvg whose aggregation step works on encrypted payloads."""


class EncryptedFedProx(EncryptedAggregation, FedProx):
    """FedProx (adds ``proximal-mu`` to the train config) over encrypted payloads."""
