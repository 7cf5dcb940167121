"""results.json is rewritten after every round and survives a failed run."""

import json
from pathlib import Path

from flwr.app import ArrayRecord, MetricRecord

from app.metering import MeteredGrid
from app.results import RunRecorder, new_run_dir


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
