"""Build a Flower strategy from its run-config name.

Plain FedAvg and FedProx are Flower's own; FedProx only adds ``proximal-mu`` to
the train config and the client adds the proximal term to its loss.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, FedProx

from privacy.he import KeyBundle
from strategies.encrypted import EncryptedFedAvg, EncryptedFedProx
from strategies.validation import RejectFn, ReplyValidation

STRATEGIES = ("fedavg", "fedprox")


class ValidatedFedAvg(ReplyValidation, FedAvg):
    """Flower's FedAvg that drops malformed replies instead of stopping the run."""


class ValidatedFedProx(ReplyValidation, FedProx):
    """Flower's FedProx that drops malformed replies instead of stopping the run."""


MetricsAggrFn = Callable[[list[RecordDict], str], MetricRecord]


def make_strategy(
    name: str,
    *,
    fraction_train: float,
    fraction_evaluate: float,
    min_nodes: int,
    proximal_mu: float = 0.0,
    train_metrics_aggr_fn: MetricsAggrFn | None = None,
    evaluate_metrics_aggr_fn: MetricsAggrFn | None = None,
    on_reject: RejectFn | None = None,
    he_bundle: KeyBundle | None = None,
    num_examples: dict[int, int] | None = None,
) -> FedAvg:
    """The strategy called ``name`` (one of ``STRATEGIES``).

    With ``he_bundle`` (public-only) the encrypted variant aggregates ciphertexts.
    """
    common = dict(
        fraction_train=fraction_train,
        fraction_evaluate=fraction_evaluate,
        min_train_nodes=min_nodes,
        min_evaluate_nodes=min_nodes if fraction_evaluate > 0 else 0,
        min_available_nodes=min_nodes,
        train_metrics_aggr_fn=train_metrics_aggr_fn,
        evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
        on_reject=on_reject,
    )
    if he_bundle is not None:
        encrypted = dict(common, bundle=he_bundle, num_examples=num_examples)
        if name == "fedavg":
            return EncryptedFedAvg(**encrypted)
        if name == "fedprox":
            return EncryptedFedProx(proximal_mu=proximal_mu, **encrypted)
    elif name == "fedavg":
        return ValidatedFedAvg(**common)
    elif name == "fedprox":
        return ValidatedFedProx(proximal_mu=proximal_mu, **common)
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
