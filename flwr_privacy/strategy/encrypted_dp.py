"""Central DP while the server stays blind: the server adds encrypted noise to the encrypted sum.

The distributed-ML paper's mechanism over server-blind HE. Clients clip their update
(its change to the received model) to ``dp.max_grad_norm`` in L2, as Flower's client-side
fixed clipping does, weight it by 1 and encrypt it (``he_mod``). The server adds the
ciphertexts, then adds ``Enc(N(0, (z * sensitivity)^2))`` under the public key it holds
(``flwr_privacy.he.noise``): Gaussian noise of std ``z * clip`` on the SUM of unit-weighted
updates, i.e. ``z * clip / n`` on the mean, as Flower's
``DifferentialPrivacyServerSideFixedClipping`` adds in plaintext (with ``n`` the clients
actually summed, so a dropout does not shrink the noise on the sum). Each noised
aggregate is one Gaussian release (``z``, sample rate 1, 1 step) in the server's
``PrivacyLedger``, exactly as ``LedgeredCentralDp`` records it; no sampling amplification
is claimed.

Threat model. Unit: one client's whole clipped update (client-level, add/remove), as
Flower's central DP; the number of clients summed is public (payload header).
- Protected against: every key holder (the clients, who decrypt the model) and every
  model user: they only ever see ``sum + noise``. The server sees ciphertexts only.
- Not protected: the server colluding with one key holder. The keys come from a trusted
  dealer, so that key holder decrypts every single update, and the server knows its
  own noise: no guarantee at all then. A client that skips clipping (a modified client)
  breaks the sensitivity: outside the guarantee.
- Paillier: stochastic rounding can move a client's quantized update by up to
  ``2 * step * sqrt(d)`` more than the clip; the noise covers that (``sensitivity``). The
  noise is discrete Gaussian: its Renyi DP equals the continuous Gaussian's (CKS 2020),
  so the RDP ledger holds exactly; the PRV accountant (continuous curve) is refused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from logging import INFO, WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from flwr_privacy.dp.ledger import PrivacyLedger
from flwr_privacy.dp.settings import DpSettings
from flwr_privacy.he import Payload, PayloadError, is_encrypted
from flwr_privacy.he.noise import add_noise, can_encrypt, rounding_sensitivity, slots
from flwr_privacy.records import DP_RECORD, attach
from flwr_privacy.strategy.budget import BudgetsExhausted
from flwr_privacy.strategy.encrypted import EncryptedAggregation
from flwr_privacy.strategy.encrypted_box_plot import EncryptedBoxPlot
from flwr_privacy.strategy.hierarchical import Hierarchical
from flwr_privacy.strategy.wrapper import StrategyWrapper, layers

__all__ = ["EPS_SLACK", "EncryptedCentralDp", "NOISE_S_KEY", "ReleaseFn"]

ReleaseFn = Callable[[int, float], None]  # (server round, epsilon so far)
NOISE_S_KEY = "dp-noise-s"  # train metric: seconds the server spent sampling/encrypting noise
EPS_SLACK = 1e-9  # planned noise reaches the budget exactly in the last round


class EncryptedCentralDp(StrategyWrapper):
    """Central DP on an encrypted sum: the server noises ciphertexts it cannot read.

    Parameters
    ----------
    inner : Strategy
        ``EncryptedFedAvg`` / ``EncryptedFedProx`` (or a layer holding one, e.g.
        ``Tampering``); not the encrypted box plot (its selection depends on every
        update, so one client could change which others are summed) and not
        ``Hierarchical``.
    dp : DpSettings
        ``mode="central"``; ``noise_multiplier`` (0, the default: the smallest one whose
        epsilon over ``rounds`` noised aggregates stays within ``epsilon``), ``max_grad_norm``
        (the clients' L2 clip),
        ``epsilon`` / ``delta`` (the server's budget: the run stops, raising
        ``BudgetsExhausted``, before a release would pass it) and ``accountant``.
        Sent to every client as the ``flwr-privacy.dp`` record: clients clip and
        report a unit weight.
    on_release : callable, optional
        Called with (server round, epsilon so far) after every noised aggregate.
    """

    def __init__(
        self, inner: Strategy, *, dp: DpSettings, on_release: ReleaseFn | None = None
    ) -> None:
        super().__init__(inner)
        if dp.mode != "central":
            raise ValueError(
                f"EncryptedCentralDp needs DpSettings(mode='central'), not {dp.mode!r}"
            )
        if dp.noise_multiplier == 0:  # plan it: one release a round over dp.rounds rounds
            from flwr_privacy.dp.client import gaussian_release

            z = gaussian_release(dp, sample_rate=1.0, steps=1)["gaussian"][0][0]
            dp = replace(dp, noise_multiplier=z)
            log(INFO, "EncryptedCentralDp: noise multiplier %.4g planned for epsilon %g "
                "(delta %g) over %d rounds", z, dp.epsilon, dp.delta, dp.rounds)  # fmt: skip
        chain = layers(inner)
        if any(isinstance(s, Hierarchical) for s in chain):
            raise ValueError(
                "EncryptedCentralDp does not compose with Hierarchical: wrap the flat "
                "EncryptedFedAvg/EncryptedFedProx (no edges)"
            )
        if not isinstance(chain[-1], EncryptedAggregation):
            raise TypeError(
                "EncryptedCentralDp wraps EncryptedFedAvg or EncryptedFedProx (server-blind HE), "
                f"not {type(chain[-1]).__name__}; for plaintext strategies use LedgeredCentralDp"
            )
        self.encrypted = chain[-1]
        if isinstance(self.encrypted, EncryptedBoxPlot):
            raise ValueError(
                "EncryptedCentralDp: a box-plot filter picks updates by their values, so one "
                "client can change which others are summed and the sum's sensitivity is no "
                "longer one clip; use EncryptedFedAvg/EncryptedFedProx without a filter"
            )
        bundle = self.encrypted.bundle
        if not can_encrypt(bundle):
            raise ValueError(
                f"EncryptedCentralDp: the server's CKKS bundle {bundle.fingerprint} holds no "
                "public key (symmetric keys), so the server cannot encrypt its noise; deal "
                "keys with flwr_privacy.he.noise.keygen_public, or use Paillier"
            )
        if bundle.backend == "paillier" and dp.accountant != "rdp":
            raise ValueError(
                "EncryptedCentralDp with Paillier adds discrete Gaussian noise, whose Renyi "
                "DP (not its PRV curve) equals the Gaussian's: use DpSettings(accountant='rdp')"
            )
        self.dp = dp
        self.ledger = PrivacyLedger(delta=dp.delta, accountant=dp.accountant)
        self.on_release = on_release
        self._size: int | None = None

    @property
    def noise_multiplier(self) -> float:
        return self.dp.noise_multiplier

    def sensitivity(self, size: int) -> float:
        """L2 bound of one client's contribution to the decrypted sum: clip, plus rounding."""
        he = self.encrypted.he
        return self.dp.max_grad_norm + rounding_sensitivity(
            self.encrypted.bundle.backend, clip=he.clip, bits=he.bits, size=size
        )

    def noise_std(self, size: int) -> float:
        """Std of the noise on every value of the sum: ``z * sensitivity``."""
        return self.dp.noise_multiplier * self.sensitivity(size)

    def _release(self) -> tuple[float, float, int]:
        return (self.dp.noise_multiplier, 1.0, 1)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.ledger.epsilon(gaussian=[self._release()]) > self.dp.epsilon * (1 + EPS_SLACK):
            raise BudgetsExhausted(
                f"the server's central-DP budget: epsilon {self.ledger.epsilon():.3f} spent "
                f"of {self.dp.epsilon}; another noised aggregate would pass it"
            )
        if self._size is None:
            self._size = (
                Payload.from_arrays(arrays).header.layout.size
                if is_encrypted(arrays)
                else sum(int(a.numpy().size) for a in arrays.values())
            )
        self.encrypted.noise_slots = slots(
            self.encrypted.bundle.backend, std=self.noise_std(self._size),
            clip=self.encrypted.he.clip,
        )  # fmt: skip
        messages = self.inner.configure_train(server_round, arrays, config, grid)
        return attach(messages, DP_RECORD, self.dp.to_record())

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = self.inner.configure_evaluate(server_round, arrays, config, grid)
        return attach(messages, DP_RECORD, self.dp.to_record())

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        if arrays is None:
            return arrays, metrics
        start = time.perf_counter()
        try:
            summed = Payload.from_arrays(arrays)
            size = summed.header.layout.size
            if not math.isclose(summed.header.weight, summed.header.count, rel_tol=1e-9):
                log(WARNING, "EncryptedCentralDp: round %d's weights are not 1 each (total %g "
                    "for %d clients): the header reveals their sum; clients should report "
                    "unit weights", server_round, summed.header.weight,
                    summed.header.count)  # fmt: skip
            noised = add_noise(summed, bundle=self.encrypted.bundle, std=self.noise_std(size),
                               noise_slots=self.encrypted.noise_slots)  # fmt: skip
        except PayloadError as e:  # never release an un-noised sum
            log(WARNING, "aggregate_train: round %d not aggregated: cannot add the noise: %s",
                server_round, e)  # fmt: skip
            return None, None
        seconds = time.perf_counter() - start
        eps = self.ledger.record(gaussian=[self._release()])
        log(INFO, "aggregate_train: encrypted noise (std %.4g on the sum) added in %.3fs; "
            "server epsilon %.3f", self.noise_std(size), seconds, eps)  # fmt: skip
        if self.on_release is not None:
            self.on_release(server_round, eps)
        out = MetricRecord(dict(metrics or {}))
        out[NOISE_S_KEY] = seconds
        return noised.to_arrays(), out

    def summary(self) -> None:
        log(INFO, "\t├──> central DP on the encrypted sum: z = %.3f, clip %g, epsilon %g "
            "(server's ledger); the server never sees an update", self.dp.noise_multiplier,
            self.dp.max_grad_norm, self.dp.epsilon)  # fmt: skip
        self.inner.summary()
