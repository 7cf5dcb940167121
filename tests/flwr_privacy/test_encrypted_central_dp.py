"""Central DP on the encrypted sum: real keys, real client mods, real accounting."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from flwr_privacy.dp import DpSettings
from flwr_privacy.he import (
    EncodeSettings,
    KeyBundle,
    Payload,
    aggregate,
    decrypt_arrays,
    encrypt_arrays,
)
from flwr_privacy.he.noise import add_noise, keygen_public, rounding_sensitivity, slots
from flwr_privacy.mods.central_clip import central_clip_mod
from flwr_privacy.mods.he import make_he_mod
from flwr_privacy.records import HE_RECORD
from flwr_privacy.settings import HeSettings
from flwr_privacy.strategy.box_plot import BoxPlot
from flwr_privacy.strategy.budget import BudgetsExhausted
from flwr_privacy.strategy.central_dp import LedgeredCentralDp
from flwr_privacy.strategy.encrypted import EncryptedFedAvg
from flwr_privacy.strategy.encrypted_box_plot import EncryptedBoxPlotFedAvg
from flwr_privacy.strategy.encrypted_dp import EncryptedCentralDp

UNIT = "dp-unit-weight"
NODES = [1, 2, 3]


@pytest.fixture(scope="module")
def ckks_public_keys() -> KeyBundle:
    return keygen_public()


@pytest.fixture(params=["paillier", "ckks"])
def noise_keys(
    request: pytest.FixtureRequest, paillier_keys: KeyBundle, ckks_public_keys: KeyBundle
) -> KeyBundle:
    return paillier_keys if request.param == "paillier" else ckks_public_keys


def test_encrypted_noise_decrypts_to_the_sum_plus_gaussian_noise(noise_keys: KeyBundle) -> None:
    # Arrange: three clients' encrypted updates, summed by a server holding public keys only
    size, n, std, clip = 4000, 3, 0.5, 4.0
    rng = np.random.default_rng(0)
    k = slots(noise_keys.backend, std=std, clip=clip)
    settings = EncodeSettings(clip=clip, bits=16, max_count=n + k)
    updates = [rng.uniform(-1, 1, size).astype(np.float32) for _ in range(n)]
    payloads = [encrypt_arrays({"w": u}, bundle=noise_keys, weight=1.0, settings=settings)
                for u in updates]  # fmt: skip
    server = noise_keys.public_only()
    summed = aggregate(payloads, bundle=server)
    # Act
    noised = add_noise(summed, bundle=server, std=std, noise_slots=k)
    # Assert: a key holder gets sum + N(0, std^2) per value; the server's bundle had no secret
    assert noised.header.count == n + k and noised.header.weight == n
    mean = decrypt_arrays(noised, bundle=noise_keys)["w"].astype(np.float64)
    noise = mean * n - np.sum(updates, axis=0, dtype=np.float64)
    assert noise.std() == pytest.approx(std, rel=0.05)
    assert abs(noise.mean()) < 4 * std / np.sqrt(size)
    assert noised.chunks != summed.chunks


def test_paillier_noise_takes_an_even_number_of_slots_wide_enough_for_its_tails() -> None:
    assert slots("paillier", std=1.0, clip=4.0) == 4  # 4 * 4.0 >= 12 std
    assert slots("paillier", std=0.1, clip=4.0) == 2
    assert slots("paillier", std=10.0, clip=0.5) == 240
    assert slots("ckks", std=10.0, clip=0.5) == 0


class Grid:  # the part of Flower's Grid that FedAvg.configure_train uses
    def get_node_ids(self) -> list[int]:
        return NODES


def _client(bundle_path: Path, step: np.ndarray) -> Callable[[Message, Context], Message]:
    """A client with the real mods ([he_mod, central_clip_mod]) that moves the model by ``step``."""

    def task(msg: Message, context: Context) -> Message:
        received = msg.content["arrays"]["w"].numpy()
        reply = RecordDict({"arrays": ArrayRecord({"w": Array(received + step)}),
                            "metrics": MetricRecord({"num-examples": 10, UNIT: 1})})  # fmt: skip
        return Message(reply, reply_to=msg)

    he_mod = make_he_mod(client_bundle=bundle_path)
    return lambda msg, ctx: he_mod(msg, ctx, lambda m, c: central_clip_mod(m, c, task))


def _context(node: int) -> Context:
    config = {"partition-id": node, "num-partitions": len(NODES)}
    return Context(run_id=1, node_id=node, node_config=config, state=RecordDict(), run_config={})


def _strategy(bundle: KeyBundle, path: Path, dp: DpSettings) -> EncryptedCentralDp:
    inner = EncryptedFedAvg(
        he=HeSettings(backend=bundle.backend, client_bundle=str(path)),
        bundle=bundle.public_only(), fraction_train=1.0, fraction_evaluate=0.0,
        min_train_nodes=3, min_available_nodes=3, weighted_by_key=UNIT,
    )  # fmt: skip
    return EncryptedCentralDp(inner, dp=dp)


def _round(strategy: EncryptedCentralDp, server_round: int, arrays: ArrayRecord,
           clients: dict[int, Callable]) -> ArrayRecord | None:  # fmt: skip
    messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), Grid()))
    replies = [clients[m.metadata.dst_node_id](m, _context(m.metadata.dst_node_id))
               for m in messages]  # fmt: skip
    out, _ = strategy.aggregate_train(server_round, replies)
    return out


@pytest.mark.usefixtures("server_identity")
def test_clients_clip_the_server_noises_and_the_ledger_matches_ledgered_central_dp(
    paillier_keys: KeyBundle, tmp_path: Path
) -> None:
    # Arrange: 3 clients whose updates (norm 20) are far above the clip (1.0)
    size, z, rounds = 2000, 2.0, 3
    path = paillier_keys.save(tmp_path / "client.json")
    dp = DpSettings(mode="central", noise_multiplier=z, max_grad_norm=1.0, epsilon=50.0)
    strategy = _strategy(paillier_keys, path, dp)
    direction = np.random.default_rng(1).normal(size=size)
    direction /= np.linalg.norm(direction)
    clients = {n: _client(path, (20.0 * direction).astype(np.float32)) for n in NODES}
    reference = LedgeredCentralDp(FedAvg(fraction_train=1.0, min_train_nodes=3,
                                         min_available_nodes=3), z, 1.0, 3, dp=dp)  # fmt: skip
    plain = ArrayRecord({"w": Array(np.zeros(size, np.float32))})
    arrays, eps, reference_eps = plain, [], []
    for r in range(1, rounds + 1):
        before = decrypt_arrays(Payload.from_arrays(arrays), bundle=paillier_keys)["w"] if r > 1 \
            else np.zeros(size, np.float32)  # fmt: skip
        # Act
        out = _round(strategy, r, arrays, clients)
        assert out is not None
        arrays = out
        eps.append(strategy.ledger.epsilon())
        ref_messages = list(reference.configure_train(r, plain, ConfigRecord(), Grid()))
        reference.aggregate_train(
            r,
            [
                Message(
                    RecordDict(
                        {
                            "arrays": ArrayRecord({"w": Array(np.ones(size, np.float32))}),
                            "metrics": MetricRecord({"num-examples": 1}),
                        }
                    ),
                    reply_to=m,
                )
                for m in ref_messages
            ],
        )
        reference_eps.append(reference.ledger.epsilon())
        # Assert: the mean moved by the clipped update plus noise of std z * sensitivity / n
        mean = decrypt_arrays(Payload.from_arrays(arrays), bundle=paillier_keys)["w"]
        residual = mean.astype(np.float64) - before - direction
        sensitivity = 1.0 + rounding_sensitivity("paillier", clip=4.0, bits=16, size=size)
        assert residual.std() == pytest.approx(z * sensitivity / 3, rel=0.07)
    # Assert: the HE record gave the noise its room; the ledgers agree round by round
    assert strategy.encrypted.noise_slots == slots("paillier", std=strategy.noise_std(size),
                                                   clip=4.0)  # fmt: skip
    assert eps == pytest.approx(reference_eps, rel=1e-9)
    assert eps[0] < eps[1] < eps[2]


@pytest.mark.usefixtures("server_identity")
def test_the_round_that_would_pass_the_budget_is_not_started(
    ckks_public_keys: KeyBundle, tmp_path: Path
) -> None:
    path = ckks_public_keys.save(tmp_path / "client.json")
    one = EncryptedCentralDp(EncryptedFedAvg(bundle=ckks_public_keys.public_only()),
                             dp=DpSettings(mode="central", noise_multiplier=1.0))  # fmt: skip
    first = one.ledger.epsilon(gaussian=[(1.0, 1.0, 1)])
    dp = DpSettings(mode="central", noise_multiplier=1.0, epsilon=first * 1.01)
    strategy = _strategy(ckks_public_keys, path, dp)
    clients = {n: _client(path, np.full(8, 0.1, np.float32)) for n in NODES}
    arrays = _round(strategy, 1, ArrayRecord({"w": Array(np.zeros(8, np.float32))}), clients)
    assert arrays is not None and strategy.ledger.epsilon() == pytest.approx(first)
    with pytest.raises(BudgetsExhausted, match="another noised aggregate would pass it"):
        _round(strategy, 2, arrays, clients)


@pytest.mark.usefixtures("server_identity")
def test_the_he_record_reserves_the_noise_slots(paillier_keys: KeyBundle, tmp_path: Path) -> None:
    path = paillier_keys.save(tmp_path / "client.json")
    dp = DpSettings(mode="central", noise_multiplier=1.0, epsilon=10.0)
    strategy = _strategy(paillier_keys, path, dp)
    arrays = ArrayRecord({"w": Array(np.zeros(8, np.float32))})
    messages = list(strategy.configure_train(1, arrays, ConfigRecord(), Grid()))
    assert {m.content[HE_RECORD]["max-count"] for m in messages} == {3 + 4}  # 4 * 4.0 >= 12 std
    assert all(m.content["flwr-privacy.dp"]["mode"] == "central" for m in messages)


def test_bad_compositions_are_refused_with_the_fix(
    paillier_keys: KeyBundle, ckks_keys: KeyBundle, ckks_eval_keys: KeyBundle
) -> None:
    dp = DpSettings(mode="central", noise_multiplier=1.0)
    with pytest.raises(ValueError, match="no public key .* cannot encrypt its noise"):
        EncryptedCentralDp(EncryptedFedAvg(bundle=ckks_keys.public_only()), dp=dp)
    with pytest.raises(ValueError, match="box-plot filter picks updates by their values"):
        EncryptedCentralDp(
            EncryptedBoxPlotFedAvg(
                bundle=ckks_eval_keys.public_only(), box=BoxPlot(scores=("mean-distance",))
            ),
            dp=dp,
        )
    with pytest.raises(TypeError, match="for plaintext strategies use LedgeredCentralDp"):
        EncryptedCentralDp(FedAvg(), dp=dp)
    paillier = EncryptedFedAvg(bundle=paillier_keys.public_only())
    with pytest.raises(ValueError, match="use DpSettings\\(accountant='rdp'\\)"):
        EncryptedCentralDp(paillier, dp=DpSettings(mode="central", noise_multiplier=1.0,
                                                    accountant="prv"))  # fmt: skip
    with pytest.raises(ValueError, match="mode='central'"):
        EncryptedCentralDp(paillier, dp=DpSettings(mode="local", noise_multiplier=1.0))


def test_noise_is_planned_from_the_budget_when_unset(paillier_keys: KeyBundle) -> None:
    """Unset noise multiplier: the smallest whose ``rounds`` releases reach ``epsilon``."""
    dp = DpSettings(mode="central", epsilon=3.0, delta=1e-5, rounds=3)
    strategy = EncryptedCentralDp(EncryptedFedAvg(bundle=paillier_keys.public_only()), dp=dp)
    z = strategy.noise_multiplier
    spent = strategy.ledger.epsilon(gaussian=[(z, 1.0, 1)] * 3)
    assert 0.99 * 3.0 <= spent <= 3.0 * (1 + 1e-6), (z, spent)
    assert strategy.ledger.epsilon(gaussian=[(z, 1.0, 1)] * 4) > 3.0  # a 4th would pass it


def test_toolkit_exports_the_layer_lazily() -> None:
    import flwr_privacy

    assert flwr_privacy.EncryptedCentralDp is EncryptedCentralDp
    assert flwr_privacy.central_clip_mod is central_clip_mod


@pytest.mark.usefixtures("server_identity")
@pytest.mark.parametrize("mod_name", ["central_clip_mod", "local_dp_mod"])
def test_client_clips_its_update_when_the_record_says_central(mod_name: str) -> None:
    from flwr_privacy.mods.local_dp import local_dp_mod

    mod = {"central_clip_mod": central_clip_mod, "local_dp_mod": local_dp_mod}[mod_name]
    received = np.ones(50, np.float32)

    def task(msg: Message, context: Context) -> Message:
        reply = RecordDict({"arrays": ArrayRecord({"w": Array(received + 3.0)}),
                            "metrics": MetricRecord({"num-examples": 10})})  # fmt: skip
        return Message(reply, reply_to=msg)

    for mode, norm in (("central", 0.5), ("none", 3.0 * np.sqrt(50))):
        dp = DpSettings(mode=mode, max_grad_norm=0.5)
        record = dp.to_record()
        content = RecordDict({"arrays": ArrayRecord({"w": Array(received)}),
                              "config": ConfigRecord(), "flwr-privacy.dp": record})  # fmt: skip
        reply = mod(Message(content, dst_node_id=1, message_type="train"), _context(1), task)
        sent = reply.content["arrays"]["w"].numpy()
        assert np.linalg.norm(sent - received) == pytest.approx(norm, rel=1e-5)
        assert sent.dtype == np.float32
