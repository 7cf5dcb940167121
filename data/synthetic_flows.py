"""SYNTHETIC network-flow records: heavy-tailed, imbalanced, 10 classes, some empty cells.

Not real data: a documented, seeded stand-in for a real intrusion set (modelled
on the shape of UNSW-NB15's testing file, which this project does not ship) so
that the CSV path and its recipe can be measured offline on data as awkward as
real logs. 42 numeric columns (byte counters up to ~1e9 at 50,000 records, capped
at 5e9, from lognormal x Pareto draws; loads up to ~1e12; durations, TCP sequence
numbers up to 4.3e9, counters,
rates in [0, 1], flags) and 3 text columns (``proto`` 24, ``service`` 13,
``state`` 9 categories). Each record first draws its class, then a *behaviour*
from the class's mixture; the behaviour fixes the protocol/service/state
distributions and the scale of every magnitude, and the class adds a small
shift. Classes that share behaviours are separable only in part (Bayes accuracy
well below 1):

| class | share | behaviours (weight) | class shift (x factor on magnitudes) |
|---|---:|---|---|
| normal | 0.449 | web 0.70, dns 0.28, fuzz 0.02 | - |
| generic | 0.229 | short-udp 0.93, exploit 0.04, scan 0.03 | - |
| exploits | 0.135 | exploit 0.70, fuzz 0.10, short-udp 0.10, scan 0.10 | dbytes x3 |
| fuzzers | 0.0736 | fuzz 0.80, web 0.10, exploit 0.10 | spkts x2 |
| dos | 0.0497 | exploit 0.60, fuzz 0.20, scan 0.20 | spkts x3, dur x0.5 |
| reconnaissance | 0.0425 | scan 0.80, exploit 0.10, fuzz 0.10 | - |
| analysis | 0.00822 | exploit 0.50, scan 0.30, fuzz 0.20 | sbytes x0.3 |
| backdoor | 0.00708 | exploit 0.50, scan 0.30, fuzz 0.20 | dur x4 |
| shellcode | 0.00459 | shell 0.60, scan 0.30, exploit 0.10 | - |
| worms | 0.000534 | worm 0.60, exploit 0.40 | - |

The largest class is 840x the smallest (37,000 : 44 in the real set's shape).
``MISSING`` cells (NaN; empty in a CSV) are knocked out at random in three
numeric columns, ``MISSING_RATE`` of the records each. Seeded: the same seed
gives the same records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

CLASSES = ("normal", "generic", "exploits", "fuzzers", "dos", "reconnaissance", "analysis",
           "backdoor", "shellcode", "worms")  # fmt: skip
COUNTS = (37_000, 18_871, 11_132, 6_062, 4_089, 3_496, 677, 583, 378, 44)  # real set's shape
PRIORS = tuple(c / sum(COUNTS) for c in COUNTS)
BEHAVIOURS = ("web", "dns", "short-udp", "exploit", "fuzz", "scan", "shell", "worm")
MIXTURE: dict[str, dict[str, float]] = {
    "normal": {"web": 0.70, "dns": 0.28, "fuzz": 0.02},
    "generic": {"short-udp": 0.93, "exploit": 0.04, "scan": 0.03},
    "exploits": {"exploit": 0.70, "fuzz": 0.10, "short-udp": 0.10, "scan": 0.10},
    "fuzzers": {"fuzz": 0.80, "web": 0.10, "exploit": 0.10},
    "dos": {"exploit": 0.60, "fuzz": 0.20, "scan": 0.20},
    "reconnaissance": {"scan": 0.80, "exploit": 0.10, "fuzz": 0.10},
    "analysis": {"exploit": 0.50, "scan": 0.30, "fuzz": 0.20},
    "backdoor": {"exploit": 0.50, "scan": 0.30, "fuzz": 0.20},
    "shellcode": {"shell": 0.60, "scan": 0.30, "exploit": 0.10},
    "worms": {"worm": 0.60, "exploit": 0.40},
}
SHIFT: dict[str, dict[str, float]] = {
    "exploits": {"dbytes": 3.0},
    "fuzzers": {"spkts": 2.0},
    "dos": {"spkts": 3.0, "dur": 0.5},
    "analysis": {"sbytes": 0.3},
    "backdoor": {"dur": 4.0},
}
PROTOS = ("tcp", "udp", "unas", "arp", "ospf", "sctp", "icmp", "any", "gre", "rsvp", "ipv6",
          "pim", "swipe", "sun-nd", "mobile", "sep", "ib", "idpr", "ggp", "ip", "ipip", "st2",
          "egp", "igmp")  # fmt: skip
SERVICES = ("-", "http", "dns", "ftp", "ftp-data", "smtp", "ssh", "pop3", "snmp", "ssl", "irc",
            "radius", "dhcp")  # fmt: skip
STATES = ("FIN", "INT", "CON", "REQ", "RST", "ECO", "PAR", "URN", "no")
# Per behaviour: proto / service / state weights (``other`` is spread over the names not
# listed) and the log-scale centres of packets, bytes per packet and duration (s).
_PROFILE: dict[str, dict] = {
    "web": {"proto": {"tcp": 0.97, "udp": 0.03},
            "service": {"-": 0.5, "http": 0.3, "ftp-data": 0.1, "smtp": 0.05, "ssh": 0.05},
            "state": {"FIN": 0.8, "CON": 0.15, "RST": 0.05},
            "pkts": 3.0, "size": 5.5, "dur": 0.0},
    "dns": {"proto": {"udp": 0.98, "tcp": 0.02}, "service": {"dns": 0.9, "-": 0.1},
            "state": {"CON": 0.7, "INT": 0.3}, "pkts": 0.8, "size": 4.6, "dur": -4.0},
    "short-udp": {"proto": {"udp": 0.95, "tcp": 0.03, "unas": 0.02},
                  "service": {"dns": 0.85, "-": 0.15}, "state": {"INT": 0.97, "CON": 0.03},
                  "pkts": 0.5, "size": 4.7, "dur": -9.0},
    "exploit": {"proto": {"tcp": 0.75, "udp": 0.15, "unas": 0.05, "other": 0.05},
                "service": {"-": 0.45, "http": 0.3, "ftp": 0.1, "smtp": 0.05, "dns": 0.05,
                            "other": 0.05},
                "state": {"FIN": 0.6, "INT": 0.35, "REQ": 0.05},
                "pkts": 2.5, "size": 5.0, "dur": -0.5},
    "fuzz": {"proto": {"tcp": 0.6, "udp": 0.35, "other": 0.05},
             "service": {"-": 0.8, "http": 0.15, "ftp": 0.05},
             "state": {"INT": 0.55, "FIN": 0.45}, "pkts": 2.2, "size": 5.2, "dur": -1.0},
    "scan": {"proto": {"unas": 0.25, "tcp": 0.2, "udp": 0.15, "arp": 0.1, "other": 0.3},
             "service": {"-": 0.85, "dns": 0.05, "http": 0.05, "other": 0.05},
             "state": {"INT": 0.85, "REQ": 0.1, "ECO": 0.05},
             "pkts": 0.7, "size": 4.5, "dur": -6.0},
    "shell": {"proto": {"udp": 0.5, "tcp": 0.3, "other": 0.2},
              "service": {"-": 0.95, "dns": 0.05}, "state": {"INT": 0.9, "FIN": 0.1},
              "pkts": 0.9, "size": 6.0, "dur": -5.0},
    "worm": {"proto": {"tcp": 0.9, "udp": 0.1}, "service": {"http": 0.7, "-": 0.3},
             "state": {"FIN": 0.9, "CON": 0.1}, "pkts": 3.5, "size": 6.5, "dur": 0.5},
}  # fmt: skip
MISSING = ("ct_flw_http_mthd", "ct_ftp_cmd", "sjit")
MISSING_RATE = (0.006, 0.003, 0.001)
BYTE_CAP = 5e9
MTU = 1500.0  # bytes per packet at most
SEQ_MAX = 2**32 - 1


def _categorical(rng: np.random.Generator, weights: dict[str, float], names: tuple[str, ...],
                 n: int) -> np.ndarray:  # fmt: skip
    """``n`` draws from ``names``; weight ``other`` is spread over names not listed."""
    p = np.array([weights.get(v, 0.0) for v in names])
    rest = [i for i, v in enumerate(names) if v not in weights]
    if "other" in weights and rest:
        p[rest] = weights["other"] / len(rest)
    return np.asarray(names)[rng.choice(len(names), size=n, p=p / p.sum())]


def generate(n: int, seed: int) -> pd.DataFrame:
    """``n`` SYNTHETIC flow records: 42 numeric + 3 text columns and ``label`` (class name)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    label = rng.choice(len(CLASSES), size=n, p=PRIORS)
    behaviour = np.empty(n, dtype=object)
    for c, name in enumerate(CLASSES):
        idx = np.flatnonzero(label == c)
        mix = MIXTURE[name]
        behaviour[idx] = rng.choice(list(mix), size=len(idx), p=list(mix.values()))
    cols: dict[str, np.ndarray] = {}
    text = {k: np.empty(n, dtype=object) for k in ("proto", "service", "state")}
    centre = np.zeros((n, 3))  # log packets, log bytes/packet, log duration
    for b in BEHAVIOURS:
        idx = np.flatnonzero(behaviour == b)
        prof = _PROFILE[b]
        text["proto"][idx] = _categorical(rng, prof["proto"], PROTOS, len(idx))
        text["service"][idx] = _categorical(rng, prof["service"], SERVICES, len(idx))
        text["state"][idx] = _categorical(rng, prof["state"], STATES, len(idx))
        centre[idx] = (prof["pkts"], prof["size"], prof["dur"])
    factor = {k: np.ones(n) for k in ("spkts", "sbytes", "dbytes", "dur")}
    for name, shifts in SHIFT.items():
        mask = label == CLASSES.index(name)
        for k, v in shifts.items():
            factor[k][mask] = v
    tail = 1.0 + rng.pareto(1.0, size=n)  # a few elephant flows
    spkts = np.ceil(np.exp(centre[:, 0] + rng.normal(0, 1.2, n)) * tail * factor["spkts"])
    dpkts = np.floor(spkts * rng.beta(2, 2, n) * (behaviour != "scan"))
    size = np.minimum(np.exp(centre[:, 1] + rng.normal(0, 0.6, n)), MTU)
    sbytes = np.minimum(np.round(spkts * size * factor["sbytes"]), BYTE_CAP)
    dbytes = np.minimum(np.round(dpkts * size * rng.lognormal(0.3, 0.8, n) * factor["dbytes"]),
                        BYTE_CAP)  # fmt: skip
    dur = np.exp(centre[:, 2] + rng.normal(0, 1.5, n)) * factor["dur"]
    tcp = text["proto"] == "tcp"
    cols |= {"dur": dur, "spkts": spkts, "dpkts": dpkts, "sbytes": sbytes, "dbytes": dbytes}
    cols["rate"] = (spkts + dpkts) / np.maximum(dur, 1e-6)
    cols["sttl"] = np.where(np.isin(behaviour, ["web", "dns"]), 31, 254) * (rng.random(n) > 0.1)
    cols["dttl"] = np.where(dpkts > 0, np.where(rng.random(n) < 0.7, 29, 252), 0)
    cols["sload"] = 8 * sbytes / np.maximum(dur, 1e-6)
    cols["dload"] = 8 * dbytes / np.maximum(dur, 1e-6)
    cols["sloss"] = rng.binomial(spkts.astype(np.int64), 0.01)
    cols["dloss"] = rng.binomial(dpkts.astype(np.int64), 0.01)
    cols["sinpkt"] = 1000 * dur / spkts
    cols["dinpkt"] = 1000 * dur / np.maximum(dpkts, 1)
    cols["sjit"] = cols["sinpkt"] * rng.lognormal(0, 1, n)
    cols["djit"] = cols["dinpkt"] * rng.lognormal(0, 1, n)
    cols["swin"] = np.where(tcp, 255, 0)
    cols["stcpb"] = np.where(tcp, rng.integers(0, SEQ_MAX, n), 0)
    cols["dtcpb"] = np.where(tcp & (dpkts > 0), rng.integers(0, SEQ_MAX, n), 0)
    cols["dwin"] = np.where(tcp & (dpkts > 0), 255, 0)
    cols["synack"] = np.where(tcp, rng.lognormal(-4, 1, n), 0)
    cols["ackdat"] = np.where(tcp, rng.lognormal(-4, 1, n), 0)
    cols["tcprtt"] = cols["synack"] + cols["ackdat"]
    cols["smean"] = np.round(sbytes / spkts)
    cols["dmean"] = np.round(dbytes / np.maximum(dpkts, 1))
    http = text["service"] == "http"
    cols["trans_depth"] = np.where(http, rng.poisson(1.0, n), 0)
    cols["response_body_len"] = np.where(http, np.round(dbytes * rng.beta(1, 3, n)), 0)
    attack = label > 0
    for k, lam_normal, lam_attack in (("ct_srv_src", 4, 12), ("ct_state_ttl", 0.3, 1.5),
                                      ("ct_dst_ltm", 3, 8), ("ct_src_dport_ltm", 2, 7),
                                      ("ct_dst_sport_ltm", 1, 5), ("ct_dst_src_ltm", 4, 11),
                                      ("ct_src_ltm", 4, 9), ("ct_srv_dst", 4, 12)):  # fmt: skip
        lam = np.where(attack, lam_attack, lam_normal) * rng.lognormal(0, 0.7, n)
        cols[k] = rng.poisson(lam)
    ftp = np.isin(text["service"], ["ftp", "ftp-data"])
    cols["is_ftp_login"] = (ftp & (rng.random(n) < 0.6)).astype(int)
    cols["ct_ftp_cmd"] = np.where(ftp, rng.poisson(1.0, n), 0)
    cols["ct_flw_http_mthd"] = np.where(http, rng.poisson(1.5, n), 0)
    cols["is_sm_ips_ports"] = (rng.random(n) < np.where(attack, 0.002, 0.02)).astype(int)
    cols["srv_rate"] = rng.beta(np.where(attack, 2, 5), 2)
    cols["serror_rate"] = rng.beta(1, np.where(np.isin(text["state"], ["INT", "REQ"]), 2, 12))
    cols["retrans_rate"] = cols["sloss"] / spkts
    counts = {k: v.astype(np.int64) for k, v in cols.items() if np.all(v == np.round(v))}
    frame = pd.DataFrame({"proto": text["proto"], "service": text["service"],
                          "state": text["state"]} | cols | counts)  # fmt: skip
    for col, rate in zip(MISSING, MISSING_RATE, strict=True):
        frame[col] = frame[col].astype(np.float64)
        frame.loc[rng.random(n) < rate, col] = np.nan
    frame["label"] = np.asarray(CLASSES)[label]
    return frame


NUMERIC = 42  # numeric feature columns (checked by the tests)
TEXT = ("proto", "service", "state")
