"""Users' own threat logs: any CSV of records with a label column.

Numeric columns are features as they are; other columns (except the label) are
one-hot encoded with the categories of the training file. Labels are mapped to
class indices in sorted order of the training labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from data.nsl_kdd import DataFileError

if TYPE_CHECKING:
    import pandas as pd


def read_csv(path: str | Path, label_column: str) -> pd.DataFrame:
    """A CSV with a header row that contains ``label_column``."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"threat-log CSV not found: {path}")
    import pandas as pd  # only for runs on these files

    frame = pd.read_csv(path)
    if label_column not in frame.columns:
        raise ValueError(
            f"{path}: no label column {label_column!r}; columns are {list(frame.columns)}"
        )
    if len(frame) == 0:
        raise ValueError(f"{path}: no records")
    return frame


def load(
    train_path: str | Path, test_path: str | Path, label_column: str = "label"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """(x_train, y_train, x_test, y_test, class names); encodings fitted on the training file."""
    import pandas as pd  # only for runs on these files

    train, test = read_csv(train_path, label_column), read_csv(test_path, label_column)
    classes = tuple(sorted(train[label_column].astype(str).unique()))
    unseen = sorted(set(test[label_column].astype(str)) - set(classes))
    if unseen:
        raise ValueError(f"{test_path}: labels {unseen} never occur in the training file")
    features = [c for c in train.columns if c != label_column]
    missing = [c for c in features if c not in test.columns]
    if missing:
        raise ValueError(f"{test_path}: missing feature columns {missing}")
    symbolic = [c for c in features if not pd.api.types.is_numeric_dtype(train[c])]
    x_train = pd.get_dummies(train[features], columns=symbolic, dtype=np.float32)
    x_test = pd.get_dummies(test[features], columns=symbolic, dtype=np.float32)
    x_test = x_test.reindex(columns=x_train.columns, fill_value=0.0)  # unseen -> all zeros
    index = {c: i for i, c in enumerate(classes)}
    return (
        x_train.to_numpy(np.float32),
        train[label_column].astype(str).map(index).to_numpy(np.int64),
        x_test.to_numpy(np.float32),
        test[label_column].astype(str).map(index).to_numpy(np.int64),
        classes,
    )
