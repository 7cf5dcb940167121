"""SecAgg+ in this app through Flower's simulation engine: same model as plaintext, results.json."""

from pathlib import Path

import pytest

from app.config import ConfigError
from app.simulation import simulate

BASE = {"num-server-rounds": 3, "local-epochs": 1, "fraction-evaluate": 0.0, "batch-size": 32}


def _run(tmp_path: Path, name: str, nodes: int = 5, **overrides: object) -> dict:
    out = tmp_path / name
    return simulate(BASE | {"output-dir": str(out)} | overrides, num_supernodes=nodes)


@pytest.mark.slow
def test_secagg_trains_the_model_plaintext_fedavg_trains(tmp_path: Path) -> None:
    plain = _run(tmp_path, "plain")
    masked = _run(tmp_path, "secagg", **{"secagg.enabled": True})
    assert masked["status"] == plain["status"] == "completed"
    # the server sees the aggregate: it evaluates centrally, as without SecAgg
    assert masked["final"]["accuracy"] == pytest.approx(plain["final"]["accuracy"], abs=0.005)
    assert masked["final"]["loss"] == pytest.approx(plain["final"]["loss"], abs=0.01)
    for r in masked["rounds"]:
        sa = r["secagg"]
        assert sa["aggregated"] and sa["masked"] == 5 and sa["threshold"] == {"0": 3}
        assert sa["signed"] == 5 and sa["trust"] == "simulated"
        assert sa["stages"]["mask"]["bytes-up"] > 0 and sa["stages"]["keys"]["messages"] == 5


@pytest.mark.slow
def test_secagg_with_edges_runs_one_instance_per_edge(tmp_path: Path) -> None:
    # 8 clients: edges of 4, so each client has the 3 neighbours its default floor asks for
    results = _run(tmp_path, "edges", nodes=8,
                   **{"secagg.enabled": True, "hierarchy.edges": 2, "num-server-rounds": 1})
    assert results["status"] == "completed"
    sa = results["rounds"][0]["secagg"]
    assert sa["groups"] == 2 and sa["aggregated"] and sa["masked"] == 8


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"he.backend": "ckks"}, "choose one"),
        ({"robust.filter": "boxplot"}, "cannot filter or rank single ones"),
        ({"dp.mode": "central"}, "central DP clips single updates"),
        ({"secagg.threshold": 2.5}, "secagg.threshold"),
        ({"secagg.neighbours": 1}, "secagg.neighbours"),
    ],
)
@pytest.mark.slow
def test_combinations_secagg_cannot_run_are_refused_naming_the_key(
    tmp_path: Path, overrides: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _run(tmp_path, "bad", **{"secagg.enabled": True, **overrides})


@pytest.mark.slow
def test_distributed_dp_under_secagg_accounts_discrete_gaussian_rounds(tmp_path: Path) -> None:
    results = _run(
        tmp_path,
        "ddg",
        **{"secagg.enabled": True, "dp.mode": "distributed", "dp.epsilon": 3.0, "batch-size": 16},
    )
    assert results["status"] == "completed"
    eps = [r["privacy"]["epsilon"] for r in results["rounds"]]
    assert all(e for e in eps)  # every client reports its ledger every round
    last = max(eps[-1].values())
    assert 2.0 < last <= 3.0  # the planned budget over the 3 rounds, not more
    ddg = results["rounds"][0]["secagg"]["ddg"]
    assert ddg["honest"] == ddg["planned-honest"] == 5 - (3 - 1)  # server + t-1 colluders
    assert results["final"]["accuracy"] > 0.6


@pytest.mark.slow(seconds=90)
def test_secure_groups_filter_an_attacker_and_exclude_it_while_the_server_sees_group_sums(
    tmp_path: Path,
) -> None:
    # 16 clients in fresh random groups of 4; one same-value attacker (value 10 per weight)
    attacked = {"secagg.enabled": True, "secagg.group-size": 4, "secagg.group-rule": "boxplot",
                "attack.type": "same-value", "attack.fraction": 0.0625, "num-server-rounds": 10}
    results = _run(tmp_path, "groups", nodes=16, **attacked)
    assert results["status"] == "completed"
    (bad,) = results["attack"]["malicious-nodes"]
    first = results["rounds"][0]["secagg"]["robust"]
    assert first["method"] == "boxplot" and len(first["groups"]) == 4
    assert all(len(m) == 4 for m in first["groups"].values())
    # the attacker's group is the one the box plot drops, while it is sampled
    for r in results["rounds"]:
        robust = r["secagg"]["robust"]
        group = [g for g, members in robust["groups"].items() if int(bad) in members]
        assert list(robust["dropped"]) == group
    # its groups were always dropped: excluded, then left out of every later round
    excluded = results["rounds"][-1]["secagg"]["robust"]["suspicion"]["excluded"]
    # pooled drop rate about 1/4: 4^-n < 0.01 / (16 * 10) from n = 7
    assert list(excluded) == [str(bad)] and excluded[str(bad)] <= 9
    assert results["rounds"][-1]["secagg"]["sampled"] == 15
    # the model trained as if no attacker were there (breast cancer, 10 rounds)
    assert results["final"]["accuracy"] > 0.9
