"""Input perturbation clips to public bounds, adds Laplace noise of the right scale, repeatably."""

import numpy as np
import pytest

from flwr_privacy.dp.input import FeatureBounds, perturb_records


def _bounds() -> FeatureBounds:
    return FeatureBounds(lower=np.array([-1.0, 0.0, 2.0]), upper=np.array([1.0, 0.5, 4.0]))


def test_around_and_sensitivity_hand_computed() -> None:
    # Prepare: two features, one of them constant (std 0)
    mean, std = np.array([10.0, -2.0]), np.array([2.0, 0.0])

    # Execute
    bounds = FeatureBounds.around(mean, std, width=3.0)

    # Assert: mean -+ 3 std; the constant feature gets half-width 3 * 1e-6
    np.testing.assert_allclose(bounds.lower, [4.0, -2.0 - 3e-6], rtol=0, atol=1e-12)
    np.testing.assert_allclose(bounds.upper, [16.0, -2.0 + 3e-6], rtol=0, atol=1e-12)
    assert bounds.lower.dtype == np.float64 and bounds.dim == 2
    assert bounds.sensitivity == pytest.approx(12.0 + 6e-6, abs=1e-12)
    assert _bounds().sensitivity == pytest.approx(2.0 + 0.5 + 2.0)


def test_far_outside_record_is_clipped_onto_bounds() -> None:
    # Prepare: records far outside, inside and on the bounds, float32 like the tabular tasks
    bounds = _bounds()
    x = np.array([[1e6, -1e6, 3.0], [0.5, 0.25, 1e9], [-1.0, 0.5, 2.0]], dtype=np.float32)

    # Execute: epsilon so large that the noise is negligible
    out = perturb_records(x, bounds=bounds, epsilon=1e9, seed=0)

    # Assert
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, np.clip(x, bounds.lower, bounds.upper), rtol=0, atol=1e-6)


def test_noise_scale_is_sensitivity_over_epsilon_for_equal_ranges() -> None:
    # Prepare: 50k records x 4 features = 200k noise draws; equal ranges as from `around`
    bounds = FeatureBounds.around(np.zeros(4), np.ones(4), width=2.0)
    x = np.random.default_rng(1).normal(size=(50_000, 4))
    epsilon = 2.0

    # Execute
    out = perturb_records(x, bounds=bounds, epsilon=epsilon, seed=7)

    # Assert: Laplace mean |X| equals its scale
    noise = out - np.clip(x, bounds.lower, bounds.upper)
    assert np.mean(np.abs(noise)) == pytest.approx(bounds.sensitivity / epsilon, rel=0.03)
    assert abs(np.mean(noise)) < 0.03 * bounds.sensitivity / epsilon


def test_unequal_ranges_get_proportional_scales_with_total_loss_epsilon() -> None:
    # Prepare: ranges 2, 0.5, 2 (d = 3); 70k records -> 70k draws per feature
    bounds = _bounds()
    x = np.zeros((70_000, 3))
    epsilon = 4.0

    # Execute
    out = perturb_records(x, bounds=bounds, epsilon=epsilon, seed=3)
    scales = bounds.noise_scales(epsilon)

    # Assert: scale_j = d * range_j / epsilon, privacy loss sum(range_j / scale_j) = epsilon
    np.testing.assert_allclose(scales, [1.5, 0.375, 1.5])
    assert np.sum((bounds.upper - bounds.lower) / scales) == pytest.approx(epsilon)
    noise = out - np.clip(x, bounds.lower, bounds.upper)
    np.testing.assert_allclose(np.mean(np.abs(noise), axis=0), scales, rtol=0.03)


def test_same_seed_same_records_other_seed_other_records() -> None:
    # Prepare
    x = np.random.default_rng(2).normal(size=(20, 3)).astype(np.float32)
    kwargs = {"bounds": _bounds(), "epsilon": 1.0}

    # Execute
    first = perturb_records(x, seed=[5, 1], **kwargs)
    again = perturb_records(x, seed=[5, 1], **kwargs)
    other = perturb_records(x, seed=[5, 2], **kwargs)

    # Assert
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_input_is_not_modified_and_integers_come_back_float32() -> None:
    # Prepare
    x = np.array([[3, 1, 9]], dtype=np.int64)
    before = x.copy()

    # Execute
    out = perturb_records(x, bounds=_bounds(), epsilon=1.0, seed=0)

    # Assert
    np.testing.assert_array_equal(x, before)
    assert out.dtype == np.float32


@pytest.mark.parametrize("epsilon", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_epsilon_is_refused(epsilon: float) -> None:
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match="epsilon"):
        perturb_records(np.zeros((2, 3)), bounds=_bounds(), epsilon=epsilon, seed=0)


@pytest.mark.parametrize("width", [0.0, -2.0, float("nan"), float("inf")])
def test_bad_width_is_refused(width: float) -> None:
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match="width"):
        FeatureBounds.around(np.zeros(2), np.ones(2), width=width)


@pytest.mark.parametrize("shape", [(2, 4), (3,), (1, 2, 3)])
def test_records_of_wrong_shape_are_refused(shape: tuple[int, ...]) -> None:
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match=r"x must have shape \[n, 3\]"):
        perturb_records(np.zeros(shape), bounds=_bounds(), epsilon=1.0, seed=0)


def test_mismatched_or_non_increasing_bounds_are_refused() -> None:
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match="mean and std"):
        FeatureBounds.around(np.zeros(3), np.ones(2), width=1.0)
    with pytest.raises(ValueError, match="lower and upper"):
        FeatureBounds(lower=np.zeros(3), upper=np.ones(2))
    with pytest.raises(ValueError, match=r"upper > lower.*\[1\]"):
        FeatureBounds(lower=np.zeros(2), upper=np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="finite"):
        FeatureBounds(lower=np.zeros(2), upper=np.array([1.0, np.inf]))


def test_nan_records_are_refused() -> None:
    # Prepare
    x = np.array([[0.0, np.nan, 3.0]])

    # Execute / Assert
    with pytest.raises(ValueError, match="NaN"):
        perturb_records(x, bounds=_bounds(), epsilon=1.0, seed=0)
