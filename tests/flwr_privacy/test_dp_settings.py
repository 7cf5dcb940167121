"""DpSettings: keyword-only, validated field by field, and carried as the flwr-privacy.dp record."""

import pytest

from flwr_privacy.dp import DpSettings
from flwr_privacy.dp.settings import NO_SEED


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mode": "gaussian"}, r"DpSettings.mode = 'gaussian' is invalid; allowed: \('none'"),
    ({"epsilon": 0.0}, r"DpSettings.epsilon = 0.0 is invalid; allowed: > 0"),
    ({"delta": 1.0}, r"DpSettings.delta = 1.0 is invalid; allowed: 0 < delta < 1"),
    ({"rounds": 0}, r"DpSettings.rounds = 0 is invalid; allowed: an integer >= 1"),
    ({"rounds": 2.5}, r"DpSettings.rounds = 2.5 is invalid; allowed: an integer"),
    ({"shares": 0}, r"DpSettings.shares = 0"),
    ({"noise_multiplier": -1.0}, r"DpSettings.noise_multiplier = -1.0"),
    ({"max_grad_norm": 0.0}, r"DpSettings.max_grad_norm = 0.0"),
    ({"accountant": "gdp"}, r"DpSettings.accountant = 'gdp' is invalid; allowed: \('rdp', 'prv'\)"),
    ({"local_mechanism": "exponential"}, r"DpSettings.local_mechanism = 'exponential'"),
    ({"momentum": 1.0}, r"DpSettings.momentum = 1.0 is invalid; allowed: 0 <= momentum < 1"),
    ({"noise_seed": -3}, r"DpSettings.noise_seed = -3"),
])  # fmt: skip
def test_bad_settings_name_the_field_and_what_is_allowed(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DpSettings(**kwargs)


def test_settings_are_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        DpSettings("local")  # type: ignore[misc]  # positional on purpose: refused
    dp = DpSettings(mode="local")
    with pytest.raises(AttributeError):
        dp.epsilon = 9.0  # type: ignore[misc]  # frozen on purpose: refused


@pytest.mark.parametrize("noise_seed", [None, 0, 12345])
def test_record_round_trip_keeps_every_field(noise_seed: int | None) -> None:
    # Prepare: every field away from its default
    dp = DpSettings(mode="distributed", epsilon=4.5, delta=1e-6, rounds=7, shares=3,
                    noise_multiplier=1.25, max_grad_norm=0.5, accountant="prv",
                    grad_sample_mode="functorch", local_mechanism="laplace", l1_clip=2.0,
                    laplace_increment=0.5, loss_bound=4.0, weight_decay=0.0, relaxation=0.01,
                    input_epsilon=1.0, input_width=2.0, momentum=0.5,
                    noise_seed=noise_seed)  # fmt: skip
    # Execute
    record = dp.to_record()
    # Assert: kebab-case keys, no None in the record, the same settings back
    assert record["noise-multiplier"] == 1.25 and record["grad-sample-mode"] == "functorch"
    assert record["noise-seed"] == (NO_SEED if noise_seed is None else noise_seed)
    assert DpSettings.from_record(record) == dp


def test_a_record_without_a_key_or_with_a_bad_value_is_refused() -> None:
    record = DpSettings(mode="local").to_record()
    del record["rounds"]
    with pytest.raises(ValueError, match="the DP record lacks 'rounds'"):
        DpSettings.from_record(record)
    record = DpSettings(mode="local").to_record()
    record["epsilon"] = -1.0
    with pytest.raises(ValueError, match="DpSettings.epsilon = -1.0"):
        DpSettings.from_record(record)


def test_modes_say_who_acts() -> None:
    assert not DpSettings().enabled and not DpSettings().on_clients
    assert DpSettings(input_epsilon=1.0).on_clients
    assert DpSettings(mode="central").unit_weights and not DpSettings(mode="central").on_clients
    assert DpSettings(mode="local").on_clients and not DpSettings(mode="local").unit_weights
