"""SecAgg+ against a server that lies: each attack scripted against the real ``secagg_mod``.

A script plays the server (``secagg_harness.Federation``): real key agreement, real
Shamir shares, real Ed25519 roster signatures, honest clients with default floors and no
colluding client. Each test runs one attack and asserts the refusal: the stage and the
reason the client gives.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, RecordDict
from flwr.common.secure_aggregation.crypto.shamir import create_shares

from flwr_privacy.dp.ddg import (
    DdgBudget,
    DdgPlan,
    check_plan_noise,
    client_step,
    ddg_epsilon,
    plan_ddg,
)
from flwr_privacy.mods.secagg import ddg_plan_of
from flwr_privacy.secagg.crypto import KeyPair, SecAggError
from flwr_privacy.secagg.identity import SigningKey
from flwr_privacy.secagg.protocol import Advert, ServerRound, advert_message
from flwr_privacy.secagg.stages import KEYS, MASK, id_map_values, stage_record
from tests.flwr_privacy.secagg_harness import BITS, CLIP, SIZE, Federation, delta, error

pytestmark = pytest.mark.usefixtures("server_identity")
STEP = 2 * CLIP / (2**BITS - 1)


def _through_mask(f: Federation, server: ServerRound) -> None:
    for stage in (f.keys, f.shares, f.mask):
        assert not any(r.has_error() for r in stage(server).values())


def test_an_honest_round_through_the_real_mod_is_fedavg(tmp_path: Path) -> None:
    f = Federation(5, tmp_path)
    server = ServerRound(f.params())
    total = server.unmask(f.honest_round(server))
    expected = np.mean([delta(n) for n in f.nodes], axis=0)
    assert np.max(np.abs(f.mean(server, total) - expected)) < 5 * STEP
    assert server.params.quorum == 4  # 2q > |P| + t - 1 = 5 + 3 - 1


def test_key_substitution_is_refused_at_the_share_stage_naming_the_neighbour(
    tmp_path: Path,
) -> None:
    f = Federation(5, tmp_path)
    server = ServerRound(f.params())
    f.keys(server)
    victim, other = f.nodes[0], f.nodes[1]
    c, s = KeyPair.generate(), KeyPair.generate()
    real = server.adverts[other]
    # the server's own keys in place of a neighbour's: with that neighbour's signature ...
    swapped = {**server.adverts_for(victim), other: Advert(c.public, s.public, real.commit,
                                                           real.signature)}  # fmt: skip
    reason = error(f.shares(server, {victim: swapped})[victim])
    assert f"the keys of neighbour {other}" in reason and "bad signature" in reason
    assert f.names[other] in reason
    # ... or signed with a key the server made for that identity: not the roster's key
    f2 = Federation(5, tmp_path / "2")
    server2 = ServerRound(f2.params())
    f2.keys(server2)
    victim2, other2 = f2.nodes[0], f2.nodes[1]
    real2 = server2.adverts[other2]
    forged = SigningKey.generate(f2.names[other2]).sign(
        advert_message(server2.params.digest(), other2, c.public, s.public, real2.commit))
    shown = {**server2.adverts_for(victim2), other2: Advert(c.public, s.public, real2.commit,
                                                            forged)}  # fmt: skip
    assert "bad signature" in error(f2.shares(server2, {victim2: shown})[victim2])


def test_hidden_neighbour_keys_are_refused_at_the_share_stage(tmp_path: Path) -> None:
    # Showing each client only t of its neighbours' keys would let the server cut the graph
    # the clients mask over into pieces (pairs of honest clients) and unmask each piece's sum
    # while every client signs one survivor set: every neighbour's keys are required.
    f = Federation(10, tmp_path)
    server = ServerRound(f.params())
    f.keys(server)
    victim = f.nodes[0]
    only_t = dict(list(server.adverts_for(victim).items())[: server.threshold])
    reason = error(f.shares(server, {victim: only_t})[victim])
    assert "no keys from neighbours" in reason and "refusing to share with fewer" in reason


def test_an_unknown_node_among_the_participants_stops_the_round(tmp_path: Path) -> None:
    f = Federation(5, tmp_path)
    p = f.params()
    names = list(p.identities)
    names[-1] = "mallory"  # a server-run node the operator never admitted
    lying = replace(p, identities=tuple(names))
    reason = error(f.send(f.nodes[0], stage_record(KEYS, 1, p.session, **lying.to_record())))
    assert "['mallory'] are not in the roster (unknown nodes)" in reason


@pytest.mark.parametrize(("n", "degree"), [(10, 9), (20, 8)])
def test_per_client_survivor_lists_never_reach_a_quorum(
    tmp_path: Path, n: int, degree: int
) -> None:
    # The drop-and-reveal attack: the victim's neighbours are told "victim survived" (they
    # would reveal its seed share), its mask partner's neighbours "partner dropped" (they
    # would reveal the partner's masking key). Honest clients sign one set each, and no set
    # reaches the quorum 2q > |P| + t - 1, so nobody reveals anything.
    f = Federation(n, tmp_path)
    server = ServerRound(f.params(degree=degree, threshold=degree // 2 + 1))
    _through_mask(f, server)
    survivors = sorted(server.masked)
    victim = survivors[0]
    partner = sorted(server.graph[victim])[0]
    without = [j for j in survivors if j != partner]
    half = set(survivors[::2]) - {partner}  # these are shown "partner dropped"
    replies = f.sign(server, sets={j: without for j in half})
    by_set: dict[str, dict[int, bytes]] = {"with": {}, "without": {}}
    for node, reply in replies.items():
        if not reply.has_error():
            sig = reply.content.config_records["flwr-privacy.secagg"]["sig"]
            by_set["without" if node in half else "with"][node] = sig  # type: ignore[assignment]
    q = server.params.quorum
    assert all(len(v) < q for v in by_set.values())  # neither set has a quorum
    asked = next(j for j in survivors if j not in half)
    reason = error(f.unmask_request(server, asked, survivors, by_set["with"]))
    assert f"fewer than the quorum {q}" in reason
    # the other set's signatures passed off as signatures on this one do not verify
    mixed = {**by_set["with"], **by_set["without"]}
    assert "bad signature" in error(f.unmask_request(server, asked, survivors, mixed))
    # a node that signed "partner dropped" refuses a request for the other set ...
    liar_target = next(iter(half))
    assert "another survivor set" in error(f.unmask_request(server, liar_target, survivors, mixed))
    # ... and nobody signs twice
    assert "past 'signed'" in error(f.sign(server, sets={asked: without})[asked])


def test_withheld_shares_refuse_the_masked_input_before_training(tmp_path: Path) -> None:
    f = Federation(5, tmp_path)
    server = ServerRound(f.params())
    f.keys(server)
    f.shares(server)
    victim = f.nodes[0]
    only_t = dict(list(server.shares_for(victim).items())[: server.threshold])
    replies = f.mask(server, forwarded={victim: only_t})
    reason = error(replies[victim])
    assert "no shares arrived from neighbours" in reason and "refusing to mask with fewer" in reason
    assert victim not in f.trained  # refused before its update existed


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"threshold": 2}, "threshold t = 2 for 9 neighbours; this client needs 5 <= t <= 9"),
        ({"threshold": 1}, "threshold t = 1 for 9 neighbours"),
        ({"degree": 2, "threshold": 2}, "2 neighbours, below this client's floor 3"),
        ({"mod_bits": 1}, "modulus 2^1; this client needs 8 <= bits <= 32"),
        ({"session": b""}, "the session id must be 16 bytes"),
        ({"encoding": {"kind": "fixed", "clip": CLIP, "quant-bits": 1, "weight-scale": 10.0,
                       "weight-key": "num-examples"}}, "1 quantization bits, below"),
        ({"encoding": {"kind": "ddg", **DdgPlan(gamma=1e-3, sigma=1e-9, l2_sensitivity=3.0,
                                                 honest=5, dim=SIZE, bits=20).to_record()},
          "mod_bits": 20, "max_dropouts": 0},
         "sigma = 1e-09 per client, below this client's floor 0.5"),
    ],
)  # fmt: skip
def test_a_round_below_the_clients_floors_is_refused_naming_value_and_floor(
    tmp_path: Path, change: dict, match: str
) -> None:
    f = Federation(10, tmp_path)
    p = f.params(**change)
    reason = error(f.send(f.nodes[0], stage_record(KEYS, 1, p.session, **p.to_record())))
    assert match in reason


def test_a_per_client_threshold_above_the_floor_breaks_every_signature(tmp_path: Path) -> None:
    # only the victim is told t = 6 (the others t = 5): it signs other parameters, so its
    # neighbours refuse its keys and it refuses theirs
    f = Federation(10, tmp_path)
    server = ServerRound(f.params(threshold=5))
    victim = f.nodes[0]
    lying = replace(server.params, threshold=6)
    f.keys(server, params_for={victim: lying})
    replies = f.shares(server)
    assert f"the keys of neighbour {victim}" in error(replies[f.nodes[1]])
    assert "shown other round parameters" in error(replies[victim])


def test_a_noise_free_or_lying_dp_plan_is_refused_by_the_clients_own_budget(
    tmp_path: Path,
) -> None:
    budget = DdgBudget(epsilon=3.0, delta=1e-5, rounds=100)
    q, l2_clip, dim = 0.05, 0.01, 1000
    honest = plan_ddg(epsilon=3.0, delta=1e-5, sample_rate=q, rounds=100, l2_clip=l2_clip,
                      dim=dim, honest=6, bits=32, clients=10, update_norm=0.1)  # fmt: skip
    check_plan_noise(client_step(honest, l2_clip=l2_clip, sample_rate=q), budget)  # accepted
    # a plan that claims a tiny sensitivity and sigma 0.5: its own numbers book epsilon 0.02 ...
    lying = DdgPlan(gamma=honest.gamma, sigma=0.5, l2_sensitivity=1e-3, honest=1, dim=dim, bits=32)
    # ... but the client books its own sensitivity, and refuses before sending anything
    step = client_step(lying, l2_clip=l2_clip, sample_rate=q)
    assert step.l2_sensitivity > 1e3 * lying.l2_sensitivity
    with pytest.raises(ValueError, match="needs at least"):
        check_plan_noise(step, budget)
    assert ddg_epsilon([step], 1e-5) > 1e3  # what that round would really cost
    # the honest count is the client's own: |P| - max_dropouts - (t - 1), never the claim
    f = Federation(10, tmp_path)
    claimed = DdgPlan(gamma=1e-3, sigma=2.0, l2_sensitivity=3.0, honest=1000, dim=SIZE, bits=20)
    p = f.params(encoding={"kind": "ddg", **claimed.to_record()}, mod_bits=20, max_dropouts=1)
    assert ddg_plan_of(p, "test").honest == 10 - 1 - (5 - 1)


def test_a_flipped_bit_in_one_seed_share_is_left_out_or_named(tmp_path: Path) -> None:
    f = Federation(5, tmp_path)
    server = ServerRound(f.params())
    responses = f.honest_round(server)
    victim = f.nodes[0]
    holder = next(j for j in responses if victim in responses[j])
    share = bytearray(responses[holder][victim])
    share[-1] ^= 1
    bad = {**responses, holder: {**responses[holder], victim: bytes(share)}}
    total = server.unmask(bad)  # 4 shares, t = 3: rebuilt from three good ones
    assert np.array_equal(total, server.unmask(responses))
    # with exactly t shares left, one of them bad: the group is refused with the reason
    keep = [j for j in bad if victim in bad[j]][: server.threshold]
    if holder not in keep:
        keep[-1] = holder
    short = {j: (v if j in keep else {k: s for k, s in v.items() if k != victim})
             for j, v in bad.items()}  # fmt: skip
    with pytest.raises(SecAggError, match=f"node {victim}: no 3 of its 3 self-mask seed shares"):
        server.unmask(short)


def test_a_crafted_masking_key_share_never_escapes_the_unmasking(tmp_path: Path) -> None:
    f = Federation(6, tmp_path)
    server = ServerRound(f.params())
    f.keys(server)
    f.shares(server)
    dropped = f.nodes[0]
    assert not any(r.has_error() for r in f.mask(server, skip=[dropped]).values())
    assert not any(r.has_error() for r in f.sign(server).values())
    responses = f.unmask(server)
    liar = next(j for j in responses if dropped in responses[j])
    crafted = create_shares(bytes(47), server.threshold, 5)[0]  # a 47-byte "key"
    bad = {**responses, liar: {**responses[liar], dropped: crafted}}
    total = server.unmask(bad)  # no ValueError: the crafted share is left out
    expected = np.mean([delta(n) for n in f.nodes[1:]], axis=0)
    assert np.max(np.abs(f.mean(server, total) - expected)) < 5 * STEP


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("weight-scale", "'weight-scale' = 0.0; allowed: a finite number > 0"),
        ("nan-weight", "'metrics.num-examples' is NaN"),
        ("nan-update", f"the update has {SIZE} NaN and 0 infinite values"),
    ],
)
def test_malformed_values_get_the_mods_error_reply_naming_them(
    tmp_path: Path, setup: str, match: str
) -> None:
    f = Federation(5, tmp_path)
    enc = {"kind": "fixed", "clip": CLIP, "quant-bits": BITS, "weight-key": "num-examples",
           "weight-scale": 0.0 if setup == "weight-scale" else 10.0}  # fmt: skip
    server = ServerRound(f.params(encoding=enc))
    f.keys(server)
    f.shares(server)
    if setup == "nan-weight":
        f.weight = math.nan
    if setup == "nan-update":
        f.poison = {n: np.full(SIZE, np.nan, np.float32) for n in f.nodes}
    replies = f.mask(server)
    assert match in error(replies[f.nodes[0]])


def test_an_incomplete_dp_plan_and_a_second_masked_input_are_refused(tmp_path: Path) -> None:
    f = Federation(5, tmp_path)
    p = f.params(encoding={"kind": "ddg", "ddg-gamma": 1e-3}, mod_bits=20, max_dropouts=0)
    assert "lacks a float 'ddg-sigma'" in error(
        f.send(f.nodes[0], stage_record(KEYS, 1, p.session, **p.to_record())))
    server = ServerRound(f.params())
    f.honest_round(server)
    again = f.params()  # round 1 again, fresh session: a second input of the same round
    reason = error(f.send(f.nodes[0], stage_record(KEYS, 1, again.session, **again.to_record())))
    assert "already masked an input in round 1" in reason


def test_the_app_sees_only_what_the_client_verified_of_the_mask_record(tmp_path: Path) -> None:
    # a fixed-point round; the server slips a fake DP plan (honest = 1000) into the mask record
    f = Federation(5, tmp_path)
    server = ServerRound(f.params())
    f.keys(server)
    f.shares(server)
    seen = []
    inner = f._train

    def train(msg, context):  # type: ignore[no-untyped-def]
        seen.append(dict(msg.content.config_records["flwr-privacy.secagg"]))
        return inner(msg, context)

    f._train = train  # type: ignore[method-assign]
    fake = DdgPlan(gamma=1e-3, sigma=0.5, l2_sensitivity=1.0, honest=1000, dim=SIZE, bits=20)
    node = f.nodes[0]
    content = RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(SIZE, np.float32))})})
    record = stage_record(MASK, 1, server.session, encoding="ddg", **fake.to_record(),
                          **id_map_values(server.shares_for(node), "ct-ids", "cts"))  # fmt: skip
    assert not f.send(node, record, content).has_error()
    assert seen == [{"encoding": "fixed"}]  # the signed encoding, nothing the server slipped in


def test_a_weight_that_rounds_to_zero_and_malformed_values_are_refused(tmp_path: Path) -> None:
    # a huge weight scale would make every other client add nothing: a "sum" of one update
    f = Federation(5, tmp_path)
    enc = {"kind": "fixed", "clip": CLIP, "quant-bits": BITS, "weight-key": "num-examples",
           "weight-scale": 1e9}  # fmt: skip
    server = ServerRound(f.params(encoding=enc))
    f.keys(server)
    f.shares(server)
    assert "rounds to 0" in error(f.mask(server)[f.nodes[0]])
    # bytes where a number belongs, a round past 2^64: the mod's error reply, no exception
    p = f.params(encoding={**enc, "weight-scale": b"\x00"})
    assert "malformed SecAgg record" in error(
        f.send(f.nodes[1], stage_record(KEYS, 1, p.session, **p.to_record())))
    q = f.params()
    assert "malformed SecAgg record" in error(
        f.send(f.nodes[1], stage_record(KEYS, 2**64, q.session, **q.to_record())))
