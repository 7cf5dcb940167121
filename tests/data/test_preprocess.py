"""Federated moments reproduce centralized standardization of the pooled training data."""

import numpy as np
import pytest

from data.preprocess import Moments, combine


def test_combined_moments_equal_pooled_statistics() -> None:
    # Prepare
    rng = np.random.default_rng(0)
    chunks = [rng.normal(3.0, 2.0, size=(n, 4)) for n in (5, 17, 40)]
    pooled = np.concatenate(chunks)
    # Execute
    mean, std = combine([Moments.of(c) for c in chunks]).mean_std()
    reversed_mean, _ = combine([Moments.of(c) for c in reversed(chunks)]).mean_std()
    # Assert
    np.testing.assert_allclose(mean, pooled.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, pooled.std(axis=0), rtol=1e-10)
    np.testing.assert_allclose(reversed_mean, mean, rtol=1e-12)


def test_constant_feature_gets_unit_std() -> None:
    x = np.column_stack([np.ones(6), np.arange(6.0)])
    _, std = Moments.of(x).mean_std()
    assert std[0] == 1.0 and std[1] == pytest.approx(np.arange(6.0).std())


def test_empty_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="no moments"):
        combine([])
    with pytest.raises(ValueError, match="zero samples"):
        Moments.of(np.zeros((0, 3))).mean_std()
