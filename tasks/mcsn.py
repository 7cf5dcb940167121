"""Threat detection on network/device records with a fully connected DNN (the MCSN task).

Datasets (run config ``mcsn.dataset``): ``synthetic`` (the offline default,
SYNTHETIC records of the paper's six threat classes plus benign), ``nsl-kdd``
(KDDTrain+ / the official KDDTest+, 5-way or binary labels) and ``csv`` (users'
own threat logs with a label column). Metrics follow the MCSN paper: per-class
precision, recall and F1, macro-F1, accuracy, the confusion matrix, the MSE of
the predicted class probabilities against one-hot labels, and detection latency.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from data import nsl_kdd, synthetic_threats, threat_csv
from tasks.base import option
from tasks.metrics import accuracy, confusion, precision_recall_f1
from tasks.tabular import Standardize, TabularTask
from tasks.training import LossFn, predict

DATASETS = ("synthetic", "nsl-kdd", "csv")
LABELS = ("auto", "5-way", "binary")
CLASS_WEIGHTS = ("auto", "inverse", "sqrt-inverse", "none")
MAX_CLASS_WEIGHT = 100.0
SYNTHETIC_TEST_SEED = 1_000_003  # the synthetic test set never overlaps the training seed


def _int_list(key: str, text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        sizes = ()
    if not 2 <= len(sizes) <= 4 or min(sizes) < 1:
        raise ValueError(
            f"run-config key '{key}' = {text!r} is invalid; allowed: 2 to 4 comma-separated "
            "hidden-layer sizes, e.g. '128,64'"
        )
    return sizes


@dataclass(frozen=True)
class McsnOptions:
    """The ``mcsn.`` run-config sub-table (docs/guides/threat-detection.md)."""

    dataset: str = "synthetic"
    data_dir: str = ""
    train_file: str = "train.csv"
    test_file: str = "test.csv"
    label_column: str = "label"
    labels: str = "auto"
    hidden: tuple[int, ...] = (128, 64)
    class_weights: str = "auto"
    synthetic_records: int = 20_000
    missing: str = "error"
    log1p: str = "auto"
    class_names: str = ""

    @property
    def weight_rule(self) -> str:
        """``class_weights`` with ``auto`` resolved (docs/guides/threat-detection.md).

        Measured: on a user's CSV ``sqrt-inverse`` bought 10 points of macro-F1 for
        0.4 of accuracy, ``inverse`` cost 2.9 points; NSL-KDD's test set holds 13x
        the training share of R2L, where ``inverse`` scores best.
        """
        if self.class_weights != "auto":
            return self.class_weights
        return "sqrt-inverse" if self.dataset == "csv" else "inverse"

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> McsnOptions:
        """Parse ``mcsn.*`` keys (missing keys take the defaults); errors name the key."""
        d = cls()

        def get(key: str, default: Any, allowed: tuple[str, ...] = ()) -> Any:
            return option(cfg, f"mcsn.{key}", default, allowed)

        opts = cls(
            dataset=get("dataset", d.dataset, DATASETS),
            data_dir=get("data-dir", d.data_dir),
            train_file=get("train-file", d.train_file),
            test_file=get("test-file", d.test_file),
            label_column=get("label-column", d.label_column),
            labels=get("labels", d.labels, LABELS),
            hidden=_int_list("mcsn.hidden", get("hidden", ",".join(map(str, d.hidden)))),
            class_weights=get("class-weights", d.class_weights, CLASS_WEIGHTS),
            synthetic_records=get("synthetic-records", d.synthetic_records),
            missing=get("missing", d.missing, threat_csv.MISSING),
            log1p=get("log1p", d.log1p),
            class_names=get("class-names", d.class_names),
        )
        if opts.synthetic_records < 20:
            raise ValueError("run-config key 'mcsn.synthetic-records' must be >= 20")
        if opts.dataset != "synthetic" and not opts.data_dir:
            raise ValueError(
                f"run-config key 'mcsn.data-dir' is empty but mcsn.dataset = {opts.dataset!r} "
                "reads files from it (SuperNodes may override it with node config 'mcsn.data-dir')"
            )
        if opts.class_names and opts.dataset != "csv":
            raise ValueError(
                "run-config key 'mcsn.class-names' names a CSV's label values; mcsn.dataset = "
                f"{opts.dataset!r} names its own classes (leave it empty)"
            )
        if opts.dataset == "csv" and opts.labels != "auto":
            raise ValueError(
                f"run-config key 'mcsn.labels' = {opts.labels!r} applies to mcsn.dataset = "
                "'nsl-kdd' only; a CSV's classes are the values of its label column (allowed: "
                "auto). For binary labels write a column with two values"
            )
        return opts


class ThreatDNN(nn.Module):
    """Standardize -> (Linear, ReLU) x len(hidden) -> Linear to class logits."""

    def __init__(self, num_features: int, hidden: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.standardize = Standardize(num_features)
        layers: list[nn.Module] = []
        width = num_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.standardize(x))


def class_weights(labels: np.ndarray, num_classes: int, rule: str = "inverse") -> torch.Tensor:
    """Loss weights per class from local labels only (absent classes: 1).

    ``inverse``: max count / count, capped at ``MAX_CLASS_WEIGHT``;
    ``sqrt-inverse``: its square root. NSL-KDD's R2L and U2R are 1 % and 0.04 %
    of training records; unweighted, the DNN almost never predicts them. The
    uncapped inverse (up to 1300x) makes SGD diverge at FedAvg's learning rates.
    """
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = counts > 0
    w = np.ones(num_classes)
    w[present] = np.minimum(counts[present].max() / counts[present], MAX_CLASS_WEIGHT)
    return torch.as_tensor(np.sqrt(w) if rule == "sqrt-inverse" else w, dtype=torch.float32)


def mse(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The paper's MSE: mean over records of the squared error to the one-hot label."""
    onehot = np.eye(probabilities.shape[1])[labels]
    return float(((probabilities - onehot) ** 2).sum(axis=1).mean())


def threat_metrics(
    logits: np.ndarray, labels: np.ndarray, loss: float, classes: tuple[str, ...]
) -> dict[str, Any]:
    """Accuracy, macro-F1, MSE, loss, per-class precision/recall/F1 and the confusion matrix."""
    pred = logits.argmax(axis=1)
    precision, recall, f1 = precision_recall_f1(labels, pred, len(classes))
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    out: dict[str, Any] = {
        "loss": float(loss),
        "accuracy": accuracy(labels, pred),
        "macro-f1": float(np.mean(f1)),
        "mse": mse(probs, labels),
    }
    for i, name in enumerate(classes):
        slug = name.replace(" ", "-")
        out |= {
            f"precision-{slug}": float(precision[i]),
            f"recall-{slug}": float(recall[i]),
            f"f1-{slug}": float(f1[i]),
        }
    out["confusion-matrix"] = [int(v) for v in confusion(labels, pred, len(classes)).ravel()]
    return out


@torch.no_grad()
def latency_ms(model: nn.Module, x: np.ndarray, *, batch_size: int, records: int = 2048) -> float:
    """Mean wall-clock milliseconds per record of ``model`` on CPU, in batches of ``batch_size``."""
    model.eval()
    data = torch.as_tensor(x[: max(records, batch_size)], dtype=torch.float32)
    model(data[:batch_size])  # warm-up
    n = 0
    start = time.perf_counter()
    for i in range(0, len(data) - batch_size + 1, batch_size):
        model(data[i : i + batch_size]).argmax(dim=1)
        n += batch_size
    return 1000.0 * (time.perf_counter() - start) / n


class Mcsn(TabularTask):
    """Multi-class threat detection (MCSN paper) on synthetic, NSL-KDD or CSV records."""

    name = "mcsn"
    metric_names = ("loss", "accuracy", "macro-f1", "mse")

    def __init__(self, options: McsnOptions | None = None) -> None:
        self.options = options or McsnOptions()

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Mcsn:
        return cls(McsnOptions.from_config(cfg))

    @cached_property
    def _loaded(self) -> tuple[tuple[np.ndarray, ...], tuple[str, ...], dict[str, Any]]:
        """Arrays, class names and what the source files became (for ``describe``)."""
        o = self.options
        if o.dataset == "synthetic":
            x, y = synthetic_threats.generate(o.synthetic_records, seed=0)
            xt, yt = synthetic_threats.generate(o.synthetic_records // 4, SYNTHETIC_TEST_SEED)
            return (x, y, xt, yt), synthetic_threats.CLASSES, {"source": "synthetic"}
        root = Path(o.data_dir).expanduser()
        if o.dataset == "nsl-kdd":
            classes = nsl_kdd.CLASSES_2 if o.labels == "binary" else nsl_kdd.CLASSES_5
            files = [str(root / nsl_kdd.TRAIN_FILE), str(root / nsl_kdd.TEST_FILE)]
            labels = "binary" if len(classes) == 2 else "5-way"
            source = {"source": "nsl-kdd", "labels": labels, "files": files}
            return nsl_kdd.load(root, classes), classes, source
        train, test = root / o.train_file, root / o.test_file
        *arrays, encoding = threat_csv.load(
            train, test, o.label_column, missing=o.missing, log1p=o.log1p
        )
        source = {"source": "csv", "files": [str(train), str(test)], **encoding.describe()}
        return tuple(arrays), self._named(encoding.classes, source), source

    def _named(self, values: tuple[str, ...], source: dict[str, Any]) -> tuple[str, ...]:
        """The label values, or the names ``mcsn.class-names`` gives them in the same order."""
        if not self.options.class_names:
            return values
        names = tuple(n.strip() for n in self.options.class_names.split(","))
        if len(names) != len(values) or len(set(names)) != len(names) or "" in names:
            raise ValueError(
                f"run-config key 'mcsn.class-names' = {self.options.class_names!r} names "
                f"{len(names)} classes; the label column holds {len(values)} values {list(values)} "
                "(name each once, in this order)"
            )
        source["label-values"] = dict(zip(names, values, strict=True))
        return names

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        x, y, xt, yt = self._loaded[0]
        return x, y, xt, yt

    @property
    def classes(self) -> tuple[str, ...]:
        return self._loaded[1]

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classes

    def describe(self) -> dict[str, Any]:
        return self._loaded[2] | {"class-weights": self.options.weight_rule} | super().describe()

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return len(self.classes)

    def build_model(self) -> nn.Module:
        return ThreatDNN(self._arrays[0].shape[1], self.options.hidden, self.num_classes)

    def loss_fn(self, data: Dataset) -> LossFn:
        labels = data.tensors[1].numpy()  # type: ignore[attr-defined]
        rule = self.options.weight_rule
        weight = None if rule == "none" else class_weights(labels, self.num_classes, rule)

        def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return nn.functional.cross_entropy(logits, y, weight=weight)

        return loss

    def evaluate(self, model: nn.Module, data: Dataset) -> dict[str, Any]:
        logits, labels, loss = predict(model, data, nn.functional.cross_entropy)
        return threat_metrics(logits, labels, loss, self.classes)
