"""Bad DP settings stop the run before round 1 with a message naming the key."""

from dataclasses import asdict

import pytest

from app.config import AppConfig, ConfigError
from app.simulation import resolve_run_config
from flwr_privacy.dp import DpSettings


def _config(**overrides: object) -> AppConfig:
    return AppConfig.from_run_config(resolve_run_config(overrides))


@pytest.mark.parametrize(("overrides", "match"), [
    ({"dp.mode": "dp-sgd", "dp.epsilon": 0.0}, "'dp.epsilon' = 0.0 is invalid; allowed: a float"),
    ({"dp.mode": "dp-sgd", "dp.epsilon": -1.0}, "'dp.epsilon' = -1.0"),
    ({"dp.mode": "dp-sgd", "dp.noise-multiplier": -0.5}, "'dp.noise-multiplier' = -0.5"),
    ({"dp.mode": "dp-sgd", "dp.delta": 1.0}, "'dp.delta' = 1.0 is invalid; allowed: 0 < delta < 1"),
    ({"dp.mode": "gaussian"}, "'dp.mode' = 'gaussian' is invalid"),
    ({"dp.accountant": "gdp"}, "'dp.accountant' = 'gdp'"),
    ({"dp.mode": "central", "he.backend": "ckks"}, "CKKS keys are symmetric"),
    ({"dp.mode": "central", "robust.filter": "boxplot"}, "without robust.filter"),
    ({"dp.input-epsilon": 1.0, "task": "dp-cnn"}, "task 'dp-cnn' is not tabular"),
    ({"dp.input-epsilon": 3.0, "dp.epsilon": 3.0}, "must be below the whole budget"),
    ({"dp.mode": "dp-sgd", "task": "mcsn"}, "set mcsn.class-weights = 'none'"),
    ({"dp.mode": "distributed"}, "needs he.backend set"),
    ({"dp.mode": "distributed", "he.backend": "ckks", "robust.filter": "boxplot",
      "he.coeff-mod-bit-sizes": "60,40,40,60"}, "no robust.filter"),
    ({"dp.mode": "distributed", "he.backend": "ckks"}, "set local-epochs = 1 \\(not 2\\)"),
    ({"dp.mode": "distributed", "he.backend": "ckks", "local-epochs": 1, "min-clients": 1},
     "min-clients >= 2 \\(not 1\\)"),
    ({"dp.mode": "distributed", "dp.momentum": 1.0}, "'dp.momentum' = 1.0 is invalid"),
])  # fmt: skip
def test_bad_dp_settings_name_the_key(overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _config(**overrides)


def test_delta_must_be_below_one_over_the_smallest_client() -> None:
    dp = _config(**{"dp.mode": "dp-sgd", "dp.delta": 0.001}).dp
    dp.check_clients({1: 5000, 2: 999})  # 0.001 < 1/999
    with pytest.raises(ConfigError, match=r"holds 1000 examples, so delta must be < 1/1000"):
        dp.check_clients({1: 5000, 2: 1000})


def test_clients_get_the_dp_settings_only_as_the_record() -> None:
    # Prepare / Execute: the run config of each mode
    for mode in ("none", "central", "dp-sgd", "local"):
        config = _config(**{"dp.mode": mode})
        # Assert: no dp.* key reaches the message config; the settings travel as the record
        assert not [k for k in config.client_config() if k.startswith("dp.")]
        assert DpSettings.from_record(config.dp.to_record()) == DpSettings(**asdict(config.dp))
    sgd = _config(**{"dp.mode": "dp-sgd", "num-server-rounds": 7}).dp
    assert (sgd.rounds, sgd.shares, sgd.epsilon, sgd.noise_seed) == (7, 1, 3.0, None)
    distributed = _config(**{"dp.mode": "distributed", "he.backend": "ckks", "local-epochs": 1,
                             "min-clients": 3}).dp  # fmt: skip
    assert distributed.shares == 3 and distributed.unit_weights
    seeded = _config(**{"dp.mode": "dp-sgd", "dp.seeded-noise": True, "seed": 5}).dp
    assert seeded.noise_seed == 5  # the public run seed: an explicit experiment opt-out
