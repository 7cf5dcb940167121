"""Box-plot filtering over CKKS-encrypted updates: the server scores what it cannot read.

Protocol per round (CKKS with evaluation keys on the server, two levels):

1. Clients send ``Enc(w_i * u_i)`` as in EncryptedFedAvg (nothing new on their side).
2. The server computes, on ciphertexts only, one encrypted scalar per client and
   score: ``||u_i - c||^2 / d`` with ``c`` the mean of this round's updates
   (``mean-distance``; a coordinate-wise median needs comparisons CKKS cannot do)
   or the global model it sent (``norm``).
3. It sends these scalar ciphertexts, without node ids, in one ``query.he_scores``
   message to one key-holding client, which decrypts them (and only one-value
   ciphertexts, once per round) and returns the values.
4. The server applies the Tukey fences to the values and adds the ciphertexts of
   the clients inside them.

Revealed: to the server and to the one decrypting client, one score per client
per round and score kind (the decrypting client cannot tell which client is
which). Nothing else is decrypted. A malicious server could put a slot of some
other ciphertext into a one-value vector and have it decrypted: up to one value
per client and score per round (README, threat model).
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx

from privacy.he import Payload, encrypted_scores, is_encrypted, score_bound
from privacy.he.protocol import FINGERPRINT_KEY, SCORES_ACTION, SCORES_KEY
from strategies.encrypted import EncryptedAggregation
from strategies.robust import (
    MIN_CLIENTS,
    BoxPlot,
    FilterFn,
    FilterReport,
    box_filter,
    log_report,
)

ATTEMPTS = 3  # key holders asked in turn before a round is skipped


class EncryptedBoxPlot(EncryptedAggregation):
    """Mixin: EncryptedFedAvg/FedProx that drop clients outside the box-plot fences."""

    def __init__(
        self,
        *args: object,
        box: BoxPlot,
        on_filter: FilterFn | None = None,
        query_timeout: float = 120.0,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)
        if box.variant != "client" or "median-distance" in box.scores:
            raise ValueError(
                "over encrypted updates only client-level filtering with 'mean-distance' "
                "or 'norm' scores is possible (medians and per-coordinate fences need "
                "comparisons, which CKKS cannot do)"
            )
        if self.bundle.backend != "ckks":
            raise ValueError("encrypted box-plot filtering needs CKKS (Paillier only adds)")
        self.box = box
        self.on_filter = on_filter
        self.query_timeout = query_timeout
        self._grid: Grid | None = None
        self._global: ArrayRecord | None = None
        self._query_config: dict = {}

    def summary(self) -> None:
        log(INFO, "\t├──> Box-plot filter on encrypted scores: %s", self.box)
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._grid, self._global = grid, arrays
        messages = super().configure_train(server_round, arrays, config, grid)
        self._query_config = {k: v for k, v in config.items() if k.startswith("he.")}
        return messages

    def _select(
        self, server_round: int, kept: list[Message], payloads: list[Payload]
    ) -> tuple[list[Message], list[Payload]]:
        nodes = [r.metadata.src_node_id for r in kept]
        report = FilterReport("client", len(nodes), nodes)
        if len(payloads) < MIN_CLIENTS:
            report.note = f"fewer than {MIN_CLIENTS} replies: no fences"
            log_report(server_round, report, self.on_filter)
            return kept, payloads
        assert self._global is not None
        reference = (
            Payload.from_arrays(self._global)
            if is_encrypted(self._global)
            else {k: a.numpy() for k, a in self._global.items()}
        )
        cts = encrypted_scores(payloads, bundle=self.bundle, kinds=self.box.scores,
                               reference=reference)  # fmt: skip
        values = self._decrypt_remote(server_round, nodes, cts)
        if values is None:
            report.dropped = {n: "no key holder decrypted the scores" for n in nodes}
            report.note = "round skipped: the global model is kept"
            log_report(server_round, report, self.on_filter)
            return [], []
        bound = score_bound(float(payloads[0].header.extra["clip"]))
        invalid = {}
        for kind, msd in values.items():
            for node, v in zip(nodes, msd, strict=True):
                if not -1e-3 <= v <= bound * (1 + 1e-3) + 1e-3 and node not in invalid:
                    invalid[node] = f"{kind} score {v:.4g} outside [0, {bound:g}]: unclipped update"
        scores = {k: np.sqrt(np.clip(v, 0.0, None)) for k, v in values.items()}
        report = box_filter(nodes, scores, self.box, invalid=invalid)
        log_report(server_round, report, self.on_filter)
        keep = [i for i, n in enumerate(nodes) if n not in report.dropped]
        return [kept[i] for i in keep], [payloads[i] for i in keep]

    def _decrypt_remote(
        self, server_round: int, nodes: list[int], cts: dict[str, list[bytes]]
    ) -> dict[str, np.ndarray] | None:
        """Ask key holders, one at a time, to decrypt the score scalars."""
        assert self._grid is not None
        flat = [c for kind in self.box.scores for c in cts[kind]]
        config = ConfigRecord(
            {
                **self._query_config,
                SCORES_KEY: flat,
                FINGERPRINT_KEY: self.bundle.fingerprint,
                "server-round": server_round,
            }  # fmt: skip
        )
        order = np.random.default_rng(server_round).permutation(len(nodes))
        for node in [nodes[i] for i in order[:ATTEMPTS]]:
            message = Message(
                content=RecordDict({"config": config}),
                message_type=f"{MessageType.QUERY}.{SCORES_ACTION}",
                dst_node_id=node,
            )
            replies = list(self._grid.send_and_receive([message], timeout=self.query_timeout))
            problem = "no reply"
            if replies and replies[0].has_error():
                problem = replies[0].error.reason
            elif replies:
                got = np.asarray(replies[0].content["metrics"].get(SCORES_KEY, []), dtype=float)
                if got.shape == (len(flat),) and np.all(np.isfinite(got)):
                    parts = np.split(got, len(self.box.scores))
                    return dict(zip(self.box.scores, parts, strict=True))
                problem = f"expected {len(flat)} finite scores, got {got.shape}"
            log(WARNING, "aggregate_train: node %d did not decrypt the scores: %s", node, problem)
        return None


class EncryptedBoxPlotFedAvg(EncryptedBoxPlot, FedAvg):
    """EncryptedFedAvg over the clients inside the fences of their encrypted scores."""


class EncryptedBoxPlotFedProx(EncryptedBoxPlot, FedProx):
    """EncryptedFedProx with box-plot filtering on encrypted scores."""
