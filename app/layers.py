"""Which layers combine: one table, checked once when the run config is parsed.

Each row is a combination that cannot work and the reason, in run-config terms.
The numbers come from the layers themselves (the CKKS levels a layer needs,
the strategies Flower ships), so a layer that changes its needs changes the
table. Rows are checked in order; the first that matches is the error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flwr_privacy.he.ckks import SCORE_LEVELS  # encrypted box-plot scores
from flwr_privacy.he.model import CKKS_LEVELS as SERVER_KEYED_LEVELS  # training on [[w]]
from strategies.factory import BUILTIN_ROBUST

AVERAGING = ("fedavg", "fedprox")  # the strategies every protection layer wraps
TABULAR_TASKS = ("breast-cancer", "mcsn")


@dataclass(frozen=True)
class Layers:
    """The layers one run asks for, as the table needs them."""

    task: str
    strategy: str
    he_backend: str  # "none" | "ckks" | "paillier"
    he_mode: str  # "server-blind" | "server-keyed"
    coeff_mod_bit_sizes: tuple[int, ...]
    own_keys: bool  # he.server-bundle or he.client-bundle given
    filter: str  # "none" | "boxplot" | "boxplot-coordinate" | "foolsgold"
    scores: tuple[str, ...]
    edges: int
    filter_tier: str
    dp_mode: str
    input_epsilon: float
    epsilon: float
    class_weights: str
    taylor_loss: bool
    attack: bool
    secagg: bool = False
    secagg_groups: int = 0  # secagg.group-size: robust filtering over group sums

    @property
    def he(self) -> bool:
        return self.he_backend != "none"

    @property
    def server_keyed(self) -> bool:
        return self.he and self.he_mode == "server-keyed"

    @property
    def levels(self) -> int:
        """CKKS multiplicative levels: the moduli between the first and the special prime."""
        return len(self.coeff_mod_bit_sizes) - 2

    @property
    def moduli(self) -> str:
        return ",".join(map(str, self.coeff_mod_bit_sizes))


@dataclass(frozen=True)
class Rule:
    """A combination that cannot work (``when``) and why (``why``)."""

    when: Callable[[Layers], bool]
    why: Callable[[Layers], str]


def _count(n: int) -> str:
    return {1: "one", 2: "two", 3: "three"}.get(n, str(n))


def _filtered_cloud(x: Layers) -> bool:
    return x.edges > 0 and x.filter != "none" and x.filter_tier != "edge"


def _encrypted_filter(x: Layers) -> bool:
    return x.he and not x.server_keyed and x.filter != "none"


RULES: tuple[Rule, ...] = (
    Rule(lambda x: x.filter == "foolsgold" and x.he, lambda x: (
        f"run-config key 'robust.filter' = 'foolsgold' compares plaintext update histories "
        f"(pairwise cosine similarities), which he.backend = {x.he_backend!r} hides from the "
        "server: set he.backend = 'none', or keep HE and use robust.filter = 'boxplot'")),
    Rule(lambda x: x.filter == "foolsgold" and x.edges > 0, lambda x: (
        f"run-config key 'robust.filter' = 'foolsgold' keeps one history per client, which "
        f"hierarchy.edges = {x.edges} hides from the cloud: set hierarchy.edges = 0")),
    Rule(lambda x: x.edges > 0 and x.strategy in BUILTIN_ROBUST, lambda x: (
        f"run-config key 'hierarchy.edges' = {x.edges} composes with fedavg or fedprox only, "
        f"not {x.strategy!r}; use robust.filter for robustness per edge")),
    Rule(lambda x: _filtered_cloud(x) and x.he, lambda x: (
        f"run-config key 'hierarchy.filter-tier' = {x.filter_tier!r} filters edge results at "
        "the cloud, which needs plaintext; with he.backend set use 'edge'")),
    Rule(lambda x: _filtered_cloud(x) and x.filter == "boxplot-coordinate", lambda x: (
        f"run-config key 'hierarchy.filter-tier' = {x.filter_tier!r}: the cloud tier filters "
        "whole edge results; use robust.filter = 'boxplot' or tier 'edge'")),
    Rule(lambda x: x.strategy in BUILTIN_ROBUST and x.filter != "none", lambda x: (
        f"run-config key 'robust.filter' = {x.filter!r} composes with fedavg or fedprox only; "
        f"strategy {x.strategy!r} is itself a robust aggregator")),
    Rule(lambda x: x.server_keyed and (x.filter != "none" or x.edges > 0), lambda x: (
        "run-config key 'he.mode' = 'server-keyed' decrypts on the server and averages with "
        "fedavg/fedprox; it does not compose with robust.filter or hierarchy.edges")),
    Rule(lambda x: x.he and x.strategy in BUILTIN_ROBUST, lambda x: (
        f"run-config key 'strategy' = {x.strategy!r} needs plaintext updates; with he.backend "
        "set use fedavg or fedprox (optionally with robust.filter = 'boxplot')")),
    Rule(lambda x: _encrypted_filter(x) and x.he_backend == "paillier", lambda x: (
        "run-config key 'robust.filter' needs scores of updates the server cannot read: "
        "Paillier ciphertexts can only be added, so it cannot compute them. Use he.backend = "
        "'ckks' with he.coeff-mod-bit-sizes = '60,40,40,60'")),
    Rule(lambda x: _encrypted_filter(x) and x.filter == "boxplot-coordinate", lambda x: (
        "run-config key 'robust.filter' = 'boxplot-coordinate' compares every coordinate, "
        "which CKKS cannot do; use 'boxplot' with he.backend = 'ckks'")),
    Rule(lambda x: _encrypted_filter(x) and "median-distance" in x.scores, lambda x: (
        "run-config key 'robust.scores' = 'median-distance' needs a coordinate-wise median, "
        "which CKKS cannot compute; use 'mean-distance' and/or 'norm' (or auto)")),
    Rule(lambda x: _encrypted_filter(x) and x.levels < SCORE_LEVELS, lambda x: (
        f"run-config key 'he.coeff-mod-bit-sizes' = {x.moduli!r} leaves no multiplicative "
        "level for encrypted box-plot scores; allowed with robust.filter: "
        f"{_count(SCORE_LEVELS)} levels, e.g. '60,40,40,60'")),
    Rule(lambda x: x.input_epsilon > 0 and x.task not in TABULAR_TASKS, lambda x: (
        f"run-config key 'dp.input-epsilon' = {x.input_epsilon} perturbs tabular records; "
        f"task {x.task!r} is not tabular (use dp.mode = 'dp-sgd' for images)")),
    Rule(lambda x: x.input_epsilon >= x.epsilon, lambda x: (
        f"run-config key 'dp.input-epsilon' = {x.input_epsilon} must be below the whole "
        f"budget dp.epsilon = {x.epsilon}")),
    Rule(lambda x: x.dp_mode in ("dp-sgd", "laplace-sgd") and x.class_weights != "none",
         lambda x: (
        f"run-config key 'dp.mode' = {x.dp_mode!r} with mcsn.class-weights = "
        f"{x.class_weights!r}: class weights come from local label counts, which per-example "
        "clipping does not protect; set mcsn.class-weights = 'none'")),
    Rule(lambda x: x.dp_mode == "distributed" and (
        not (x.he or x.secagg) or x.server_keyed or x.filter != "none" or x.edges > 0
        or x.strategy not in AVERAGING), lambda x: (
        "run-config key 'dp.mode' = 'distributed' splits the noise over the clients of each "
        "sum, which is sound only if nobody sees a single update: it needs he.backend set "
        "(server-blind) or secagg.enabled = true, fedavg/fedprox, no robust.filter, no "
        "hierarchy.edges (secagg.group-size filters the noised group sums)")),
    Rule(lambda x: x.dp_mode == "central" and (
        x.filter != "none" or x.edges > 0 or x.strategy not in AVERAGING), lambda x: (
        "run-config key 'dp.mode' = 'central' noises the sum of clipped updates, which covers "
        "one clip per client only if every update is summed as is: it needs fedavg/fedprox "
        "without robust.filter (it picks updates by their values) or hierarchy.edges")),
    Rule(lambda x: x.dp_mode == "central" and x.he_backend == "ckks" and not x.server_keyed,
         lambda x: (
        "run-config key 'dp.mode' = 'central' with he.backend = 'ckks': the server must encrypt "
        "its noise, but this app's CKKS keys are symmetric (the server bundle holds no public "
        "key); use he.backend = 'paillier', or dp.mode = 'dp-sgd' / 'local' with CKKS")),
    Rule(lambda x: x.server_keyed and (x.task != "breast-cancer" or not x.taylor_loss),
         lambda x: (
        "run-config key 'he.mode' = 'server-keyed' trains on the encrypted model with the "
        "Taylor-approximated logistic loss: set task = 'breast-cancer' and "
        "breast-cancer.loss = 'taylor'")),
    Rule(lambda x: x.server_keyed and x.he_backend == "ckks"
         and x.levels < SERVER_KEYED_LEVELS, lambda x: (
        f"run-config key 'he.coeff-mod-bit-sizes' = '{x.moduli}': server-keyed CKKS needs "
        f"{_count(SERVER_KEYED_LEVELS)} multiplicative level, e.g. '60,40,60'")),
    Rule(lambda x: x.server_keyed and x.own_keys, lambda x: (
        "run-config keys 'he.server-bundle' / 'he.client-bundle' are for server-blind keys; "
        "in server-keyed mode the server makes its own key pair and clients get none")),
    Rule(lambda x: x.server_keyed and (x.dp_mode != "none" or x.attack), lambda x: (
        "run-config key 'he.mode' = 'server-keyed' does not compose with dp.mode or the "
        "attack harness (clients return ciphertexts of the updated model only)")),
    Rule(lambda x: x.secagg and x.he, lambda x: (
        f"run-config key 'secagg.enabled' = true with he.backend = {x.he_backend!r}: both keep "
        "the server from reading single updates (SecAgg+ with masks and no dealer, HE with "
        "dealt keys); choose one: set he.backend = 'none' or secagg.enabled = false")),
    Rule(lambda x: x.secagg and (x.filter != "none" or x.strategy not in AVERAGING), lambda x: (
        "run-config key 'secagg.enabled' = true: the server sees only the sum of the updates, "
        "so it cannot filter or rank single ones; use fedavg/fedprox with robust.filter = "
        "'none'; to filter anyway, set secagg.group-size (e.g. 5): the sums of small random "
        "groups are filtered by secagg.group-rule")),
    Rule(lambda x: x.secagg_groups > 0 and not x.secagg, lambda x: (
        f"run-config key 'secagg.group-size' = {x.secagg_groups} needs secagg.enabled = true")),
    Rule(lambda x: x.secagg_groups > 0 and (
        x.filter != "none" or x.edges > 0 or x.strategy not in AVERAGING), lambda x: (
        f"run-config key 'secagg.group-size' = {x.secagg_groups} filters the group sums by "
        "secagg.group-rule (mad, boxplot, median, trimmed-mean, krum, multikrum) over "
        "fedavg/fedprox: set robust.filter = 'none' and strategy = 'fedavg' or 'fedprox', and "
        "no hierarchy.edges (fixed groups)")),
    Rule(lambda x: x.secagg and x.dp_mode == "central", lambda x: (
        "run-config key 'dp.mode' = 'central' with secagg.enabled = true: central DP clips "
        "single updates on the server, which SecAgg hides; use dp.mode = 'distributed' "
        "(discrete Gaussian noise shares under SecAgg), 'dp-sgd' or 'local'")),
)  # fmt: skip


def problem(layers: Layers) -> str | None:
    """Why these layers cannot run together (the first matching row), or None."""
    return next((rule.why(layers) for rule in RULES if rule.when(layers)), None)
