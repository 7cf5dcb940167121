"""Input perturbation: local differential privacy for tabular training records.

Each client clips its own training records to public per-feature bounds and adds Laplace noise
once, before any training (the input-perturbation idea of the ACA-DMLP paper). Every record the
client trains on is then epsilon-LDP, and everything the client later sends -- model updates,
encrypted or not, metrics, scores -- is post-processing of those noisy records, so the guarantee
holds against anyone who sees those messages, the server included, without trusting the server or
the aggregation.

What it protects: the feature values of each single record (replace-one adjacency at the record
level: any record may be swapped for any other and the output distribution moves by at most a
factor ``exp(epsilon)``).

What it does not protect:

* labels -- they are used as they are; whatever the model reveals about a record's label is
  outside this guarantee;
* the feature moments the client shares to standardize (``Moments``) -- they are computed from
  the raw records and released before perturbation; the bounds below reuse the *federated*
  moments, which the server already holds, so they spend no extra budget, but the release of
  the moments themselves is not covered by ``epsilon``;
* anything, if the noise seed is known to an observer: whoever can regenerate the noise can
  subtract it. The seed must be a client-local secret (for example ``secrets.randbits(128)``
  kept on the client), never derived only from the public run-config seed and partition id.

What it costs: one record's L1 sensitivity is the sum of the feature ranges, so the noise grows
linearly with the number of features. With the 30 WDBC features and bounds of +-3 standard
deviations, each feature gets Laplace noise of scale ``30 * 6 / epsilon`` standard deviations:
36 standard deviations at ``epsilon = 5``. An epsilon of a few units therefore leaves the
records heavily noised; accuracy drops are expected and are to be reported as measured.

The sampler is NumPy's floating-point Laplace from a non-cryptographic generator; like most
research code it does not defend against floating-point attacks on the Laplace mechanism
(Mironov, CCS 2012), so the guarantee is the textbook one, not a hardened implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["FeatureBounds", "perturb_records"]

_TINY_STD = 1e-6
"""Stand-in standard deviation for features whose federated std is not positive.

Such a feature is (nearly) constant, so a tiny range loses almost nothing while keeping
``upper > lower`` and the sensitivity finite.
"""


@dataclass(frozen=True)
class FeatureBounds:
    """Public per-feature box ``[lower, upper]`` that every record is clipped into.

    The box must not depend on any one client's records: it bounds the change one record can
    make, so it has to be fixed before that record is looked at.

    Attributes
    ----------
    lower : np.ndarray
        Per-feature lower bound, float64, shape ``[d]``.
    upper : np.ndarray
        Per-feature upper bound, float64, shape ``[d]``, strictly above ``lower``.
    """

    lower: np.ndarray
    upper: np.ndarray

    def __post_init__(self) -> None:
        lower = np.array(self.lower, dtype=np.float64)
        upper = np.array(self.upper, dtype=np.float64)
        if lower.ndim != 1 or lower.shape != upper.shape or lower.size == 0:
            raise ValueError(
                f"lower and upper must be non-empty 1-D arrays of one shape, got lower "
                f"{lower.shape} and upper {upper.shape}"
            )
        if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))):
            raise ValueError("lower and upper must be finite (the sensitivity would be infinite)")
        if not np.all(upper > lower):
            bad = np.flatnonzero(~(upper > lower))
            raise ValueError(
                f"bounds must be increasing (upper > lower); not at features {bad.tolist()}"
            )
        lower.setflags(write=False)
        upper.setflags(write=False)
        # Frozen dataclass: store the validated, read-only float64 copies.
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)

    @classmethod
    def around(cls, mean: np.ndarray, std: np.ndarray, *, width: float) -> FeatureBounds:
        """Bounds ``[mean - width * std, mean + width * std]`` per feature.

        The width is declared in standardized units and the moments are the federated ones the
        server already publishes for standardization (``Moments.mean_std()``), not any single
        client's, so the box is public and spends no privacy budget of its own.

        Parameters
        ----------
        mean : np.ndarray
            Federated per-feature mean, shape ``[d]``.
        std : np.ndarray
            Federated per-feature standard deviation, shape ``[d]``. Features with ``std <= 0``
            get a tiny positive range (half-width ``width * 1e-6``) so the box stays valid.
        width : float
            Half-width in standard deviations, finite and ``> 0`` (e.g. 3).

        Returns
        -------
        FeatureBounds
            The box; records outside it will be clipped onto it.

        Raises
        ------
        ValueError
            If ``width`` is not a finite positive number, or ``mean`` and ``std`` differ in
            shape, are not 1-D, or are not finite.
        """
        if not (np.isfinite(width) and width > 0):
            raise ValueError(f"width must be a finite number > 0, got {width!r}")
        mean = np.asarray(mean, dtype=np.float64)
        std = np.asarray(std, dtype=np.float64)
        if mean.ndim != 1 or mean.shape != std.shape:
            raise ValueError(
                f"mean and std must be 1-D arrays of one shape, got mean {mean.shape} "
                f"and std {std.shape}"
            )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            raise ValueError("mean and std must be finite")
        half = float(width) * np.where(std > 0, std, _TINY_STD)
        return cls(lower=mean - half, upper=mean + half)

    @property
    def dim(self) -> int:
        """Number of features ``d``."""
        return int(self.lower.size)

    @property
    def sensitivity(self) -> float:
        """L1 sensitivity of a whole clipped record: ``sum(upper - lower)``.

        Two records inside the box differ by at most the feature range in each coordinate, so
        replacing one record by another moves it by at most this much in L1 norm.
        """
        return float(np.sum(self.upper - self.lower))

    def noise_scales(self, epsilon: float) -> np.ndarray:
        """Per-feature Laplace scales ``d * (upper - lower) / epsilon`` used by ``perturb_records``.

        Each feature's scale is proportional to its range, i.e. the Laplace mechanism run on the
        box rescaled to the unit cube (L1 sensitivity ``d`` there). The privacy loss of one
        record is ``sum_j (upper_j - lower_j) / scale_j = epsilon``, as for one scalar scale
        ``sensitivity / epsilon``, and the two coincide when all ranges are equal (e.g. bounds
        from ``around``, which are equal in standardized units). Unlike one scale in raw units,
        this gives every feature the same noise relative to its range, which is what the model
        sees after standardization; with raw WDBC units a single scale would be driven by the
        ``area`` features (std ~350) and swamp the small-scale ones by orders of magnitude.

        Parameters
        ----------
        epsilon : float
            Privacy budget per record, finite and ``> 0``.

        Returns
        -------
        np.ndarray
            float64, shape ``[d]``.
        """
        _check_epsilon(epsilon)
        return self.dim * (self.upper - self.lower) / float(epsilon)


def _check_epsilon(epsilon: float) -> None:
    if not (np.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")


def perturb_records(
    x: np.ndarray, *, bounds: FeatureBounds, epsilon: float, seed: int | Sequence[int]
) -> np.ndarray:
    """Clip every record to ``bounds`` and add Laplace noise, making each record epsilon-LDP.

    Clipping bounds what one record can contribute; the Laplace noise (per-feature scales
    ``bounds.noise_scales(epsilon)``, whose privacy loss sums to ``epsilon`` over one record's
    L1 sensitivity ``bounds.sensitivity``) then hides which value inside the box it had. Each
    released record is epsilon-LDP under replace-one adjacency at the record level; records
    are perturbed independently, so the data set as a whole is also epsilon-DP for a change of
    one record.

    Deterministic for a seed, and this matters for the budget: a client calls this with the same
    records and seed every round and so trains on the *same* noisy records each time. Repeated
    rounds are post-processing of one release and spend no extra epsilon. Perturbing afresh
    (a new seed) each round would be a new release every round and the epsilons would add up.
    Conversely, do not reuse a seed on *different* records: the same noise on two record sets
    reveals their exact difference. The seed must stay secret from every observer (see the
    module docstring): whoever knows it can regenerate and subtract the noise.

    Parameters
    ----------
    x : np.ndarray
        Raw training records, shape ``[n, d]`` with ``d == bounds.dim``; no NaN (a NaN would
        pass through clipping and noise and single its record out).
    bounds : FeatureBounds
        Public clipping box, e.g. ``FeatureBounds.around(mean, std, width=3.0)``.
    epsilon : float
        Privacy budget per record, finite and ``> 0``.
    seed : int or Sequence[int]
        Secret, client-local seed for ``numpy.random.default_rng``.

    Returns
    -------
    np.ndarray
        Noisy records, shape ``[n, d]``, in the input's floating dtype (float32 for the usual
        float32 features; float32 also for integer input). Noise is drawn and added in float64.

    Raises
    ------
    ValueError
        If ``epsilon`` is not finite and ``> 0``, ``x`` is not 2-D, its feature count differs
        from ``bounds``, or it holds NaN.
    """
    _check_epsilon(epsilon)
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != bounds.dim:
        raise ValueError(
            f"x must have shape [n, {bounds.dim}] to match bounds, got x shape {x.shape}"
        )
    if np.isnan(x).any():
        raise ValueError("x holds NaN; impute or drop those records before perturbation")
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float32)
    clipped = np.clip(x.astype(np.float64), bounds.lower, bounds.upper)
    rng = np.random.default_rng(seed)
    noise = rng.laplace(loc=0.0, scale=1.0, size=clipped.shape) * bounds.noise_scales(epsilon)
    return (clipped + noise).astype(dtype)
