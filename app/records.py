"""Record keys and message actions shared by the ServerApp and the ClientApp."""

from flwr_privacy.records import ARRAYS, CONFIG, METRICS, NUM_EXAMPLES

PARTITION_ID = "partition-id"  # node config key; also reported by the setup query

MOMENTS = "moments"  # ArrayRecord of a client's feature moments (tabular tasks)
SETUP_ACTION = "describe"  # query action: message type "query.describe"
STANDARDIZE_MEAN = "standardize-mean"  # config: federated feature means (tabular tasks)
STANDARDIZE_STD = "standardize-std"  # config: federated feature stds (tabular tasks)
EDGE_ID = "edge-id"  # node config / setup reply: the edge a node belongs to (hierarchical runs)
UNIT_WEIGHT = "dp-unit-weight"  # reply metric = 1: central DP averages clients uniformly

__all__ = ["ARRAYS", "CONFIG", "METRICS", "NUM_EXAMPLES"]
