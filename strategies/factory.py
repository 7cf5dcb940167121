"""Build this app's strategy from its run-config name and the layers the run asks for.

Every piece comes from the toolkit's public classes, composed as wrappers
(outermost last): Flower's FedAvg / FedProx or a robust built-in, wrapped by
reply validation (``Validated``) or a box-plot filter (``BoxPlotFilter``);
encryption is the aggregation step itself (``EncryptedFedAvg`` /
``EncryptedFedProx``, with the encrypted box plot as their filtering variant);
terminal-edge-cloud aggregation wraps whichever of these runs per edge
(``Hierarchical``). Flower's robust built-ins (Krum, MultiKrum, FedMedian,
FedTrimmedAvg, Bulyan) and FoolsGold (``FoolsGoldFilter`` around FedAvg /
FedProx) run on plaintext, flat federations only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    Bulyan,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
)

from flwr_privacy.he import KeyBundle
from flwr_privacy.secagg.groups import GroupFilter
from flwr_privacy.secagg.settings import SecAggSettings
from flwr_privacy.settings import HeSettings
from flwr_privacy.strategy.box_plot import BoxPlot, BoxPlotFilter, FilterFn
from flwr_privacy.strategy.encrypted import (
    EncryptedAggregation,
    EncryptedFedAvg,
    EncryptedFedProx,
)
from flwr_privacy.strategy.encrypted_box_plot import EncryptedBoxPlotFedAvg, EncryptedBoxPlotFedProx
from flwr_privacy.strategy.foolsgold import FoolsGold, FoolsGoldFilter
from flwr_privacy.strategy.hierarchical import Hierarchical, TierFn
from flwr_privacy.strategy.secagg import RoundFn, SecAggPlus
from flwr_privacy.strategy.validation import RejectFn, Validated

BUILTIN_ROBUST: dict[str, type[FedAvg]] = {
    "krum": Krum,
    "multikrum": MultiKrum,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "bulyan": Bulyan,
}
STRATEGIES = ("fedavg", "fedprox", *BUILTIN_ROBUST)
# (strategy, box-plot filtered) -> the encrypted aggregation step
_ENCRYPTED: dict[tuple[str, bool], type[EncryptedAggregation]] = {
    ("fedavg", False): EncryptedFedAvg,
    ("fedprox", False): EncryptedFedProx,
    ("fedavg", True): EncryptedBoxPlotFedAvg,
    ("fedprox", True): EncryptedBoxPlotFedProx,
}

MetricsAggrFn = Callable[[list[RecordDict], str], MetricRecord]


@dataclass(frozen=True)
class Robustness:
    """Robust-aggregation settings: a box-plot filter, FoolsGold, or the built-ins' assumptions.

    ``num_malicious`` is the ``f`` that Krum, MultiKrum and Bulyan assume;
    ``trim_beta`` the fraction FedTrimmedAvg cuts from each end; ``foolsgold``
    re-weights FedAvg / FedProx against sybils (not together with ``box``).
    """

    box: BoxPlot | None = None
    num_malicious: int = 0
    trim_beta: float = 0.2
    foolsgold: FoolsGold | None = None

    def __post_init__(self) -> None:
        if self.box is not None and self.foolsgold is not None:
            raise ValueError("Robustness: choose a box-plot filter or FoolsGold, not both")


def _refuse_foolsgold(he: HeSettings | None, edges: dict[int, int] | None) -> None:
    if he is not None:
        raise ValueError(
            f"FoolsGold needs plaintext update histories (pairwise cosine similarities), but "
            f"he.backend = {he.backend!r} keeps every update encrypted from the server: set "
            "he.backend = 'none' to use robust.filter = 'foolsgold', or keep HE and use "
            "robust.filter = 'boxplot' (the encrypted box plot)"
        )
    if edges is not None:
        raise ValueError(
            "FoolsGold keeps one update history per client, which edge aggregation hides "
            "from the cloud: use it with hierarchy.edges = 0"
        )


def _builtin_kwargs(name: str, robust: Robustness, expected_replies: int) -> dict[str, Any]:
    f = robust.num_malicious
    if name == "bulyan" and expected_replies < 4 * f + 3:
        raise ValueError(
            f"bulyan needs at least 4*f+3 = {4 * f + 3} replies per round for "
            f"robust.num-malicious = {f}, but a round has {expected_replies}"
        )
    if name in ("krum", "multikrum") and expected_replies < 2 * f + 3:
        raise ValueError(
            f"{name} needs at least 2*f+3 = {2 * f + 3} replies per round for "
            f"robust.num-malicious = {f}, but a round has {expected_replies}"
        )
    if name in ("krum", "bulyan"):
        return {"num_malicious_nodes": f}
    if name == "multikrum":
        return {"num_malicious_nodes": f, "num_nodes_to_select": max(1, expected_replies - f)}
    if name == "fedtrimmedavg":
        return {"beta": robust.trim_beta}
    return {}


def make_strategy(
    name: str,
    *,
    fraction_train: float,
    fraction_evaluate: float,
    min_nodes: int,
    num_nodes: int | None = None,
    proximal_mu: float = 0.0,
    train_metrics_aggr_fn: MetricsAggrFn | None = None,
    evaluate_metrics_aggr_fn: MetricsAggrFn | None = None,
    on_reject: RejectFn | None = None,
    he: HeSettings | None = None,
    he_bundle: KeyBundle | None = None,
    num_examples: dict[int, int] | None = None,
    robust: Robustness | None = None,
    on_filter: FilterFn | None = None,
    edges: dict[int, int] | None = None,
    cloud_box: BoxPlot | None = None,
    on_tiers: TierFn | None = None,
    weighted_by_key: str = "num-examples",
    min_contributions: int = 1,
    secagg: SecAggSettings | None = None,
    on_secagg: RoundFn | None = None,
    secagg_groups: GroupFilter | None = None,
) -> Strategy:
    """The strategy called ``name`` (one of ``STRATEGIES``) with the requested layers.

    With ``he`` the encrypted variant aggregates ciphertexts (``he_bundle``: the
    public-only bundle the caller loaded); with ``robust.box`` box-plot
    filtering runs before aggregation, with ``robust.foolsgold`` FoolsGold
    weights it (plaintext and flat only) (per edge when ``edges`` maps nodes to
    edges; ``cloud_box`` filters edge results). ``weighted_by_key`` names the
    reply metric that weights each client; ``min_contributions`` is how many
    encrypted updates a sum must hold (distributed DP).
    """
    robust = robust or Robustness()
    if he is None and he_bundle is not None:
        he = HeSettings(backend=he_bundle.backend)
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    common: dict[str, Any] = dict(
        fraction_train=fraction_train,
        fraction_evaluate=fraction_evaluate,
        min_train_nodes=min_nodes,
        min_evaluate_nodes=min_nodes if fraction_evaluate > 0 else 0,
        min_available_nodes=min_nodes,
        train_metrics_aggr_fn=train_metrics_aggr_fn,
        evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
        weighted_by_key=weighted_by_key,
    )
    if robust.foolsgold is not None:
        _refuse_foolsgold(he, edges)
    if secagg is not None:
        if he is not None or robust.box is not None or robust.foolsgold or name in BUILTIN_ROBUST:
            raise ValueError(
                "SecAgg+ hides every single update from the server: it composes with fedavg or "
                "fedprox only, without he, box-plot filtering or FoolsGold (to filter the sums "
                "of small random groups: secagg_groups=GroupFilter(...))"
            )
        if name == "fedprox":
            common["proximal_mu"] = proximal_mu
        base = FedProx(**common) if name == "fedprox" else FedAvg(**common)
        # edges: one SecAgg+ instance per edge, the cloud adds the edge sums; or random groups
        return SecAggPlus(base, secagg=secagg, groups=edges, robust=secagg_groups,
                          num_examples=num_examples, on_round=on_secagg)  # fmt: skip
    if name in BUILTIN_ROBUST:
        if he is not None or robust.box is not None or robust.foolsgold or edges is not None:
            raise ValueError(
                f"{name} is Flower's plaintext-only, flat strategy; use it without "
                "he/box/foolsgold/edges"
            )
        expected = max(int((num_nodes or min_nodes) * fraction_train), min_nodes)
        builtin = BUILTIN_ROBUST[name](**common, **_builtin_kwargs(name, robust, expected))
        return Validated(builtin, on_reject=on_reject)
    if name == "fedprox":
        common["proximal_mu"] = proximal_mu
    flat: Strategy
    if he is not None:
        layer = _ENCRYPTED[(name, robust.box is not None)]
        extra: dict[str, Any] = {"box": robust.box, "on_filter": on_filter} if robust.box else {}
        flat = layer(**common, **extra, he=he, bundle=he_bundle, num_examples=num_examples,
                     min_contributions=min_contributions, on_reject=on_reject)  # fmt: skip
    else:
        base = FedProx(**common) if name == "fedprox" else FedAvg(**common)
        if robust.box is not None:
            flat = BoxPlotFilter(base, box=robust.box, on_filter=on_filter, on_reject=on_reject)
        elif robust.foolsgold is not None:
            flat = FoolsGoldFilter(base, foolsgold=robust.foolsgold, on_filter=on_filter,
                                   on_reject=on_reject)  # fmt: skip
        else:
            flat = Validated(base, on_reject=on_reject)
    if edges is None:
        return flat
    return Hierarchical(flat, edges=edges, cloud_box=cloud_box, on_tiers=on_tiers,
                        on_filter=on_filter)  # fmt: skip
