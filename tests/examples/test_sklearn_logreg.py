"""examples/sklearn_logreg: a scikit-learn app (no torch) gains SecAgg+ and CKKS.

Flower's scikit-learn quickstart shape: logistic regression whose coefficients travel
as numpy arrays. SecAgg+ needs only the core install, CKKS the ``[he]`` extra; each
variant must reach the plain FedAvg model (2 rounds, 4 nodes, real simulation engine).
The nodes' parts are equal, so FedAvg's weights are too: the toolkit's first round,
which does not know the clients' sizes, weights them equally (README, "Weights").
"""

from __future__ import annotations

import pytest

from tests.examples.runs import ROOT, Runs, added_lines, max_diff, round_metrics, variants

APP = ROOT / "examples" / "sklearn_logreg"
ROUNDS, NODES = 2, 4  # SecAgg+: each client masks with >= 3 neighbours
MAX_ADDED = 10
# CKKS (scale 2^40) and 24-bit SecAgg+ fixed point: far below the 1e-4 the HE checks use
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(APP, tmp_path_factory.mktemp("sklearn"), rounds=ROUNDS, nodes=NODES)


def test_each_variant_adds_at_most_ten_lines_and_the_readme_says_so() -> None:
    counts = added_lines(APP)
    assert counts == {"ckks": 6, "secagg": 5}
    assert variants.table(APP) in (APP / "README.md").read_text()
    plain = "".join(p.read_text() for p in APP.rglob("*.py")) + (APP / "pyproject.toml").read_text()
    assert "flwr_privacy" not in plain and "import torch" not in plain


@pytest.mark.slow
def test_plain_app_learns(run: Runs) -> None:
    plain = run("none")
    first, last = round_metrics(plain, "train", 1), round_metrics(plain, "train", ROUNDS)
    assert last["train_loss"] < first["train_loss"]
    assert round_metrics(plain, "evaluate", ROUNDS)["eval_acc"] >= 0.95  # seed: 0.991


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["secagg", "ckks"])
def test_protected_variant_reaches_the_plain_model(run: Runs, variant: str) -> None:
    plain, protected = run("none"), run(variant)
    diff = max_diff(protected["model"], plain["model"])
    print(f"sklearn {variant}: max |protected - plain| = {diff:.3g}")
    assert 0 < diff <= TOLERANCE  # masked or encrypted, yet the same mean
    accuracy = round_metrics(protected, "evaluate", ROUNDS)["eval_acc"]
    assert accuracy == pytest.approx(round_metrics(plain, "evaluate", ROUNDS)["eval_acc"], abs=0.02)
