"""SecAgg+ stages in one process: sums, dropouts, thresholds, collusion, lying server, bad input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from scipy import stats

from flwr_privacy.secagg.crypto import SecAggError, new_session
from flwr_privacy.secagg.encoding import FixedPoint, modulus_bits, pack, unpack
from flwr_privacy.secagg.floors import ClientFloors
from flwr_privacy.secagg.graph import default_degree, harary, new_graph_seed
from flwr_privacy.secagg.protocol import (
    ClientSession,
    RoundParams,
    ServerRound,
    pair_mask,
    self_mask,
    simulate,
    simulated_trust,
)

LOOSE = ClientFloors(min_neighbours=1, min_quant_bits=1, min_mod_bits=1)


def _inputs(n: int, size: int, bits: int, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    # node ids as Flower draws them: anywhere in the unsigned 64-bit range
    ids = rng.integers(1, 2**63, size=n, dtype=np.int64).astype(np.uint64) * 2 - 1
    return {int(i): rng.integers(0, 2**bits, size=size).astype(np.uint32) for i in ids}


@pytest.mark.parametrize(
    ("n", "degree", "threshold", "early", "late"),
    [(2, 1, 1, 0, 0), (5, 4, 3, 0, 1), (10, 4, 3, 1, 1), (30, 10, 6, 2, 3), (100, 14, 8, 0, 10)],
)
def test_unmasked_sum_is_the_sum_of_the_survivors(n, degree, threshold, early, late) -> None:
    bits = 16
    mod_bits = modulus_bits(bits, n)
    inputs = _inputs(n, 200, bits, seed=n)
    nodes = sorted(inputs)
    gone_early, gone_late = nodes[:early], nodes[early : early + late]
    total, server = simulate(
        inputs,
        threshold=threshold,
        degree=degree,
        mod_bits=mod_bits,
        drop_before_shares=gone_early,
        drop_before_masked=gone_late,
    )
    survivors = [i for i in nodes if i not in gone_early + gone_late]
    expected = sum(inputs[i].astype(np.int64) for i in survivors)
    assert np.array_equal(total.astype(np.int64), expected)  # exact: no wrap at this modulus
    assert set(server.masked) == set(survivors)
    assert set(server.shares) - set(server.masked) == set(gone_late)  # recovered from shares


@pytest.mark.parametrize("n", [2, 7, 100])
def test_decoded_sum_is_fedavg_within_the_quantization_bound(n: int) -> None:
    rng = np.random.default_rng(n)
    enc = FixedPoint(clip=2.0, quant_bits=16)
    deltas = {i: rng.normal(0, 0.3, size=50) for i in range(n)}
    sizes = {i: int(rng.integers(5, 500)) for i in range(n)}  # unequal weights
    scale = max(sizes.values())
    dropped = set(range(0, n, 10)) if n > 2 else set()
    values, weights = {}, {}
    for i in deltas:
        values[i + 1], _ = enc.encode(deltas[i], sizes[i] / scale, rng)
        weights[i] = enc.weight(sizes[i] / scale)[1]
    total, _ = simulate(
        values,
        threshold=default_degree(n) // 2 + 1,
        degree=default_degree(n),
        mod_bits=modulus_bits(16, n),
        drop_before_masked=[i + 1 for i in dropped],
    )
    kept = [i for i in deltas if i not in dropped]
    mean, weight_sum = enc.decode(total, len(kept))
    fedavg = np.average([deltas[i] for i in kept], axis=0, weights=[sizes[i] for i in kept])
    # each client is off by less than one step per value; weights are exact to 1/levels
    bound = len(kept) * enc.step / weight_sum + 2 * len(kept) / enc.levels / weight_sum
    assert weight_sum == pytest.approx(sum(weights[i] for i in kept))
    assert np.max(np.abs(mean - fedavg)) <= bound
    assert np.max(np.abs(mean - fedavg)) < 1e-3


def test_too_few_shares_leave_the_round_unaggregated() -> None:
    inputs = _inputs(5, 10, 8)
    nodes = sorted(inputs)
    with pytest.raises(SecAggError, match="fewer than the threshold"):
        simulate(inputs, threshold=4, degree=4, mod_bits=12, drop_before_masked=nodes[:2])


def test_harary_graph_degree_and_default() -> None:
    graph = harary(range(50), 10)
    assert all(len(v) == 10 for v in graph.values())
    assert all(a in graph[b] for a in graph for b in graph[a])  # symmetric
    assert harary(range(5), 10) == {a: set(range(5)) - {a} for a in range(5)}
    assert default_degree(1000) == 20 and default_degree(5) == 4


def _round(n: int, threshold: int, mod_bits: int, size: int):
    """Stages 1-3 of a complete-graph round, every party's objects kept (for attacks)."""
    inputs = _inputs(n, size, mod_bits - 3)
    nodes = sorted(inputs)
    trust = simulated_trust(nodes)
    params = RoundParams(
        session=new_session(), round=3, participants=tuple(nodes),
        identities=tuple(trust[i].key.identity for i in nodes), degree=n - 1,
        graph_seed=new_graph_seed(), threshold=threshold, mod_bits=mod_bits, size=size,
        encoding={"kind": "fixed", "quant-bits": mod_bits - 3},
    )  # fmt: skip
    server = ServerRound(params)
    clients = {i: ClientSession.start(node=i, params=params, trust=trust[i], floors=LOOSE)
               for i in nodes}  # fmt: skip
    for i, c in clients.items():
        server.add_advert(i, c.advert(trust[i]))
    for i, c in clients.items():
        server.add_shares(i, c.share_keys(server.adverts_for(i), trust[i], round_=3,
                                          session=server.session))  # fmt: skip
    for i, c in clients.items():
        server.add_masked(
            i, c.mask_input(inputs[i], server.shares_for(i), round_=3, session=server.session)
        )
    return inputs, server, clients, trust


def _coalition_view(server, clients, honest: int, colluders: list[int]) -> np.ndarray:
    """The honest client's masked input minus every mask the coalition can compute."""
    size, r, s = server.size, server.round, server.session
    y = server.masked[honest].astype(np.uint32)
    b_shares, s_shares = [], []
    for c in colluders:  # each colluder decrypts the shares the honest client sent it
        b, sk = clients[c]._open(honest, server.shares_for(c)[honest])
        b_shares.append(b)
        s_shares.append(sk)
        y = y - pair_mask(clients[c].s.private, server.public[honest][1], s, r, honest, c, size)
    if len(colluders) >= server.threshold:  # enough shares: rebuild both secrets
        seed, private_s = combine_shares(b_shares), combine_shares(s_shares)
        y = y - self_mask(seed, s, r, honest, size)
        for j in clients:
            if j != honest and j not in colluders:
                y = y - pair_mask(private_s, server.public[j][1], s, r, honest, j, size)
    return y & np.uint32((1 << server.mod_bits) - 1)


def test_server_and_t_minus_1_clients_see_uniform_noise_t_clients_see_the_input() -> None:
    n, t, mod_bits, size = 6, 3, 8, 40_000
    inputs, server, clients, _ = _round(n, t, mod_bits, size)
    nodes = sorted(inputs)
    honest, colluders = nodes[0], nodes[1:t]  # t - 1 colluders
    residual = _coalition_view(server, clients, honest, colluders)
    counts = np.bincount(residual, minlength=1 << mod_bits)
    assert stats.chisquare(counts).pvalue > 1e-4  # uniform mod R: the input is hidden
    assert not np.array_equal(residual, inputs[honest])
    # the residual carries no trace of the input: same statistics whatever it was
    assert abs(np.corrcoef(residual.astype(float), inputs[honest].astype(float))[0, 1]) < 0.03
    # t colluders: the threshold is real
    recovered = _coalition_view(server, clients, honest, nodes[1 : t + 1])
    assert np.array_equal(recovered, inputs[honest])


def test_a_client_reveals_one_kind_per_neighbour_as_the_signed_set_says() -> None:
    inputs, server, clients, trust = _round(5, 3, 10, 16)
    nodes = sorted(inputs)
    victim, asked = nodes[0], clients[nodes[1]]
    alive = [j for j in nodes if j != victim]  # the victim "dropped": its s shares are due
    with pytest.raises(SecAggError, match="the server calls this node dropped"):
        clients[victim].sign_survivors(alive, trust[victim], round_=3, session=server.session)
    sigs = {j: clients[j].sign_survivors(alive, trust[j], round_=3, session=server.session)
            for j in alive}  # fmt: skip
    shares = asked.unmask(alive, sigs, trust[nodes[1]], round_=3, session=server.session)
    b, s = asked._open(victim, asked.ciphertexts[victim])
    assert shares[victim] == s and shares[nodes[2]] != b  # s for the dropped, b for the others
    # answered once: asking again (now with the victim alive) is refused
    with pytest.raises(SecAggError, match="past 'unmasked'"):
        asked.unmask(nodes, sigs, trust[nodes[1]], round_=3, session=server.session)


def test_replayed_misaddressed_and_malformed_messages_are_refused_naming_the_node() -> None:
    inputs, server, clients, trust = _round(4, 2, 10, 16)
    nodes = sorted(inputs)
    a, b, c = nodes[:3]
    # a stage of an earlier round / another session
    with pytest.raises(SecAggError, match=f"node {a}: message of round 2"):
        clients[a].sign_survivors(nodes, trust[a], round_=2, session=server.session)
    with pytest.raises(SecAggError, match="replayed or misaddressed"):
        clients[a].sign_survivors(nodes, trust[a], round_=3, session=new_session())
    # shares addressed to another node: b's ciphertext from c given to a as if from c
    fresh = ClientSession.start(node=a, params=replace(server.params, round=4), trust=trust[a],
                                floors=LOOSE)  # fmt: skip
    adverts = {j: ClientSession.start(node=j, params=fresh.params, trust=trust[j], floors=LOOSE)
               for j in (b, c, nodes[3])}  # fmt: skip
    fresh.share_keys({j: s.advert(trust[j]) for j, s in adverts.items()}, trust[a], round_=4,
                     session=server.session)  # fmt: skip
    with pytest.raises(SecAggError, match=f"node {a}: the shares from node {c} do not decrypt"):
        fresh.mask_input(
            np.zeros(16, np.uint32),
            {c: server.shares_for(b)[c], b: b"x" * 10, nodes[3]: b"y"},
            round_=4,
            session=server.session,
        )
    # malformed public keys
    bad = server.adverts[b]._replace(c=b"short")
    with pytest.raises(SecAggError, match=f"node {b}: public key must be 32 raw bytes"):
        server.add_advert(b, bad)
    # masked vectors of the wrong length or outside [0, R)
    fresh_server = ServerRound(server.params, adverts=server.adverts, shares=server.shares)
    with pytest.raises(SecAggError, match=f"node {a}: masked vector has 10 bytes"):
        fresh_server.add_masked(a, b"0" * 10)
    with pytest.raises(SecAggError, match=f"node {a}: masked vector has values outside"):
        fresh_server.add_masked(a, pack(np.full(16, 2000, np.uint32), 16))
    with pytest.raises(SecAggError, match="second masked input"):
        server.add_masked(a, pack(np.zeros(16, np.uint32), 10))


def test_packing_uses_ceil_bits_over_8_bytes() -> None:
    values = np.arange(1000, dtype=np.uint32) * 8000
    data = pack(values, 23)
    assert len(data) == 3 * 1000
    assert np.array_equal(unpack(data, 23, 1000, node=1), values)
