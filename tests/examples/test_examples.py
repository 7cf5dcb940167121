"""examples/quickstart and its protected variants, each run through Flower's simulation engine.

Every variant is the plain app plus one patch (examples/variants.py). Each run is its
own process started in an empty working directory with only the app's directory on
``sys.path`` first, so the example's own ``app`` package is the one imported, not this
repository's (run_example.py checks it). Runs are 2 rounds on 3 nodes; a run happens
once per module, the first time a test needs it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tests.examples.runs import ROOT, Runs, added_lines, max_diff, round_metrics, variants

APP = ROOT / "examples" / "quickstart"
ROUNDS, NODES = 2, 3
EPSILON = 3.0  # the budget the DP variants' patches set
LOCAL_DP_CLIP = 1.0  # the local-dp patch's clip
MAX_ADDED = 10
CHANCE = 0.25  # four classes
# The secagg patch asks for 24-bit fixed point on [-4, 4] (steps of 8 / 2^24 = 4.8e-7; with
# the default 16 bits the 2-round model was 4.4e-4 from plain FedAvg): the HE variants' bound
SECAGG_TOLERANCE = 1e-4
SECAGG_NODES = 4  # each client masks with >= 3 neighbours (its default floor)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """``run(variant, nodes=NODES)``: the variant's final model and metrics ("none": plain)."""
    return Runs(APP, tmp_path_factory.mktemp("examples"), rounds=ROUNDS, nodes=NODES)


_round = round_metrics


def test_each_variant_adds_at_most_ten_lines() -> None:
    counts = added_lines(APP)
    assert set(counts) == {"ckks", "paillier", "box-plot", "local-dp", "dp-sgd", "secagg",
                           "secagg-dp", "secagg-robust", "foolsgold", "central-dp"}  # fmt: skip
    assert all(0 < n <= MAX_ADDED for n in counts.values()), counts
    plain = "".join(p.read_text() for p in APP.rglob("*.py")) + (APP / "pyproject.toml").read_text()
    assert "flwr_privacy" not in plain and "flower-privacy" not in plain


def test_variants_readme_table_is_current() -> None:
    assert variants.table(APP) in (APP / "README.md").read_text()


@pytest.mark.slow
def test_plain_app_learns(run: Callable[[str], dict[str, Any]]) -> None:
    plain = run("none")
    first, last = _round(plain, "train", 1), _round(plain, "train", ROUNDS)
    print(f"plain: train loss {first['train_loss']:.3f} -> {last['train_loss']:.3f}")
    assert last["train_loss"] < first["train_loss"]
    assert _round(plain, "evaluate", ROUNDS)["eval_acc"] >= 0.9  # seed 0: 0.969


@pytest.mark.parametrize("backend", ["ckks", "paillier"])
@pytest.mark.slow
def test_encrypted_run_equals_plain_run(run: Callable[[str], dict[str, Any]], backend: str) -> None:
    plain, encrypted = run("none"), run(backend)
    diff = max_diff(encrypted["model"], plain["model"])
    print(f"{backend}: max |decrypted - plain| = {diff:.3g}")
    assert diff <= 1e-4
    accuracy = _round(encrypted, "evaluate", ROUNDS)["eval_acc"]
    assert accuracy == pytest.approx(_round(plain, "evaluate", ROUNDS)["eval_acc"], abs=0.05)


@pytest.mark.slow
def test_box_plot_run_learns(run: Callable[[str], dict[str, Any]]) -> None:
    result = run("box-plot")
    print(f"box-plot: accuracy {_round(result, 'evaluate', ROUNDS)['eval_acc']:.3f}")
    assert _round(result, "evaluate", ROUNDS)["eval_acc"] >= 0.9


def _spent(result: dict[str, Any]) -> list[float]:
    return [_round(result, "train", r)["dp-epsilon"] for r in range(1, ROUNDS + 1)]


@pytest.mark.slow
def test_dp_sgd_run_learns_within_budget(run: Callable[[str], dict[str, Any]]) -> None:
    result = run("dp-sgd")
    spent = _spent(result)
    print(f"dp-sgd: epsilon {spent}, accuracy {_round(result, 'evaluate', ROUNDS)['eval_acc']:.3f}")
    assert 0 < spent[0] < spent[-1] <= EPSILON, spent  # 2.04, 2.62
    # Above chance (4 classes: 0.25). The noise comes from each client's secret seed, so the
    # run is not repeatable: 0.42-0.91 over six runs.
    assert _round(result, "evaluate", ROUNDS)["eval_acc"] >= 0.35


@pytest.mark.slow
def test_local_dp_run_noises_at_the_planned_scale_within_budget(
    run: Callable[[str], dict[str, Any]],
) -> None:
    """Local DP at epsilon 3 on 852 weights and 3 clients: the noise is the model.

    Each client adds N(0, (sigma * 2 * clip)^2) per weight (2 * clip: the sensitivity of
    an update when one client's data is replaced) to an update clipped to norm <= clip;
    averaged over 3 clients and summed over 2 rounds that is sigma * 2 * clip * sqrt(2 / 3)
    per weight (4.2) against updates of norm <= 1, so accuracy stays at chance.
    The run must finish within budget with exactly that much noise.
    """
    plain, result = run("none"), run("local-dp")
    spent = _spent(result)
    assert 0 < spent[0] < spent[-1] <= EPSILON, spent  # 1.63, 2.39
    sigma = _round(result, "train", ROUNDS)["dp-noise-multiplier"]
    expected = sigma * 2 * LOCAL_DP_CLIP * np.sqrt(ROUNDS / NODES)
    diff = np.concatenate(
        [(result["model"][k] - plain["model"][k]).ravel() for k in plain["model"]]
    )
    rms = float(np.sqrt(np.mean(diff**2)))
    print(f"local-dp: rms |noised - plain| = {rms:.3g}, planned {expected:.3g}")
    assert 0.8 * expected <= rms <= 1.2 * expected  # 4.23-4.33 of 4.23


@pytest.mark.slow
def test_secagg_run_equals_plain_fedavg(run: Callable[..., dict[str, Any]]) -> None:
    """SecAgg+ from outside: the server unmasks only the sum, which is FedAvg's mean.

    On 4 nodes: with 3, each client has 2 neighbours and refuses to mask (its floor is 3,
    ``ClientFloors.min_neighbours``), so no round would aggregate.
    """
    plain, masked = run("none", SECAGG_NODES), run("secagg", SECAGG_NODES)
    diff = max_diff(masked["model"], plain["model"])
    print(f"secagg: max |secure sum - plain FedAvg| = {diff:.3g}")
    assert 0 < diff <= SECAGG_TOLERANCE  # masked and quantized, yet the same mean
    accuracy = _round(masked, "evaluate", ROUNDS)["eval_acc"]
    assert accuracy == pytest.approx(_round(plain, "evaluate", ROUNDS)["eval_acc"], abs=0.05)


@pytest.mark.slow
def test_secagg_robust_run_filters_group_sums_of_fresh_random_groups(run: Runs) -> None:
    """Robust and private at once from outside: 8 nodes, two random groups of 4 a round; the
    server unmasks the two group sums only and takes their coordinate-wise median."""
    result = run("secagg-robust", 2 * SECAGG_NODES)
    groups = re.findall(r"shared keys \((\d+) groups\)", result["log"])
    print(f"secagg-robust: groups per round {groups}")
    assert groups == ["2"] * ROUNDS
    assert _round(result, "evaluate", ROUNDS)["eval_acc"] > CHANCE


@pytest.mark.slow
def test_foolsgold_run_reports_a_weight_per_client_each_round(run: Runs) -> None:
    """FoolsGold from outside: every round logs each client's weight in [0, 1]."""
    result = run("foolsgold")
    rounds = [ast.literal_eval(w) for w in re.findall(r"FoolsGold weights (\{[^}]*\})",
                                                      result["log"])]  # fmt: skip
    print(f"foolsgold: weights {rounds}")
    assert len(rounds) == ROUNDS
    assert all(len(w) == NODES and all(0.0 <= v <= 1.0 for v in w.values()) for w in rounds)
    assert _round(result, "evaluate", ROUNDS)["eval_acc"] > CHANCE


@pytest.mark.slow
def test_secagg_distributed_dp_run_spends_within_the_clients_budget(run: Runs) -> None:
    """Distributed DP from outside: one clipped step a client, the noise its SecAgg+ shares.

    Every client checks the server's plan against its own budget (epsilon 3 over 3 rounds)
    and books each round in its ledger; after 2 of the 3 planned rounds it has spent less
    than the budget, and the secure sum of noised shares is not the plain model.
    """
    plain, noised = run("none", SECAGG_NODES), run("secagg-dp", SECAGG_NODES)
    spent = _spent(noised)
    print(f"secagg-dp: epsilon {spent}, max |noised - plain| = "
          f"{max_diff(noised['model'], plain['model']):.3g}")  # fmt: skip
    assert 0 < spent[0] < spent[-1] < EPSILON, spent
    assert _round(noised, "train", ROUNDS)["dp-delta"] == pytest.approx(1e-5)
    assert max_diff(noised["model"], plain["model"]) > SECAGG_TOLERANCE


@pytest.mark.slow
def test_central_dp_under_paillier_run_spends_the_servers_budget(run: Runs) -> None:
    """Central DP while the server stays blind: it adds encrypted noise to the encrypted sum.

    The noise multiplier is planned for epsilon 3 over 3 noised aggregates; the server's
    ledger after 2 of them is below the budget, and the model moved by the planned noise
    (std ``z * sensitivity`` on the sum of 3 clipped updates, a third of it on the mean).
    """
    plain, result = run("none"), run("central-dp")
    logged = [(float(s), float(e)) for s, e in re.findall(
        r"encrypted noise \(std ([0-9.e+-]+) on the sum\).*?server epsilon ([0-9.]+)",
        result["log"])]  # fmt: skip
    print(f"central-dp: (std on the sum, server epsilon) per round {logged}")
    assert len(logged) == ROUNDS
    spent = [e for _, e in logged]
    assert 0 < spent[0] < spent[-1] < EPSILON, spent
    std = logged[-1][0]
    diff = np.concatenate(
        [(result["model"][k] - plain["model"][k]).ravel() for k in plain["model"]]
    )
    rms = float(np.sqrt(np.mean(diff**2)))
    expected = std / NODES * np.sqrt(ROUNDS)
    print(f"central-dp: rms |noised - plain| = {rms:.3g}, planned {expected:.3g}")
    assert 0.8 * expected <= rms <= 1.2 * expected
