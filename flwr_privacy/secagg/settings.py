"""Typed settings of the SecAgg+ layer (``SecAggPlus(inner, secagg=SecAggSettings(...))``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from flwr_privacy.secagg.encoding import modulus_bits
from flwr_privacy.secagg.graph import default_degree

__all__ = ["DistributedDp", "SecAggSettings"]


@dataclass(frozen=True, kw_only=True)
class DistributedDp:
    """Distributed discrete Gaussian noise under SecAgg+ (Kairouz, Liu and Steinke, 2021).

    Every client rounds its update to a grid and adds discrete Gaussian noise; the
    server plans grid and noise (``flwr_privacy.dp.ddg.plan_ddg``) so that the sum
    over the honest survivors alone, ``survivors - (t - 1)``, spends at most
    ``epsilon`` over ``rounds`` rounds: the guarantee holds against the server
    colluding with ``t - 1`` clients and up to ``max_dropouts`` dropouts. A round
    whose survivors fall short is not aggregated (nothing is released). It runs on
    the complete graph (``neighbours`` is ignored): clients refuse distributed DP on
    less, since only then is the released sum over the whole survivor set.

    Parameters
    ----------
    epsilon, delta, rounds : the budget and the schedule it covers.
    l2_clip : one example's L2 sensitivity in update units (``lr * C / B`` for one
        DP-SGD step with clip ``C`` and batch divisor ``B``).
    sample_rate : the largest Poisson sample rate of any client (``B / n_min``).
    update_norm : a bound on one client's whole update (sets the grid's range).
    max_dropouts : dropouts the noise is sized for.
    bits : modulus bits of the masked sum (32: the grid can be fine).
    """

    epsilon: float
    delta: float
    rounds: int
    l2_clip: float
    sample_rate: float
    update_norm: float
    max_dropouts: int = 0
    bits: int = 32

    def __post_init__(self) -> None:
        if not (self.epsilon > 0 and 0 < self.delta < 1 and self.rounds >= 1):
            raise ValueError("DistributedDp needs epsilon > 0, 0 < delta < 1, rounds >= 1")
        if not (self.l2_clip > 0 and self.update_norm > 0 and 0 < self.sample_rate <= 1):
            raise ValueError("DistributedDp needs l2_clip, update_norm > 0, 0 < sample_rate <= 1")
        if self.max_dropouts < 0 or not 8 <= self.bits <= 32:
            raise ValueError("DistributedDp needs max_dropouts >= 0 and 8 <= bits <= 32")

    @classmethod
    def for_dp_sgd(
        cls, epsilon: float, delta: float, rounds: int, *, lr: float, batch_size: int,
        min_examples: int, max_grad_norm: float = 1.0, max_dropouts: int = 0,
    ) -> DistributedDp:  # fmt: skip
        """The plan for clients that each take one clipped SGD step a round
        (``flwr_privacy.distributed_dp_fit``): ``lr``, ``batch_size`` and ``max_grad_norm``
        as the clients use them, ``min_examples`` the smallest client's training set.

        One example moves a step by ``lr * C / B``; the largest sample rate is the smallest
        client's ``1 / ceil(n / B)``; a step's norm is bounded by ``4 lr C`` (a Poisson batch
        of up to twice its expected size, with room for momentum).
        """
        if not (lr > 0 and max_grad_norm > 0 and batch_size >= 1 and min_examples >= 1):
            raise ValueError(
                f"DistributedDp.for_dp_sgd needs lr > 0, max_grad_norm > 0, batch_size >= 1 and "
                f"min_examples >= 1, not {lr!r}, {max_grad_norm!r}, {batch_size!r}, "
                f"{min_examples!r}"
            )
        step = lr * max_grad_norm
        return cls(epsilon=epsilon, delta=delta, rounds=rounds, l2_clip=step / batch_size,
                   sample_rate=1.0 / math.ceil(min_examples / batch_size),
                   update_norm=4 * step, max_dropouts=max_dropouts)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class SecAggSettings:
    """Secure aggregation of client updates: the server learns only their (weighted) sum.

    Parameters
    ----------
    threshold : int or float
        Shares needed to rebuild a client's secrets, ``t``. An int is absolute; a
        float ``f`` in (0, 1) asks for more than that fraction of a client's ``k``
        neighbours, ``floor(f k) + 1`` (default 0.5: a majority); 1.0 asks for all.
        A coalition of the server and ``t - 1`` clients learns an honest client's input
        only inside a sum with other honest inputs (with roster trust, even if the server
        lies); a round with fewer than ``t`` surviving neighbours of any client is not
        aggregated. Clients refuse ``t`` below ``floor(k / 2) + 1`` or their own floors.
    neighbours : int
        Degree ``k`` of the SecAgg+ graph; 0 picks about ``2 log2 n`` (the complete
        graph, i.e. SecAgg, for small ``n``).
    quant_bits : int
        Bits of each client's fixed-point value; the modulus adds ``log2`` of the
        clients a sum may hold.
    clip : float
        Each weighted update value is clipped to ``[-clip, clip]`` before quantizing.
    max_clients : int
        Most clients one sum may hold (sets the modulus; 0: those sampled this round).
    timeout : float
        Seconds each protocol stage waits for replies; late clients count as dropped.
    dp : DistributedDp, optional
        Distributed DP: clients add discrete Gaussian noise to grid-rounded updates
        instead of fixed-point quantizing them; the sum is the unweighted mean.
    trust : str
        ``"roster"`` (default): every client signs with the key its operator gave it
        through node config and checks the others against the roster; the server only
        learns each node's roster identity (one ``hello`` message per new node).
        ``"simulated"``: this layer deals per-run keys to a private temporary directory
        that the simulated clients read (``make_secagg_mod(simulated_trust=True)``); the
        server then holds every key, so nothing holds against a lying server.
    max_restarts : int
        A node that advertised keys but did not share leaves its neighbours unable to
        mask (they refuse masking with fewer than they shared with): the key and share
        stages restart without it, at most this many times a round.
    """

    threshold: int | float = 0.5
    neighbours: int = 0
    quant_bits: int = 16
    clip: float = 4.0
    max_clients: int = 0
    timeout: float = 600.0
    dp: DistributedDp | None = None
    trust: str = "roster"
    max_restarts: int = 2

    def __post_init__(self) -> None:
        if self.trust not in ("roster", "simulated"):
            raise ValueError(f"SecAggSettings.trust = {self.trust!r}; allowed: 'roster', "
                             "'simulated'")  # fmt: skip
        if self.max_restarts < 0:
            raise ValueError(f"SecAggSettings.max_restarts = {self.max_restarts!r}; allowed: >= 0")
        t = self.threshold
        if isinstance(t, bool) or not (
            (isinstance(t, int) and t >= 1) or (isinstance(t, float) and 0 < t <= 1)
        ):
            raise ValueError(
                f"SecAggSettings.threshold = {t!r}; allowed: an int >= 1 or a fraction in (0, 1]"
            )
        if self.neighbours < 0 or self.neighbours == 1:
            raise ValueError(f"SecAggSettings.neighbours = {self.neighbours!r}; allowed: 0 or >= 2")
        if not 2 <= self.quant_bits <= 24:
            raise ValueError(f"SecAggSettings.quant_bits = {self.quant_bits!r}; allowed: 2..24")
        if not self.clip > 0:
            raise ValueError(f"SecAggSettings.clip = {self.clip!r} must be > 0")
        if self.max_clients < 0 or self.timeout <= 0:
            raise ValueError("SecAggSettings.max_clients must be >= 0 and timeout > 0")
        if self.max_clients and modulus_bits(self.quant_bits, self.max_clients) > 32:
            raise ValueError(
                f"{self.quant_bits} quantization bits for {self.max_clients} clients need a "
                "modulus above 2^32: lower quant_bits or max_clients"
            )

    def degree(self, num_clients: int) -> int:
        k = self.neighbours or default_degree(num_clients)
        return min(k, num_clients - 1)

    def threshold_for(self, degree: int) -> int:
        """``t`` for clients with ``degree`` neighbours (at least 1, at most ``degree``)."""
        if isinstance(self.threshold, float):
            t = math.floor(self.threshold * degree) + 1 if self.threshold < 1 else degree
        elif self.threshold > degree:
            raise ValueError(
                f"SecAggSettings.threshold = {self.threshold} exceeds the {degree} neighbours "
                "each client has this round: lower it or raise neighbours"
            )
        else:
            t = self.threshold
        return max(1, min(t, degree))
