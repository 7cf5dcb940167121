"""WDBC is read from scikit-learn's CSV without importing scikit-learn, same values."""

import subprocess
import sys

import numpy as np

from data.wdbc import load_wdbc


def test_load_wdbc_equals_load_breast_cancer() -> None:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    x, y = load_wdbc()
    assert x.shape == (569, 30) and x.dtype == np.float32
    assert np.array_equal(x, bunch.data.astype(np.float32))
    assert np.array_equal(y, (bunch.target == 0).astype(np.int64))
    assert int(y.sum()) == 212  # malignant is 1


def test_load_wdbc_does_not_import_scikit_learn() -> None:
    code = (
        "import sys; from data.wdbc import load_wdbc; load_wdbc(); print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
