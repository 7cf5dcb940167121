"""Box-plot filtering in real Flower simulations, in plaintext and over CKKS ciphertexts."""

from pathlib import Path

import numpy as np
import pytest
import tenseal as ts

import app.server_app as server_app
from app.metering import MeteredGrid
from app.simulation import simulate
from flwr_privacy.he import ckks, is_encrypted, paillier
from flwr_privacy.he.protocol import SCORES_KEY

pytestmark = pytest.mark.slow  # real processes or the engine: tests/conftest.py

ROUNDS = 3


def _dropped_rates(results: dict) -> tuple[float, float]:
    totals = results["robust"]
    malicious = totals["malicious-client-rounds"]
    honest = totals["client-rounds"] - malicious
    return totals["dropped-malicious"] / malicious, totals["dropped-honest"] / honest


def test_sign_flip_attackers_are_dropped_and_accuracy_holds(tmp_path: Path) -> None:
    results = simulate(
        {"num-server-rounds": ROUNDS, "output-dir": str(tmp_path), "robust.filter": "boxplot",
         "attack.type": "sign-flip", "attack.fraction": 0.3, "fraction-evaluate": 0.0},
        num_supernodes=10,
    )  # fmt: skip
    assert results["status"] == "completed"
    assert len(results["attack"]["malicious-nodes"]) == 3
    # Round 1, where the flipped update is largest, drops exactly the attackers; later a
    # flipped update shrinks into the honest spread (and does little harm), so over the
    # run most drops are attackers rather than every attacker being dropped every round.
    first = results["rounds"][0]["robust"]
    assert set(first["dropped"]) == {str(n) for n in results["attack"]["malicious-nodes"]}
    assert "median-distance" in next(iter(first["dropped"].values()))
    totals = results["robust"]
    assert totals["dropped-malicious"] >= 0.75 * totals["dropped"]
    _, honest_rate = _dropped_rates(results)
    assert honest_rate <= 0.1
    assert results["final"]["accuracy"] >= 0.94


def test_encrypted_filter_never_decrypts_on_the_server(tmp_path: Path, monkeypatch) -> None:
    """Scaled-update attackers are dropped from CKKS updates the server cannot read.

    The ServerApp runs in this process and the simulated clients in Ray worker
    processes: every decryption routine is disabled here, and every message the
    server sends is inspected.
    """

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the server tried to decrypt")

    for module, name in ((ckks, "decrypt"), (ckks, "decrypt_scalars"), (paillier, "decrypt")):
        monkeypatch.setattr(module, name, forbidden)
    sent, strategies = [], []
    real_send = MeteredGrid.send_and_receive

    def spy(self, messages, *args, **kwargs):
        messages = list(messages)
        sent.extend(messages)
        return real_send(self, messages, *args, **kwargs)

    real_make = server_app.make_strategy

    def make(*args, **kwargs):
        strategies.append(real_make(*args, **kwargs))
        return strategies[-1]

    monkeypatch.setattr(MeteredGrid, "send_and_receive", spy)
    monkeypatch.setattr(server_app, "make_strategy", make)
    results = simulate(
        {"num-server-rounds": ROUNDS, "output-dir": str(tmp_path), "robust.filter": "boxplot",
         "attack.type": "scale", "attack.fraction": 0.3, "fraction-evaluate": 0.5,
         "he.backend": "ckks", "he.coeff-mod-bit-sizes": "60,40,40,60"},
        num_supernodes=10,
    )  # fmt: skip
    assert results["status"] == "completed"
    malicious_rate, honest_rate = _dropped_rates(results)
    assert malicious_rate == 1.0 and honest_rate <= 0.1
    # The server held public material only.
    bundle = strategies[0].bundle
    assert not bundle.is_private
    assert not ckks.context(bundle, secret=False, evaluation=True).is_private()
    # Score queries carried one-value ciphertexts only (norm and mean-distance per client),
    # each round to two key holders that agreed (or more when one did not answer).
    queries = [m for m in sent if m.metadata.message_type == "query.he_scores"]
    rounds = [q.content["config"]["server-round"] for q in queries]
    assert all(rounds.count(r) >= 2 for r in range(1, ROUNDS + 1))
    public = ts.context_from(bundle.public)
    for q in queries:
        chunks = list(q.content["config"][SCORES_KEY])
        assert len(chunks) == 2 * 10
        assert all(ts.ckks_vector_from(public, c).size() == 1 for c in chunks)
        assert q.metadata.dst_node_id in {int(n) for n in results["nodes"]}
    # From round 2 on the global model the server sends is a ciphertext.
    trains = [m for m in sent if m.metadata.message_type == "train"]
    assert all(is_encrypted(m.content["arrays"]) for m in trains[10:])
    # The encrypted model of the filtered run still learns (federated evaluation).
    assert results["final"]["accuracy"] >= 0.85
    assert np.isfinite(results["final"]["loss"])


@pytest.mark.parametrize("filter_", ["boxplot-coordinate"])
def test_coordinate_variant_runs_and_counts_exclusions(filter_: str, tmp_path: Path) -> None:
    results = simulate(
        {"num-server-rounds": 2, "output-dir": str(tmp_path), "robust.filter": filter_,
         "attack.type": "same-value", "attack.fraction": 0.2, "fraction-evaluate": 0.0},
        num_supernodes=10,
    )  # fmt: skip
    assert results["status"] == "completed"
    excluded = [r["robust"]["excluded-values"] for r in results["rounds"]]
    # Two same-value attackers push every coordinate out of the fences: >= 2 * 31 a round.
    assert all(e >= 2 * 31 for e in excluded)
    assert results["final"]["accuracy"] >= 0.9
