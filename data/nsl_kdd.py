"""NSL-KDD (KDDTrain+ / KDDTest+): records as numeric arrays with the standard labels.

Files are the publisher's comma-separated text (gzip or plain), 43 columns
without header: 41 features, the attack name, the difficulty. Symbolic features
(protocol_type, service, flag) are one-hot encoded with the categories seen in
the training file (an unseen test category encodes as all zeros). Numeric
features are passed through ``log1p`` where they are byte or count magnitudes
(a fixed transform, nothing fitted), so that standardization, which the task
fits on training data only, is not dominated by a few huge values.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

FEATURES = (
    "duration protocol_type service flag src_bytes dst_bytes land wrong_fragment urgent hot "
    "num_failed_logins logged_in num_compromised root_shell su_attempted num_root "
    "num_file_creations num_shells num_access_files num_outbound_cmds is_host_login "
    "is_guest_login count srv_count serror_rate srv_serror_rate rerror_rate srv_rerror_rate "
    "same_srv_rate diff_srv_rate srv_diff_host_rate dst_host_count dst_host_srv_count "
    "dst_host_same_srv_rate dst_host_diff_srv_rate dst_host_same_src_port_rate "
    "dst_host_srv_diff_host_rate dst_host_serror_rate dst_host_srv_serror_rate "
    "dst_host_rerror_rate dst_host_srv_rerror_rate"
).split()
COLUMNS = (*FEATURES, "label", "difficulty")
SYMBOLIC = ("protocol_type", "service", "flag")
LOG_SCALED = ("duration", "src_bytes", "dst_bytes", "count", "srv_count",
              "dst_host_count", "dst_host_srv_count", "hot", "num_compromised", "num_root",
              "num_file_creations", "num_access_files")  # fmt: skip
CLASSES_5 = ("normal", "DoS", "Probe", "R2L", "U2R")
CLASSES_2 = ("normal", "attack")
CATEGORY = {
    **dict.fromkeys("back land neptune pod smurf teardrop apache2 mailbomb processtable "
                    "udpstorm worm".split(), "DoS"),
    **dict.fromkeys("ipsweep nmap portsweep satan mscan saint".split(), "Probe"),
    **dict.fromkeys("ftp_write guess_passwd imap multihop phf spy warezclient warezmaster "
                    "httptunnel named sendmail snmpgetattack snmpguess xlock xsnoop".split(),
                    "R2L"),
    **dict.fromkeys("buffer_overflow loadmodule perl rootkit ps sqlattack xterm".split(), "U2R"),
    "normal": "normal",
}  # fmt: skip
TRAIN_FILE, TEST_FILE = "KDDTrain+.txt", "KDDTest+.txt"


class DataFileError(FileNotFoundError):
    """A data file is missing or not in the expected format."""


def read_records(path: str | Path) -> pd.DataFrame:
    """One NSL-KDD file (``.txt`` or ``.txt.gz``) as a DataFrame with named columns."""
    path = Path(path)
    if not path.is_file():
        gz = path.with_name(path.name + ".gz")
        if not gz.is_file():
            raise DataFileError(f"NSL-KDD file not found: {path} (nor {gz.name})")
        path = gz
    opener = gzip.open if path.suffix == ".gz" else open
    import pandas as pd  # only for runs on these files

    with opener(path, "rt") as f:
        frame = pd.read_csv(f, header=None)
    if frame.shape[1] != len(COLUMNS):
        raise DataFileError(
            f"{path}: expected {len(COLUMNS)} columns (41 features, label, difficulty), "
            f"got {frame.shape[1]}"
        )
    frame.columns = list(COLUMNS)
    return frame


def labels(names: pd.Series, classes: tuple[str, ...] = CLASSES_5) -> np.ndarray:
    """Class indices of attack names: 5-way categories or binary normal/attack."""
    unknown = sorted(set(names) - set(CATEGORY))
    if unknown:
        raise ValueError(f"unknown NSL-KDD attack names {unknown[:5]}; add them to CATEGORY")
    category = names.map(CATEGORY)
    if classes == CLASSES_2:
        return (category != "normal").to_numpy(np.int64)
    return category.map({c: i for i, c in enumerate(CLASSES_5)}).to_numpy(np.int64)


@dataclass(frozen=True)
class Encoder:
    """One-hot categories fitted on the training records; feature names for reports."""

    categories: dict[str, tuple[str, ...]]

    @classmethod
    def fit(cls, train: pd.DataFrame) -> Encoder:
        return cls({c: tuple(sorted(train[c].astype(str).unique())) for c in SYMBOLIC})

    @property
    def feature_names(self) -> list[str]:
        numeric = [f for f in FEATURES if f not in SYMBOLIC]
        return numeric + [f"{c}={v}" for c in SYMBOLIC for v in self.categories[c]]

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Numeric features (log1p where magnitudes) then one-hot blocks; float32."""
        numeric = frame[[f for f in FEATURES if f not in SYMBOLIC]].astype(np.float64).copy()
        for col in LOG_SCALED:
            numeric[col] = np.log1p(numeric[col].clip(lower=0))
        blocks = [numeric.to_numpy()]
        for col in SYMBOLIC:
            cats = self.categories[col]
            index = {v: i for i, v in enumerate(cats)}
            codes = frame[col].astype(str).map(index)
            onehot = np.zeros((len(frame), len(cats)))
            known = codes.notna().to_numpy()
            onehot[np.flatnonzero(known), codes[known].astype(int).to_numpy()] = 1.0
            blocks.append(onehot)
        return np.hstack(blocks).astype(np.float32)


def load(
    root: str | Path, classes: tuple[str, ...] = CLASSES_5
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) from ``root``/KDDTrain+.txt[.gz] and KDDTest+."""
    root = Path(root)
    train, test = read_records(root / TRAIN_FILE), read_records(root / TEST_FILE)
    encoder = Encoder.fit(train)
    return (
        encoder.transform(train),
        labels(train["label"], classes),
        encoder.transform(test),
        labels(test["label"], classes),
    )
