"""A key holder loads and tests a run's final model; encrypted runs leave no plaintext model.

A real server-blind CKKS run through Flower's simulation engine (breast cancer,
3 clients, keys dealt first), then its final model loaded as a key holder does.
The plaintext counterpart is in test_results.py.
"""

import json
from pathlib import Path

import pytest

from app import final_model
from app.final_model import FinalModelError, load_final_model
from app.keys import CLIENT_FILE, SERVER_FILE, generate
from app.results import ENCRYPTED_MODEL, PLAIN_MODEL
from app.simulation import simulate
from benchmarks.runs import with_dealt_keys
from data.partition import PartitionSpec
from data.preprocess import combine
from flwr_privacy.he import load_bundle
from tasks import get_task

CLIENTS = 3
BASE = {"num-server-rounds": 3, "fraction-evaluate": 1.0}
# every test reads the one CKKS simulation below
pytestmark = pytest.mark.slow  # real processes or the engine: tests/conftest.py


@pytest.fixture(scope="module")
def ckks_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """A server-blind CKKS run with keys dealt beforehand (so a key holder exists)."""
    tmp = tmp_path_factory.mktemp("ckks")
    keys = tmp / "keys"
    cfg = with_dealt_keys(BASE | {"he.backend": "ckks"}, keys) | {"output-dir": str(tmp / "out")}
    return simulate(cfg, num_supernodes=CLIENTS), keys


def test_encrypted_run_writes_only_the_encrypted_model_and_records_it(ckks_run) -> None:
    # Prepare
    results, keys = ckks_run
    run_dir = Path(results["run-dir"])
    on_disk = json.loads((run_dir / "results.json").read_text())
    # Assert: no plaintext model at all, not even the initial one
    assert results["status"] == "completed"
    assert (run_dir / ENCRYPTED_MODEL).is_file()
    assert not (run_dir / PLAIN_MODEL).exists()
    assert on_disk["path"] == str(run_dir / "results.json")
    model = on_disk["model"]
    assert model["file"] == ENCRYPTED_MODEL and model["encrypted"] is True
    assert model["scheme"] == "ckks"
    assert model["key-fingerprint"] == load_bundle(keys / SERVER_FILE).fingerprint
    assert model["layout"] == {
        "names": ["linear.weight", "linear.bias"],
        "shapes": [[1, 30], [1]],
        "dtypes": ["float32", "float32"],
    }


def test_recorded_standardization_is_the_clients_federated_one(ckks_run) -> None:
    # Prepare: what the benchmarks used to recompute from every client's training split
    results, _ = ckks_run
    cfg = results["config"]
    task = get_task(cfg["task"], cfg)
    spec = PartitionSpec(cfg["partitioner"], cfg["dirichlet-alpha"], cfg["seed"],
                         cfg["val-fraction"])  # fmt: skip
    parts = [task.load_partition(i, CLIENTS, spec).train for i in range(CLIENTS)]
    mean, std = combine([task.feature_moments(p) for p in parts]).mean_std()
    # Assert
    recorded = results["model"]["standardization"]
    assert recorded["mean"] == pytest.approx(mean.tolist(), rel=1e-12)
    assert recorded["std"] == pytest.approx(std.tolist(), rel=1e-12)


def test_key_holder_decrypts_and_tests_the_final_model(ckks_run) -> None:
    # Execute: by run directory, by results.json, by the results dict
    results, keys = ckks_run
    run_dir = Path(results["run-dir"])
    by_dir = final_model.test_final_model(run_dir, bundle=keys / CLIENT_FILE)
    by_file = final_model.test_final_model(run_dir / "results.json", bundle=keys / CLIENT_FILE)
    by_dict = final_model.test_final_model(results, bundle=keys / CLIENT_FILE)
    # Assert: a trained model (chance: 0.63), the same however the run is named
    assert by_dir["accuracy"] > 0.9 and by_dir["roc-auc"] > 0.95
    assert by_file == by_dir == by_dict
    assert abs(by_dir["accuracy"] - results["final"]["accuracy"]) < 0.1  # federated validation


@pytest.mark.parametrize(("bundle", "match"), [
    (None, r"encrypted \(ckks, key .*pass the client bundle.*--bundle keys/client.json"),
    (SERVER_FILE, "server bundle without secret key"),
    ("other", "encrypted under key .*Pass the client bundle"),
    ("missing.json", "HE key bundle not found"),
])  # fmt: skip
def test_decrypting_without_the_right_key_says_which_key_to_pass(
    ckks_run, tmp_path: Path, bundle: str | None, match: str
) -> None:
    # Prepare
    results, keys = ckks_run
    path = None if bundle is None else keys / bundle
    if bundle == "other":
        generate("ckks", tmp_path)
        path = tmp_path / CLIENT_FILE
    # Execute / Assert
    with pytest.raises(FinalModelError, match=match):
        load_final_model(results["run-dir"], bundle=path)


def test_a_run_with_per_run_keys_says_they_are_gone(ckks_run, tmp_path: Path) -> None:
    # Prepare: the same run as if simulated with per-run keys (no he.server-bundle)
    results, _ = ckks_run
    copy = results | {"config": results["config"] | {"he.server-bundle": ""}}
    # Execute / Assert
    with pytest.raises(FinalModelError, match="per-run simulation keys, deleted"):
        load_final_model(copy)


def test_bad_run_or_override_is_refused_with_the_fix(ckks_run, tmp_path: Path) -> None:
    results, keys = ckks_run
    with pytest.raises(FinalModelError, match="no run directory or results.json there"):
        load_final_model(tmp_path / "nowhere")
    with pytest.raises(FinalModelError, match=r"unknown run-config keys \['learning-rate'\]"):
        load_final_model(results, bundle=keys / CLIENT_FILE, overrides={"learning-rate": 0.5})
    with pytest.raises(FinalModelError, match="'breast-cancer.loss' = 'cubic' is invalid"):
        load_final_model(results, bundle=keys / CLIENT_FILE,
                         overrides={"breast-cancer.loss": "cubic"})  # fmt: skip


def test_cli_prints_the_key_holders_metrics(
    ckks_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute: the documented command's arguments, as a key holder types them
    results, keys = ckks_run
    out = tmp_path / "metrics.json"
    code = final_model.main([results["run-dir"], "--bundle", str(keys / CLIENT_FILE),
                             "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    refused = final_model.main([results["run-dir"]])
    # Assert: the metrics on stdout and in --out; without the key: exit 2, the fix on stderr
    assert code == 0
    assert json.loads(printed) == json.loads(out.read_text())
    expected = final_model.test_final_model(results, bundle=keys / CLIENT_FILE)
    assert json.loads(printed)["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert refused == 2 and "--bundle keys/client.json" in capsys.readouterr().err
