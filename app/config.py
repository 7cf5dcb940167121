"""Run config parsed once into frozen dataclasses whose errors name the key.

The ServerApp parses the whole run config; clients get what they need in each
message's ConfigRecord (``ClientSettings``), so one source of truth drives both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.attack import ATTACKS, Attack
from app.config_values import ConfigError, check, choice, get, number
from app.dp_config import DpConfig
from data.partition import PARTITIONERS, PartitionSpec
from flwr_privacy.settings import HeSettings
from flwr_privacy.strategy.box_plot import QUARTILES, SCORES, BoxPlot
from strategies import STRATEGIES, Robustness
from strategies.factory import BUILTIN_ROBUST
from tasks import TASK_NAMES, get_task, task_config
from tasks.base import TrainSettings

TABULAR_TASKS = ("breast-cancer", "mcsn")


def _check_dp(dp: DpConfig, task: str, strategy: str, he: HeConfig, robust: RobustConfig,
              hierarchy: HierarchyConfig, class_weights: str) -> None:  # fmt: skip
    """Refuse DP settings that would not deliver the guarantee they promise."""
    if dp.input_epsilon > 0 and task not in TABULAR_TASKS:
        raise ConfigError(
            f"run-config key 'dp.input-epsilon' = {dp.input_epsilon} perturbs tabular records; "
            f"task {task!r} is not tabular (use dp.mode = 'dp-sgd' for images)"
        )
    if dp.input_epsilon >= dp.epsilon:
        raise ConfigError(
            f"run-config key 'dp.input-epsilon' = {dp.input_epsilon} must be below the whole "
            f"budget dp.epsilon = {dp.epsilon}"
        )
    if dp.mode in ("dp-sgd", "laplace-sgd") and class_weights != "none":
        raise ConfigError(
            f"run-config key 'dp.mode' = {dp.mode!r} with mcsn.class-weights = "
            f"{class_weights!r}: class weights come from local label counts, "
            "which per-example clipping does not protect; set mcsn.class-weights = 'none'"
        )
    if dp.mode == "distributed" and (
        not he.enabled
        or he.server_keyed
        or robust.filter != "none"
        or hierarchy.enabled
        or strategy not in ("fedavg", "fedprox")
    ):
        raise ConfigError(
            "run-config key 'dp.mode' = 'distributed' splits the noise over the clients of "
            "each sum, which is sound only if nobody sees a single update: it needs "
            "he.backend set (server-blind), fedavg/fedprox, no robust.filter, no hierarchy.edges"
        )
    if dp.mode != "central":
        return
    if (
        he.enabled
        or robust.filter != "none"
        or hierarchy.enabled
        or strategy not in ("fedavg", "fedprox")
    ):
        raise ConfigError(
            "run-config key 'dp.mode' = 'central' clips each update and noises the aggregate "
            "on the server, so it needs plaintext fedavg/fedprox without robust.filter or "
            "hierarchy.edges; with he.backend set use dp.mode = 'dp-sgd' or 'local' (noise "
            "is added on the client, before encryption)"
        )


def _check_server_keyed(
    he: HeConfig, task: str, own: Mapping[str, Any], dp: DpConfig, attack: Attack
) -> None:
    """Encrypted-model training needs a quadratic loss, its own keys and plaintext-free layers."""
    if task != "breast-cancer" or own.get("breast-cancer.loss") != "taylor":
        raise ConfigError(
            "run-config key 'he.mode' = 'server-keyed' trains on the encrypted model with the "
            "Taylor-approximated logistic loss: set task = 'breast-cancer' and "
            "breast-cancer.loss = 'taylor'"
        )
    if he.backend == "ckks" and len(he.coeff_mod_bit_sizes) < 3:
        raise ConfigError(
            f"run-config key 'he.coeff-mod-bit-sizes' = "
            f"'{','.join(map(str, he.coeff_mod_bit_sizes))}': server-keyed CKKS needs one "
            "multiplicative level, e.g. '60,40,60'"
        )
    if he.server_bundle or he.client_bundle:
        raise ConfigError(
            "run-config keys 'he.server-bundle' / 'he.client-bundle' are for server-blind keys; "
            "in server-keyed mode the server makes its own key pair and clients get none"
        )
    if dp.mode != "none" or attack.active:
        raise ConfigError(
            "run-config key 'he.mode' = 'server-keyed' does not compose with dp.mode or the "
            "attack harness (clients return ciphertexts of the updated model only)"
        )


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
        """Encrypted-model training: the server holds the key (README: "Server-keyed HE")."""
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


FILTERS = ("none", "boxplot", "boxplot-coordinate")


@dataclass(frozen=True)
class RobustConfig:
    """The ``robust.`` sub-table: box-plot filtering and the built-ins' assumptions."""

    filter: str
    scores: tuple[str, ...]  # empty: "auto"
    k: float
    quartiles: str
    num_malicious: int
    trim_beta: float

    @classmethod
    def from_run_config(cls, cfg: Mapping[str, Any]) -> RobustConfig:
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
        )

    def robustness(self, *, encrypted: bool) -> Robustness:
        """Strategy settings; ``auto`` scores are the median distance, the mean one under HE."""
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


def _attack(cfg: Mapping[str, Any]) -> Attack:
    return Attack(
        type=choice(cfg, "attack.type", ATTACKS),
        fraction=number(cfg, "attack.fraction", float, lambda v: 0 <= v < 1, "0 <= x < 1"),
        scale=number(cfg, "attack.scale", float, lambda v: v > 0, "a float > 0"),
        noise_std=number(cfg, "attack.noise-std", float, lambda v: v > 0, "a float > 0"),
        value=get(cfg, "attack.value", float),
        seed=get(cfg, "seed", int),
    )


def _check_layers(
    strategy: str, he: HeConfig, robust: RobustConfig, hierarchy: HierarchyConfig
) -> None:
    """Refuse combinations of strategy, encryption, filtering and tiers that cannot work."""
    if hierarchy.enabled and strategy in BUILTIN_ROBUST:
        raise ConfigError(
            f"run-config key 'hierarchy.edges' = {hierarchy.edges} composes with fedavg or "
            f"fedprox only, not {strategy!r}; use robust.filter for robustness per edge"
        )
    filtered_tier = hierarchy.enabled and robust.filter != "none"
    if filtered_tier and hierarchy.filter_tier != "edge":
        if he.enabled:
            raise ConfigError(
                f"run-config key 'hierarchy.filter-tier' = {hierarchy.filter_tier!r} filters "
                "edge results at the cloud, which needs plaintext; with he.backend set use 'edge'"
            )
        if robust.filter == "boxplot-coordinate":
            raise ConfigError(
                f"run-config key 'hierarchy.filter-tier' = {hierarchy.filter_tier!r}: the cloud "
                "tier filters whole edge results; use robust.filter = 'boxplot' or tier 'edge'"
            )
    if strategy in BUILTIN_ROBUST and robust.filter != "none":
        raise ConfigError(
            f"run-config key 'robust.filter' = {robust.filter!r} composes with fedavg or "
            f"fedprox only; strategy {strategy!r} is itself a robust aggregator"
        )
    if not he.enabled:
        return
    if he.server_keyed and (robust.filter != "none" or hierarchy.enabled):
        raise ConfigError(
            "run-config key 'he.mode' = 'server-keyed' decrypts on the server and averages "
            "with fedavg/fedprox; it does not compose with robust.filter or hierarchy.edges"
        )
    if strategy in BUILTIN_ROBUST:
        raise ConfigError(
            f"run-config key 'strategy' = {strategy!r} needs plaintext updates; with "
            "he.backend set use fedavg or fedprox (optionally with robust.filter = 'boxplot')"
        )
    if robust.filter == "none":
        return
    if he.backend == "paillier":
        raise ConfigError(
            "run-config key 'robust.filter' needs scores of updates the server cannot read: "
            "Paillier ciphertexts can only be added, so it cannot compute them. Use "
            "he.backend = 'ckks' with he.coeff-mod-bit-sizes = '60,40,40,60'"
        )
    if robust.filter == "boxplot-coordinate":
        raise ConfigError(
            "run-config key 'robust.filter' = 'boxplot-coordinate' compares every "
            "coordinate, which CKKS cannot do; use 'boxplot' with he.backend = 'ckks'"
        )
    if "median-distance" in robust.scores:
        raise ConfigError(
            "run-config key 'robust.scores' = 'median-distance' needs a coordinate-wise "
            "median, which CKKS cannot compute; use 'mean-distance' and/or 'norm' (or auto)"
        )
    if len(he.coeff_mod_bit_sizes) < 4:
        raise ConfigError(
            "run-config key 'he.coeff-mod-bit-sizes' = "
            f"{','.join(map(str, he.coeff_mod_bit_sizes))!r} leaves no multiplicative level "
            "for encrypted box-plot scores; allowed with robust.filter: two levels, "
            "e.g. '60,40,40,60'"
        )


@dataclass(frozen=True)
class AppConfig:
    """The validated run config of one run (keys in README's run-config table)."""

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
    he: HeConfig
    robust: RobustConfig
    hierarchy: HierarchyConfig
    attack: Attack
    dp: DpConfig
    task_config: dict[str, Any]

    @classmethod
    def from_run_config(cls, cfg: Mapping[str, Any]) -> AppConfig:
        positive_int = (lambda v: v >= 1, "an integer >= 1")
        strategy, he = choice(cfg, "strategy", STRATEGIES), HeConfig.from_run_config(cfg)
        robust = RobustConfig.from_run_config(cfg)
        hierarchy = HierarchyConfig.from_run_config(cfg)
        _check_layers(strategy, he, robust, hierarchy)
        task = choice(cfg, "task", TASK_NAMES)
        own = task_config(task, cfg)
        try:
            # validates the task's sub-table; loads no data
            weights = getattr(get_task(task, own), "options", None)
            dp = DpConfig.from_run_config(cfg)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        _check_dp(dp, task, strategy, he, robust, hierarchy,
                  getattr(weights, "class_weights", "none"))  # fmt: skip
        attack = _attack(cfg)
        if he.server_keyed:
            _check_server_keyed(he, task, own, dp, attack)
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
            he=he,
            robust=robust,
            hierarchy=hierarchy,
            attack=attack,
            dp=dp,
            task_config=own,
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
            **self.dp.client_config(self.num_server_rounds, shares=self.min_clients),
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
