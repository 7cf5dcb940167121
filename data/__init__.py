"""Data loaders, partitioners and preprocessing (no Flower, HE or DP here)."""
