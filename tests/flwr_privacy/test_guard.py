"""StopOnEmptyRounds: a run nobody contributes to fails loudly; long lists log as counts."""

import logging
from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.common.logger import FLOWER_LOGGER
from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message
from flwr.serverapp.strategy import FedAvg

from flwr_privacy.strategy.guard import (
    NO_REPLY,
    NoContributionError,
    StopOnEmptyRounds,
    shorten,
)

pytestmark = pytest.mark.usefixtures("server_identity")


def _arrays() -> ArrayRecord:
    return ArrayRecord({"w": Array(np.ones(2, dtype=np.float32))})


class _Link:
    """Stands in for Flower's grid. Per node: "ok" (trains), "boom" (the ClientApp
    raised), "gone" (the SuperLink answers "Node Unavailable"), "silent" (no reply);
    ``good_rounds`` are rounds in which every node trains."""

    def __init__(self, behaviour: dict[int, str], good_rounds: Iterable[int] = ()) -> None:
        self.behaviour = behaviour
        self.good_rounds = set(good_rounds)

    def get_node_ids(self) -> list[int]:
        return list(self.behaviour)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = msg.object_id  # as pushing does
            what = self.behaviour[msg.metadata.dst_node_id]
            if msg.content["config"]["server-round"] in self.good_rounds:
                what = "ok"
            if what == "ok":
                content = RecordDict(
                    {"arrays": _arrays(), "metrics": MetricRecord({"num-examples": 3})}
                )
                replies.append(Message(content, reply_to=msg))
            elif what == "boom":
                replies.append(Message(Error(code=0, reason="client crashed"), reply_to=msg))
            elif what == "gone":
                replies.append(create_message_error_unavailable_res_message(msg.metadata, "x"))
        return replies


def _start(guard: StopOnEmptyRounds, grid: _Link, rounds: int, **kwargs: object) -> None:
    guard.start(grid=grid, initial_arrays=_arrays(), num_rounds=rounds, **kwargs)  # type: ignore[arg-type]  # a stand-in grid


def test_rounds_without_any_contribution_end_the_run_with_each_nodes_reason() -> None:
    # Prepare: node 7's ClientApp raises, node 42 is gone, node 9 never answers
    grid = _Link({7: "boom", 42: "gone", 9: "silent"})
    guard = StopOnEmptyRounds(FedAvg(fraction_evaluate=0.0), max_empty_rounds=2)
    # Execute
    with pytest.raises(NoContributionError) as info:
        _start(guard, grid, rounds=5, timeout=1.0)
    # Assert: stopped after round 2, not after round 5; every node's reason, by node id
    error = info.value
    assert error.rounds == [1, 2] and error.limit == 2
    for reasons in error.reasons.values():
        assert set(reasons) == {7, 42, 9}
        assert reasons[7] == "error 0: client crashed"
        assert "Node Unavailable" in reasons[42]
        assert reasons[9] == NO_REPLY
    assert "no client contributed in rounds [1, 2]" in str(error)
    assert "node 7: error 0: client crashed" in str(error)


def test_a_round_that_trains_resets_the_count() -> None:
    # Prepare: everyone trains in round 2 only; two empty rounds in a row end the run
    grid = _Link({7: "boom", 8: "boom"}, good_rounds={2})
    guard = StopOnEmptyRounds(FedAvg(fraction_evaluate=0.0), max_empty_rounds=2)
    # Execute
    with pytest.raises(NoContributionError) as info:
        _start(guard, grid, rounds=6)
    # Assert: round 1 alone did not end it; rounds 3 and 4 did
    assert info.value.rounds == [3, 4]


def test_a_run_shorter_than_the_limit_fails_when_no_round_trained() -> None:
    guard = StopOnEmptyRounds(FedAvg(fraction_evaluate=0.0), max_empty_rounds=3)
    with pytest.raises(NoContributionError) as info:
        _start(guard, _Link({7: "boom", 8: "boom"}), rounds=2)
    assert info.value.rounds == [1, 2] and info.value.limit == 2


def test_fewer_empty_rounds_than_the_limit_let_the_run_finish() -> None:
    # Prepare: round 1 and 3 empty, rounds 2 and 4 train
    grid = _Link({7: "boom", 8: "boom"}, good_rounds={2, 4})
    guard = StopOnEmptyRounds(FedAvg(fraction_evaluate=0.0), max_empty_rounds=2)
    # Execute
    _start(guard, grid, rounds=4)
    # Assert: nothing raised, and the streak is over
    assert guard._empty == {}


class _RefuseAll(FedAvg):
    """A strategy whose payload check refuses every reply (as EncryptedFedAvg may)."""

    def __init__(self, refused: dict[int, str]) -> None:
        super().__init__(fraction_evaluate=0.0)
        self.refused = refused

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        for reply in replies:
            self.refused[reply.metadata.src_node_id] = "rejected: chunk 0 is not a ciphertext"
        return None, None


def test_refused_replies_carry_the_strategys_reason() -> None:
    # Prepare: both nodes train, the inner strategy refuses both; node 9 has no reason given
    refused: dict[int, str] = {}
    guard = StopOnEmptyRounds(_RefuseAll(refused), 1, rejections=lambda: {7: refused[7]})
    # Execute
    with pytest.raises(NoContributionError) as info:
        _start(guard, _Link({7: "ok", 9: "ok"}), rounds=3)
    # Assert
    assert info.value.reasons == {
        1: {7: "rejected: chunk 0 is not a ciphertext", 9: "reply not aggregated by the strategy"}
    }


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_max_empty_rounds_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(ValueError, match=f"max_empty_rounds = {bad}: use an integer >= 1"):
        StopOnEmptyRounds(FedAvg(), max_empty_rounds=bad)  # type: ignore[arg-type]  # bad on purpose


def test_start_logs_long_config_lists_as_counts(caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: a 30-value standardization mean in the train and evaluate configs
    config = ConfigRecord({"standardize-mean": [0.25] * 30, "dims": [1, 2, 3]})
    guard = StopOnEmptyRounds(FedAvg(fraction_evaluate=0.0))
    caplog.set_level(logging.INFO, logger=FLOWER_LOGGER.name)
    # Execute
    _start(guard, _Link({7: "ok", 8: "ok"}), rounds=1, train_config=config,
           evaluate_config=ConfigRecord(dict(config)))  # fmt: skip
    FLOWER_LOGGER.info("after: %s", [0.5] * 30)
    # Assert: both config lines are short, short lists stay; the filter leaves with start()
    config_lines = [r.getMessage() for r in caplog.records if "ConfigRecord (" in r.msg]
    assert len(config_lines) == 2
    for line in config_lines:
        assert "'standardize-mean': [30 floats]" in line and "'dims': [1, 2, 3]" in line
    assert "0.25, 0.25" not in caplog.text
    assert "0.5, 0.5" in caplog.records[-1].getMessage()
    assert FLOWER_LOGGER.filters == []


def test_shorten_names_the_kind_of_a_long_list() -> None:
    assert shorten(str(list(range(9)))) == "[9 ints]"
    assert shorten(str([0.5] * 9)) == "[9 floats]"
    assert shorten(str(["a"] * 9)) == "[9 items]"
    assert (
        shorten("{'a': [1, 2], 'b': [0.5, 1.0, 2.0]}", limit=2) == "{'a': [1, 2], 'b': [3 floats]}"
    )
