"""benchmarks.own_csv: the CSV writers, --set parsing and the centralized baseline."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import own_csv
from data import nsl_kdd, synthetic_flows, threat_csv


def test_nsl_kdd_frame_has_raw_features_and_5_way_category_labels() -> None:
    records = pd.DataFrame(7, index=range(3), columns=list(nsl_kdd.COLUMNS))
    records["label"] = ["normal", "neptune", "guess_passwd"]
    frame = own_csv.nsl_kdd_frame(records)
    assert list(frame.columns) == [*nsl_kdd.FEATURES, "label"]  # no difficulty
    assert frame["label"].tolist() == ["normal", "DoS", "R2L"]
    assert (frame["src_bytes"] == 7).all()  # raw: no log1p
    records.loc[0, "label"] = "zeroday"
    with pytest.raises(ValueError, match="unknown NSL-KDD attack names"):
        own_csv.nsl_kdd_frame(records)


def test_write_flows_keeps_empty_cells_and_uses_another_seed_for_test(tmp_path: Path) -> None:
    train_path, test_path = own_csv.write_flows(tmp_path, rows=2000, seed=5)
    train, test = pd.read_csv(train_path), pd.read_csv(test_path)
    assert len(train) == 2000 and len(test) == 1000
    expected = synthetic_flows.generate(2000, 5)
    assert train.isna().sum().sum() == expected.isna().sum().sum() > 0
    assert train["label"].tolist() == expected["label"].tolist()
    assert not test["sbytes"].head(50).equals(train["sbytes"].head(50))


def test_set_values_parse_as_toml_and_bad_pairs_are_named() -> None:
    parsed = own_csv.parse_sets(["mcsn.log1p=auto", "local-epochs=2", "mcsn.hidden='64,32'"])
    assert parsed == {"mcsn.log1p": "auto", "local-epochs": 2, "mcsn.hidden": "64,32"}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        own_csv.parse_sets(["mcsn.log1p"])


def test_central_key_depends_on_budget_loss_and_lr_not_on_the_federated_split_of_it() -> None:
    base = {"task": "mcsn", "mcsn.class-weights": "inverse", "batch-size": 64, "seed": 0,
            "num-server-rounds": 20, "local-epochs": 1, "learning-rate": 0.05}  # fmt: skip
    key = own_csv.central_key(base, 10, 0.05)
    assert own_csv.central_key(base | {"num-server-rounds": 10, "local-epochs": 2}, 10, 0.05) == key
    assert own_csv.central_key(base | {"learning-rate": 0.5}, 10, 0.05) == key
    assert own_csv.central_key(base, 10, 0.01) != key
    assert own_csv.central_key(base | {"mcsn.class-weights": "none"}, 10, 0.05) != key
    assert own_csv.central_key(base, 5, 0.05) != key


def test_centralized_trains_on_the_clients_training_splits_and_caches(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    synthetic_flows.generate(600, 0).fillna(0).to_csv(data / "train.csv", index=False)
    synthetic_flows.generate(200, 1).fillna(0).to_csv(data / "test.csv", index=False)
    args = own_csv.build_parser().parse_args(
        ["compare", "--data-dir", str(data), "--rounds", "2", "--local-epochs", "1",
         "--class-weights", "none"]  # fmt: skip
    )
    overrides = own_csv.run_overrides(args)
    result = own_csv.centralized(overrides, 4, [0.05, 0.001], tmp_path / "cache")
    assert result["train-records"] == 4 * 120  # 150 per partition, 20 % validation
    assert result["epochs"] == 2 and [r["lr"] for r in result["tried"]] == [0.05, 0.001]
    assert result["lr"] == max(result["tried"], key=lambda r: r["val"]["accuracy"])["lr"]
    assert len(list((tmp_path / "cache").iterdir())) == 2
    again = own_csv.centralized(overrides, 4, [0.05, 0.001], tmp_path / "cache")
    assert [r["test"]["accuracy"] for r in again["tried"]] == [
        r["test"]["accuracy"] for r in result["tried"]
    ]
    assert again["lr"] == result["lr"]


def test_written_flows_through_the_csv_loader_refuse_or_impute_empty_cells(tmp_path: Path) -> None:
    own_csv.write_flows(tmp_path, rows=3000, seed=0)
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    with pytest.raises(threat_csv.BadCellsError) as err:
        threat_csv.load(train, test)
    for col in synthetic_flows.MISSING:
        assert f"'{col}'" in str(err.value)
    x, y, xt, yt, encoding = threat_csv.load(train, test, missing="median")
    assert np.isfinite(x).all() and np.isfinite(xt).all()
    assert x.shape[1] == xt.shape[1] == encoding.describe()["features"]
    assert set(encoding.classes) <= set(synthetic_flows.CLASSES) and len(encoding.classes) >= 9
    assert {"sbytes", "dbytes", "sload"} <= set(encoding.log1p)
    assert not {"srv_rate", "serror_rate", "is_ftp_login"} & set(encoding.log1p)  # within [0, 1]
    assert np.abs(x).max() < 100  # log1p tamed counters up to ~1e9
