"""Run config parsed once into frozen dataclasses whose errors name the key.

The ServerApp parses the whole run config; clients get what they need in each
message's ConfigRecord (``ClientSettings``), so one source of truth drives both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.attack import ATTACKS, Attack
from app.config_values import ConfigError, check, choice, get, number
from data.partition import PARTITIONERS, PartitionSpec
from flwr_privacy.settings import HeSettings
from tasks import TASK_NAMES, get_task, task_config
from tasks.base import TrainSettings

# Server-side only: the ClientApp imports ClientSettings from this module, and a
# deployment starts a fresh ClientApp process per message, so the strategies and
# the DP layer are imported in the functions that parse the whole run config.
if TYPE_CHECKING:
    from app.dp_config import DpConfig
    from flwr_privacy.secagg.groups import GroupFilter
    from flwr_privacy.secagg.settings import DistributedDp, SecAggSettings
    from flwr_privacy.strategy.box_plot import BoxPlot
    from strategies import Robustness

HE_BACKENDS = ("none", "ckks", "paillier")
HE_MODES = ("server-blind", "server-keyed")
HE_PACKINGS = ("packed", "naive")
POLY_DEGREES = (8192, 16384, 32768)


def _int_list(cfg: Mapping[str, Any], key: str) -> tuple[int, ...]:
    text = get(cfg, key, str)
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    ok = len(values) >= 2 and all(20 <= v <= 60 for v in values)
    check(key, text, ok, "comma-separated bit sizes, at least two, each in [20, 60]")
    return values


@dataclass(frozen=True)
class HeConfig:
    """The ``he.`` sub-table: homomorphic encryption of client updates."""

    backend: str
    mode: str
    bits: int
    clip: float
    packing: str
    key_bits: int
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    server_bundle: str
    client_bundle: str
    workers: int

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    @property
    def server_keyed(self) -> bool:
        """Encrypted-model training: the server holds the key (docs/guides/he-server-keyed.md)."""
        return self.enabled and self.mode == "server-keyed"

    @classmethod
    def from_run_config(cls, cfg: Mapping[str, Any]) -> HeConfig:
        coeffs = _int_list(cfg, "he.coeff-mod-bit-sizes")
        scale_bits = number(
            cfg,
            "he.scale-bits",
            int,
            lambda v: 20 <= v < coeffs[0],
            f"an integer in [20, {coeffs[0]})",
        )
        return cls(
            backend=choice(cfg, "he.backend", HE_BACKENDS),
            mode=choice(cfg, "he.mode", HE_MODES),
            bits=number(cfg, "he.bits", int, lambda v: 2 <= v <= 32, "an integer in [2, 32]"),
            clip=number(cfg, "he.clip", float, lambda v: v > 0, "a float > 0"),
            packing=choice(cfg, "he.packing", HE_PACKINGS),
            key_bits=number(
                cfg,
                "he.key-bits",
                int,
                lambda v: v >= 2048 and v % 256 == 0,
                "2048, 3072, 4096, ...",
            ),
            poly_modulus_degree=number(
                cfg, "he.poly-modulus-degree", int, lambda v: v in POLY_DEGREES, str(POLY_DEGREES)
            ),
            coeff_mod_bit_sizes=coeffs,
            scale_bits=scale_bits,
            server_bundle=get(cfg, "he.server-bundle", str),
            client_bundle=get(cfg, "he.client-bundle", str),
            workers=number(cfg, "he.workers", int, lambda v: v >= 1, "an integer >= 1"),
        )

    def key_params(self, *, eval_keys: bool = False) -> dict[str, Any]:
        """Parameters for key generation by the dealer (``eval_keys``: encrypted filtering)."""
        if self.backend == "ckks":
            return {
                "poly-modulus-degree": self.poly_modulus_degree,
                "coeff-mod-bit-sizes": list(self.coeff_mod_bit_sizes),
                "scale-bits": self.scale_bits,
                "eval-keys": eval_keys,
            }
        return {"key-bits": self.key_bits}

    def client_config(self) -> dict[str, Any]:
        """What this app's client needs: which training path (the HE mod gets its record)."""
        return {"he.backend": self.backend, "he.mode": self.mode}

    def settings(self, *, client_bundle: str = "", seed: int = 0) -> HeSettings:
        """The toolkit's settings for the server-blind layer (keys loaded by the app)."""
        return HeSettings(
            backend=self.backend, clip=self.clip, bits=self.bits, packing=self.packing,
            workers=self.workers, client_bundle=client_bundle, seed=seed,
        )  # fmt: skip


FILTERS = ("none", "boxplot", "boxplot-coordinate", "foolsgold")


@dataclass(frozen=True)
class RobustConfig:
    """The ``robust.`` sub-table: box-plot filtering or FoolsGold, and the built-ins' assumptions.

    ``filter = "foolsgold"`` re-weights fedavg/fedprox against sybils (plaintext,
    flat runs); ``foolsgold_kappa`` is its logit confidence.
    """

    filter: str
    scores: tuple[str, ...]  # empty: "auto"
    k: float
    quartiles: str
    num_malicious: int
    trim_beta: float
    foolsgold_kappa: float

    @classmethod
    def from_run_config(cls, cfg: Mapping[str, Any]) -> RobustConfig:
        from flwr_privacy.strategy.box_plot import QUARTILES, SCORES

        text = get(cfg, "robust.scores", str)
        scores = () if text == "auto" else tuple(s.strip() for s in text.split(","))
        check("robust.scores", text, all(s in SCORES for s in scores),
               "auto, or a comma-separated list of " + " | ".join(SCORES))  # fmt: skip
        return cls(
            filter=choice(cfg, "robust.filter", FILTERS),
            scores=scores,
            k=number(cfg, "robust.k", float, lambda v: v >= 0, "a float >= 0"),
            quartiles=choice(cfg, "robust.quartiles", QUARTILES),
            num_malicious=number(
                cfg, "robust.num-malicious", int, lambda v: v >= 0, "an integer >= 0"
            ),
            trim_beta=number(
                cfg, "robust.trim-beta", float, lambda v: 0 <= v < 0.5, "0 <= x < 0.5"
            ),
            foolsgold_kappa=number(
                cfg, "robust.foolsgold-kappa", float, lambda v: 0 < v < math.inf, "a float > 0"
            ),
        )

    def robustness(self, *, encrypted: bool) -> Robustness:
        """Strategy settings; ``auto`` scores are the median distance, the mean one under HE."""
        from flwr_privacy.strategy.box_plot import BoxPlot
        from flwr_privacy.strategy.foolsgold import FoolsGold
        from strategies import Robustness

        if self.filter == "foolsgold":
            return Robustness(
                foolsgold=FoolsGold(kappa=self.foolsgold_kappa),
                num_malicious=self.num_malicious,
                trim_beta=self.trim_beta,
            )
        box = None
        if self.filter != "none":
            auto = ("mean-distance",) if encrypted else ("median-distance",)
            box = BoxPlot(
                k=self.k,
                scores=self.scores or auto,
                variant="coordinate" if self.filter == "boxplot-coordinate" else "client",
                quartiles=self.quartiles,
            )
        return Robustness(box=box, num_malicious=self.num_malicious, trim_beta=self.trim_beta)


TIERS = ("edge", "cloud", "both")


@dataclass(frozen=True)
class HierarchyConfig:
    """The ``hierarchy.`` sub-table: terminal-edge-cloud aggregation (0 edges: flat)."""

    edges: int
    filter_tier: str

    @property
    def enabled(self) -> bool:
        return self.edges > 0

    @classmethod
    def from_run_config(cls, cfg: Mapping[str, Any]) -> HierarchyConfig:
        return cls(
            edges=number(cfg, "hierarchy.edges", int, lambda v: v >= 0, "an integer >= 0"),
            filter_tier=choice(cfg, "hierarchy.filter-tier", TIERS),
        )

    def boxes(self, box: BoxPlot | None) -> tuple[BoxPlot | None, BoxPlot | None]:
        """The robust filter at the (edge, cloud) tiers."""
        return (
            box if self.filter_tier in ("edge", "both") else None,
            box if self.filter_tier in ("cloud", "both") else None,
        )


@dataclass(frozen=True)
class SecAggConfig:
    """The ``secagg.`` sub-table: SecAgg+ secure aggregation (docs/guides/secagg.md)."""

    enabled: bool
    threshold: float
    neighbours: int
    bits: int
    clip: float
    trust: str = "simulated"
    group_size: int = 0  # > 0: fresh random groups, a robust filter over the group sums
    group_rule: str = "mad"
    suspicion: bool = True

    @classmethod
    def from_run_config(cls, cfg: Mapping[str, Any]) -> SecAggConfig:
        from flwr_privacy.secagg.groups import GROUP_FILTERS

        threshold = number(cfg, "secagg.threshold", float, lambda v: v > 0,
                           "a fraction in (0, 1] or a whole number of shares >= 1")  # fmt: skip
        if threshold > 1 and not threshold.is_integer():
            raise ConfigError(f"run-config key 'secagg.threshold' = {threshold} is invalid; "
                              "allowed: a fraction in (0, 1] or a whole number >= 1")  # fmt: skip
        return cls(
            enabled=get(cfg, "secagg.enabled", bool),
            threshold=threshold,
            neighbours=number(cfg, "secagg.neighbours", int, lambda v: v == 0 or v >= 2,
                              "0 (about 2 log2 n) or an integer >= 2"),  # fmt: skip
            bits=number(cfg, "secagg.bits", int, lambda v: 2 <= v <= 24, "an integer in [2, 24]"),
            clip=number(cfg, "secagg.clip", float, lambda v: v > 0, "a float > 0"),
            trust=choice(cfg, "secagg.trust", ("simulated", "roster")),
            group_size=number(cfg, "secagg.group-size", int, lambda v: v == 0 or v >= 2,
                              "0 (one sum) or an integer >= 2"),  # fmt: skip
            group_rule=choice(cfg, "secagg.group-rule", GROUP_FILTERS),
            suspicion=get(cfg, "secagg.suspicion", bool),
        )

    def group_filter(self, robust: RobustConfig, rounds: int) -> GroupFilter | None:
        """The robust rule over group sums (``secagg.group-size > 0``), else None; the box
        plot's settings and Krum's / the trimmed mean's assumptions come from ``robust.*``."""
        from flwr_privacy.secagg.groups import GroupFilter
        from flwr_privacy.strategy.box_plot import BoxPlot

        if self.group_size == 0:
            return None
        box = BoxPlot(k=robust.k, scores=robust.scores or ("median-distance",),
                      quartiles=robust.quartiles)  # fmt: skip
        return GroupFilter(size=self.group_size, method=self.group_rule, box=box,
                           trim_beta=robust.trim_beta, num_malicious=robust.num_malicious,
                           suspicion=self.suspicion, rounds=rounds)  # fmt: skip

    def settings(self, *, timeout: float, dp: DistributedDp | None = None) -> SecAggSettings:
        from flwr_privacy.secagg.settings import SecAggSettings

        t = self.threshold
        return SecAggSettings(threshold=int(t) if t > 1 else float(t),
                              neighbours=self.neighbours, quant_bits=self.bits, clip=self.clip,
                              timeout=timeout, dp=dp, trust=self.trust)  # fmt: skip


def _attack(cfg: Mapping[str, Any]) -> Attack:
    class_index = (lambda v: v >= 0, "an integer >= 0 (a class index)")
    source = number(cfg, "attack.source-class", int, *class_index)
    target = number(cfg, "attack.target-class", int, *class_index)
    check("attack.target-class", target, target != source, "a class other than the source")
    return Attack(
        type=choice(cfg, "attack.type", ATTACKS),
        fraction=number(cfg, "attack.fraction", float, lambda v: 0 <= v < 1, "0 <= x < 1"),
        scale=number(cfg, "attack.scale", float, lambda v: v > 0, "a float > 0"),
        noise_std=number(cfg, "attack.noise-std", float, lambda v: v > 0, "a float > 0"),
        value=get(cfg, "attack.value", float),
        seed=get(cfg, "seed", int),
        source_class=source,
        target_class=target,
    )


@dataclass(frozen=True)
class AppConfig:
    """The validated run config of one run (keys: docs/reference/run-config.md)."""

    task: str
    num_server_rounds: int
    fraction_train: float
    fraction_evaluate: float
    min_clients: int
    local_epochs: int
    batch_size: int
    learning_rate: float
    strategy: str
    proximal_mu: float
    partitioner: str
    dirichlet_alpha: float
    val_fraction: float
    seed: int
    output_dir: str
    round_timeout: float
    max_empty_rounds: int
    he: HeConfig
    robust: RobustConfig
    hierarchy: HierarchyConfig
    attack: Attack
    dp: DpConfig
    task_config: dict[str, Any]
    secagg: SecAggConfig

    @classmethod
    def from_run_config(cls, cfg: Mapping[str, Any]) -> AppConfig:
        from app.dp_config import DpConfig
        from strategies import STRATEGIES

        positive_int = (lambda v: v >= 1, "an integer >= 1")
        strategy, he = choice(cfg, "strategy", STRATEGIES), HeConfig.from_run_config(cfg)
        robust = RobustConfig.from_run_config(cfg)
        hierarchy = HierarchyConfig.from_run_config(cfg)
        secagg = SecAggConfig.from_run_config(cfg)
        task = choice(cfg, "task", TASK_NAMES)
        own = task_config(task, cfg)
        try:
            # validates the task's sub-table; loads no data
            weights = getattr(get_task(task, own), "options", None)
            dp = DpConfig.from_run_config(cfg)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        attack = _attack(cfg)
        from app.layers import Layers, problem  # server side only: loads the HE layers

        why = problem(Layers(
            task=task, strategy=strategy, he_backend=he.backend, he_mode=he.mode,
            coeff_mod_bit_sizes=he.coeff_mod_bit_sizes,
            own_keys=bool(he.server_bundle or he.client_bundle), filter=robust.filter,
            scores=robust.scores, edges=hierarchy.edges, filter_tier=hierarchy.filter_tier,
            dp_mode=dp.mode, input_epsilon=dp.input_epsilon, epsilon=dp.epsilon,
            class_weights=getattr(weights, "class_weights", "none"),
            taylor_loss=own.get("breast-cancer.loss") == "taylor", attack=attack.active,
            secagg=secagg.enabled, secagg_groups=secagg.group_size,
        ))  # fmt: skip
        if why is not None:
            raise ConfigError(why)
        out = cls(
            task=task,
            num_server_rounds=number(cfg, "num-server-rounds", int, *positive_int),
            fraction_train=number(cfg, "fraction-train", float, lambda v: 0 < v <= 1, "0 < x <= 1"),
            fraction_evaluate=number(
                cfg, "fraction-evaluate", float, lambda v: 0 <= v <= 1, "0 <= x <= 1"
            ),
            min_clients=number(cfg, "min-clients", int, lambda v: v >= 1, "an integer >= 1"),
            local_epochs=number(cfg, "local-epochs", int, *positive_int),
            batch_size=number(cfg, "batch-size", int, *positive_int),
            learning_rate=number(cfg, "learning-rate", float, lambda v: v > 0, "a float > 0"),
            strategy=strategy,
            proximal_mu=number(cfg, "proximal-mu", float, lambda v: v >= 0, "a float >= 0"),
            partitioner=choice(cfg, "partitioner", PARTITIONERS),
            dirichlet_alpha=number(cfg, "dirichlet-alpha", float, lambda v: v > 0, "a float > 0"),
            val_fraction=number(cfg, "val-fraction", float, lambda v: 0 < v < 1, "0 < x < 1"),
            seed=number(cfg, "seed", int, lambda v: v >= 0, "an integer >= 0"),
            output_dir=number(
                cfg, "output-dir", str, lambda v: bool(v.strip()), "a non-empty path"
            ),
            round_timeout=number(cfg, "round-timeout", float, lambda v: v > 0, "a float > 0"),
            max_empty_rounds=number(cfg, "max-empty-rounds", int, *positive_int),
            he=he,
            robust=robust,
            hierarchy=hierarchy,
            attack=attack,
            dp=dp,
            task_config=own,
            secagg=secagg,
        )
        fixes = [f"local-epochs = 1 (not {out.local_epochs})"] if out.local_epochs != 1 else []
        fixes += [f"min-clients >= 2 (not {out.min_clients})"] if out.min_clients < 2 else []
        if dp.mode == "distributed" and fixes:
            raise ConfigError(
                "run-config key 'dp.mode' = 'distributed' takes one noisy step a round (a sum "
                "of Gaussian noise shares is Gaussian for one step only) split over min-clients "
                f"shares: set {' and '.join(fixes)}"
            )
        return out

    def client_config(self) -> dict[str, Any]:
        """What every client needs to find its data and train, sent in each message."""
        return {
            "task": self.task,
            **self.task_config,
            "partitioner": self.partitioner,
            "dirichlet-alpha": self.dirichlet_alpha,
            "val-fraction": self.val_fraction,
            "seed": self.seed,
            "local-epochs": self.local_epochs,
            "batch-size": self.batch_size,
            "learning-rate": self.learning_rate,
            **self.he.client_config(),
        }


@dataclass(frozen=True)
class ClientSettings:
    """A client's view of one message's config: its task, data and training settings."""

    task: str
    task_config: dict[str, Any]
    spec: PartitionSpec
    train: TrainSettings

    @classmethod
    def from_message_config(
        cls,
        cfg: Mapping[str, Any],
        *,
        partition_id: int,
        node_config: Mapping[str, Any] | None = None,
    ) -> ClientSettings:
        """``node_config`` keys of the task's sub-table (e.g. ``mcsn.data-dir``) override it."""
        seed = int(cfg["seed"])
        task = str(cfg["task"])
        server_round = int(cfg.get("server-round", 0))
        return cls(
            task=task,
            task_config=task_config(task, cfg) | task_config(task, node_config or {}),
            spec=PartitionSpec(
                partitioner=str(cfg["partitioner"]),
                alpha=float(cfg["dirichlet-alpha"]),
                seed=seed,
                val_fraction=float(cfg["val-fraction"]),
            ),
            train=TrainSettings(
                epochs=int(cfg["local-epochs"]),
                batch_size=int(cfg["batch-size"]),
                lr=float(cfg["learning-rate"]),
                proximal_mu=float(cfg.get("proximal-mu", 0.0)),
                # Distinct, reproducible shuffling per run, round and client.
                seed=seed * 1_000_003 + server_round * 1_009 + partition_id,
            ),
        )
