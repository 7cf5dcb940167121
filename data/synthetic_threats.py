"""SYNTHETIC threat records for the MCSN paper's six threat classes plus benign.

Not real data: a documented generator so the threat task runs offline. Every
record has 12 features of a mobile terminal's traffic and behaviour over a time
window; each class shifts a few of them (values are means of Gaussians in
standardized units; every feature has noise std 1.0):

| class | label | characteristic shifts |
|---|---|---|
| benign | 0 | all features 0 |
| A system attack | 1 | cpu_load +2.5, syscall_rate +3, inbound_bytes +2 |
| B trespassing | 2 | failed_logins +3, new_ports +2, login_hour +1.5 |
| C false identity | 3 | identity_changes +3, cert_errors +2.5, failed_logins +1 |
| D Sybil | 4 | identity_changes +2, peer_count +3, packet_rate +1.5 |
| E malware | 5 | outbound_bytes +2.5, dns_queries +3, cpu_load +1 |
| F network trojans | 6 | outbound_bytes +2, new_ports +2.5, packet_rate +2 |

Classes overlap on purpose (shared shifts), so a model must combine features.
Class priors: benign 0.4, each threat 0.1. Seeded: the same seed gives the same
records.
"""

from __future__ import annotations

import numpy as np

FEATURES = (
    "packet_rate", "outbound_bytes", "inbound_bytes", "dns_queries", "new_ports", "peer_count",
    "failed_logins", "login_hour", "identity_changes", "cert_errors", "cpu_load", "syscall_rate",
)  # fmt: skip
CLASSES = ("benign", "A system attack", "B trespassing", "C false identity", "D Sybil",
           "E malware", "F network trojans")  # fmt: skip
SHIFTS: dict[int, dict[str, float]] = {
    1: {"cpu_load": 2.5, "syscall_rate": 3.0, "inbound_bytes": 2.0},
    2: {"failed_logins": 3.0, "new_ports": 2.0, "login_hour": 1.5},
    3: {"identity_changes": 3.0, "cert_errors": 2.5, "failed_logins": 1.0},
    4: {"identity_changes": 2.0, "peer_count": 3.0, "packet_rate": 1.5},
    5: {"outbound_bytes": 2.5, "dns_queries": 3.0, "cpu_load": 1.0},
    6: {"outbound_bytes": 2.0, "new_ports": 2.5, "packet_rate": 2.0},
}
PRIORS = (0.4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)


def means() -> np.ndarray:
    """Class x feature matrix of Gaussian means."""
    m = np.zeros((len(CLASSES), len(FEATURES)))
    for label, shifts in SHIFTS.items():
        for name, value in shifts.items():
            m[label, FEATURES.index(name)] = value
    return m


def generate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic records (float32) and labels (int64)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(len(CLASSES), size=n, p=PRIORS)
    x = means()[y] + rng.normal(0.0, 1.0, size=(n, len(FEATURES)))
    return x.astype(np.float32), y.astype(np.int64)
