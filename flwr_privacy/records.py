"""Record keys: Flower's own, and the namespaced records each layer writes for its mod.

A server-side layer adds its settings to every message it sends as a ConfigRecord
under its own name (``flwr-privacy.<layer>``); the matching client mod reads only
that record, so no user ever sets a config key by hand.
"""

ARRAYS = "arrays"  # Flower's key for the model ArrayRecord
METRICS = "metrics"  # Flower's key for the MetricRecord
CONFIG = "config"  # Flower's key for the ConfigRecord
NUM_EXAMPLES = "num-examples"  # Flower's weighting key
