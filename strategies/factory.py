"""Build a Flower strategy from its run-config name and the layers the run asks for.

Plain FedAvg and FedProx are Flower's own (FedProx only adds ``proximal-mu`` to
the train config; the client adds the proximal term to its loss). Encryption
and box-plot filtering are mixins over them; Flower's robust built-ins (Krum,
MultiKrum, FedMedian, FedTrimmedAvg, Bulyan) run on plaintext only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    Bulyan,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
)

from flwr_privacy.he import KeyBundle
from flwr_privacy.strategy.encrypted import EncryptedFedAvg, EncryptedFedProx
from flwr_privacy.strategy.encrypted_box_plot import EncryptedBoxPlotFedAvg, EncryptedBoxPlotFedProx
from flwr_privacy.strategy.hierarchical import HierarchicalAggregation, TierFn
from flwr_privacy.strategy.box_plot import BoxPlot, BoxPlotFedAvg, BoxPlotFedProx, FilterFn
from flwr_privacy.strategy.validation import RejectFn, ReplyValidation

BUILTIN_ROBUST: dict[str, type[FedAvg]] = {
    "krum": Krum,
    "multikrum": MultiKrum,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "bulyan": Bulyan,
}
STRATEGIES = ("fedavg", "fedprox", *BUILTIN_ROBUST)


def _validated(base: type[FedAvg]) -> type[FedAvg]:
    return type(
        f"Validated{base.__name__}",
        (ReplyValidation, base),
        {"__doc__": f"Flower's {base.__name__} that drops malformed replies, not the run."},
    )


ValidatedFedAvg, ValidatedFedProx = _validated(FedAvg), _validated(FedProx)
_VALIDATED_ROBUST = {name: _validated(cls) for name, cls in BUILTIN_ROBUST.items()}

# (strategy, encrypted, box-plot filtered) -> class
_CLASSES: dict[tuple[str, bool, bool], type[FedAvg]] = {
    ("fedavg", False, False): ValidatedFedAvg,
    ("fedprox", False, False): ValidatedFedProx,
    ("fedavg", False, True): BoxPlotFedAvg,
    ("fedprox", False, True): BoxPlotFedProx,
    ("fedavg", True, False): EncryptedFedAvg,
    ("fedprox", True, False): EncryptedFedProx,
    ("fedavg", True, True): EncryptedBoxPlotFedAvg,
    ("fedprox", True, True): EncryptedBoxPlotFedProx,
}

# The same classes aggregating per edge, then at the cloud tier.
_TIERED: dict[tuple[str, bool, bool], type[FedAvg]] = {
    key: type(f"Hierarchical{cls.__name__}", (HierarchicalAggregation, cls), {})
    for key, cls in _CLASSES.items()
}

MetricsAggrFn = Callable[[list[RecordDict], str], MetricRecord]


@dataclass(frozen=True)
class Robustness:
    """Robust-aggregation settings: a box-plot filter, or the built-ins' assumptions.

    ``num_malicious`` is the ``f`` that Krum, MultiKrum and Bulyan assume;
    ``trim_beta`` the fraction FedTrimmedAvg cuts from each end.
    """

    box: BoxPlot | None = None
    num_malicious: int = 0
    trim_beta: float = 0.2


def _builtin_kwargs(name: str, robust: Robustness, expected_replies: int) -> dict[str, object]:
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
    he_bundle: KeyBundle | None = None,
    num_examples: dict[int, int] | None = None,
    robust: Robustness | None = None,
    on_filter: FilterFn | None = None,
    edges: dict[int, int] | None = None,
    cloud_box: BoxPlot | None = None,
    on_tiers: TierFn | None = None,
    weighted_by_key: str = "num-examples",
    min_contributions: int = 1,
) -> FedAvg:
    """The strategy called ``name`` (one of ``STRATEGIES``) with the requested layers.

    With ``he_bundle`` (public-only) the encrypted variant aggregates ciphertexts;
    with ``robust.box`` box-plot filtering runs before aggregation (per edge when
    ``edges`` maps nodes to edges; ``cloud_box`` filters edge results).
    ``weighted_by_key`` names the reply metric that weights each client;
    ``min_contributions`` is how many encrypted updates a sum must hold (distributed DP).
    """
    robust = robust or Robustness()
    common: dict[str, object] = dict(
        fraction_train=fraction_train,
        fraction_evaluate=fraction_evaluate,
        min_train_nodes=min_nodes,
        min_evaluate_nodes=min_nodes if fraction_evaluate > 0 else 0,
        min_available_nodes=min_nodes,
        train_metrics_aggr_fn=train_metrics_aggr_fn,
        evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
        on_reject=on_reject,
        weighted_by_key=weighted_by_key,
    )
    if name in BUILTIN_ROBUST:
        if he_bundle is not None or robust.box is not None or edges is not None:
            raise ValueError(
                f"{name} is Flower's plaintext-only, flat strategy; use it without he/box/edges"
            )
        expected = max(int((num_nodes or min_nodes) * fraction_train), min_nodes)
        return _VALIDATED_ROBUST[name](**common, **_builtin_kwargs(name, robust, expected))
    key = (name, he_bundle is not None, robust.box is not None)
    if key not in _CLASSES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "fedprox":
        common["proximal_mu"] = proximal_mu
    if he_bundle is not None:
        common.update(bundle=he_bundle, num_examples=num_examples,
                      min_contributions=min_contributions)  # fmt: skip
    if robust.box is not None:
        common.update(box=robust.box, on_filter=on_filter)
    if edges is None:
        return _CLASSES[key](**common)
    common.update(edges=edges, cloud_box=cloud_box, on_tiers=on_tiers, on_filter=on_filter)
    return _TIERED[key](**common)
