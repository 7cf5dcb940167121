"""SecAgg+ (Bell et al., CCS 2020) for Message-API strategies: no single party reads an update.

Pure stages over bytes and integer vectors (``crypto``, ``graph``, ``encoding``,
``protocol``); the client mod is ``flwr_privacy.mods.secagg`` and the server layer
``flwr_privacy.strategy.secagg``. Shamir sharing and share encryption are Flower's
(``flwr.common.secure_aggregation``); key agreement (X25519), key derivation (HKDF)
and the mask generator (ChaCha20) are the ``cryptography`` package's.
"""
