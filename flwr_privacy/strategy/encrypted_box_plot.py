"""Box-plot filtering over CKKS-encrypted updates: the server scores what it cannot read.

Protocol per round (CKKS with evaluation keys on the server, two levels):

1. Clients send ``Enc(w_i * u_i)`` as in EncryptedFedAvg (nothing new on their side).
2. The server computes, on ciphertexts only, encrypted scalars per client:
   ``||u_i - c||^2 / d`` with ``c`` the global model it sent (``norm``, always
   computed: it is also the range check) and, if asked, the mean of this
   round's updates (``mean-distance``; a coordinate-wise median needs
   comparisons CKKS cannot do).
3. It sends the scalar ciphertexts, without node ids, in ``query.he_scores``
   messages to the scored clients (key holders) until two answers agree. A
   client decrypts only one-value ciphertexts, only in a round it trained in,
   once, and rounds the values to 3 significant digits.
4. The server applies the Tukey fences and adds the ciphertexts of the clients
   inside them; a ``norm`` score outside ``[0, (2 clip)^2]`` means an unclipped
   update, which is dropped.

Revealed (honest-but-curious server): to the server and to the (two or more)
decrypting clients, one or two scores per client per round, without node ids
for the clients. Nothing else is decrypted. docs/guides/robust.md ("Over encrypted updates")
states what a malicious server could still obtain.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx

from flwr_privacy.he import Payload, backend_for, encrypted_scores, is_encrypted, score_bound
from flwr_privacy.he.protocol import FINGERPRINT_KEY, SCORES_ACTION, SCORES_KEY
from flwr_privacy.records import HE_RECORD
from flwr_privacy.strategy.box_plot import (
    MIN_CLIENTS,
    BoxPlot,
    FilterFn,
    FilterReport,
    box_filter,
    log_report,
)
from flwr_privacy.strategy.encrypted import EncryptedAggregation

__all__ = ["ATTEMPTS", "EncryptedBoxPlot", "EncryptedBoxPlotFedAvg", "EncryptedBoxPlotFedProx"]

ATTEMPTS = 4  # key holders asked in turn for two agreeing answers before a round is skipped


class EncryptedBoxPlot(EncryptedAggregation):
    """Mixin: EncryptedFedAvg/FedProx that drop clients outside the box-plot fences."""

    def __init__(
        self,
        *args: Any,
        box: BoxPlot,
        on_filter: FilterFn | None = None,
        query_timeout: float = 120.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if box.variant != "client" or "median-distance" in box.scores:
            raise ValueError(
                "over encrypted updates only client-level filtering with 'mean-distance' "
                "or 'norm' scores is possible (medians and per-coordinate fences need "
                "comparisons, which CKKS cannot do)"
            )
        if not backend_for(self.bundle.backend).multiplies:
            raise ValueError(
                "encrypted box-plot filtering needs CKKS (a backend that multiplies "
                f"ciphertexts); {self.bundle.backend} only adds"
            )
        self.box = box
        self.on_filter = on_filter
        self.query_timeout = query_timeout
        self._grid: Grid | None = None
        self._global: ArrayRecord | None = None

    def summary(self) -> None:
        log(INFO, "\t├──> Box-plot filter on encrypted scores: %s", self.box)
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._grid, self._global = grid, arrays
        return list(super().configure_train(server_round, arrays, config, grid))

    def _key_params(self) -> dict[str, Any]:
        """Per-run keys need relinearization and Galois keys, and one more level, for scores."""
        return {"coeff-mod-bit-sizes": [60, 40, 40, 60], **super()._key_params(),
                "eval-keys": True}  # fmt: skip

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
        # ``norm`` is always computed: against the trusted global model it is the range check.
        kinds = tuple(dict.fromkeys(("norm", *self.box.scores)))
        cts = encrypted_scores(payloads, bundle=self.bundle, kinds=kinds, reference=reference)
        values = self._decrypt_remote(server_round, kinds, cts, nodes)
        if values is None:
            report.note = "round skipped (global model kept): no two key holders agreed on scores"
            log_report(server_round, report, self.on_filter)
            return [], []
        bound = score_bound(self._clip)
        invalid = {
            node: f"norm score {v:.4g} outside [0, {bound:g}]: unclipped update"
            for node, v in zip(nodes, values["norm"], strict=True)
            if not -1e-3 <= v <= bound * (1 + 1e-3) + 1e-3
        }
        used = self.box.scores
        if invalid and "mean-distance" in used:  # the mean included the unclipped updates
            used = ("norm",)
            report.note = "mean-distance ignored this round: the mean included unclipped updates"
        scores = {k: np.sqrt(np.clip(values[k], 0.0, None)) for k in used}
        note, report = report.note, box_filter(nodes, scores, self.box, invalid=invalid)
        report.note = report.note or note
        log_report(server_round, report, self.on_filter)
        keep = [i for i, n in enumerate(nodes) if n not in report.dropped]
        return [kept[i] for i in keep], [payloads[i] for i in keep]

    def _decrypt_remote(
        self,
        server_round: int,
        kinds: tuple[str, ...],
        cts: dict[str, list[bytes]],
        candidates: list[int],
    ) -> dict[str, np.ndarray] | None:
        """Scores from the first two of ``candidates`` (key holders) that agree; None if none do.

        The candidates are the clients being scored (in a hierarchical run, the
        edge's own clients: each client decrypts one query per round).

        Two independent answers guard against one malicious decrypting client
        steering the filter (it would have to collude with another).
        """
        assert self._grid is not None
        flat = [c for kind in kinds for c in cts[kind]]
        config = ConfigRecord(
            {SCORES_KEY: flat, FINGERPRINT_KEY: self.bundle.fingerprint,
             "server-round": server_round}
        )  # fmt: skip
        answers: list[np.ndarray] = []
        for i in np.random.default_rng().permutation(len(candidates))[:ATTEMPTS]:
            got = self._ask(int(candidates[i]), config, len(flat))
            if got is None:
                continue
            if any(np.allclose(got, other, rtol=1e-2, atol=1e-6) for other in answers):
                return dict(zip(kinds, np.split(got, len(kinds)), strict=True))
            answers.append(got)
        return None

    def _ask(self, node: int, config: ConfigRecord, expected: int) -> np.ndarray | None:
        """One key holder's decrypted scores, or None (logged) for any failure."""
        assert self._grid is not None
        message = Message(
            content=RecordDict({"config": config, HE_RECORD: self._round.to_record()}),
            message_type=f"{MessageType.QUERY}.{SCORES_ACTION}",
            dst_node_id=node,
        )
        problem = "no reply"
        try:
            replies = list(self._grid.send_and_receive([message], timeout=self.query_timeout))
            if replies and replies[0].has_error():
                problem = str(replies[0].error.reason)
            elif replies:
                got = np.asarray(replies[0].content.metric_records["metrics"][SCORES_KEY], float)
                if got.shape == (expected,) and np.all(np.isfinite(got)):
                    return got
                problem = f"expected {expected} finite scores, got shape {got.shape}"
        except (KeyError, TypeError, ValueError) as e:
            problem = f"malformed reply ({type(e).__name__}: {e})"
        log(WARNING, "aggregate_train: node %d did not decrypt the scores: %s", node, problem)
        return None


class EncryptedBoxPlotFedAvg(EncryptedBoxPlot, FedAvg):
    """EncryptedFedAvg over the clients inside the fences of their encrypted scores.

    Each round the server computes every client's score (``mean-distance`` or
    ``norm``) on ciphertexts, asks the round's clients to decrypt the scores only, and
    adds the updates inside the fences. Needs CKKS keys with evaluation keys
    (``python -m flwr_privacy.keys generate --backend ckks --eval-keys
    --coeff-mod-bit-sizes 60,40,40,60``).

    Parameters
    ----------
    *args, **kwargs
        ``EncryptedFedAvg``'s arguments (``he``, ``bundle``, ...) and Flower's ``FedAvg``'s.
    box : BoxPlot
        The filter: client-level only, with ``mean-distance`` or ``norm`` scores
        (medians and per-coordinate fences need comparisons, which CKKS cannot do).
    on_filter : callable, optional
        Called with each round's filter record (received, kept, dropped, scores, fences).
    query_timeout : float
        Seconds the server waits for the clients' decrypted scores.

    Raises
    ------
    ValueError
        A coordinate-level or median-score box plot, or a backend that cannot multiply
        (Paillier).
    """


class EncryptedBoxPlotFedProx(EncryptedBoxPlot, FedProx):
    """EncryptedFedProx with box-plot filtering on encrypted scores.

    Parameters
    ----------
    *args, **kwargs
        ``EncryptedFedProx``'s and Flower's ``FedProx``'s arguments.
    box, on_filter, query_timeout
        As for ``EncryptedBoxPlotFedAvg``.
    """
