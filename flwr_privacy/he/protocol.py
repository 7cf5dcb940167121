"""Message names of the encrypted box-plot score exchange (server strategy <-> client)."""

SCORES_ACTION = "he_scores"  # query action: message type "query.he_scores"
SCORES_KEY = "he.scores"  # config (request): score ciphertexts; metrics (reply): their values
FINGERPRINT_KEY = "he.fingerprint"  # config (request): the key generation the scores use
