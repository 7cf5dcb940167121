"""Wisconsin Diagnostic Breast Cancer (569 x 30), as scikit-learn ships it."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np


def _sklearn_csv() -> Path | None:
    """scikit-learn's own copy of the data, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "breast_cancer.csv"
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=1)
def load_wdbc() -> tuple[np.ndarray, np.ndarray]:
    """Features (float32, 569 x 30) and labels (1 = malignant, 0 = benign).

    scikit-learn codes malignant as 0; we flip it so that precision and recall
    are about detecting the disease. The CSV that ``load_breast_cancer`` reads is
    read directly (importing scikit-learn costs more than the rest of a client
    message); ``load_breast_cancer`` is the fallback if the file is not found.
    """
    path = _sklearn_csv()
    if path is not None:
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
        data, target = table[:, :-1], table[:, -1].astype(np.int64)
    else:
        from sklearn.datasets import load_breast_cancer

        bunch = load_breast_cancer()
        data, target = bunch.data, np.asarray(bunch.target)
    x = np.asarray(data, dtype=np.float32)
    y = (target == 0).astype(np.int64)
    return x, y
