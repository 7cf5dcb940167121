"""Run config: defaults parse; bad values give one clear message naming key and allowed values."""

import pytest

from app.config import AppConfig, ClientSettings, ConfigError
from app.server_app import _check_capacity
from app.simulation import default_run_config, resolve_run_config
from tasks import get_task


def test_defaults_parse_and_reach_clients() -> None:
    cfg = AppConfig.from_run_config(default_run_config())
    assert cfg.task == "breast-cancer" and cfg.strategy == "fedavg"
    assert cfg.num_server_rounds == 30 and cfg.max_empty_rounds == 3
    client = ClientSettings.from_message_config(
        {**cfg.client_config(), "server-round": 2, "proximal-mu": 0.5}, partition_id=3
    )
    assert client.spec.partitioner == cfg.partitioner
    assert client.train.lr == cfg.learning_rate and client.train.proximal_mu == 0.5
    other = ClientSettings.from_message_config(
        {**cfg.client_config(), "server-round": 2}, partition_id=4
    )
    assert other.train.seed != client.train.seed


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (
            "strategy",
            "fedsgd",
            "'strategy' = 'fedsgd' is invalid; allowed: fedavg | fedprox | krum",
        ),
        ("learning-rate", -0.1, "'learning-rate' = -0.1 is invalid; allowed: a float > 0"),
        ("dirichlet-alpha", 0.0, "'dirichlet-alpha' = 0.0 is invalid; allowed: a float > 0"),
        ("partitioner", "shards", "allowed: iid | dirichlet"),
        ("task", "mnist-gan", "allowed: breast-cancer"),
        ("num-server-rounds", 0, "'num-server-rounds' = 0 is invalid"),
        ("batch-size", 1.5, "'batch-size' must be an integer, got 1.5"),
        ("fraction-train", 0.0, "allowed: 0 < x <= 1"),
        ("local-epochs", True, "'local-epochs' must be an integer"),
        ("round-timeout", 0.0, "'round-timeout' = 0.0 is invalid; allowed: a float > 0"),
        ("max-empty-rounds", 0, "'max-empty-rounds' = 0 is invalid; allowed: an integer >= 1"),
    ],
)
def test_bad_value_names_key_and_allowed_values(key: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        AppConfig.from_run_config({**default_run_config(), key: value})
    assert expected in str(info.value)


def test_missing_key_is_named() -> None:
    cfg = default_run_config()
    del cfg["seed"]
    with pytest.raises(ConfigError, match="'seed' is missing"):
        AppConfig.from_run_config(cfg)


def test_int_is_accepted_for_float_keys() -> None:
    assert (
        AppConfig.from_run_config({**default_run_config(), "learning-rate": 1}).learning_rate == 1.0
    )


def test_more_clients_than_samples_is_refused() -> None:
    task = get_task("breast-cancer")
    _check_capacity(task, 10)
    with pytest.raises(
        ConfigError, match="too many for task 'breast-cancer' with 455 training samples"
    ):
        _check_capacity(task, 300)


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(KeyError, match="learning_rate"):
        resolve_run_config({"learning_rate": 0.1})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("he.backend", "rsa", "allowed: none | ckks | paillier"),
        ("he.bits", 40, "'he.bits' = 40 is invalid; allowed: an integer in [2, 32]"),
        ("he.clip", 0.0, "'he.clip' = 0.0 is invalid"),
        ("he.key-bits", 1024, "allowed: 2048, 3072, 4096"),
        ("he.coeff-mod-bit-sizes", "60", "at least two"),
        ("he.scale-bits", 60, "allowed: an integer in [20, 60)"),
        ("he.packing", "dense", "allowed: packed | naive"),
    ],
)
def test_bad_he_value_names_key(key: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        AppConfig.from_run_config({**default_run_config(), key: value})
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"robust.filter": "trim"}, "allowed: none | boxplot | boxplot-coordinate"),
        ({"robust.scores": "median-distance,cosine"}, "auto, or a comma-separated list"),
        ({"robust.k": -1.0}, "'robust.k' = -1.0 is invalid"),
        ({"attack.type": "backdoor"}, "allowed: none | sign-flip"),
        ({"attack.fraction": 1.0}, "'attack.fraction' = 1.0 is invalid; allowed: 0 <= x < 1"),
        ({"strategy": "krum", "robust.filter": "boxplot"}, "composes with fedavg or fedprox"),
        ({"strategy": "krum", "he.backend": "ckks"}, "needs plaintext updates"),
        ({"he.backend": "paillier", "robust.filter": "boxplot"}, "Paillier ciphertexts can only"),
        ({"he.backend": "ckks", "robust.filter": "boxplot"}, "'60,40,40,60'"),
        (
            {"he.backend": "ckks", "robust.filter": "boxplot-coordinate",
             "he.coeff-mod-bit-sizes": "60,40,40,60"},
            "which CKKS cannot do",
        ),
        ({"hierarchy.edges": -1}, "'hierarchy.edges' = -1 is invalid"),
        ({"hierarchy.filter-tier": "fog"}, "allowed: edge | cloud | both"),
        ({"hierarchy.edges": 2, "strategy": "krum"}, "composes with fedavg or fedprox only"),
        (
            {"hierarchy.edges": 2, "robust.filter": "boxplot", "hierarchy.filter-tier": "cloud",
             "he.backend": "ckks", "he.coeff-mod-bit-sizes": "60,40,40,60"},
            "needs plaintext",
        ),
        ({"task": "mcsn", "mcsn.hidden": "64"}, "'mcsn.hidden' = '64' is invalid"),
        ({"task": "mcsn", "mcsn.dataset": "kdd99"}, "allowed: synthetic | nsl-kdd | csv"),
        ({"task": "mcsn", "mcsn.dataset": "nsl-kdd"}, "'mcsn.data-dir' is empty"),
        (
            {"he.backend": "ckks", "robust.filter": "boxplot", "robust.scores": "median-distance",
             "he.coeff-mod-bit-sizes": "60,40,40,60"},
            "use 'mean-distance'",
        ),
    ],
)  # fmt: skip
def test_impossible_robust_and_attack_settings_are_named(overrides: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        AppConfig.from_run_config({**default_run_config(), **overrides})
    assert expected in str(info.value)


SERVER_KEYED = {"he.backend": "paillier", "he.mode": "server-keyed", "breast-cancer.loss": "taylor"}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"he.mode": "server-keyd"}, "allowed: server-blind | server-keyed"),
        ({"breast-cancer.loss": "hinge"}, "'breast-cancer.loss' = 'hinge' is invalid"),
        ({"breast-cancer.loss": "exact"}, "breast-cancer.loss = 'taylor'"),
        ({"task": "mcsn"}, "set task = 'breast-cancer'"),
        ({"he.backend": "ckks"}, "needs one multiplicative level, e.g. '60,40,60'"),
        ({"robust.filter": "boxplot"}, "does not compose with robust.filter"),
        ({"dp.mode": "local"}, "does not compose with dp.mode"),
        ({"attack.type": "sign-flip", "attack.fraction": 0.2}, "or the attack harness"),
        ({"he.server-bundle": "keys/server.json"}, "server makes its own key pair"),
    ],
)  # fmt: skip
def test_server_keyed_settings_that_cannot_work_are_named(overrides: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        AppConfig.from_run_config({**default_run_config(), **SERVER_KEYED, **overrides})
    assert expected in str(info.value)


def test_server_keyed_reaches_clients_without_key_paths() -> None:
    cfg = AppConfig.from_run_config({**default_run_config(), **SERVER_KEYED})
    assert cfg.he.server_keyed and cfg.client_config()["he.mode"] == "server-keyed"
    assert cfg.client_config()["breast-cancer.loss"] == "taylor"
    assert not AppConfig.from_run_config(default_run_config()).he.server_keyed


def test_auto_scores_follow_encryption() -> None:
    plain = AppConfig.from_run_config({**default_run_config(), "robust.filter": "boxplot"})
    assert plain.robust.robustness(encrypted=False).box.scores == ("median-distance",)
    encrypted = AppConfig.from_run_config(
        {**default_run_config(), "robust.filter": "boxplot", "he.backend": "ckks",
         "he.coeff-mod-bit-sizes": "60,40,40,60"}
    )  # fmt: skip
    assert encrypted.robust.robustness(encrypted=True).box.scores == ("mean-distance",)
    assert encrypted.he.key_params(eval_keys=True)["eval-keys"] is True


def test_attack_settings_never_reach_clients_as_config_keys() -> None:
    # The server's Tampering layer tells the malicious nodes alone (a record on their messages).
    off = AppConfig.from_run_config(default_run_config())
    assert not any(k.startswith("attack.") for k in off.client_config())
    on = AppConfig.from_run_config(
        {**default_run_config(), "attack.type": "scale", "attack.fraction": 0.2}
    )
    assert not any(k.startswith("attack.") for k in on.client_config()) and on.attack.active
    assert on.attack.tamper().kind == "scale" and on.attack.tamper().scale == 10.0


def test_task_sub_table_reaches_clients_and_node_config_overrides_it() -> None:
    cfg = AppConfig.from_run_config(
        {**default_run_config(), "task": "mcsn", "mcsn.dataset": "nsl-kdd",
         "mcsn.data-dir": "/srv/kdd"}
    )  # fmt: skip
    message = {**cfg.client_config(), "server-round": 1}
    assert message["mcsn.data-dir"] == "/srv/kdd"
    here = ClientSettings.from_message_config(
        message, partition_id=0, node_config={"mcsn.data-dir": "/data/local", "edge-id": 1}
    )
    assert here.task_config["mcsn.data-dir"] == "/data/local"
    assert here.task_config["mcsn.dataset"] == "nsl-kdd"
    # Other tasks neither receive nor validate the mcsn sub-table.
    plain = AppConfig.from_run_config({**default_run_config(), "mcsn.hidden": "bad"})
    assert not any(k.startswith("mcsn.") for k in plain.client_config())


def test_client_settings_import_no_server_side_or_heavy_modules() -> None:
    """The ClientApp imports app.config; a deployment pays its imports on every message."""
    import subprocess
    import sys
    from pathlib import Path

    server_side = ("strategies", "flwr_privacy.strategy.box_plot", "app.dp_config", "opacus",
                   "sklearn", "pandas", "flwr_datasets", "matplotlib")  # fmt: skip
    probe = f"import sys, app.config; print([m for m in {server_side!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert out.stdout.strip() == "[]"
