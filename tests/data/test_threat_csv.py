"""The CSV loader on the files real logs are: empty cells, heavy tails, numeric labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data import threat_csv
from data.threat_csv import BadCellsError, MissingLabelsError


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path: Path, train: str, test: str, **kwargs: str) -> tuple:
    return threat_csv.load(
        write(tmp_path, "train.csv", train), write(tmp_path, "test.csv", test), **kwargs
    )


TRAIN = """bytes,rate,proto,label
10,0.5,tcp,dos
,0.1,udp,normal
1000000000,0.2,,normal
30,,tcp,scan
40,0.3,tcp,normal
"""
TEST = "bytes,rate,proto,label\n,0.4,icmp,dos\n5,0.2,tcp,scan\n"


def test_empty_cells_are_refused_naming_every_column_and_count_in_both_files(
    tmp_path: Path,
) -> None:
    with pytest.raises(BadCellsError) as info:
        load(tmp_path, TRAIN, TEST)
    message = str(info.value)
    assert "train.csv" in message and "'bytes': 1" in message and "'rate': 1" in message
    assert "'proto': 1" in message and "test.csv" in message
    assert message.count('mcsn.missing = "median"') == 1


def test_median_fills_numeric_cells_and_empty_text_gets_its_own_category(tmp_path: Path) -> None:
    x, y, xt, yt, enc = load(tmp_path, TRAIN, TEST, missing="median", log1p="none")
    assert enc.numeric == ("bytes", "rate") and enc.fill == {"bytes": 35.0, "rate": 0.25}
    assert enc.text == {"proto": ("(missing)", "tcp", "udp")}
    assert enc.bad_cells == {"bytes": 1, "rate": 1, "proto": 1}
    assert x[1, 0] == 35.0 and x[3, 1] == 0.25 and x[2, 2:].tolist() == [1.0, 0.0, 0.0]
    assert xt[0].tolist() == [35.0, pytest.approx(0.4), 0.0, 0.0, 0.0]  # icmp: unseen
    assert enc.classes == ("dos", "normal", "scan") and yt.tolist() == [0, 2]
    assert np.isfinite(x).all() and enc.describe()["imputed"]["bytes"] == {
        "cells": 1,
        "median": 35.0,
    }


def test_log1p_auto_takes_non_negative_counters_and_leaves_rates(tmp_path: Path) -> None:
    x, _, xt, _, enc = load(tmp_path, TRAIN, TEST, missing="median")
    assert enc.log1p == ("bytes",) and enc.feature_names[:2] == ["log1p(bytes)", "rate"]
    assert x[2, 0] == pytest.approx(np.log1p(1e9)) and x[0, 1] == pytest.approx(0.5)
    _, _, _, _, explicit = load(tmp_path, TRAIN, TEST, missing="median", log1p="rate")
    assert explicit.log1p == ("rate",)
    with pytest.raises(ValueError, match=r"log1p columns \['proto'\] are not numeric"):
        load(tmp_path, TRAIN, TEST, missing="median", log1p="proto")
    negative = TRAIN.replace("40,0.3", "-40,0.3")
    with pytest.raises(ValueError, match=r"log1p columns \['bytes'\] hold negative values"):
        load(tmp_path, negative, TEST, missing="median", log1p="bytes")
    assert load(tmp_path, negative, TEST, missing="median")[4].log1p == ()


def test_numeric_labels_sort_as_numbers_and_keep_their_written_names(tmp_path: Path) -> None:
    frame = pd.DataFrame({"v": range(12), "attack": [2, 10, 1, 0] * 3})
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame[:4].to_csv(tmp_path / "test.csv", index=False)
    _, y, _, _, enc = threat_csv.load(
        tmp_path / "train.csv", tmp_path / "test.csv", label_column="attack"
    )
    assert enc.classes == ("0", "1", "2", "10") and y[:4].tolist() == [2, 3, 1, 0]


def test_a_numeric_column_with_a_few_unreadable_cells_stays_numeric(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{'-' if i == 7 else i * 10},a" for i in range(40))
    train = "id,count,label\n" + rows + "\n"
    with pytest.raises(BadCellsError, match="'count': 1"):
        load(tmp_path, train, train)
    _, _, _, _, enc = load(tmp_path, train, train, missing="median")
    assert enc.numeric == ("id", "count") and enc.text == {}


def test_records_without_a_label_are_refused_even_with_imputation(tmp_path: Path) -> None:
    train = TRAIN + "50,0.4,tcp,\n"
    with pytest.raises(MissingLabelsError, match="1 records have no label in column 'label'"):
        load(tmp_path, train, TEST, missing="median")
