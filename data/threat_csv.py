"""Users' own threat logs: any CSV of records with a label column.

Everything is fitted on the training file only (each node reads its own copy):

- **Columns.** A column is numeric when its non-empty cells parse as numbers
  (at least 95 % of them; the rest are bad cells, below); every other column
  except the label is text and is one-hot encoded with the training file's
  values (a test value never seen in training encodes as all zeros).
- **Bad cells** (empty, not a number in a numeric column, infinite) follow
  ``missing``: ``"error"`` refuses the files with one message naming every
  column and its count; ``"median"`` fills a numeric cell with the training
  file's median of that column and gives an empty text cell its own category.
  A record without a label is always refused.
- **Heavy tails** (byte and packet counters up to 1e9 and more) follow
  ``log1p``: ``"auto"`` applies ``log1p`` to every numeric column whose training
  values are all >= 0 and not all within [0, 1] (counters, sizes, durations;
  rates and flags stay as they are); ``"none"`` to none; a comma-separated list
  to exactly those columns. Test values below 0 in such a column count as 0.
  Standardization (federated, training splits only) comes after.
- **Labels.** One class per distinct label value of the training file, named
  by the value as written; sorted numerically when every value is a number,
  otherwise as text. A test label never seen in training is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from data.nsl_kdd import DataFileError

if TYPE_CHECKING:
    import pandas as pd

MISSING = ("error", "median")
NUMERIC_SHARE = 0.95  # a column whose cells parse as numbers this often is numeric
MISSING_CATEGORY = "(missing)"


FIX = (
    'Fix the file, or set run-config mcsn.missing = "median" to fill numeric cells with the '
    "training file's median and give empty text cells their own category"
)


class BadCellsError(ValueError):
    """Empty or unreadable cells under ``missing = "error"``; the message names them all."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"{detail}. {FIX}")
        self.detail = detail


class MissingLabelsError(ValueError):
    """Records without a label: no ``missing`` rule can fill them."""


def read_csv(path: str | Path, label_column: str) -> pd.DataFrame:
    """A CSV with a header row that contains ``label_column``; empty cells read as NaN."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"threat-log CSV not found: {path}")
    import pandas as pd  # only for runs on these files

    frame = pd.read_csv(path, dtype={label_column: str}, skipinitialspace=True)
    if label_column not in frame.columns:
        raise ValueError(
            f"{path}: no label column {label_column!r}; columns are {list(frame.columns)}"
        )
    if len(frame) == 0:
        raise ValueError(f"{path}: no records")
    return frame


def _numbers(column: pd.Series) -> pd.Series:
    """Cells as floats; empty, unparsable and infinite cells become NaN."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column):
        values = column.astype(np.float64)
    else:
        values = pd.to_numeric(column, errors="coerce").astype(np.float64)
    return values.where(np.isfinite(values))


def _codes(column: pd.Series, categories: tuple[str, ...]) -> np.ndarray:
    """Index of each cell's value in ``categories``; -1 for a value not among them."""
    import pandas as pd

    return np.asarray(pd.Categorical(column, categories=list(categories)).codes, np.int64)


def _label_order(values: list[str]) -> list[str]:
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


@dataclass(frozen=True)
class CsvEncoding:
    """The fitted preprocessing of one training file: what becomes which feature.

    ``fill`` holds the training median of every numeric column (used only with
    ``missing = "median"``); ``bad_cells`` counts the training file's bad cells per column.
    """

    label_column: str
    classes: tuple[str, ...]
    numeric: tuple[str, ...]
    text: dict[str, tuple[str, ...]]
    log1p: tuple[str, ...]
    missing: str
    fill: dict[str, float]
    bad_cells: dict[str, int] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, train: pd.DataFrame, label_column: str, *, missing: str = "error",
        log1p: str = "auto", source: str = "training file",
    ) -> CsvEncoding:  # fmt: skip
        if missing not in MISSING:
            raise ValueError(f"missing = {missing!r}; allowed: {' | '.join(MISSING)}")
        features = [c for c in train.columns if c != label_column]
        numbers = {c: _numbers(train[c]) for c in features}
        filled = {c: int(train[c].notna().sum()) for c in features}
        numeric = tuple(
            c for c in features
            if filled[c] and numbers[c].notna().sum() >= NUMERIC_SHARE * filled[c]
        )  # fmt: skip
        text = {c: train[c] for c in features if c not in numeric}
        bad = {c: int(numbers[c].isna().sum()) for c in numeric}
        bad |= {c: int(col.isna().sum()) for c, col in text.items()}
        _check_labels(train[label_column], label_column, source)
        return cls(
            label_column=label_column,
            classes=tuple(_label_order(list(train[label_column].unique()))),
            numeric=numeric,
            text={
                c: tuple(sorted(col.fillna(MISSING_CATEGORY).astype(str).unique()))
                for c, col in text.items()
            },  # fmt: skip
            log1p=_log1p_columns(log1p, {c: numbers[c] for c in numeric}),
            missing=missing,
            fill={
                c: float(numbers[c].median()) if numbers[c].notna().any() else 0.0 for c in numeric
            },  # fmt: skip
            bad_cells={c: n for c, n in bad.items() if n},
        )

    @property
    def feature_names(self) -> list[str]:
        """Numeric columns (``log1p(...)`` marked) then one ``column=value`` per category."""
        names = [f"log1p({c})" if c in self.log1p else c for c in self.numeric]
        return names + [f"{c}={v}" for c, values in self.text.items() for v in values]

    def transform(self, frame: pd.DataFrame, source: str) -> tuple[np.ndarray, np.ndarray]:
        """(features float32, class indices int64) of ``frame`` with this encoding."""
        missing_columns = [c for c in (*self.numeric, *self.text) if c not in frame.columns]
        if missing_columns:
            raise ValueError(f"{source}: missing feature columns {missing_columns}")
        _check_labels(frame[self.label_column], self.label_column, source)
        bad: dict[str, int] = {}
        blocks = []
        for c in self.numeric:
            values = _numbers(frame[c])
            bad[c] = int(values.isna().sum())
            values = values.fillna(self.fill[c])
            if c in self.log1p:
                values = np.log1p(values.clip(lower=0))
            blocks.append(values.to_numpy()[:, None])
        for c, categories in self.text.items():
            column = frame[c].fillna(MISSING_CATEGORY).astype(str)
            bad[c] = int((column == MISSING_CATEGORY).sum())
            codes = _codes(column, categories)
            onehot = np.zeros((len(frame), len(categories)))
            known = codes >= 0  # a value never seen in training: all zeros
            onehot[np.flatnonzero(known), codes[known]] = 1.0
            blocks.append(onehot)
        bad = {c: n for c, n in bad.items() if n}
        if self.missing == "error" and bad:
            raise BadCellsError(_bad_cells_message(source, bad, len(frame)))
        labels = _codes(frame[self.label_column], self.classes)
        if (labels < 0).any():
            unseen = sorted(set(frame[self.label_column][labels < 0]))
            raise ValueError(f"{source}: labels {unseen} never occur in the training file")
        x = np.hstack(blocks) if blocks else np.zeros((len(frame), 0))
        return x.astype(np.float32), labels

    def describe(self) -> dict[str, Any]:
        """What the file became, for logs and results.json (no record values)."""
        return {
            "label-column": self.label_column,
            "numeric-columns": len(self.numeric),
            "text-columns": {c: len(v) for c, v in self.text.items()},
            "log1p-columns": list(self.log1p),
            "missing": self.missing,
            "imputed": {
                c: {"cells": n, **({"median": self.fill[c]} if c in self.fill else {})}
                for c, n in self.bad_cells.items()
            },  # fmt: skip
            "features": len(self.feature_names),
        }


def _log1p_columns(rule: str, numbers: dict[str, pd.Series]) -> tuple[str, ...]:
    """The numeric columns ``rule`` (auto | none | a list) sends through log1p."""
    if rule == "none":
        return ()
    if rule == "auto":
        return tuple(c for c, v in numbers.items() if v.min() >= 0 and v.max() > 1)
    chosen = tuple(c.strip() for c in rule.split(",") if c.strip())
    unknown = [c for c in chosen if c not in numbers]
    if unknown:
        raise ValueError(
            f"log1p columns {unknown} are not numeric columns of the training file; "
            f"numeric columns are {list(numbers)}"
        )
    negative = [c for c in chosen if numbers[c].min() < 0]
    if negative:
        raise ValueError(f"log1p columns {negative} hold negative values in the training file")
    return chosen


def _check_labels(labels: pd.Series, label_column: str, source: str) -> None:
    empty = int(labels.isna().sum())
    if empty:
        raise MissingLabelsError(
            f"{source}: {empty} records have no label in column {label_column!r}; remove them "
            "or fill them in (mcsn.missing does not apply to labels)"
        )


def _bad_cells_message(source: str, bad: dict[str, int], rows: int) -> str:
    listed = ", ".join(f"{c!r}: {n}" for c, n in sorted(bad.items(), key=lambda kv: -kv[1]))
    return (
        f"{source} has empty or unreadable cells (empty, not a number in a numeric column, or "
        f"infinite) in {len(bad)} columns of {rows} records: {listed}"
    )


def load(
    train_path: str | Path, test_path: str | Path, label_column: str = "label", *,
    missing: str = "error", log1p: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, CsvEncoding]:  # fmt: skip
    """(x_train, y_train, x_test, y_test, encoding); the encoding is fitted on the training file."""
    train, test = read_csv(train_path, label_column), read_csv(test_path, label_column)
    encoding = CsvEncoding.fit(
        train, label_column, missing=missing, log1p=log1p, source=str(train_path)
    )
    arrays, errors = [], []
    for frame, path in ((train, train_path), (test, test_path)):
        try:
            arrays += encoding.transform(frame, str(path))
        except BadCellsError as e:  # name every bad column of both files at once
            errors.append(e.detail)
    if errors:
        raise BadCellsError("; and ".join(errors))
    x, y, xt, yt = arrays
    return x, y, xt, yt, encoding
