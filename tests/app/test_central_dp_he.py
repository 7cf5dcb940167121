"""Central DP while the server is blind, through Flower's simulation engine (Paillier)."""

from pathlib import Path

import pytest
from opacus.accountants import RDPAccountant

from app.config import AppConfig, ConfigError
from app.simulation import resolve_run_config, simulate

BASE = {"num-server-rounds": 2, "local-epochs": 1, "fraction-evaluate": 1.0, "batch-size": 32}


@pytest.mark.slow
def test_server_noises_the_encrypted_sum_and_accounts_it(tmp_path: Path) -> None:
    # Execute: breast cancer, 10 clients, Paillier, central DP with z = 1.5 (the noise comes
    # from a CSPRNG: final accuracy 0.64-0.92 over 8 runs; with 3 clients 0.33-0.88)
    overrides = {"output-dir": str(tmp_path), "he.backend": "paillier", "dp.mode": "central",
                 "dp.noise-multiplier": 1.5, "dp.epsilon": 10.0}  # fmt: skip
    results = simulate(BASE | overrides, num_supernodes=10)
    # Assert: completed, the server never evaluated, its ledger is the RDP epsilon per round
    assert results["status"] == "completed"
    reference, expected = RDPAccountant(), []
    for r in results["rounds"]:
        reference.step(noise_multiplier=1.5, sample_rate=1.0)
        expected.append(reference.get_epsilon(delta=1e-5))
        assert r["server"] is None and r["train"]["num-replies"] == 10
    assert [r["privacy"]["epsilon-max"] for r in results["rounds"]] == pytest.approx(expected)
    assert results["privacy"]["mode"] == "central"
    assert results["privacy"]["epsilon-max"] == pytest.approx(expected[-1])
    assert (Path(results["path"]).parent / "global-model.he.json").exists()
    assert results["final"]["accuracy"] >= 0.5  # noised, but a model clients can evaluate


@pytest.mark.parametrize(("overrides", "match"), [
    ({"robust.filter": "boxplot", "he.backend": "ckks", "he.coeff-mod-bit-sizes": "60,40,40,60"},
     "without robust.filter \\(it picks updates by their values\\)"),
    ({"hierarchy.edges": 2, "he.backend": "paillier"}, "or hierarchy.edges"),
    ({"he.backend": "ckks"}, "CKKS keys are symmetric"),
])  # fmt: skip
def test_central_dp_with_he_refuses_what_it_cannot_cover(overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        AppConfig.from_run_config(resolve_run_config({"dp.mode": "central"} | overrides))
