"""Privacy ledger: every DP release one party made, and its epsilon from a real accountant.

A client keeps its ledger in its Flower ``context.state`` across rounds (it
survives in a SuperNode process and in the simulation engine alike), so the
epsilon it reports covers the whole federated schedule, not one round.

Gaussian releases (DP-SGD steps, Gaussian local DP, central DP) are composed
by an Opacus accountant (RDP or PRV) over their ``(noise multiplier, sample
rate, steps)`` history; pure-epsilon Laplace releases are added up (basic
composition) and so is the Gaussian part: ``epsilon = eps_gauss(delta) + sum
eps_laplace`` is a valid (conservative) bound for their sequential composition.

Distributed discrete Gaussian rounds (SecAgg, ``flwr_privacy.dp.ddg``) are RDP curves:
when a ledger holds any, its Gaussian history is turned into an RDP curve too (Opacus'
``compute_rdp``, at the same integer orders, whatever ``accountant`` says), the curves
are added and converted to epsilon once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from flwr_privacy.dp.ddg import ORDERS, DdgStep, rdp_to_epsilon
from flwr_privacy.extras import requires

__all__ = [
    "ACCOUNTANTS",
    "DDG_KEYS",
    "GaussianStep",
    "PrivacyLedger",
    "gaussian_epsilon",
    "joint_epsilon",
    "quiet_opacus",
]

ACCOUNTANTS = ("rdp", "prv")

DDG_KEYS = (
    ("sensitivity", "l2_sensitivity"),
    ("sigma", "sigma"),
    ("honest", "honest"),
    ("dim", "dim"),
    ("rate", "sample_rate"),
    ("rounds", "rounds"),
)  # state-dict keys
GaussianStep = tuple[float, float, int]  # (noise multiplier, sample rate, steps): Opacus history


def quiet_opacus() -> None:
    """Remove the root handler ``opacus.utils.module_utils`` adds with ``basicConfig``.

    Flower's logger has its own handler and propagates, so with Opacus' handler on the
    root every Flower line prints twice. Only a handler with Opacus' exact format goes.
    Call it right after importing Opacus (imported lazily, inside functions).
    """
    for handler in list(logging.root.handlers):
        fmt = handler.formatter
        if (
            type(handler) is logging.StreamHandler
            and fmt is not None
            and fmt._fmt == "%(asctime)s:%(levelname)s:%(message)s"
            and fmt.datefmt == "%m/%d/%Y %H:%M:%S"
        ):
            logging.root.removeHandler(handler)


def gaussian_epsilon(history: Iterable[GaussianStep], *, delta: float, accountant: str) -> float:
    """Epsilon at ``delta`` of a sequence of subsampled Gaussian releases (Opacus accountant)."""
    steps = [(float(z), float(q), int(n)) for z, q, n in history if n > 0]
    if not steps:
        return 0.0
    with requires("dp", "DP accounting (flwr_privacy.dp.ledger)"):
        from opacus.accountants import create_accountant  # heavy: only when accounting

    quiet_opacus()

    acc = create_accountant(mechanism=accountant)
    acc.history = steps
    return float(acc.get_epsilon(delta=delta))


def joint_epsilon(gaussian: Iterable[GaussianStep], ddg: Iterable[DdgStep], delta: float) -> float:
    """Epsilon of Gaussian and DDG releases composed in RDP (curves added, one conversion)."""
    with requires("dp", "DP accounting (flwr_privacy.dp.ledger)"):
        from opacus.accountants.analysis.rdp import compute_rdp

    quiet_opacus()
    rdp = sum((step.rdp() for step in ddg if step.rounds > 0), start=np.zeros(len(ORDERS)))
    for z, q, n in gaussian:
        if n > 0:
            rdp = rdp + np.asarray(compute_rdp(q=q, noise_multiplier=z, steps=n,
                                               orders=list(ORDERS)))  # fmt: skip
    return rdp_to_epsilon(rdp, delta) if np.any(rdp > 0) else 0.0


@dataclass
class PrivacyLedger:
    """The releases of one party (a client, or the server for central DP) over the run.

    It stores releases, not epsilons; ``epsilon()`` runs the accountant over all of them.

    Parameters
    ----------
    delta : float
        The delta every epsilon is reported at.
    accountant : str
        ``"rdp"`` or ``"prv"`` (Opacus) for the Gaussian releases.
    gaussian : list of (noise multiplier, sample rate, steps)
        Subsampled Gaussian releases (DP-SGD steps, local or central releases).
    laplace : list of float
        Epsilons of Laplace releases, added (basic composition).
    ddg : list
        Distributed discrete Gaussian rounds (under SecAgg+).
    rounds : int
        Rounds in which this party released something.
    input_epsilon : float
        A one-off release of perturbed records, counted once.
    """

    delta: float
    accountant: str = "rdp"
    gaussian: list[GaussianStep] = field(default_factory=list)
    laplace: list[float] = field(default_factory=list)
    ddg: list[DdgStep] = field(default_factory=list)  # distributed discrete Gaussian rounds
    rounds: int = 0  # rounds in which this party released something
    input_epsilon: float = 0.0  # one-off release of perturbed records (counted once)

    def __post_init__(self) -> None:
        if not 0 < self.delta < 1:
            raise ValueError(f"delta = {self.delta!r} is invalid; allowed: 0 < delta < 1")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant {self.accountant!r} is unknown; allowed: {ACCOUNTANTS}")

    def epsilon(
        self,
        *,
        gaussian: Iterable[GaussianStep] = (),
        laplace: Iterable[float] = (),
        ddg: Iterable[DdgStep] = (),
    ) -> float:
        """Epsilon spent so far, or what it would be after the extra releases given."""
        history = [*self.gaussian, *gaussian]
        rounds = [*self.ddg, *ddg]
        if any(step.rounds > 0 for step in rounds):
            gauss = joint_epsilon(history, rounds, self.delta)
        else:
            gauss = gaussian_epsilon(history, delta=self.delta, accountant=self.accountant)
        return gauss + sum([*self.laplace, *laplace]) + self.input_epsilon

    def record(
        self,
        *,
        gaussian: Iterable[GaussianStep] = (),
        laplace: Iterable[float] = (),
        ddg: Iterable[DdgStep] = (),
    ) -> float:
        """Add one round's releases; return the new total epsilon."""
        self.rounds += 1
        for step in ddg:  # equal parameters in a row compose as one run of rounds
            last = self.ddg[-1] if self.ddg else None
            if last is not None and replace(last, rounds=step.rounds) == step:
                self.ddg[-1] = replace(last, rounds=last.rounds + step.rounds)
            else:
                self.ddg.append(step)
        for z, q, n in gaussian:  # equal (noise, rate) in a row compose as one run of steps
            if self.gaussian and self.gaussian[-1][:2] == (float(z), float(q)):
                self.gaussian[-1] = (float(z), float(q), self.gaussian[-1][2] + int(n))
            else:
                self.gaussian.append((float(z), float(q), int(n)))
        self.laplace.extend(float(e) for e in laplace)
        return self.epsilon()

    def state_dict(self) -> dict[str, Any]:
        """Flat lists of scalars: what a Flower ConfigRecord can hold."""
        return {
            "delta": self.delta,
            "accountant": self.accountant,
            "gaussian-noise": [z for z, _, _ in self.gaussian],
            "gaussian-rate": [q for _, q, _ in self.gaussian],
            "gaussian-steps": [n for _, _, n in self.gaussian],
            "laplace": list(self.laplace),
            **{
                f"ddg-{key}": [getattr(step, name) for step in self.ddg] for key, name in DDG_KEYS
            },  # fmt: skip
            "rounds": self.rounds,
            "input-epsilon": self.input_epsilon,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> PrivacyLedger:
        history = zip(
            state["gaussian-noise"], state["gaussian-rate"], state["gaussian-steps"], strict=True
        )
        ddg = zip(*(state.get(f"ddg-{key}", []) for key, _ in DDG_KEYS), strict=True)
        return cls(
            delta=float(state["delta"]),
            accountant=str(state["accountant"]),
            gaussian=[(float(z), float(q), int(n)) for z, q, n in history],
            laplace=[float(e) for e in state["laplace"]],
            ddg=[
                DdgStep(float(c), float(s), int(h), int(d), float(q), int(n))
                for c, s, h, d, q, n in ddg
            ],  # fmt: skip
            rounds=int(state["rounds"]),
            input_epsilon=float(state["input-epsilon"]),
        )
