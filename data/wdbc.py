"""Wisconsin Diagnostic Breast Cancer (569 x 30), as scikit-learn ships it."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def load_wdbc() -> tuple[np.ndarray, np.ndarray]:
    """Features (float32, 569 x 30) and labels (1 = malignant, 0 = benign).

    scikit-learn codes malignant as 0; we flip it so that precision and recall
    are about detecting the disease.
    """
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    x = np.asarray(bunch.data, dtype=np.float32)
    y = (np.asarray(bunch.target) == 0).astype(np.int64)
    return x, y
