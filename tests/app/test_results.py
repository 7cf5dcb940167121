"""results.json is rewritten after every round, survives a failed run, and says why it failed."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MessageType, MetricRecord

from app.final_model import test_final_model
from app.metering import MeteredGrid
from app.results import ENCRYPTED_MODEL, PLAIN_MODEL, RunRecorder, new_run_dir, run_title
from app.simulation import simulate
from flwr_privacy.he import Payload, keygen, load_payload
from flwr_privacy.he.payload import Header, Layout
from flwr_privacy.strategy.guard import NoContributionError
from tests.clients import clients_with


def test_rounds_are_written_as_they_finish_and_failure_keeps_them(tmp_path: Path) -> None:
    # Prepare
    run_dir = new_run_dir(tmp_path, run_id=7)
    recorder = RunRecorder(run_dir, {"task": "breast-cancer"}, MeteredGrid(inner=None))  # type: ignore[arg-type]
    evaluate = recorder.evaluate_fn(
        lambda rnd, arrays: MetricRecord({"accuracy": 0.5 + rnd / 10, "loss": 1.0 / (rnd + 1)})
    )
    # Execute
    evaluate(0, ArrayRecord())
    evaluate(1, ArrayRecord())
    on_disk = json.loads((run_dir / "results.json").read_text())
    evaluate(2, ArrayRecord())
    recorder.finish("failed", error="RuntimeError: boom")
    # Assert
    assert [r["round"] for r in on_disk["rounds"]] == [1]
    final = json.loads((run_dir / "results.json").read_text())
    assert final["status"] == "failed" and final["error"] == "RuntimeError: boom"
    assert [r["round"] for r in final["rounds"]] == [1, 2]
    assert final["final"]["accuracy"] == 0.7
    assert final["setup"]["server"]["accuracy"] == 0.5
    assert (run_dir / "metrics.png").stat().st_size > 1000
    assert run_dir.name.endswith("-run7")


def test_round_keeps_server_side_metrics_the_strategy_adds_after_aggregation(
    tmp_path: Path,
) -> None:
    # Prepare: the strategy aggregates client metrics, then adds its own (he-aggregate-s)
    recorder = RunRecorder(new_run_dir(tmp_path, run_id=1), {"task": "breast-cancer"},
                           MeteredGrid(inner=None))  # type: ignore[arg-type]  # fmt: skip
    aggregate = recorder.metrics_aggr("train", lambda contents, key: MetricRecord({"loss": 0.3}))
    evaluate = recorder.evaluate_fn(lambda rnd, arrays: None)
    # Execute
    evaluate(0, ArrayRecord())
    metrics = aggregate([], "num-examples")
    metrics["he-aggregate-s"] = 0.25
    evaluate(1, ArrayRecord())
    # Assert
    (round_1,) = recorder.data["rounds"]
    assert round_1["train"] == {"loss": 0.3, "he-aggregate-s": 0.25, "num-replies": 0}


def test_plot_title_names_each_layer_of_the_run() -> None:
    # Prepare: results.json content of a run with every layer on, and of a plain one
    config = {"task": "breast-cancer", "strategy": "fedavg", "he.backend": "ckks",
              "he.mode": "server-blind", "robust.filter": "boxplot", "hierarchy.edges": 2,
              "dp.mode": "dp-sgd", "dp.epsilon": 3.0}  # fmt: skip
    layered = {"config": config, "privacy": {"budget-epsilon": 3.0, "epsilon-max": 2.9712}}
    plain = {"config": {**config, "he.backend": "none", "robust.filter": "none",
                        "hierarchy.edges": 0, "dp.mode": "none"}}  # fmt: skip
    # Execute / Assert
    assert run_title(layered) == (
        "breast-cancer / fedavg | HE ckks server-blind | filter boxplot | 2 edges "
        "| DP dp-sgd ε 2.97 of 3"
    )
    assert run_title({"config": config}).endswith("| DP dp-sgd ε 3")  # before any release
    assert run_title(plain) == "breast-cancer / fedavg | no privacy layers"


def _crash_every_training(msg, context, call_next):  # noqa: ANN001, ANN202
    if msg.metadata.message_type == MessageType.TRAIN:
        raise RuntimeError(f"client {context.node_config['partition-id']} crashed on purpose")
    return call_next(msg, context)


@pytest.mark.slow
def test_a_run_no_client_contributes_to_fails_with_each_nodes_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: every client raises when asked to train; 2 empty rounds in a row end the run
    overrides = {"num-server-rounds": 4, "max-empty-rounds": 2, "fraction-evaluate": 0.0,
                 "output-dir": str(tmp_path)}  # fmt: skip
    caplog.set_level(logging.INFO, logger="flwr")
    # Execute
    with pytest.raises(NoContributionError) as info:
        simulate(overrides, num_supernodes=2, clients=clients_with(_crash_every_training))
    # Assert: results.json says failed, with both rounds and each node's reason
    assert info.value.rounds == [1, 2]
    (results_file,) = tmp_path.glob("*/results.json")
    results = json.loads(results_file.read_text())
    assert results["status"] == "failed"
    assert results["error"].startswith("NoContributionError: no client contributed in rounds")
    assert [r["round"] for r in results["rounds"]] == [1, 2]
    assert all(r["train"] is None and len(r["failures"]) == 2 for r in results["rounds"])
    empty = results["no-contribution"]
    assert empty["rounds"] == [1, 2] and empty["limit"] == 2
    nodes = set(results["nodes"])
    for reasons in empty["reasons"].values():
        assert set(reasons) == nodes
        assert all("crashed on purpose" in why for why in reasons.values())
    # Assert: the log names the reasons, and the 30 standardization values print as a count
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("run failed" in e and "crashed on purpose" in e for e in errors)
    assert "'standardize-mean': [30 floats]" in caplog.text


@pytest.mark.slow
def test_plaintext_run_records_its_model_and_the_loader_matches_the_server(
    tmp_path: Path,
) -> None:
    # Execute: a real run (breast cancer, 3 clients), then its final model loaded without key
    results = simulate({"num-server-rounds": 2, "output-dir": str(tmp_path)}, num_supernodes=3)
    run_dir = Path(results["run-dir"])
    metrics = test_final_model(run_dir)
    # Assert: the plaintext model file and what results.json says about it
    assert (run_dir / PLAIN_MODEL).is_file() and not (run_dir / ENCRYPTED_MODEL).exists()
    assert results["path"] == str(run_dir / "results.json")
    model = results["model"]
    assert model["file"] == PLAIN_MODEL and model["encrypted"] is False
    assert model["scheme"] is None and model["key-fingerprint"] is None
    assert model["layout"]["shapes"] == [[1, 30], [1]]
    assert len(model["standardization"]["mean"]) == len(model["standardization"]["std"]) == 30
    # Assert: loaded as app.final_model does, it scores what the server scored in the last round
    server = results["rounds"][-1]["server"]
    assert server == results["final"]
    for key, value in server.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key


def test_an_encrypted_run_never_writes_a_plaintext_model(tmp_path: Path) -> None:
    # Prepare: a recorder told the global model is encrypted under a (public) CKKS key
    key = keygen("ckks").public_only()
    recorder = RunRecorder(new_run_dir(tmp_path, run_id=3), {"task": "breast-cancer"},
                           MeteredGrid(inner=None))  # type: ignore[arg-type]  # fmt: skip
    initial = ArrayRecord({"w": Array(np.zeros((2, 3), np.float32))})
    recorder.global_model(initial, key=key)
    evaluate = recorder.evaluate_fn(None)
    layout = Layout(names=("w",), shapes=((2, 3),), dtypes=("float32",))
    header = Header(scheme="ckks", params=key.params, fingerprint=key.fingerprint, layout=layout)
    # Execute: round 0 gets the public initial model in plaintext, round 1 ciphertexts
    evaluate(0, initial)
    after_setup = sorted(p.name for p in recorder.run_dir.iterdir())
    evaluate(1, Payload(header=header, chunks=(b"ciphertext",)).to_arrays())
    # Assert
    assert after_setup == ["results.json"]
    assert sorted(p.name for p in recorder.run_dir.iterdir()) == [ENCRYPTED_MODEL, "results.json"]
    on_disk = json.loads(recorder.path.read_text())
    assert on_disk["model"] == {
        "file": ENCRYPTED_MODEL, "encrypted": True, "scheme": "ckks",
        "key-fingerprint": key.fingerprint,
        "layout": {"names": ["w"], "shapes": [[2, 3]], "dtypes": ["float32"]},
        "standardization": None,
    }  # fmt: skip
    assert load_payload(recorder.run_dir / ENCRYPTED_MODEL).header == header
