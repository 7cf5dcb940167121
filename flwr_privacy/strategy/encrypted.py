"""EncryptedFedAvg / EncryptedFedProx: weighted aggregation on ciphertexts only.

The strategy holds a public-only key bundle. Clients encrypt weighted updates
(``he_mod``); ``aggregate_train`` checks each payload's tag (scheme, parameters,
key fingerprint) and adds ciphertexts; the encrypted sum becomes the global
model that clients decrypt in the next round. The server never decrypts, so
centralized evaluation is impossible: evaluation is federated.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import replace
from logging import INFO, WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx

from flwr_privacy.he import (
    KeyBundle,
    KeyMismatchError,
    Payload,
    PayloadError,
    aggregate,
    check_contribution,
    is_encrypted,
    layout_of,
    load_bundle,
)
from flwr_privacy.keys import deal_keys
from flwr_privacy.records import HE_RECORD, attach
from flwr_privacy.settings import HeRound, HeSettings
from flwr_privacy.strategy.validation import ReplyValidation, reply_problem, reply_weight
from flwr_privacy.strategy.wrapper import check_evaluate_fn

__all__ = ["AllKeysMismatched", "EncryptedAggregation", "EncryptedFedAvg", "EncryptedFedProx"]


class AllKeysMismatched(RuntimeError):
    """Every reply of a round was made under another key generation than the server's.

    Ends the run (no round can succeed); one bad reply is only refused (``KeyMismatchError``).
    """


class EncryptedAggregation(ReplyValidation):
    """Mixin over Flower's FedAvg family that aggregates encrypted payloads.

    Parameters
    ----------
    he : HeSettings
        Backend, clip and encoding; where the keys come from. May be left out
        when ``bundle`` is given (default settings for its backend).
    bundle : KeyBundle, optional
        Public-only key material loaded by the caller (a bundle with a secret
        key is refused). Default: ``he.server_bundle``, or keys dealt per run.
    num_examples : dict[int, int], optional
        Known training-set sizes per node; the largest sets each round's weight
        scale, so every client weight ``n_i / scale`` is at most 1. Unknown sizes
        are learnt from the first round's replies (which is then unweighted).
    min_contributions : int
        A round whose valid updates are fewer is not aggregated (the model
        stays): distributed DP needs every released sum to hold that many
        noise shares.
    """

    server_blind = True  # the server never decrypts: no centralized evaluation
    noise_slots = 0  # sum room the server's own encrypted noise takes (EncryptedCentralDp)

    def __init__(
        self,
        *args: Any,
        he: HeSettings | None = None,
        bundle: KeyBundle | None = None,
        num_examples: dict[int, int] | None = None,
        min_contributions: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if he is None and bundle is not None:
            he = HeSettings(backend=bundle.backend)
        if not isinstance(he, HeSettings):
            raise TypeError(
                f"{type(self).__name__} needs he=HeSettings(backend='ckks' | 'paillier'), "
                f"got {type(he).__name__}"
            )
        self.he = he
        self._keys = ExitStack()
        self.client_bundle_path = he.client_bundle
        if bundle is None:
            bundle = self._server_bundle()
        if bundle.is_private:
            raise ValueError(
                "the server-side bundle holds a secret key; give the server the server bundle"
            )
        if bundle.backend != he.backend:
            raise ValueError(f"the key bundle is {bundle.backend} but he.backend is {he.backend}")
        self.bundle = bundle
        self.num_examples = dict(num_examples or {})
        self.min_contributions = min_contributions
        self._round = HeRound(
            backend=he.backend, clip=he.clip, bits=he.bits, packed=he.packing == "packed",
            workers=he.workers, max_count=1, weight_scale=1.0,
            weight_key=self.weighted_by_key, server_round=0, seed=he.seed,
            fingerprint=bundle.fingerprint, client_bundle=self.client_bundle_path,
        )  # fmt: skip

    def _key_params(self) -> dict[str, Any]:
        """Parameters for keys this strategy deals itself (filters add evaluation keys)."""
        return dict(self.he.key_params)

    def _server_bundle(self) -> KeyBundle:
        if self.he.server_bundle:
            return load_bundle(self.he.server_bundle, expect_private=False)
        bundle, client_path = self._keys.enter_context(
            deal_keys(self.he.backend, self._key_params())
        )
        weakref.finalize(self, self._keys.close)
        self.client_bundle_path = str(client_path)
        log(WARNING, "EncryptedFedAvg: per-run %s keys %s dealt for a simulation; a "
            "deployment gives the server HeSettings(server_bundle=...) and each SuperNode "
            "its client bundle (node config he-client-bundle)", self.he.backend,
            bundle.fingerprint)  # fmt: skip
        return bundle

    def summary(self) -> None:
        log(
            INFO,
            "\t├──> Encrypted aggregation: %s key %s",
            self.bundle.backend,
            self.bundle.fingerprint,
        )
        log(INFO, "\t│\t└── no centralized evaluation: the server cannot decrypt")
        super().summary()

    def start(self, *args: Any, **kwargs: Any) -> Any:
        """Flower's ``start``; a centralized ``evaluate_fn`` would be handed ciphertext: refused."""
        check_evaluate_fn(self, kwargs.get("evaluate_fn", args[6] if len(args) > 6 else None))
        return super().start(*args, **kwargs)

    def he_round(self, server_round: int, grid: Grid) -> HeRound:
        """This round's record: how many clients a sum holds, the weight scale."""
        nodes = len(list(grid.get_node_ids()))
        max_count = max(int(nodes * self.fraction_train), self.min_train_nodes, 1)
        max_count += self.noise_slots
        scale = max(self.num_examples.values(), default=1)
        return replace(self._round, max_count=max_count, weight_scale=float(scale),
                       server_round=server_round)  # fmt: skip

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._round = self.he_round(server_round, grid)
        if not self.num_examples and server_round == 1:
            log(INFO, "configure_train: client sizes unknown: round 1 weights clients equally; "
                "later rounds weight by the sizes their replies report")  # fmt: skip
        # What every reply of this round must match: the global model's layout, our clip.
        self._layout = (
            Payload.from_arrays(arrays).header.layout
            if is_encrypted(arrays)
            else layout_of({k: a.numpy() for k, a in arrays.items()})
        )
        self._clip = self.he.clip
        self._settings = self._round.encoding
        messages = super().configure_train(server_round, arrays, config, grid)
        return attach(messages, HE_RECORD, self._round.to_record())

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        record = replace(self._round, server_round=server_round).to_record()
        messages = super().configure_evaluate(server_round, arrays, config, grid)
        return attach(messages, HE_RECORD, record)

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
        metrics = self.train_metrics_aggr_fn([r.content for r in kept], self.weighted_by_key)
        metrics["he-aggregate-s"] = seconds
        return summed.to_arrays(), metrics


class EncryptedFedAvg(EncryptedAggregation, FedAvg):
    """FedAvg whose aggregation step adds encrypted payloads; the server never decrypts.

    Clients need ``he_mod`` (``ClientApp(mods=[he_mod])``): it reads the
    ``flwr-privacy.he`` record this strategy writes, encrypts each update and
    decrypts the global model. A reply that fails the server's checks (key
    fingerprint, layout, clip, packing, weight, each ciphertext) is left out of the
    round with a logged reason; the round aggregates the others.

    Parameters
    ----------
    *args, **kwargs
        Flower's ``FedAvg`` arguments (``fraction_train``, ``min_available_nodes``, ...).
    he : HeSettings
        Backend (``"ckks"`` or ``"paillier"``), clip and encoding, and where the keys
        come from. May be left out when ``bundle`` is given.
    bundle : KeyBundle, optional
        Public-only key material loaded by the caller (a bundle with a secret key is
        refused). Default: ``he.server_bundle``, or keys dealt per run (simulation).
    num_examples : dict[int, int], optional
        Known training-set sizes per node id; the largest sets each round's weight
        scale. Unknown sizes are learnt from the first round's replies (which is then
        weighted equally, and logged).
    min_contributions : int
        A round with fewer valid updates is not aggregated (the model stays).

    Raises
    ------
    ValueError
        From ``start``, when given an ``evaluate_fn`` not marked ``handles_ciphertext``:
        the server holds only ciphertext.

    Examples
    --------
    >>> strategy = EncryptedFedAvg(he=HeSettings(backend="ckks"), fraction_train=1.0)
    >>> result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=3)  # doctest: +SKIP
    >>> weights = decrypt_model(result.arrays, strategy.client_bundle_path)  # doctest: +SKIP
    """


class EncryptedFedProx(EncryptedAggregation, FedProx):
    """FedProx (adds ``proximal-mu`` to the train config) over encrypted payloads.

    Parameters
    ----------
    *args, **kwargs
        Flower's ``FedProx`` arguments, ``proximal_mu`` among them.
    he, bundle, num_examples, min_contributions
        As for ``EncryptedFedAvg``.
    """
