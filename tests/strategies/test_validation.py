"""Malformed replies are dropped with a reason; the round aggregates the others."""

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict

from app.simulation import simulate
from flwr_privacy.strategy.validation import array_signature, reply_problem
from tests.clients import clients_with

GLOBAL = ArrayRecord(
    {"w": Array(np.zeros((2, 3), np.float32)), "b": Array(np.zeros(2, np.float32))}
)


def _content(arrays: dict[str, np.ndarray], metrics: dict) -> RecordDict:
    record = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    return RecordDict({"arrays": record, "metrics": MetricRecord(metrics)})


def _problem(content: RecordDict) -> str | None:
    return reply_problem(
        content, weight_key="num-examples", arrays_key="arrays", expected=array_signature(GLOBAL)
    )


def test_good_reply_passes() -> None:
    ok = {"w": np.ones((2, 3), np.float32), "b": np.ones(2, np.float32)}
    assert _problem(_content(ok, {"num-examples": 5})) is None


@pytest.mark.parametrize(
    ("arrays", "metrics", "reason"),
    [
        (
            {"w": np.ones((3, 3), np.float32), "b": np.ones(2, np.float32)},
            {"num-examples": 5},
            "shape/dtype ['w']",
        ),
        ({"w": np.ones((2, 3), np.float32)}, {"num-examples": 5}, "missing ['b']"),
        (
            {"w": np.full((2, 3), np.nan, np.float32), "b": np.ones(2, np.float32)},
            {"num-examples": 5},
            "NaN",
        ),
        (
            {"w": np.ones((2, 3), np.float32), "b": np.ones(2, np.float32)},
            {"loss": 1.0},
            "'num-examples'",
        ),
        (
            {"w": np.ones((2, 3), np.float32), "b": np.ones(2, np.float32)},
            {"num-examples": 0},
            "positive",
        ),
    ],
)
def test_bad_replies_name_the_problem(arrays: dict, metrics: dict, reason: str) -> None:
    problem = _problem(_content(arrays, metrics))
    assert problem is not None and reason in problem


def _garbage_from_partition_0(msg: Message, context: Context, call_next) -> Message:  # noqa: ANN001
    """Partition 0 replies to training with arrays of the wrong shape."""
    reply = call_next(msg, context)
    if context.node_config["partition-id"] == 0 and msg.metadata.message_type == "train":
        reply.content["arrays"] = ArrayRecord({"junk": Array(np.ones(7, np.float32))})
    return reply


@pytest.mark.slow
def test_one_garbage_client_does_not_stop_the_run(tmp_path: Path) -> None:
    # Prepare: the real ClientApp functions behind a corrupting mod
    bad = clients_with(_garbage_from_partition_0)
    # Execute
    results = simulate(
        {"num-server-rounds": 2, "output-dir": str(tmp_path)}, num_supernodes=5, clients=bad
    )
    # Assert
    assert results["status"] == "completed"
    for r in results["rounds"]:
        assert r["train"]["num-replies"] == 4
        assert (
            len(r["failures"]) == 1
            and "do not match the global model" in r["failures"][0]["reason"]
        )
    assert results["final"]["accuracy"] >= 0.9
