"""Server-side setup helpers: feature widths agree across nodes, the dataset log line."""

from __future__ import annotations

import numpy as np
import pytest

from app.config import ConfigError
from app.server_app import _same_width, dataset_summary
from data.preprocess import Moments


def test_nodes_with_differently_encoded_data_are_refused_naming_each_width() -> None:
    same = {7: Moments.of(np.ones((3, 4))), 9: Moments.of(np.zeros((2, 4)))}
    assert [m.count for m in _same_width(same)] == [3, 2]
    with pytest.raises(ConfigError, match=r"\{7: 4, 9: 5\}.*same training file"):
        _same_width({**same, 9: Moments.of(np.zeros((2, 5)))})


def test_dataset_summary_names_rows_features_filled_cells_and_classes() -> None:
    line = dataset_summary({
        "source": "csv", "rows": {"train": 90, "test": 10}, "features": 7,
        "numeric-columns": 3, "log1p-columns": ["bytes"], "text-columns": {"proto": 4},
        "imputed": {"bytes": {"cells": 5, "median": 12.0}, "proto": {"cells": 1}},
        "classes": {"dos": {"train": 60, "test": 6}, "normal": {"train": 30, "test": 4}},
    })  # fmt: skip
    assert line == (
        "csv: 90 training / 10 test records, 7 features (3 numeric, 1 through log1p, 1 text "
        "columns one-hot); bad cells filled: 5 in 'bytes' with 12, 1 in 'proto' with "
        "'(missing)'; 2 classes (training records): dos 60, normal 30"
    )
