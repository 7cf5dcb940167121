"""Message names of the encrypted box-plot score exchange (server strategy <-> client)."""

__all__ = ["FINGERPRINT_KEY", "SCORES_ACTION", "SCORES_KEY"]

SCORES_ACTION = "he_scores"  # query action: message type "query.he_scores"
SCORES_KEY = "he.scores"  # config (request): score ciphertexts; metrics (reply): their values
FINGERPRINT_KEY = "he.fingerprint"  # config (request): the key generation the scores use
