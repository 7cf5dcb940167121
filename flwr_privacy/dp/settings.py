"""DP settings as one typed, frozen value: what the server-side layer sends its clients.

The server-side DP layer (``BudgetGuard`` for client-side DP, ``LedgeredCentralDp``
for central DP) writes ``DpSettings.to_record()`` as the ``flwr-privacy.dp`` record on
every train and evaluate message; the client mods and helpers read only that record
(``DpSettings.from_record``), so no user sets a ``dp.*`` key by hand.

Modes:
- ``dp-sgd``: sample-level DP-SGD on each client with Opacus (Gaussian, RDP/PRV).
- ``distributed``: DP-SGD whose noise is split over ``shares`` clients every encrypted
  (server-blind) sum holds: one noisy step a round.
- ``laplace-sgd``: the Laplace variant of DP-SGD (``flwr_privacy.dp.laplace``).
- ``local``: each client clips and noises its outgoing update (client-level local DP).
- ``central``: the server clips each update and noises the aggregate; clients only
  report a unit weight so that the server averages them uniformly.
- ``none``: no DP, unless ``input_epsilon > 0`` (input perturbation of tabular records).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from flwr.app import ConfigRecord

from flwr_privacy.dp.ledger import ACCOUNTANTS

__all__ = [
    "CLIENT_MODES",
    "DP_MODES",
    "DpSettings",
    "GRAD_SAMPLE_MODES",
    "LOCAL_MECHANISMS",
    "NO_SEED",
    "UNIT_WEIGHT_MODES",
]

DP_MODES = ("none", "dp-sgd", "distributed", "laplace-sgd", "local", "central")
CLIENT_MODES = ("dp-sgd", "distributed", "laplace-sgd", "local")  # clients keep a ledger
UNIT_WEIGHT_MODES = ("central", "distributed")  # clients are averaged uniformly
LOCAL_MECHANISMS = ("gaussian", "laplace")
GRAD_SAMPLE_MODES = ("hooks", "functorch")
NO_SEED = -1  # record value of ``noise_seed = None`` (records hold no None)

_CHOICES: dict[str, tuple[str, ...]] = {
    "mode": DP_MODES,
    "accountant": ACCOUNTANTS,
    "grad_sample_mode": GRAD_SAMPLE_MODES,
    "local_mechanism": LOCAL_MECHANISMS,
}
_Check = tuple[Callable[[Any], bool], str]
_POSITIVE: _Check = (lambda v: v > 0, "> 0")
_NONNEG: _Check = (lambda v: v >= 0, ">= 0")
_CHECKS: dict[str, _Check] = {
    "epsilon": _POSITIVE,
    "delta": (lambda v: 0 < v < 1, "0 < delta < 1"),
    "rounds": (lambda v: v >= 1, "an integer >= 1"),
    "shares": (lambda v: v >= 1, "an integer >= 1"),
    "noise_multiplier": (lambda v: v >= 0, ">= 0 (0: planned from epsilon over the rounds)"),
    "max_grad_norm": _POSITIVE,
    "l1_clip": _POSITIVE,
    "laplace_increment": _NONNEG,
    "loss_bound": _POSITIVE,
    "weight_decay": _NONNEG,
    "relaxation": _POSITIVE,
    "input_epsilon": _NONNEG,
    "input_width": _POSITIVE,
    "momentum": (lambda v: 0 <= v < 1, "0 <= momentum < 1"),
    "noise_seed": (lambda v: v is None or v >= 0, "None or an integer >= 0"),
}
_INTEGERS = ("rounds", "shares")


@dataclass(frozen=True, kw_only=True)
class DpSettings:
    """One run's differential-privacy settings (keyword-only, as Opacus' parameters).

    Parameters
    ----------
    mode : str
        Which DP layer runs (module docstring); ``"none"`` by default.
    epsilon, delta : float
        Each client's whole-run budget (the server's, for central DP).
    rounds : int
        Rounds the noise is planned over: a client's epsilon reaches ``epsilon`` only
        after ``rounds`` rounds, and it declines the round after.
    shares : int
        Distributed DP: clients whose noise shares every aggregate holds.
    noise_multiplier : float
        Fixed noise multiplier; 0 plans the smallest one that fits the budget.
    max_grad_norm : float
        L2 clip: per example (DP-SGD) or of the whole update (local DP, central DP).
    accountant : str
        ``"rdp"`` or ``"prv"``: Opacus' accountant for Gaussian releases.
    grad_sample_mode : str
        ``"hooks"`` or ``"functorch"``: how Opacus computes per-example gradients.
    local_mechanism : str
        Local DP's noise: ``"gaussian"`` (L2 clip, Flower's ``LocalDpMod``) or ``"laplace"``.
    l1_clip : float
        L1 clip: per example (``laplace-sgd``) or of the whole update (local Laplace).
    laplace_increment : float
        ``d`` in the Laplace schedule ``eps_t = eps_1 + (t - 1) d`` over local epochs.
    loss_bound, weight_decay, relaxation : float
        ``laplace-sgd``: per-example loss clamp of the private Polyak step, L2
        regularization, and the Polyak step's relaxation term.
    input_epsilon, input_width : float
        Input perturbation of tabular records: its epsilon (0 = off, counted once) and
        the bounds, federated mean +- ``input_width`` standard deviations.
    momentum : float
        Distributed DP: heavy-ball momentum on the aggregate, applied by the clients.
    noise_seed : int or None
        ``None`` (default): each client draws a secret noise seed. An integer makes the
        noise repeatable for experiments and voids the guarantee against whoever knows it.
    """

    mode: str = "none"
    epsilon: float = 3.0
    delta: float = 1e-5
    rounds: int = 1
    shares: int = 1
    noise_multiplier: float = 0.0
    max_grad_norm: float = 1.0
    accountant: str = "rdp"
    grad_sample_mode: str = "hooks"
    local_mechanism: str = "gaussian"
    l1_clip: float = 1.0
    laplace_increment: float = 0.0
    loss_bound: float = 5.0
    weight_decay: float = 1e-4
    relaxation: float = 1e-3
    input_epsilon: float = 0.0
    input_width: float = 3.0
    momentum: float = 0.0
    noise_seed: int | None = None

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"DpSettings.{name} = {getattr(self, name)!r} is invalid; allowed: {choices}"
                )
        for name in _INTEGERS:
            if type(getattr(self, name)) is not int:
                raise ValueError(
                    f"DpSettings.{name} = {getattr(self, name)!r} is invalid; allowed: an integer"
                )
        for name, (ok, allowed) in _CHECKS.items():
            if not ok(getattr(self, name)):
                raise ValueError(
                    f"DpSettings.{name} = {getattr(self, name)!r} is invalid; allowed: {allowed}"
                )

    @property
    def enabled(self) -> bool:
        return self.mode != "none" or self.input_epsilon > 0

    @property
    def on_clients(self) -> bool:
        """Clients keep a ledger (and may decline) in these settings."""
        return self.mode in CLIENT_MODES or self.input_epsilon > 0

    @property
    def unit_weights(self) -> bool:
        """Clients report a unit weight: the server averages them uniformly."""
        return self.mode in UNIT_WEIGHT_MODES

    def to_record(self) -> ConfigRecord:
        """The ``flwr-privacy.dp`` record: kebab-case keys, scalars only."""
        out: dict[str, Any] = {}
        for f in fields(DpSettings):
            value = getattr(self, f.name)
            out[f.name.replace("_", "-")] = NO_SEED if value is None else value
        return ConfigRecord(out)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DpSettings:
        """Settings from a record ``to_record`` wrote; ValueError names a missing key."""
        values: dict[str, Any] = {}
        for f in fields(DpSettings):
            key = f.name.replace("_", "-")
            if key not in record:
                raise ValueError(f"the DP record lacks {key!r}")
            values[f.name] = record[key]
        if values["noise_seed"] == NO_SEED:
            values["noise_seed"] = None
        return DpSettings(**values)
