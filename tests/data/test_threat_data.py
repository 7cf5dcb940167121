"""Threat-detection data: NSL-KDD encoding, users' CSV logs, the synthetic generator."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data import nsl_kdd, synthetic_threats, threat_csv

NSL_KDD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nsl-kdd"


def _records(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """Tiny NSL-KDD-shaped records: (protocol, service, flag, label), other columns 1."""
    frame = pd.DataFrame(1, index=range(len(rows)), columns=list(nsl_kdd.COLUMNS))
    frame[["protocol_type", "service", "flag", "label"]] = rows
    return frame


def test_one_hot_width_is_fixed_by_training_data_and_unseen_is_zero() -> None:
    train = _records([("tcp", "http", "SF", "normal"), ("udp", "dns", "S0", "neptune")])
    test = _records([("icmp", "ftp", "SF", "satan")])  # icmp and ftp never seen in training
    encoder = nsl_kdd.Encoder.fit(train)
    x_train, x_test = encoder.transform(train), encoder.transform(test)
    numeric = len(nsl_kdd.FEATURES) - 3
    assert x_train.shape == (2, numeric + 2 + 2 + 2) and x_test.shape[1] == x_train.shape[1]
    names = encoder.feature_names
    assert x_test[0, names.index("flag=SF")] == 1.0
    assert x_test[0, numeric : numeric + 4].sum() == 0.0  # unseen protocol and service
    assert x_train[0, names.index("src_bytes")] == pytest.approx(np.log1p(1.0))


def test_attack_names_map_to_the_standard_categories() -> None:
    names = pd.Series(["normal", "neptune", "satan", "guess_passwd", "rootkit", "mscan"])
    assert nsl_kdd.labels(names).tolist() == [0, 1, 2, 3, 4, 2]
    assert nsl_kdd.labels(names, nsl_kdd.CLASSES_2).tolist() == [0, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="unknown NSL-KDD attack names"):
        nsl_kdd.labels(pd.Series(["normal", "zeroday"]))


def test_missing_or_malformed_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(nsl_kdd.DataFileError, match="NSL-KDD file not found"):
        nsl_kdd.read_records(tmp_path / "KDDTrain+.txt")
    (tmp_path / "KDDTrain+.txt").write_text("1,2,3\n")
    with pytest.raises(nsl_kdd.DataFileError, match="expected 43 columns"):
        nsl_kdd.read_records(tmp_path / "KDDTrain+.txt")


@pytest.mark.skipif(not NSL_KDD.is_dir(), reason=f"real NSL-KDD not present at {NSL_KDD}")
def test_real_nsl_kdd_shapes_and_counts() -> None:
    x_train, y_train, x_test, y_test = nsl_kdd.load(NSL_KDD)
    assert x_train.shape[0] == 125_973 and x_test.shape[0] == 22_544
    assert x_train.shape[1] == x_test.shape[1] == 38 + 3 + 70 + 11
    assert np.bincount(y_train, minlength=5).tolist() == [67_343, 45_927, 11_656, 995, 52]
    assert np.bincount(y_test, minlength=5).tolist() == [9_711, 7_460, 2_421, 2_885, 67]
    assert np.isfinite(x_train).all() and np.isfinite(x_test).all()


def test_csv_loader_encodes_and_names_its_errors(tmp_path: Path) -> None:
    train = pd.DataFrame({"bytes": [1.0, 2.0, 3.0], "proto": ["tcp", "udp", "tcp"],
                          "kind": ["benign", "worm", "benign"]})  # fmt: skip
    test = pd.DataFrame({"bytes": [4.0], "proto": ["sctp"], "kind": ["worm"]})
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    x_train, y_train, x_test, y_test, encoding = threat_csv.load(
        tmp_path / "train.csv", tmp_path / "test.csv", label_column="kind", log1p="none"
    )
    assert encoding.classes == ("benign", "worm") and y_train.tolist() == [0, 1, 0]
    assert x_train.shape == (3, 3) and x_test.tolist() == [[4.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="no label column 'label'"):
        threat_csv.load(tmp_path / "train.csv", tmp_path / "test.csv")
    with pytest.raises(FileNotFoundError, match="threat-log CSV not found"):
        threat_csv.load(tmp_path / "nope.csv", tmp_path / "test.csv", label_column="kind")


def test_synthetic_generator_is_seeded_and_separable() -> None:
    x, y = synthetic_threats.generate(7000, seed=1)
    x2, y2 = synthetic_threats.generate(7000, seed=1)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert x.shape == (7000, len(synthetic_threats.FEATURES))
    shares = np.bincount(y, minlength=7) / len(y)
    assert shares == pytest.approx(synthetic_threats.PRIORS, abs=0.02)
    # Nearest class mean classifies well above chance (1/7) but not perfectly: overlap.
    d = ((x[:, None, :] - synthetic_threats.means()[None]) ** 2).sum(-1)
    accuracy = (d.argmin(1) == y).mean()
    assert 0.6 < accuracy < 0.99
