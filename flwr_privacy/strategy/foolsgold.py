"""FoolsGold: down-weight clients whose update histories point the same way (sybils).

Fung, Yoon and Beschastnikh, "The Limitations of Federated Learning in Sybil
Settings" (RAID 2020; arXiv:1808.04866), Algorithm 1. Sybils that push one
poisoned direction (a targeted label flip by several clients) keep sending
similar updates round after round, while honest clients with different local
data do not. Each round the server adds every client's update (its weights
minus the global model it was sent) to that client's history, computes the
pairwise cosine similarities of the histories, and gives client i

1. ``v_i = max_j cs_ij`` (j != i), then pardoning: ``cs_ij *= v_i / v_j`` where
   ``v_j > v_i``, so an honest client that happens to resemble a sybil is not
   punished as hard as the sybil itself;
2. ``alpha_i = 1 - max_j cs_ij`` clipped to [0, 1], rescaled so the largest is 1;
3. the logit ``kappa * (ln(alpha / (1 - alpha)) + 0.5)`` (alpha = 1 read as 0.99,
   as in the authors' code), clipped to [0, 1]: clients at least 0.62 of the
   most distinct one keep weight 1 (kappa = 1), those below 0.38 get 0.

The new global model is the weighted mean of the replies with weights
``alpha_i * num_examples_i`` (normalized, so down-weighting sybils does not
shrink the honest step; the paper adds ``sum_i alpha_i delta_i`` unnormalized).
All alphas 1 is exactly weighted FedAvg. This is the paper's main variant on
the whole flattened update; ``FoolsGold.features`` restricts the similarity to
named arrays (the paper's "indicative features" of the output layer, without
its importance weighting).

What it assumes: sybils share a direction and honest clients do not. One
attacker, or attackers that each push a different direction (or add noise to
look diverse), are not similar to anyone and keep full weight, as does a free
rider's all-zero update; honest clients with alike data (IID partitions) look
like sybils and are down-weighted, and when they are more alike than the sybils
the weights invert (measured in docs/guides/robust.md, "FoolsGold").

Why it cannot run on ciphertexts (server-blind HE): every step needs the
plaintext histories. The server-blind server holds only ciphertexts and no
secret key, so it has no similarity to compute. A CKKS inner product of two
clients' encrypted histories would need relinearization and rotation keys and
then a key holder to decrypt n^2 similarities, which tells that key holder how
alike every pair of clients is (more than the box plot's one score per
client); the histories themselves would have to be kept encrypted across
rounds and the logit computed on decrypted values. The toolkit refuses the
combination rather than weakening what HE promises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from flwr_privacy.extras import requires

with requires("robust", "FoolsGold (flwr_privacy.strategy.foolsgold)"):
    from sklearn.metrics.pairwise import cosine_similarity

from flwr_privacy.records import flatten, unflatten
from flwr_privacy.strategy.box_plot import FilterReport
from flwr_privacy.strategy.validation import RejectFn, Validated, reply_weight
from flwr_privacy.strategy.wrapper import fedavg_or_fedprox, innermost, layers

__all__ = [
    "ALMOST_ONE",
    "FoolsGold",
    "FoolsGoldFedAvg",
    "FoolsGoldFilter",
    "FoolsGoldReport",
    "ReportFn",
    "foolsgold_weights",
    "select",
]

ALMOST_ONE = 0.99  # alpha = 1 before the logit (the authors' code): ln(99) + 0.5 > 1


@dataclass(frozen=True)
class FoolsGold:
    """FoolsGold settings: logit confidence ``kappa`` and the arrays compared.

    ``kappa`` scales the logit (the paper's confidence; 1 by default): larger
    values push weights towards 0 or 1. ``features`` names the arrays (keys of
    the model's ArrayRecord) whose updates are compared, e.g. the output layer;
    empty compares the whole flattened update.
    """

    kappa: float = 1.0
    features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (self.kappa > 0 and math.isfinite(self.kappa)):
            raise ValueError(f"FoolsGold kappa must be a finite float > 0, got {self.kappa}")


def foolsgold_weights(histories: np.ndarray, kappa: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-client weights in [0, 1] from the rows of ``histories`` (n x d), Algorithm 1.

    Returns the weights and each client's largest cosine similarity to another
    client (before pardoning). Cosine similarity is scikit-learn's (an all-zero
    history is similar to nobody). Every alpha 0 (each history has an exact
    twin) gives every weight 0: nothing tells honest from sybil.
    """
    n = len(histories)
    cs = cosine_similarity(histories) - np.eye(n)  # a client is not its own sybil
    v = cs.max(axis=1) if n > 1 else np.zeros(n)
    raw_max = v.copy()
    # Pardoning: cs_ij *= v_i / v_j where v_j > v_i (only positive v_j: no sign flips).
    vi, vj = v[:, None], v[None, :]
    pardon = (vj > vi) & (vj > 0)
    cs = np.where(pardon, cs * vi / np.where(pardon, vj, 1.0), cs)
    alpha = np.clip(1.0 - (cs.max(axis=1) if n > 1 else np.zeros(n)), 0.0, 1.0)
    if alpha.max() <= 0:
        return np.zeros(n), raw_max
    alpha = alpha / alpha.max()
    alpha[alpha >= 1.0] = ALMOST_ONE
    with np.errstate(divide="ignore"):
        weights = kappa * (np.log(alpha / (1.0 - alpha)) + 0.5)
    return np.clip(np.nan_to_num(weights, neginf=0.0, posinf=1.0), 0.0, 1.0), raw_max


@dataclass
class FoolsGoldReport(FilterReport):
    """One round's FoolsGold weights (results.json); ``dropped`` holds the weight-0 clients."""

    weights: dict[int, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = super().as_dict()
        out["weights"] = {str(n): w for n, w in self.weights.items()}
        return out


ReportFn = Callable[[int, FilterReport], None]


def select(arrays: ArrayRecord, features: Sequence[str]) -> ArrayRecord:
    """The arrays FoolsGold compares (all when ``features`` is empty)."""
    if not features:
        return arrays
    missing = sorted(set(features) - set(arrays))
    if missing:
        raise ValueError(
            f"FoolsGold features {missing} are not arrays of the model; its arrays: "
            f"{sorted(arrays)}"
        )
    return ArrayRecord({k: arrays[k] for k in features})


class FoolsGoldFilter(Validated):
    """FoolsGold re-weighting before averaging (plaintext updates only).

    Histories are kept by node id (the reply's ``src_node_id``, stable for a
    connected SuperNode); a node that reconnects under a new id starts afresh.

    Parameters
    ----------
    inner : Strategy
        A plaintext FedAvg-family strategy (FedAvg, FedProx): its settings
        (``weighted_by_key``, metric aggregation) are used; the weighted mean
        is computed here.
    foolsgold : FoolsGold
        ``kappa`` and the compared arrays (default ``FoolsGold()``).
    on_filter : callable, optional
        Receives ``(round, FoolsGoldReport)`` every round.
    on_reject : callable, optional
        Receives ``(node_id, reason)`` for every malformed reply dropped first.
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        foolsgold: FoolsGold | None = None,
        on_filter: ReportFn | None = None,
        on_reject: RejectFn | None = None,
    ) -> None:
        blind = [type(s).__name__ for s in layers(inner) if getattr(s, "server_blind", False)]
        if blind:
            raise ValueError(
                f"FoolsGoldFilter cannot wrap {blind[0]}: FoolsGold compares plaintext update "
                "histories, which a server-blind server never holds; use a plaintext FedAvg "
                "or FedProx (or the encrypted box plot under HE)"
            )
        super().__init__(inner, on_reject=on_reject)
        self.foolsgold = foolsgold or FoolsGold()
        self.on_filter = on_filter
        self.histories: dict[int, np.ndarray] = {}
        self._sent: ArrayRecord | None = None

    def summary(self) -> None:
        log(INFO, "\t├──> FoolsGold: %s", self.foolsgold)
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._sent = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept = self.accepted(replies, train=True)
        if not kept:
            return None, None
        assert self._sent is not None  # configure_train ran this round
        weight_key = self.inner.weighted_by_key  # type: ignore[attr-defined]  # FedAvg setting, not on Strategy
        arrays_key = self.inner.arrayrecord_key  # type: ignore[attr-defined]  # FedAvg setting, not on Strategy
        records = [r.content.array_records[arrays_key] for r in kept]
        nodes = [r.metadata.src_node_id for r in kept]
        features = self.foolsgold.features
        sent = flatten(select(self._sent, features))
        for node, record in zip(nodes, records, strict=True):
            delta = flatten(select(record, features)) - sent
            past = self.histories.get(node)
            self.histories[node] = delta if past is None else past + delta
        weights, similarity = foolsgold_weights(
            np.stack([self.histories[n] for n in nodes]), self.foolsgold.kappa
        )
        report = FoolsGoldReport(
            variant="foolsgold", received=len(kept), nodes=nodes,
            scores={"max-similarity": [float(s) for s in similarity]},
            weights={n: float(w) for n, w in zip(nodes, weights, strict=True)},
        )  # fmt: skip
        for node, w, s in zip(nodes, weights, similarity, strict=True):
            if w <= 0:
                report.dropped[node] = f"foolsgold weight 0 (history cosine similarity {s:.4g})"
        self._log(server_round, report)
        sizes = np.array([reply_weight(r.content, weight_key) for r in kept])
        total = float((weights * sizes).sum())
        if total <= 0:
            log(WARNING, "aggregate_train: FoolsGold gave every client weight 0; "
                "the global model stays as it was")  # fmt: skip
            return None, None
        mean = np.average(np.stack([flatten(a) for a in records]), axis=0, weights=weights * sizes)
        contributing = [r.content for r, w in zip(kept, weights, strict=True) if w > 0]
        metrics = innermost(self).train_metrics_aggr_fn(contributing, weight_key)
        return unflatten(mean, records[0]), metrics

    def _log(self, server_round: int, report: FoolsGoldReport) -> None:
        log(INFO, "aggregate_train: FoolsGold weights %s",
            {n: round(w, 3) for n, w in report.weights.items()})  # fmt: skip
        for node, why in report.dropped.items():
            log(INFO, "aggregate_train: FoolsGold zeroed node %d: %s", node, why)
        if self.on_filter is not None:
            self.on_filter(server_round, report)


class FoolsGoldFedAvg(FoolsGoldFilter):
    """FedAvg with FoolsGold weights (``alpha_i * num_examples_i``).

    Takes FedAvg's keyword arguments besides ``foolsgold``, ``on_filter`` and
    ``on_reject``; ``proximal_mu > 0`` makes the inner strategy FedProx.
    """

    def __init__(
        self,
        *,
        foolsgold: FoolsGold | None = None,
        on_filter: ReportFn | None = None,
        on_reject: RejectFn | None = None,
        proximal_mu: float = 0.0,
        **fedavg_kwargs: Any,
    ) -> None:
        inner = fedavg_or_fedprox(proximal_mu, **fedavg_kwargs)
        super().__init__(inner, foolsgold=foolsgold, on_filter=on_filter, on_reject=on_reject)
