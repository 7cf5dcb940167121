"""SecAggPlus: secure aggregation (SecAgg+) as a layer over FedAvg / FedProx.

``configure_train`` runs the key and share stages through the grid before the
inner strategy's train messages go out (carrying each client's relayed
shares); ``aggregate_train`` collects the masked inputs, runs the unmasking
stage and decodes the sum into the new global model. The server learns the
weighted sum of the updates of a survivor set a quorum of clients signed (and hence
the aggregate model, which it may evaluate centrally); with roster trust, never one
honest client's update even if it lies, unless it colludes with ``t`` or more clients
(``t`` within each client's floors; docs/guides/secagg.md says exactly what holds).

``groups`` (node -> group, e.g. the edges of a terminal-edge-cloud hierarchy)
runs one SecAgg+ instance per group: each edge unmasks only its own sum and the
cloud adds the edge sums. ``robust=GroupFilter(size=g)`` draws fresh random groups of at
least ``g`` every round and filters the group sums before averaging
(``flwr_privacy.secagg.groups``: robust aggregation while the server stays blind).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common import log
from flwr.common.serde import recorddict_to_proto
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from flwr_privacy.dp.ddg import DdgPlan, decode, plan_ddg
from flwr_privacy.records import METRICS, SECAGG_RECORD, as_float, flatten, unflatten
from flwr_privacy.secagg.crypto import SecAggError, new_session
from flwr_privacy.secagg.encoding import FixedPoint, modulus_bits
from flwr_privacy.secagg.graph import new_graph_seed
from flwr_privacy.secagg.groups import (
    DROPS_GROUPS,
    GroupFilter,
    Suspicion,
    chunk_groups,
    filter_groups,
    random_order,
)
from flwr_privacy.secagg.identity import SimulatedRoster, check_name
from flwr_privacy.secagg.protocol import Advert, RoundParams, ServerRound, ids_to_bytes
from flwr_privacy.secagg.settings import SecAggSettings
from flwr_privacy.secagg.stages import (
    HELLO,
    KEYS,
    MASK,
    SHARES,
    SIGN,
    SIM_TRUST_DIR,
    UNMASK,
    adverts_values,
    id_map,
    id_map_values,
    read,
    stage_record,
)
from flwr_privacy.strategy.wrapper import StrategyWrapper

__all__ = ["RoundFn", "SecAggPlus", "StageStats", "content_bytes"]

RoundFn = Callable[[int, dict[str, Any]], None]


def content_bytes(content: RecordDict) -> int:
    """Serialized size of a message's content, as Flower ships it."""
    return int(recorddict_to_proto(content).ByteSize())


@dataclass
class StageStats:
    messages: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    seconds: float = 0.0
    failed: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "bytes-down": self.bytes_down,
            "bytes-up": self.bytes_up,
            "seconds": round(self.seconds, 4),
            "failed": {str(k): v for k, v in self.failed.items()},
        }


def _destinations(messages: Iterable[Message]) -> dict[str, int]:
    """Message id -> destination node, for pushed messages.

    Errors the SuperLink makes itself (e.g. "Node Unavailable" for a node that
    stopped sending heartbeats) come from the SuperLink's own node id; the id of
    the message they answer recovers the node.
    """
    return {m.metadata.message_id: m.metadata.dst_node_id for m in messages}


Aggregate = tuple[ArrayRecord | None, MetricRecord | None]


class SecAggPlus(StrategyWrapper):
    """SecAgg+ (Bell et al., CCS 2020) around a FedAvg-family strategy.

    Parameters
    ----------
    inner : Strategy
        FedAvg or FedProx (anything whose aggregation is a weighted mean of the
        replies' arrays); its ``configure_train`` picks the clients and its
        ``train_metrics_aggr_fn`` aggregates the replies' metrics.
    secagg : SecAggSettings
        Threshold, graph degree, quantization, stage timeout and trust.
    groups : mapping, optional
        Node id -> group (e.g. edge); one SecAgg+ instance per group, sums added.
    robust : GroupFilter, optional
        Fresh random groups of at least ``robust.size`` every round (OS CSPRNG), one SecAgg+
        instance each; a robust filter over the group means instead of their sum, and (with
        ``robust.suspicion``) clients whose groups are dropped too often left out of later
        rounds. The server learns every group's mean and which groups were dropped.
    num_examples : mapping, optional
        Known training-set sizes; the largest scales the FedAvg weights (else
        learnt from the previous round's replies; the first round is unweighted).
    on_round : callable, optional
        Receives ``(round, report)``: stages (messages, bytes, seconds), dropouts,
        recovered clients and refusals, for results.json.
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        secagg: SecAggSettings,
        groups: Mapping[int, int] | None = None,
        robust: GroupFilter | None = None,
        num_examples: Mapping[int, int] | None = None,
        on_round: RoundFn | None = None,
    ) -> None:
        super().__init__(inner)
        if not isinstance(secagg, SecAggSettings):
            raise TypeError(
                f"SecAggPlus needs secagg=SecAggSettings(...), got {type(secagg).__name__}"
            )
        self.secagg = secagg
        self.groups = dict(groups or {})
        self.weight_scale = float(max(num_examples.values())) if num_examples else 1.0
        self.on_round = on_round
        self._grid: Grid | None = None
        self._rounds: dict[int, ServerRound] = {}
        self._like = ArrayRecord()
        self._mask_sent = 0.0
        self._reference = np.zeros(0)
        self._stats: dict[str, StageStats] = {}
        self._mask_messages: list[Message] = []
        self._report: dict[str, Any] = {}
        self._encoding = FixedPoint(clip=secagg.clip, quant_bits=secagg.quant_bits)
        self._plan: DdgPlan | None = None
        self._identities: dict[int, str] = {}
        self._sampled = 0
        self._order: list[int] = []  # robust groups: the round's CSPRNG order, drawn once
        self._sim: SimulatedRoster | None = None
        if secagg.trust == "simulated":
            self._sim = SimulatedRoster()
        if secagg.dp is not None and self.groups:
            raise ValueError(
                "distributed DP under SecAgg+ sizes the noise of one sum; with fixed groups "
                "(edges) every edge sum is a release of its own: use it without groups, or with "
                "robust=GroupFilter(...), whose plan covers every group sum"
            )
        if robust is not None and self.groups:
            raise ValueError("SecAggPlus takes fixed groups or robust=GroupFilter(...) (fresh "
                             "random groups every round), not both")  # fmt: skip
        self.robust = robust
        self.suspicion = (Suspicion(alpha=robust.alpha, min_rounds=robust.min_rounds,
                                    planned=robust.rounds)
                          if robust is not None and robust.suspicion else None)  # fmt: skip

    def summary(self) -> None:
        s = self.secagg
        log(
            INFO,
            "\t├──> SecAgg+: threshold %s, neighbours %s, %d-bit values, clip %g, %s trust",
            s.threshold,
            s.neighbours or "~2 log2 n",
            s.quant_bits,
            s.clip,
            s.trust,
        )
        if self._sim is not None:
            log(WARNING, "SecAgg+ trust is SIMULATED: the server deals every client's signing "
                "key, so nothing holds against a lying server (use trust='roster' and node-config "
                "keys in a deployment)")  # fmt: skip
        self.inner.summary()

    # -- stages ---------------------------------------------------------------------------------
    def _exchange(
        self,
        stage: str,
        records: Mapping[int, ConfigRecord],
        content: Mapping[int, RecordDict] | None = None,
    ) -> dict[int, ConfigRecord]:
        """Send one stage's records; the nodes' SecAgg reply records (failures logged)."""
        assert self._grid is not None
        stats = self._stats.setdefault(stage, StageStats())
        failed: dict[int, str] = {}
        messages = []
        for node, record in records.items():
            body = content[node] if content is not None else RecordDict()
            body[SECAGG_RECORD] = self._with_trust(record)
            stats.bytes_down += content_bytes(body)
            messages.append(Message(content=body, message_type=MessageType.TRAIN, dst_node_id=node))
        start = time.perf_counter()
        replies = list(self._grid.send_and_receive(messages, timeout=self.secagg.timeout))
        stats.seconds += time.perf_counter() - start
        stats.messages += len(messages)
        out: dict[int, ConfigRecord] = {}
        sent = _destinations(messages)
        for reply in replies:
            node = sent.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            if reply.has_error():
                failed[node] = str(reply.error.reason)
                continue
            stats.bytes_up += content_bytes(reply.content)
            answer = reply.content.config_records.get(SECAGG_RECORD)
            if answer is None:
                failed[node] = (f"no '{SECAGG_RECORD}' record in the reply: the ClientApp needs "
                                "secagg_mod first in ClientApp(mods=[secagg_mod, ...])")
                continue
            out[node] = answer
        for node in set(records) - set(out) - set(failed):
            failed[node] = "no reply before the stage timeout"
        for node, why in failed.items():
            log(WARNING, "SecAgg+ %s: node %d left out: %s", stage, node, why)
        stats.failed.update(failed)
        return out

    def _with_trust(self, record: ConfigRecord) -> ConfigRecord:
        """Under simulated trust, every stage names where the dealt keys are."""
        if self._sim is not None:
            record[SIM_TRUST_DIR] = str(self._sim.directory)
        return record

    def _learn_identities(self, nodes: list[int]) -> list[int]:
        """Roster identities of ``nodes`` (a hello for new ones); the nodes that have one."""
        if self._sim is not None:
            self._sim.admit(nodes)
            self._identities.update({n: self._sim.identity(n) for n in nodes})
            return nodes
        new = [n for n in nodes if n not in self._identities]
        if new:
            replies = self._exchange(HELLO, {n: ConfigRecord({"stage": HELLO}) for n in new})
            for node, record in replies.items():
                try:
                    name = read(record, "identity", str, f"node {node}")
                    self._identities[node] = check_name(name)
                except SecAggError as e:
                    self._stats[HELLO].failed[node] = str(e)
        return [n for n in nodes if n in self._identities]

    def _degree(self, n: int) -> int:
        """The graph degree; distributed DP uses the complete graph (clients refuse less: only
        then is the released sum over the whole survivor set)."""
        return n - 1 if self.secagg.dp is not None else self.secagg.degree(n)

    def _params(self, server_round: int, session: bytes, members: list[int], size: int,
                mod_bits: int) -> RoundParams:  # fmt: skip
        k = self._degree(len(members))
        if self._plan is not None:
            encoding: dict[str, Any] = {"kind": "ddg", **self._plan.to_record()}
        else:
            encoding = {"kind": "fixed", "clip": float(self.secagg.clip),
                        "quant-bits": self.secagg.quant_bits,
                        "weight-scale": float(self.weight_scale),
                        "weight-key": self.weighted_by_key}  # fmt: skip
        dp = self.secagg.dp
        return RoundParams(
            session=session, round=server_round, participants=tuple(sorted(members)),
            identities=tuple(self._identities[n] for n in sorted(members)), degree=k,
            graph_seed=new_graph_seed(), threshold=self.secagg.threshold_for(k),
            mod_bits=mod_bits, size=size, encoding=encoding,
            max_dropouts=dp.max_dropouts if dp is not None else None,
        )  # fmt: skip

    def _setup(self, server_round: int, nodes: list[int], size: int) -> dict[int, ServerRound]:
        """Parameters per group; modulus for the clients a sum may hold."""
        if self.robust is not None:  # the round's one draw, cut again without dropped nodes
            alive = set(nodes)
            drawn = chunk_groups([n for n in self._order if n in alive], self.robust.size)
            self.groups = {n: i for i, group in enumerate(drawn) for n in group}
            nodes = [n for n in nodes if n in self.groups]
            if not drawn:
                log(WARNING, "SecAgg+ round %d: %d client(s), fewer than one group of %d: "
                    "nothing aggregated", server_round, len(alive), self.robust.size)  # fmt: skip
                return {}
        by_group: dict[int, list[int]] = {}
        for node in nodes:
            by_group.setdefault(self.groups.get(node, 0), []).append(node)
        if not by_group:
            return {}
        most = self.secagg.max_clients or max(len(g) for g in by_group.values())
        if self.robust is not None and not self.secagg.max_clients:
            most = 2 * self.robust.size - 1  # the largest group chunk_groups makes
        dp = self.secagg.dp
        mod_bits = dp.bits if dp is not None else modulus_bits(self.secagg.quant_bits, most)
        if mod_bits > 32:
            raise ValueError(
                f"{len(nodes)} clients at {self.secagg.quant_bits} bits need a modulus "
                "above 2^32: lower SecAggSettings.quant_bits"
            )
        if dp is not None and self._plan is None:
            if self.robust is not None:  # every group: size .. 2 size - 1 clients
                self._plan = self._plan_dp(self.robust.size, size - 1, clients=most)
            else:
                self._plan = self._plan_dp(len(nodes), size - 1)
        rounds = {}
        session = new_session()
        for group, members in sorted(by_group.items()):
            if len(members) < 2:
                log(
                    WARNING,
                    "SecAgg+: group %d has %d client(s); a sum of one is its update: "
                    "left out this round",
                    group,
                    len(members),
                )
                continue
            params = self._params(server_round, session, members, size, mod_bits)
            rounds[group] = ServerRound(params)
        return rounds

    def _plan_dp(self, n: int, dim: int, clients: int | None = None) -> DdgPlan:
        """Grid and per-client noise for the whole run, from the first round's clients.

        ``n`` is the smallest sum's clients (its honest shares carry the budget; a larger
        group holds more), ``clients`` the largest sum's (the grid must hold its range).
        """
        dp = self.secagg.dp
        assert dp is not None
        t = self.secagg.threshold_for(self._degree(n))
        honest = n - (t - 1) - dp.max_dropouts
        if honest < 1:
            raise ValueError(
                f"distributed DP: {n} clients with threshold {t} and "
                f"{dp.max_dropouts} allowed dropouts leave no honest noise: lower the threshold "
                "or max_dropouts, or sample more clients"
            )
        plan = plan_ddg(
            epsilon=dp.epsilon,
            delta=dp.delta,
            sample_rate=dp.sample_rate,
            rounds=dp.rounds,
            l2_clip=dp.l2_clip,
            dim=dim,
            honest=honest,
            bits=dp.bits,
            clients=clients or n,
            update_norm=dp.update_norm,
        )
        log(
            INFO,
            "SecAgg+ distributed DP: %d honest of %d (t = %d), per-client sigma %.4g, grid %.3g",
            honest,
            n,
            t,
            plan.sigma,
            plan.gamma,
        )
        return plan

    def _group_of(self, node: int) -> ServerRound | None:
        for rnd in self._rounds.values():
            if node in rnd.graph:
                return rnd
        return None

    def _keys_and_shares(self, server_round: int, nodes: list[int], size: int) -> None:
        """Stages 1-2; restarted without nodes that did not advertise, or did not share.

        Every client requires the keys, then the shares, of all its neighbours in the signed
        graph, so a dropout in either stage means a restart with fresh parameters.
        """
        for attempt in range(self.secagg.max_restarts + 1):
            last = attempt == self.secagg.max_restarts
            self._rounds = self._setup(server_round, nodes, size)
            members = {n: r for r in self._rounds.values() for n in r.graph}
            keys = self._exchange(KEYS, {
                n: stage_record(KEYS, server_round, r.session, **r.params.to_record())
                for n, r in members.items()
            })  # fmt: skip
            for node, record in keys.items():
                who = f"node {node}"
                try:
                    advert = Advert(*(read(record, key, bytes, who)
                                      for key in ("c-pk", "s-pk", "commit", "sig")))  # fmt: skip
                    members[node].add_advert(node, advert)
                except SecAggError as e:
                    self._stats[KEYS].failed[node] = str(e)
                    log(WARNING, "SecAgg+ keys: %s", e)
            advertisers = sorted(n for r in self._rounds.values() for n in r.adverts)
            if self._restart(server_round, attempt, set(members), advertisers, "advertise keys"):
                nodes = advertisers
                continue
            share_requests = {
                node: stage_record(SHARES, server_round, rnd.session,
                                   **adverts_values(rnd.adverts_for(node)))
                for node, rnd in members.items() if node in rnd.adverts
            }  # fmt: skip
            shares = self._exchange(SHARES, share_requests)
            for node, record in shares.items():
                try:
                    members[node].add_shares(node, id_map(record, "ids", "cts", f"node {node}"))
                except SecAggError as e:
                    self._stats[SHARES].failed[node] = str(e)
                    log(WARNING, "SecAgg+ shares: %s", e)
            sharers = sorted(n for r in self._rounds.values() for n in r.shares)
            if last or not self._restart(server_round, attempt, set(members), sharers, "share"):
                return
            nodes = sharers

    def _restart(self, server_round: int, attempt: int, members: set[int], kept: list[int],
                 what: str) -> bool:  # fmt: skip
        """Whether stages 1-2 restart with ``kept``: some members did not ``what``."""
        missing = sorted(members - set(kept))
        if not missing or attempt == self.secagg.max_restarts or len(kept) < 2:
            return False
        self._report["restarts"] = attempt + 1
        log(INFO, "SecAgg+ round %d: %d node(s) did not %s (%s): restarting the key stages "
            "without them", server_round, len(missing), what, missing[:5])  # fmt: skip
        return True

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._grid = grid
        self._stats, self._report = {}, {}
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self._order = random_order([m.metadata.dst_node_id for m in messages])
        if self.suspicion is not None and self.suspicion.excluded:
            out_ = self.suspicion.excluded
            left = [m for m in messages if m.metadata.dst_node_id in out_]
            messages = [m for m in messages if m.metadata.dst_node_id not in out_]
            if left:
                log(INFO, "SecAgg+ round %d: %d suspected client(s) left out: %s", server_round,
                    len(left), sorted(m.metadata.dst_node_id for m in left)[:10])  # fmt: skip
        self._sampled = len(messages)
        self._reference, self._like = flatten(arrays), arrays
        size = self._reference.size + 1
        nodes = self._learn_identities([m.metadata.dst_node_id for m in messages])
        self._keys_and_shares(server_round, nodes, size)
        members = {n: r for r in self._rounds.values() for n in r.graph}
        out = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            group = members.get(node)
            if group is None or node not in group.shares:
                continue  # dropped before sharing: left out of the round
            msg.content = RecordDict(dict(msg.content))  # Flower's messages share one content
            msg.content[SECAGG_RECORD] = self._with_trust(stage_record(
                MASK, server_round, group.session,
                **id_map_values(group.shares_for(node), "ct-ids", "cts"),
            ))  # fmt: skip
            out.append(msg)
        self._mask_messages = out  # their ids (set when pushed) name a reply's destination
        self._stats[MASK] = StageStats(messages=len(out))
        self._stats[MASK].bytes_down = sum(content_bytes(m.content) for m in out)
        self._mask_sent = time.perf_counter()
        log(
            INFO,
            "SecAgg+ round %d: %d of %d sampled clients shared keys (%d groups)",
            server_round,
            len(out),
            len(messages),
            len(self._rounds),
        )
        return out

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        stats = self._stats.setdefault(MASK, StageStats())
        stats.seconds = time.perf_counter() - self._mask_sent
        contents = []
        sent = _destinations(self._mask_messages)
        for reply in replies:
            node = sent.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            rnd = self._group_of(node)
            if reply.has_error() or rnd is None:
                stats.failed[node] = str(reply.error.reason) if reply.has_error() else "not sampled"
                continue
            stats.bytes_up += content_bytes(reply.content)
            try:
                record = reply.content.config_records.get(SECAGG_RECORD)
                if record is None:
                    raise SecAggError(f"node {node}: the train reply has no masked input (is "
                                      "secagg_mod first in ClientApp(mods=[secagg_mod, ...])?)")
                rnd.add_masked(node, read(record, "masked", bytes, f"node {node}"))
                contents.append(reply.content)
            except SecAggError as e:
                stats.failed[node] = str(e)
        for node, why in stats.failed.items():
            log(WARNING, "SecAgg+ masked input: node %d left out: %s", node, why)
        totals = self._unmask(server_round)
        if not totals:
            self._finish(server_round, aggregated=False)
            return None, None
        if self.robust is not None:
            return self._aggregate_groups(server_round, totals, contents)
        total = np.sum(np.stack([t for t, _ in totals.values()]), axis=0)
        count = sum(c for _, c in totals.values())
        if self._plan is not None:
            realised = count - (max(r.threshold for r in self._rounds.values()) - 1)
            self._report["ddg"] = {
                "honest": realised,
                "planned-honest": self._plan.honest,
                "sigma": self._plan.sigma,
                "gamma": self._plan.gamma,
            }
            if realised < self._plan.honest or int(total[-1]) != count:
                self._report["not-aggregated"] = {
                    "0": (
                        f"{count} survivors hold the noise of {realised} honest clients, fewer "
                        f"than the {self._plan.honest} the DP plan needs: nothing released"
                    )
                }
                self._finish(server_round, aggregated=False)
                return None, None
            mean, weights = decode(total[:-1], self._plan, count), float(count)
        else:
            try:
                mean, weights = self._encoding.decode(total, count)
            except SecAggError as e:
                self._report["not-aggregated"] = {"0": str(e)}
                self._finish(server_round, aggregated=False)
                return None, None
        return self._release(server_round, mean, weights, count, contents)

    def _aggregate_groups(self, server_round: int, totals: dict[int, tuple[np.ndarray, int]],
                          contents: list[RecordDict]) -> Aggregate:  # fmt: skip
        """Decode every group's mean, filter them, average the kept groups by weight."""
        assert self.robust is not None
        groups, means, weights, counts = [], [], [], []
        for group, (total, count) in sorted(totals.items()):
            try:
                mean, weight = self._decode_group(group, total, count)
            except SecAggError as e:
                self._report.setdefault("not-aggregated", {})[str(group)] = str(e)
                continue
            groups.append(group)
            means.append(mean)
            weights.append(weight)
            counts.append(count)
        if not groups:
            self._finish(server_round, aggregated=False)
            return None, None
        stacked, w = np.stack(means), np.asarray(weights)
        mean, dropped = filter_groups(stacked, w, np.zeros(stacked.shape[1]), self.robust)
        members = {g: sorted(self._rounds[g].survivors) for g in groups}
        robust: dict[str, Any] = {
            "method": self.robust.method,
            "group-size": self.robust.size,
            "groups": {str(g): members[g] for g in groups},
            "dropped": {str(groups[i]): why for i, why in dropped.items()},
        }
        if self.suspicion is not None and self.robust.method in DROPS_GROUPS:
            new = self.suspicion.record(server_round, [members[g] for g in groups], set(dropped))
            robust["newly-excluded"] = sorted(new)
            robust["suspicion"] = self.suspicion.as_dict()
            for node in new:
                log(WARNING, "SecAgg+ round %d: node %d excluded from later rounds: its groups "
                    "were dropped %d of %d rounds", server_round, node,
                    self.suspicion.dropped[node], self.suspicion.rounds[node])  # fmt: skip
        self._report["robust"] = robust
        if self._plan is not None:  # every group sum is a release: each held the planned noise
            self._report["ddg"] = {"planned-honest": self._plan.honest, "sigma": self._plan.sigma,
                                   "gamma": self._plan.gamma, "per-group": True}  # fmt: skip
        for i, why in dropped.items():
            log(INFO, "SecAgg+ round %d: group %d (%d clients) dropped: %s", server_round,
                groups[i], counts[i], why)  # fmt: skip
        kept = [i for i in range(len(groups)) if i not in dropped]
        return self._release(server_round, mean, float(w[kept].sum()) if kept else 0.0,
                             sum(counts), contents)  # fmt: skip

    def _decode_group(self, group: int, total: np.ndarray, count: int) -> tuple[np.ndarray, float]:
        """One group's mean update and weight; under distributed DP only a group whose
        survivors hold the planned honest noise is released."""
        if self._plan is None:
            mean, weight = self._encoding.decode(total, count)
            if weight > count * (1 + 1e-6):  # every honest weight n_i / scale is at most 1
                raise SecAggError(f"the group's weights sum to {weight:.4g}, more than its {count} "
                                  "clients can hold (each at most 1): left out")  # fmt: skip
            return mean, weight
        honest = count - (self._rounds[group].threshold - 1)
        if honest < self._plan.honest or int(total[-1]) != count:
            raise SecAggError(f"{count} survivors hold the noise of {honest} honest clients, "
                              f"fewer than the {self._plan.honest} the DP plan needs: nothing "
                              "released")  # fmt: skip
        return decode(total[:-1], self._plan, count), float(count)

    def _release(self, server_round: int, mean: np.ndarray, weights: float, count: int,
                 contents: list[RecordDict]) -> Aggregate:  # fmt: skip
        """The new global model (reference + aggregate update), its metrics and the report."""
        arrays = unflatten(self._reference + mean, self._like)
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key) if contents else None
        sizes = [
            as_float(c[METRICS][self.weighted_by_key])
            for c in contents
            if METRICS in c.metric_records and self.weighted_by_key in c[METRICS]
        ]
        finite = [v for v in sizes if math.isfinite(v) and v > 0]
        if finite:
            self.weight_scale = max(self.weight_scale, max(finite))
        self._finish(server_round, aggregated=True, clients=count, weight_sum=weights)
        return arrays, metrics

    def _consistency(self, server_round: int) -> dict[int, str]:
        """Stage 4: every survivor signs the survivor set; groups short of a quorum are out."""
        requests = {}
        for rnd in self._rounds.values():
            if rnd.masked:
                survivors = ids_to_bytes(rnd.close_inputs())
                for node in rnd.survivors:
                    requests[node] = stage_record(SIGN, server_round, rnd.session,
                                                  survivors=survivors)  # fmt: skip
        replies = self._exchange(SIGN, requests) if requests else {}
        problems = {}
        for group, rnd in self._rounds.items():
            for node in rnd.survivors:
                if node in replies:
                    try:
                        rnd.add_signature(node, read(replies[node], "sig", bytes, f"node {node}"))
                    except SecAggError as e:
                        self._stats[SIGN].failed[node] = str(e)
            if rnd.masked and not rnd.quorum_reached():
                problems[group] = (f"{len(rnd.signatures)} survivors signed the survivor set, "
                                   f"fewer than the quorum {rnd.params.quorum}: no client "
                                   "reveals a share")  # fmt: skip
        return problems

    def _unmask(self, server_round: int) -> dict[int, tuple[np.ndarray, int]]:
        """Stages 4-5 per group; each unmasked group's integer total and survivor count."""
        problems = self._consistency(server_round)
        requests = {}
        for group, rnd in self._rounds.items():
            if self._plan is not None and rnd.masked and group not in problems:
                honest = len(rnd.survivors) - (rnd.threshold - 1)
                if honest < self._plan.honest:  # never unmask a sum short of its planned noise
                    problems[group] = (
                        f"{len(rnd.survivors)} survivors hold the noise of {honest} honest "
                        f"clients, fewer than the {self._plan.honest} the DP plan needs: "
                        "not unmasked"
                    )
        for group, rnd in self._rounds.items():
            if not rnd.masked or group in problems:
                continue
            # a quorum is all a client checks: send that many (the first by node id)
            quorum = dict(sorted(rnd.signatures.items())[: rnd.params.quorum])
            signers = id_map_values(quorum, "signer-ids", "signatures")
            survivors = ids_to_bytes(rnd.survivors)
            for node in rnd.signatures:
                requests[node] = stage_record(UNMASK, server_round, rnd.session,
                                              survivors=survivors, **signers)  # fmt: skip
        responses = self._exchange(UNMASK, requests) if requests else {}
        totals: dict[int, tuple[np.ndarray, int]] = {}
        for group, rnd in self._rounds.items():
            if not rnd.masked or group in problems:
                continue
            answers = {}
            for node in rnd.signatures:
                if node in responses:
                    try:
                        answers[node] = id_map(responses[node], "ids", "shares", f"node {node}")
                    except SecAggError as e:
                        self._stats[UNMASK].failed[node] = str(e)
            try:
                start = time.perf_counter()
                group_total = rnd.unmask(answers)
                self._report.setdefault("unmask-compute-s", 0.0)
                self._report["unmask-compute-s"] += time.perf_counter() - start
            except Exception as e:  # noqa: BLE001 - a client's bytes never fail the round
                problems[group] = str(e) if isinstance(e, SecAggError) else (
                    f"unmasking failed on the clients' shares ({type(e).__name__}: {e})")
                continue
            wide = group_total.astype(np.int64)
            if self._plan is not None:  # DDG values are signed: centre them from mod 2^bits
                wide[wide >= 1 << (rnd.mod_bits - 1)] -= 1 << rnd.mod_bits
            totals[group] = (wide, len(rnd.survivors))
        for group, why in problems.items():
            log(WARNING, "SecAgg+ round %d: group %d not aggregated: %s", server_round, group, why)
        self._report["not-aggregated"] = {str(g): why for g, why in problems.items()}
        self._report["trust"] = self.secagg.trust
        return totals

    def _finish(self, server_round: int, *, aggregated: bool, **extra: Any) -> None:
        sampled = self._sampled
        report = {
            "aggregated": aggregated,
            "sampled": sampled,
            "keys": sum(len(r.public) for r in self._rounds.values()),
            "shared": sum(len(r.shares) for r in self._rounds.values()),
            "masked": sum(len(r.masked) for r in self._rounds.values()),
            "signed": sum(len(r.signatures) for r in self._rounds.values()),
            "recovered": sorted(
                str(n) for r in self._rounds.values() for n in set(r.shares) - set(r.masked)
            ),
            "groups": len(self._rounds),
            "threshold": {str(g): r.threshold for g, r in self._rounds.items()},
            "stages": {k: v.as_dict() for k, v in self._stats.items()},
            **self._report,
            **extra,
        }
        if not aggregated:
            log(
                WARNING,
                "SecAgg+ round %d not aggregated (model unchanged): %s",
                server_round,
                report.get("not-aggregated") or "no masked input arrived",
            )
        if self.on_round is not None:
            self.on_round(server_round, report)
