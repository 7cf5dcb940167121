"""Record keys and message actions shared by the ServerApp and the ClientApp."""

ARRAYS = "arrays"  # Flower's key for the model ArrayRecord
METRICS = "metrics"  # Flower's key for the MetricRecord
CONFIG = "config"  # Flower's key for the ConfigRecord
NUM_EXAMPLES = "num-examples"  # Flower's weighting key

MOMENTS = "moments"  # ArrayRecord of a client's feature moments
MOMENTS_ACTION = "feature_moments"  # query action: message type "query.feature_moments"
