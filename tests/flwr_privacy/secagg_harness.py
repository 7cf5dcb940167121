"""A script that plays the SecAgg+ server against the real ``secagg_mod`` of n clients.

Each client is the real mod in front of an honest train function, with its own Flower
``Context`` whose node config carries the operator's trust anchor (a roster made with
``make_roster``). The script builds every stage record itself (so a test can lie in
any of them) and keeps its books in the real ``ServerRound``; each reply is what the
mod returned, error replies included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from flwr_privacy.mods.secagg import make_secagg_mod
from flwr_privacy.records import SECAGG_RECORD
from flwr_privacy.secagg.crypto import new_session
from flwr_privacy.secagg.encoding import FixedPoint, modulus_bits
from flwr_privacy.secagg.graph import new_graph_seed
from flwr_privacy.secagg.identity import NODE_KEY, NODE_ROSTER, ROSTER_FILE, make_roster
from flwr_privacy.secagg.protocol import Advert, RoundParams, ServerRound, ids_to_bytes
from flwr_privacy.secagg.stages import (
    KEYS,
    MASK,
    SHARES,
    SIGN,
    UNMASK,
    adverts_values,
    id_map,
    id_map_values,
    stage_record,
)

SIZE = 6  # model values
CLIP, BITS = 4.0, 16


def delta(node: int) -> np.ndarray:
    return np.random.default_rng(node % 2**32).uniform(-1, 1, SIZE).astype(np.float32)


class Federation:
    """``n`` clients (real mod, honest training) and the books of one scripted server."""

    def __init__(self, n: int, tmp: Path, *, node_config: Mapping[str, Any] | None = None,
                 seed: int = 0) -> None:  # fmt: skip
        rng = np.random.default_rng(seed)
        self.nodes = sorted({int(v) for v in rng.integers(1, 2**63, size=n, dtype=np.int64)})
        self.names = {node: f"client-{i}" for i, node in enumerate(self.nodes)}
        make_roster(self.names.values(), tmp)
        self.contexts = {
            node: Context(run_id=1, node_id=node, state=RecordDict(), run_config={},
                          node_config={NODE_KEY: str(tmp / f"{self.names[node]}.key"),
                                       NODE_ROSTER: str(tmp / ROSTER_FILE),
                                       **(node_config or {})})  # fmt: skip
            for node in self.nodes
        }
        self.mod = make_secagg_mod()
        self.trained: list[int] = []
        self.weight = 10.0  # what every client reports as num-examples
        self.poison: dict[int, np.ndarray] = {}  # node -> the update it returns instead

    # -- the clients -------------------------------------------------------------------------
    def _train(self, msg: Message, context: Context) -> Message:
        self.trained.append(context.node_id)
        arrays = msg.content.array_records["arrays"]
        step = self.poison.get(context.node_id, delta(context.node_id))
        new = arrays["w"].numpy() + step
        content = RecordDict({"arrays": ArrayRecord({"w": Array(new)}),
                              "metrics": MetricRecord({"num-examples": self.weight})})  # fmt: skip
        return Message(content, reply_to=msg)

    def send(self, node: int, record: ConfigRecord, content: RecordDict | None = None) -> Message:
        body = content if content is not None else RecordDict()
        body[SECAGG_RECORD] = record
        msg = Message(body, dst_node_id=node, message_type=MessageType.TRAIN)
        return self.mod(msg, self.contexts[node], self._train)

    # -- the server's books --------------------------------------------------------------------
    def params(self, *, nodes: Iterable[int] | None = None, threshold: int | None = None,
               degree: int | None = None, **changes: Any) -> RoundParams:  # fmt: skip
        members = sorted(nodes if nodes is not None else self.nodes)
        k = degree if degree is not None else len(members) - 1
        values: dict[str, Any] = dict(
            session=new_session(), round=1, participants=tuple(members),
            identities=tuple(self.names[n] for n in members), degree=k,
            graph_seed=new_graph_seed(), threshold=threshold or k // 2 + 1,
            mod_bits=modulus_bits(BITS, len(members)), size=SIZE + 1,
            encoding={"kind": "fixed", "clip": CLIP, "quant-bits": BITS, "weight-scale": 10.0,
                      "weight-key": "num-examples"},
        )  # fmt: skip
        values.update(changes)
        return RoundParams(**values)

    def keys(self, server: ServerRound, params_for: Mapping[int, RoundParams] | None = None
             ) -> dict[int, Message]:  # fmt: skip
        """Stage 1 to every participant (``params_for`` lies to some); adverts booked."""
        replies = {}
        for node in server.params.participants:
            p = (params_for or {}).get(node, server.params)
            reply = self.send(node, stage_record(KEYS, p.round, p.session, **p.to_record()))
            replies[node] = reply
            if not reply.has_error():
                r = reply.content.config_records[SECAGG_RECORD]
                server.add_advert(node, Advert(r["c-pk"], r["s-pk"], r["commit"], r["sig"]))  # type: ignore[arg-type]
        return replies

    def shares(self, server: ServerRound, shown: Mapping[int, Mapping[int, Advert]] | None = None
               ) -> dict[int, Message]:  # fmt: skip
        """Stage 2 (``shown`` replaces the adverts some nodes see); shares booked."""
        replies = {}
        for node in server.adverts:
            adverts = (shown or {}).get(node, server.adverts_for(node))
            rec = stage_record(SHARES, server.round, server.session, **adverts_values(adverts))
            reply = self.send(node, rec)
            replies[node] = reply
            if not reply.has_error():
                cts = id_map(reply.content.config_records[SECAGG_RECORD], "ids", "cts", "test")
                server.add_shares(node, cts)
        return replies

    def mask(self, server: ServerRound, forwarded: Mapping[int, Mapping[int, bytes]] | None = None,
             skip: Iterable[int] = ()) -> dict[int, Message]:  # fmt: skip
        """Stage 3 with the global model 0 (``forwarded`` replaces what some nodes get)."""
        replies = {}
        for node in server.shares:
            if node in set(skip):
                continue
            cts = (forwarded or {}).get(node, server.shares_for(node))
            content = RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(SIZE, np.float32))})})
            rec = stage_record(MASK, server.round, server.session,
                               **id_map_values(cts, "ct-ids", "cts"))  # fmt: skip
            reply = self.send(node, rec, content)
            replies[node] = reply
            if not reply.has_error():
                server.add_masked(node, reply.content.config_records[SECAGG_RECORD]["masked"])  # type: ignore[arg-type]
        return replies

    def sign(self, server: ServerRound, sets: Mapping[int, list[int]] | None = None,
             skip: Iterable[int] = ()) -> dict[int, Message]:  # fmt: skip
        """Stage 4: survivors sign (``sets`` shows some another set); honest signatures booked."""
        survivors = server.close_inputs()
        replies = {}
        for node in survivors:
            if node in set(skip):
                continue
            shown = (sets or {}).get(node, survivors)
            reply = self.send(node, stage_record(SIGN, server.round, server.session,
                                                 survivors=ids_to_bytes(shown)))  # fmt: skip
            replies[node] = reply
            if not reply.has_error() and shown == survivors:
                server.add_signature(node, reply.content.config_records[SECAGG_RECORD]["sig"])  # type: ignore[arg-type]
        return replies

    def unmask_request(self, server: ServerRound, node: int, survivors: list[int] | None = None,
                       signatures: Mapping[int, bytes] | None = None) -> Message:  # fmt: skip
        sigs = server.signatures if signatures is None else signatures
        rec = stage_record(UNMASK, server.round, server.session,
                           survivors=ids_to_bytes(survivors or server.survivors),
                           **id_map_values(dict(sigs), "signer-ids", "signatures"))  # fmt: skip
        return self.send(node, rec)

    def unmask(self, server: ServerRound) -> dict[int, dict[int, bytes]]:
        out = {}
        for node in server.signatures:
            reply = self.unmask_request(server, node)
            assert not reply.has_error(), reply.error.reason
            out[node] = id_map(reply.content.config_records[SECAGG_RECORD], "ids", "shares", "t")
        return out

    def honest_round(self, server: ServerRound) -> dict[int, dict[int, bytes]]:
        """Every stage as the protocol says; the survivors' share responses."""
        for stage in (self.keys, self.shares, self.mask, self.sign):
            bad = {n: r.error.reason for n, r in stage(server).items() if r.has_error()}
            assert not bad, bad
        return self.unmask(server)

    @staticmethod
    def mean(server: ServerRound, total: np.ndarray) -> np.ndarray:
        mean, _ = FixedPoint(clip=CLIP, quant_bits=BITS).decode(total, len(server.survivors))
        return mean


def error(reply: Message) -> str:
    assert reply.has_error(), "the mod accepted what it should refuse"
    return str(reply.error.reason)
