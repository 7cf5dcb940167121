"""Privacy ledger: epsilon from Opacus' accountants, composition, state round trip."""

import math
from dataclasses import replace

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from flwr_privacy.dp import PrivacyLedger, planned_noise, sampling
from flwr_privacy.dp.ddg import DdgStep, ddg_epsilon

ROUNDS = [(1.1, 0.05, 40), (1.1, 0.05, 40), (0.9, 0.1, 20)]  # (noise, sample rate, steps)


@pytest.mark.parametrize(("name", "cls"), [("rdp", RDPAccountant), ("prv", PRVAccountant)])
def test_epsilon_equals_opacus_stepped_step_by_step(name: str, cls: type) -> None:
    # Prepare: an accountant stepped once per DP-SGD step, as Opacus' optimizer does
    reference = cls()
    for z, q, steps in ROUNDS:
        for _ in range(steps):
            reference.step(noise_multiplier=z, sample_rate=q)
    # Execute
    ledger = PrivacyLedger(delta=1e-5, accountant=name)
    for release in ROUNDS:
        ledger.record(gaussian=[release])
    # Assert
    expected = reference.get_epsilon(delta=1e-5)
    assert ledger.epsilon() == pytest.approx(expected, rel=1e-3)
    assert ledger.rounds == 3


def test_epsilon_grows_with_rounds_and_adds_laplace_and_input() -> None:
    ledger = PrivacyLedger(delta=1e-5, input_epsilon=0.5)
    assert ledger.epsilon() == 0.5
    first = ledger.record(gaussian=[ROUNDS[0]])
    second = ledger.record(gaussian=[ROUNDS[1]], laplace=[0.25, 0.5])
    gauss_only = PrivacyLedger(delta=1e-5, gaussian=ROUNDS[:2]).epsilon()
    assert first < second
    assert second == pytest.approx(gauss_only + 0.75 + 0.5)


def test_would_be_epsilon_does_not_record() -> None:
    ledger = PrivacyLedger(delta=1e-5, gaussian=[ROUNDS[0]])
    before = ledger.epsilon()
    after = ledger.epsilon(gaussian=[ROUNDS[1]])
    assert after > before and ledger.epsilon() == before and len(ledger.gaussian) == 1


def test_state_dict_round_trip() -> None:
    ledger = PrivacyLedger(delta=1e-6, accountant="prv", input_epsilon=0.1)
    ledger.record(gaussian=[ROUNDS[2]], laplace=[0.3])
    again = PrivacyLedger.from_state_dict(ledger.state_dict())
    assert again == ledger


def test_bad_delta_and_accountant_are_refused() -> None:
    with pytest.raises(ValueError, match="delta = 1.5"):
        PrivacyLedger(delta=1.5)
    with pytest.raises(ValueError, match="'gdp'"):
        PrivacyLedger(delta=1e-5, accountant="gdp")


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_planned_noise_meets_the_target_over_the_whole_schedule(accountant: str) -> None:
    q, per_epoch = sampling(5880, 1024)
    assert (q, per_epoch) == (1 / 6, 6)
    z = planned_noise(target_epsilon=3.0, delta=1e-5, sample_rate=q, steps=20 * per_epoch,
                      accountant=accountant)  # fmt: skip
    spent = PrivacyLedger(delta=1e-5, accountant=accountant)
    for _ in range(20):  # 20 rounds of one local epoch each
        spent.record(gaussian=[(z, q, per_epoch)])
    assert 2.9 <= spent.epsilon() <= 3.0
    assert not math.isclose(z, 0)


def test_equal_releases_in_a_row_merge_into_one_run_of_steps() -> None:
    # Prepare: one DP-SGD step a round for 50 rounds (distributed DP), then a different noise
    ledger = PrivacyLedger(delta=1e-5)
    for _ in range(50):
        ledger.record(gaussian=[(1.1, 0.05, 1)])
    ledger.record(gaussian=[(2.0, 0.05, 3)])
    # Assert: the history stays short and its epsilon is the accountant's over every step
    assert ledger.gaussian == [(1.1, 0.05, 50), (2.0, 0.05, 3)] and ledger.rounds == 51
    reference = RDPAccountant()
    for z, n in ((1.1, 50), (2.0, 3)):
        for _ in range(n):
            reference.step(noise_multiplier=z, sample_rate=0.05)
    assert ledger.epsilon() == pytest.approx(reference.get_epsilon(1e-5), rel=1e-6)


DDG = DdgStep(l2_sensitivity=300.0, sigma=400.0, honest=5, dim=1000, sample_rate=0.05, rounds=1)


def test_ddg_rounds_compose_in_rdp_with_gaussian_releases() -> None:
    # Prepare / Execute: three DDG rounds (equal parameters merge), then a Gaussian step
    ledger = PrivacyLedger(delta=1e-5)
    for _ in range(3):
        ledger.record(ddg=[DDG])
    ddg_only = ledger.epsilon()
    both = ledger.record(gaussian=[ROUNDS[0]])
    gauss_only = PrivacyLedger(delta=1e-5, gaussian=[ROUNDS[0]]).epsilon()
    # Assert: one run of 3 rounds; DDG alone is ddg_epsilon; joint RDP beats adding epsilons
    assert ledger.ddg == [replace(DDG, rounds=3)]
    assert ddg_only == pytest.approx(ddg_epsilon([replace(DDG, rounds=3)], 1e-5))
    assert max(ddg_only, gauss_only) < both < ddg_only + gauss_only
    assert ledger.epsilon(ddg=[DDG]) > both and len(ledger.ddg) == 1


def test_ddg_state_dict_round_trip_and_old_states_load() -> None:
    ledger = PrivacyLedger(delta=1e-5)
    ledger.record(ddg=[DDG, replace(DDG, honest=4)], laplace=[0.1])
    state = ledger.state_dict()
    assert all(isinstance(v, int | float) for v in state["ddg-sigma"] + state["ddg-honest"])
    assert PrivacyLedger.from_state_dict(state) == ledger
    old = {k: v for k, v in state.items() if not k.startswith("ddg-")}
    assert PrivacyLedger.from_state_dict(old).ddg == []
