"""Box-plot filtering: fences, scores, dropped sets and aggregation on constructed updates."""

import numpy as np
import pytest
from flwr.serverapp.strategy import FedAvg, FedProx

from flwr_privacy.strategy.box_plot import (
    BoxPlot,
    BoxPlotFedAvg,
    BoxPlotFilter,
    box_filter,
    client_scores,
    coordinate_mean,
    fences,
)
from strategies import Robustness, make_strategy
from tests.strategies.conftest import Replies


def test_fences_on_hand_computed_data() -> None:
    values = np.arange(1.0, 11.0)  # 1..10
    # Linear quartiles 3.25 and 7.75, IQR 4.5.
    assert fences(values, 1.5, "linear") == pytest.approx((3.25 - 6.75, 7.75 + 6.75))
    # Inner quartiles: order statistics 3 and 6 (0-based) = 4 and 7; their distance 3
    # is rescaled to the interpolated span 4.5 / 3, so IQR = 4.5 here as well.
    assert fences(values, 1.5, "inner") == pytest.approx((4 - 6.75, 7 + 6.75))
    assert fences(values, 0.0, "inner") == pytest.approx((4, 7))


def test_inner_quartiles_resist_three_outliers_of_ten() -> None:
    honest = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 1.02, 0.98])
    values = np.concatenate([honest, [5.0, 5.1, 5.2]])
    assert fences(values, 1.5, "inner")[1] < 5.0  # the three are outside
    assert fences(values, 1.5, "linear")[1] > 5.2  # interpolated Q3 is pulled into them


def test_tied_honest_scores_are_not_split_by_rounding() -> None:
    # Seen in a CKKS run: one boosted client of four pulls the mean so far that two
    # honest distances to it tie; Q1 = Q3 = the tie, and exp(log(t)) < t drops both.
    tie = 0.05648
    assert np.exp(np.log(tie)) < tie  # the rounding that split them
    scores = {"mean-distance": np.array([0.02, tie, tie, 0.1682])}
    report = box_filter([1, 2, 3, 4], scores, BoxPlot(scores=("mean-distance",)), invalid={})
    assert set(report.dropped) == {4}
    without_floor = BoxPlot(scores=("mean-distance",), min_spread=0.0)
    assert set(box_filter([1, 2, 3, 4], scores, without_floor, invalid={}).dropped) == {2, 3, 4}
    with pytest.raises(ValueError, match="min_spread"):
        BoxPlot(min_spread=-1.0)


def test_dropped_set_on_a_constructed_case() -> None:
    nodes = list(range(10))
    distance = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 1.02, 0.98, 0.01, 5.0, 1.0])
    norm = np.array([2.0, 2.2, 1.8, 2.0, 2.1, 1.9, 2.05, 1.95, 2.0, 0.0])
    box = BoxPlot(scores=("median-distance", "norm"))
    report = box_filter(nodes, {"median-distance": distance, "norm": norm}, box, invalid={3: "x"})
    # 8: far from the consensus; 9: zero-norm free rider (norm is two-sided);
    # 7: unusually close to the consensus, which is no anomaly (distance is one-sided).
    assert set(report.dropped) == {3, 8, 9}
    assert "upper fence" in report.dropped[8] and "lower fence" in report.dropped[9]
    assert report.as_dict()["kept"] == 7


def test_too_few_clients_are_not_filtered() -> None:
    report = box_filter([1, 2, 3], {"norm": np.array([1.0, 1.0, 100.0])}, BoxPlot(), invalid={})
    assert report.dropped == {} and "fewer than" in report.note


def test_client_scores_by_hand() -> None:
    updates = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [2.0, 4.0], [10.0, 10.0]])
    reference = np.array([1.0, 1.0])
    s = client_scores(updates, reference, ("median-distance", "mean-distance", "norm"))
    # median (2, 4); mean (2.8, 3.6); rms = ||.|| / sqrt(2)
    assert s["median-distance"] == pytest.approx(np.sqrt(np.array([20, 16, 4, 0, 100]) / 2))
    mean = updates.mean(axis=0)
    assert s["mean-distance"] == pytest.approx(np.linalg.norm(updates - mean, axis=1) / np.sqrt(2))
    assert s["norm"][0] == pytest.approx(1.0)


def test_coordinate_mean_excludes_outlying_values_only() -> None:
    rng = np.random.default_rng(0)
    # Evenly spread values: the outermost sit 3 steps beyond Q1/Q3, the fences 6.75.
    values = rng.permuted(np.tile(np.linspace(-0.1, 0.1, 10)[:, None], (1, 6)), axis=0)
    weights = rng.uniform(1, 3, 10)
    clean, excluded = coordinate_mean(values, weights, BoxPlot(variant="coordinate"))
    assert excluded == 0
    assert clean == pytest.approx(np.average(values, axis=0, weights=weights))
    values[2, 4], values[7, 1] = 50.0, -50.0
    mean, excluded = coordinate_mean(values, weights, BoxPlot(variant="coordinate"))
    assert excluded == 2
    keep = np.ones_like(values, bool)
    keep[2, 4] = keep[7, 1] = False
    expected = (values * keep * weights[:, None]).sum(0) / (keep * weights[:, None]).sum(0)
    assert mean == pytest.approx(expected)


def test_aggregate_equals_fedavg_over_survivors(make_replies: Replies) -> None:
    rng = np.random.default_rng(1)
    updates = 1.0 + rng.permuted(np.tile(np.linspace(-0.05, 0.05, 10)[:, None], (1, 5)), axis=0)
    updates[[2, 6]] = -8.0  # two attackers
    sizes = list(range(10, 20))
    strategy = BoxPlotFedAvg(box=BoxPlot(), min_available_nodes=1)
    strategy._reference = np.zeros(5)
    arrays, metrics = strategy.aggregate_train(1, make_replies(updates, sizes))
    survivors = [r for i, r in enumerate(make_replies(updates, sizes)) if i not in (2, 6)]
    expected, _ = FedAvg().aggregate_train(1, survivors)
    assert arrays["w"].numpy() == pytest.approx(expected["w"].numpy())
    assert metrics is not None


def test_factory_builds_layers_and_refuses_impossible_ones() -> None:
    common = dict(fraction_train=1.0, fraction_evaluate=1.0, min_nodes=2, num_nodes=10)
    box = Robustness(box=BoxPlot())
    boxed = make_strategy("fedprox", robust=box, **common)
    assert isinstance(boxed, BoxPlotFilter) and type(boxed.inner) is FedProx
    multikrum = make_strategy("multikrum", robust=Robustness(num_malicious=3), **common)
    assert multikrum.num_nodes_to_select == 7
    with pytest.raises(ValueError, match="4\\*f\\+3"):
        make_strategy("bulyan", robust=Robustness(num_malicious=2), **common)
    with pytest.raises(ValueError, match="plaintext-only"):
        make_strategy("krum", robust=box, **common)
