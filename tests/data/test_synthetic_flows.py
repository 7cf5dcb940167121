"""SYNTHETIC flows: seeded, imbalanced as documented, heavy-tailed, with empty cells."""

import numpy as np
import pandas as pd
import pytest

from data import synthetic_flows as sf

ROWS = 20_000


@pytest.fixture(scope="module")
def flows() -> pd.DataFrame:
    return sf.generate(ROWS, seed=0)


def test_same_seed_same_records_other_seed_other_records(flows: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(sf.generate(ROWS, seed=0), flows)
    assert not sf.generate(ROWS, seed=1)["sbytes"].equals(flows["sbytes"])


def test_columns_types_and_label_set(flows: pd.DataFrame) -> None:
    numeric = [c for c in flows.columns if pd.api.types.is_numeric_dtype(flows[c])]
    text = [c for c in flows.columns if c not in numeric]
    assert len(numeric) == sf.NUMERIC == 42
    assert text == [*sf.TEXT, "label"]
    assert set(flows["label"]) == set(sf.CLASSES)
    assert 10 <= flows["proto"].nunique() <= len(sf.PROTOS)
    assert flows["service"].nunique() == len(sf.SERVICES)


def test_priors_follow_the_documented_imbalance() -> None:
    n = 200_000
    counts = sf.generate(n, seed=3)["label"].value_counts()
    for name, prior in zip(sf.CLASSES, sf.PRIORS, strict=True):
        assert abs(counts[name] - n * prior) < 4 * np.sqrt(n * prior), name  # binomial 4 sd
    assert max(sf.COUNTS) / min(sf.COUNTS) == pytest.approx(840, rel=0.01)
    assert counts["normal"] / counts["worms"] > 400


def test_missing_cells_only_in_the_documented_columns(flows: pd.DataFrame) -> None:
    missing = flows.isna().sum()
    assert sorted(missing[missing > 0].index) == sorted(sf.MISSING)
    for col, rate in zip(sf.MISSING, sf.MISSING_RATE, strict=True):
        assert missing[col] == pytest.approx(rate * ROWS, rel=0.35), col
    assert 100 <= missing.sum() <= 400  # "a few hundred" empty cells at 20k-50k rows


def test_heavy_tails_and_bounded_rates(flows: pd.DataFrame) -> None:
    for col in ("sbytes", "dbytes", "sload"):
        values = flows[col].to_numpy(np.float64)
        assert values.min() >= 0
        assert values.max() > 1e4 * max(np.median(values), 1.0), col  # max >> median
    assert 5e7 < flows["sbytes"].max() <= sf.BYTE_CAP
    for col in ("srv_rate", "serror_rate", "retrans_rate"):
        assert flows[col].between(0, 1).all(), col
    assert pd.api.types.is_integer_dtype(flows["spkts"])
