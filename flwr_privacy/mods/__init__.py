"""Client mods: each reads its settings from its layer's record or from explicit construction."""

from flwr_privacy.mods.local_dp import local_dp_mod, make_local_dp_mod

__all__ = ["local_dp_mod", "make_local_dp_mod"]
