"""Terminal-edge-cloud aggregation: edge assignment and two-tier sums on constructed replies."""

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord

from app.keys import CLIENT_FILE, SERVER_FILE, generate
from app.simulation import simulate
from benchmarks import runs
from flwr_privacy.he import (
    EncodeSettings,
    Payload,
    decrypt_arrays,
    encrypt_arrays,
    keygen,
    layout_of,
)
from flwr_privacy.strategy.box_plot import BoxPlot
from flwr_privacy.strategy.encrypted import AllKeysMismatched
from flwr_privacy.strategy.hierarchical import assign_edges
from flwr_privacy.strategy.wrapper import innermost, layers
from strategies import Robustness, make_strategy
from tests.strategies.conftest import Replies

COMMON = dict(fraction_train=1.0, fraction_evaluate=0.0, min_nodes=1)


def test_edge_assignment_is_complete_stable_and_honours_declared_edges() -> None:
    partitions = {100 + 7 * p: p for p in range(10)}  # node id -> partition id
    edges = assign_edges(partitions, 3)
    assert set(edges) == set(partitions) and set(edges.values()) == {0, 1, 2}
    by_partition = {partitions[n]: e for n, e in edges.items()}
    assert [by_partition[p] for p in range(10)] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    # Same partitions under other node ids and arrival order: same edges.
    shuffled = {9000 - p: p for p in reversed(range(10))}
    assert {p: e for n, e in assign_edges(shuffled, 3).items() for p in [shuffled[n]]} == (
        by_partition
    )
    declared = assign_edges(partitions, 3, {100: 2})
    assert declared[100] == 2 and all(declared[n] == edges[n] for n in edges if n != 100)
    with pytest.raises(ValueError, match="edge-id outside"):
        assign_edges(partitions, 3, {100: 3})


@pytest.mark.parametrize("box", [None, BoxPlot(k=50.0)])  # k=50: the box keeps all
def test_two_tier_plaintext_aggregate_equals_flat_fedavg(
    make_replies: Replies, box: BoxPlot | None
) -> None:
    rng = np.random.default_rng(0)
    updates = 1.0 + 0.01 * rng.standard_normal((10, 6))
    sizes = [int(s) for s in rng.integers(20, 200, 10)]
    edges = {node: (node - 1) // 4 for node in range(1, 11)}  # edges of 4, 4, 2 clients
    robust = Robustness(box=box)
    flat = make_strategy("fedavg", **COMMON, robust=robust)
    tiered = make_strategy("fedavg", **COMMON, robust=robust, edges=edges)
    for layer in (*layers(flat), *layers(tiered)):  # what configure_train sets in a run
        layer._reference = np.ones(6)
    want, _ = flat.aggregate_train(1, make_replies(updates, sizes))
    got, metrics = tiered.aggregate_train(1, make_replies(updates, sizes))
    np.testing.assert_allclose(got["w"].numpy(), want["w"].numpy(), rtol=1e-6)
    expected_mean = np.average(updates, axis=0, weights=sizes)
    np.testing.assert_allclose(got["w"].numpy(), expected_mean, rtol=1e-5)
    assert metrics["loss"] == pytest.approx(np.average(np.arange(1, 11), weights=sizes))


def test_two_tier_encrypted_sum_equals_flat_encrypted_sum(make_replies: Replies) -> None:
    keys = keygen("ckks")
    rng = np.random.default_rng(1)
    updates = rng.uniform(-1, 1, (6, 5))
    sizes = [30, 60, 90, 40, 50, 70]
    payloads = [
        encrypt_arrays({"w": u}, bundle=keys, weight=n / max(sizes), settings=EncodeSettings())
        for u, n in zip(updates, sizes, strict=True)
    ]
    records = [p.to_arrays() for p in payloads]
    seen = []
    server = dict(he_bundle=keys.public_only(), num_examples=dict(enumerate(sizes, 1)))
    flat = make_strategy("fedavg", **COMMON, **server)
    tiered = make_strategy(
        "fedavg", **COMMON, **server, edges={n: n % 2 for n in range(1, 7)},
        on_tiers=lambda r, t: seen.append(t),
    )  # fmt: skip
    for s in (innermost(flat), innermost(tiered)):  # the encrypted aggregation step
        s._layout, s._clip = layout_of({"w": np.zeros(5)}), 4.0
        s._settings = EncodeSettings()  # the round's encoding, as configure_train records it
    want, _ = flat.aggregate_train(1, make_replies(records, sizes))
    got, _ = tiered.aggregate_train(1, make_replies(records, sizes))
    assert isinstance(got, ArrayRecord) and Payload.from_arrays(got).header.count == 6
    decrypted = decrypt_arrays(Payload.from_arrays(got), bundle=keys)["w"]
    np.testing.assert_allclose(
        decrypted, decrypt_arrays(Payload.from_arrays(want), bundle=keys)["w"], atol=1e-6
    )
    np.testing.assert_allclose(decrypted, np.average(updates, axis=0, weights=sizes), atol=1e-5)
    tiers = seen[0]
    assert {e: t["aggregated"] for e, t in tiers["edges"].items()} == {"0": 3, "1": 3}
    assert tiers["edge-to-cloud-bytes"] == sum(t["to-cloud-bytes"] for t in tiers["edges"].values())
    assert tiers["edge-to-cloud-bytes"] > 2 * 5 * 8  # ciphertexts, not five floats per edge


def test_an_edge_on_foreign_keys_is_skipped_not_fatal(make_replies: Replies) -> None:
    keys, foreign = keygen("ckks"), keygen("ckks")
    settings = EncodeSettings()

    def records(bundle, n):  # noqa: ANN001, ANN202
        return [encrypt_arrays({"w": np.ones(3)}, bundle=bundle, weight=1.0,
                               settings=settings).to_arrays() for _ in range(n)]  # fmt: skip

    tiered = make_strategy(
        "fedavg", **COMMON, he_bundle=keys.public_only(), edges={1: 0, 2: 0, 3: 1}
    )
    step = innermost(tiered)  # the encrypted aggregation step
    step._layout, step._clip = layout_of({"w": np.zeros(3)}), 4.0
    step._settings = settings
    got, _ = tiered.aggregate_train(
        1, make_replies(records(keys, 2) + records(foreign, 1), [5] * 3)
    )
    assert Payload.from_arrays(got).header.count == 2  # edge 1 (foreign keys only) left out
    with pytest.raises(AllKeysMismatched):
        tiered.aggregate_train(1, make_replies(records(foreign, 3), [5] * 3))


def test_cloud_tier_drops_a_poisoned_edge(make_replies: Replies) -> None:
    updates = np.ones((10, 4)) + 0.01 * np.random.default_rng(2).standard_normal((10, 4))
    updates[8:] = -20.0  # both clients of edge 4 are poisoned
    edges = {node: (node - 1) // 2 for node in range(1, 11)}  # five edges of two
    reports = []
    tiered = make_strategy(
        "fedavg", **COMMON, edges=edges, cloud_box=BoxPlot(),
        on_filter=lambda r, rep: reports.append(rep),
    )  # fmt: skip
    tiered._reference = np.ones(4)  # set by configure_train in a run
    got, _ = tiered.aggregate_train(1, make_replies(updates, [10] * 10))
    assert [(r.tier, set(r.dropped)) for r in reports] == [("cloud", {4})]
    np.testing.assert_allclose(got["w"].numpy(), updates[:8].mean(axis=0), rtol=1e-5)


def test_factory_refuses_cloud_filtering_of_ciphertexts() -> None:
    keys = keygen("ckks")
    with pytest.raises(ValueError, match="cloud tier needs plaintext"):
        make_strategy("fedavg", **COMMON, he_bundle=keys.public_only(), edges={1: 0},
                      cloud_box=BoxPlot(scores=("norm",)))  # fmt: skip
    with pytest.raises(ValueError, match="flat strategy"):
        make_strategy("krum", **COMMON, edges={1: 0})


@pytest.mark.slow
def test_hierarchical_encrypted_pipeline_in_a_real_simulation(tmp_path: Path) -> None:
    """Terminals -> 2 edges (encrypted box plot each) -> cloud, on CKKS ciphertexts only."""
    keys = tmp_path / "keys"
    generate("ckks", keys, {"coeff-mod-bit-sizes": [60, 40, 40, 60], "eval-keys": True})
    results = simulate(
        {"task": "mcsn", "mcsn.synthetic-records": 3000, "num-server-rounds": 2,
         "local-epochs": 5, "batch-size": 32, "learning-rate": 0.1, "fraction-evaluate": 0.0,
         "output-dir": str(tmp_path / "out"), "hierarchy.edges": 2, "robust.filter": "boxplot",
         "he.backend": "ckks", "he.coeff-mod-bit-sizes": "60,40,40,60",
         "he.server-bundle": str(keys / SERVER_FILE), "he.client-bundle": str(keys / CLIENT_FILE),
         "attack.type": "scale", "attack.fraction": 0.25},
        num_supernodes=8,
    )  # fmt: skip
    assert results["status"] == "completed" and len(results["rounds"]) == 2
    edges = {n: v["edge"] for n, v in results["nodes"].items()}
    assert sorted(edges.values()) == [0] * 4 + [1] * 4
    bad = {str(n) for n in results["attack"]["malicious-nodes"]}
    for entry in results["rounds"]:
        assert set(entry["robust"]) == {"edge-0", "edge-1"}  # one encrypted box plot per edge
        dropped = {n for edge in entry["robust"].values() for n in edge["dropped"]}
        assert dropped == bad  # the two boosted updates, wherever their edge
        tiers = entry["tiers"]
        assert sum(t["aggregated"] for t in tiers["edges"].values()) == 6
        assert tiers["edge-to-cloud-bytes"] > 0 and entry["bytes-up"] > tiers["edge-to-cloud-bytes"]
    final = runs.test_metrics_of_encrypted_model(results, keys, clients=8)
    assert final["accuracy"] > 0.6  # chance on 7 classes with a 0.4 benign prior: 0.4
