"""flwr_privacy: privacy layers for any Flower app (Message API, flwr 1.41 and 1.42).

Server side, strategies and wrappers with typed settings::

    from flwr_privacy import EncryptedFedAvg, HeSettings
    strategy = EncryptedFedAvg(he=HeSettings(backend="ckks"), fraction_train=1.0)

Client side, mods that read the record their server-side layer writes::

    from flwr_privacy import he_mod
    app = ClientApp(mods=[he_mod])

Names load lazily (PEP 562): ``import flwr_privacy`` imports neither torch,
Opacus, TenSEAL nor phe; a Flower ClientApp process, started afresh for every
message in a deployment, pays only for the layers it uses.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # HE: settings, strategies, client mod, key custody
    "HeSettings": "flwr_privacy.settings",
    "handles_ciphertext": "flwr_privacy.settings",
    "EncryptedFedAvg": "flwr_privacy.strategy.encrypted",
    "EncryptedFedProx": "flwr_privacy.strategy.encrypted",
    "EncryptedBoxPlotFedAvg": "flwr_privacy.strategy.encrypted_box_plot",
    "EncryptedBoxPlotFedProx": "flwr_privacy.strategy.encrypted_box_plot",
    "ServerKeyedModel": "flwr_privacy.strategy.server_keyed",
    "he_mod": "flwr_privacy.mods.he",
    "make_he_mod": "flwr_privacy.mods.he",
    "decrypt_scores": "flwr_privacy.mods.he",
    "deal_keys": "flwr_privacy.keys",
    "decrypt_model": "flwr_privacy.keys",
    # secure aggregation (SecAgg+)
    "SecAggSettings": "flwr_privacy.secagg.settings",
    "DistributedDp": "flwr_privacy.secagg.settings",
    "SecAggPlus": "flwr_privacy.strategy.secagg",
    "GroupFilter": "flwr_privacy.secagg.groups",
    "secagg_mod": "flwr_privacy.mods.secagg",
    "make_secagg_mod": "flwr_privacy.mods.secagg",
    # robust aggregation and hierarchy
    "BoxPlot": "flwr_privacy.strategy.box_plot",
    "BoxPlotFilter": "flwr_privacy.strategy.box_plot",
    "BoxPlotFedAvg": "flwr_privacy.strategy.box_plot",
    "FoolsGold": "flwr_privacy.strategy.foolsgold",
    "FoolsGoldFilter": "flwr_privacy.strategy.foolsgold",
    "FoolsGoldFedAvg": "flwr_privacy.strategy.foolsgold",
    "Validated": "flwr_privacy.strategy.validation",
    "Hierarchical": "flwr_privacy.strategy.hierarchical",
    "StrategyWrapper": "flwr_privacy.strategy.wrapper",
    # differential privacy
    "DpSettings": "flwr_privacy.dp.settings",
    "dp_sgd_fit": "flwr_privacy.dp.fit",
    "distributed_dp_fit": "flwr_privacy.dp.fit",
    "BudgetExhausted": "flwr_privacy.dp.client",
    "declined": "flwr_privacy.dp.client",
    "make_local_dp_mod": "flwr_privacy.mods.local_dp",
    "local_dp_mod": "flwr_privacy.mods.local_dp",
    "BudgetGuard": "flwr_privacy.strategy.budget",
    "LedgeredCentralDp": "flwr_privacy.strategy.central_dp",
    "EncryptedCentralDp": "flwr_privacy.strategy.encrypted_dp",
    "central_clip_mod": "flwr_privacy.mods.central_clip",
    "PrivacyLedger": "flwr_privacy.dp.ledger",
    "StopOnEmptyRounds": "flwr_privacy.strategy.guard",
    "NoContributionError": "flwr_privacy.strategy.guard",
    # attack harness (experiments only)
    "Tamper": "flwr_privacy.mods.tamper",
    "tamper_mod": "flwr_privacy.mods.tamper",
    "Tampering": "flwr_privacy.strategy.tamper",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'flwr_privacy' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
