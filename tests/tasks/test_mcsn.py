"""Threat-detection task: options, the DNN, the paper's metrics, class weights, data sources."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from data import synthetic_threats
from data.partition import PartitionSpec
from data.preprocess import combine
from tasks import TrainSettings, get_task
from tasks.mcsn import Mcsn, McsnOptions, class_weights, latency_ms, mse, threat_metrics

NSL_KDD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nsl-kdd"


def test_options_parse_and_name_bad_keys() -> None:
    opts = McsnOptions.from_config({"mcsn.hidden": "32,16,8", "mcsn.labels": "binary"})
    assert opts.hidden == (32, 16, 8) and opts.labels == "binary"
    assert opts.dataset == "synthetic"  # defaults for missing keys
    for bad, key in [({"mcsn.hidden": "1,2,3,4,5"}, "mcsn.hidden"),
                     ({"mcsn.class-weights": 1}, "mcsn.class-weights"),
                     ({"mcsn.synthetic-records": 5}, "mcsn.synthetic-records"),
                     ({"mcsn.missing": "drop"}, "mcsn.missing"),
                     ({"mcsn.class-names": "a,b"}, "mcsn.class-names"),
                     ({"mcsn.dataset": "csv", "mcsn.data-dir": "d", "mcsn.labels": "binary"},
                      "mcsn.labels")]:  # fmt: skip
        with pytest.raises(ValueError, match=key):
            McsnOptions.from_config(bad)
    assert McsnOptions().labels == "auto" and McsnOptions().missing == "error"


def test_dnn_shape_follows_hidden_sizes() -> None:
    task = Mcsn(McsnOptions(hidden=(16, 8, 4), synthetic_records=200))
    model = task.build_model()
    linear = [m for m in model.layers if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(12, 16), (16, 8), (8, 4), (4, 7)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in model.layers) == 3


def test_metrics_by_hand() -> None:
    classes = ("benign", "A system attack", "B trespassing")
    labels = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    logits = np.eye(3)[pred] * 50.0  # confident: probabilities are one-hot
    m = threat_metrics(logits, labels, 0.5, classes)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision-A-system-attack"] == pytest.approx(2 / 3)
    assert m["recall-A-system-attack"] == 1.0 and m["recall-benign"] == 0.5
    f1 = [2 * 0.5 * 0.5 / 1.0, 2 * (2 / 3) / (5 / 3), 2 * 0.5 / 1.5]
    assert m["macro-f1"] == pytest.approx(np.mean(f1))
    assert m["confusion-matrix"] == [1, 1, 0, 0, 2, 0, 1, 0, 1]
    assert m["mse"] == pytest.approx(2 * 2 / 6)  # two wrong one-hots, squared error 2 each
    assert mse(np.full((2, 2), 0.5), np.array([0, 1])) == pytest.approx(0.5)


def test_class_weights_from_local_labels() -> None:
    labels = np.array([0] * 1000 + [1] * 250 + [2] * 40 + [3] * 2)
    w = class_weights(labels, 5, "sqrt-inverse")
    np.testing.assert_allclose(w.numpy(), [1.0, 2.0, 5.0, 10.0, 1.0])  # class 4 absent: 1
    w = class_weights(labels, 5)
    np.testing.assert_allclose(w.numpy(), [1.0, 4.0, 25.0, 100.0, 1.0])  # capped at 100


def test_federated_training_learns_synthetic_threats() -> None:
    task = get_task("mcsn", {"mcsn.synthetic-records": 4000})
    assert task is get_task("mcsn", {"mcsn.synthetic-records": 4000})  # cached per options
    spec = PartitionSpec(seed=0)
    clients = [task.load_partition(i, 4, spec) for i in range(4)]
    torch.manual_seed(0)
    model = task.build_model()
    mean, std = combine([task.feature_moments(c.train) for c in clients]).mean_std()
    task.set_standardization(model, mean, std)
    before = task.evaluate(model, task.load_test())["accuracy"]
    task.train(model, clients[0].train, TrainSettings(epochs=5, batch_size=32, lr=0.05))
    after = task.evaluate(model, task.load_test())
    assert after["accuracy"] > 0.75 > before
    assert set(task.metric_names) <= set(after) and len(after["confusion-matrix"]) == 49
    assert 0 < latency_ms(model, task.load_arrays()[2], batch_size=1, records=64) < 50


def test_csv_dataset_reads_users_logs_and_names_missing_files(tmp_path: Path) -> None:
    x, y = synthetic_threats.generate(300, seed=1)
    frame = pd.DataFrame(x, columns=synthetic_threats.FEATURES)
    frame["proto"] = np.where(y % 2 == 0, "tcp", "udp")
    frame["kind"] = np.array(["ok", "scan", "worm"])[y % 3]
    frame[:200].to_csv(tmp_path / "train.csv", index=False)
    frame[200:].to_csv(tmp_path / "test.csv", index=False)
    task = Mcsn.from_config({"mcsn.dataset": "csv", "mcsn.data-dir": str(tmp_path),
                             "mcsn.label-column": "kind"})  # fmt: skip
    assert task.classes == ("ok", "scan", "worm") and task.num_classes == 3
    assert task.build_model()(torch.zeros(2, 12 + 2)).shape == (2, 3)
    missing = Mcsn.from_config({"mcsn.dataset": "csv", "mcsn.data-dir": str(tmp_path / "no")})
    with pytest.raises(FileNotFoundError, match="threat-log CSV not found"):
        missing.num_train_samples()


@pytest.mark.skipif(not NSL_KDD.is_dir(), reason=f"NSL-KDD not found at {NSL_KDD}")
def test_nsl_kdd_binary_labels_and_width() -> None:
    task = Mcsn.from_config({"mcsn.dataset": "nsl-kdd", "mcsn.data-dir": str(NSL_KDD),
                             "mcsn.labels": "binary"})  # fmt: skip
    x, y, xt, yt = task.load_arrays()
    assert task.classes == ("normal", "attack") and x.shape[1] == xt.shape[1] == 122
    assert np.bincount(y).tolist() == [67343, 58630] and len(yt) == 22544


def test_csv_label_values_take_the_names_the_user_gives_them(tmp_path: Path) -> None:
    frame = pd.DataFrame({"bytes": np.arange(40.0), "label": [0, 1] * 20})
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame[:10].to_csv(tmp_path / "test.csv", index=False)
    base = {"mcsn.dataset": "csv", "mcsn.data-dir": str(tmp_path)}
    assert Mcsn.from_config(base).classes == ("0", "1")
    named = Mcsn.from_config(base | {"mcsn.class-names": "normal, attack"})
    assert named.classes == ("normal", "attack")
    assert named.describe()["label-values"] == {"normal": "0", "attack": "1"}
    assert list(named.describe()["classes"]) == ["normal", "attack"]
    with pytest.raises(ValueError, match=r"names 3 classes; the label column holds 2 values"):
        Mcsn.from_config(base | {"mcsn.class-names": "a,b,c"}).describe()
