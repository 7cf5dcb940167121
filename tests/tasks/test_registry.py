"""The task registry imports a task's module only when the run uses that task."""

import subprocess
import sys
from pathlib import Path

import pytest

from tasks import TASK_NAMES, get_task, task_class, task_config

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("sklearn", "pandas", "flwr_datasets", "datasets", "matplotlib", "torchvision", "opacus")


def _imported_after(code: str) -> set[str]:
    probe = f"import sys; {code}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=ROOT)  # fmt: skip
    return set(out.stdout.split())


@pytest.mark.parametrize("name", TASK_NAMES)
def test_registered_names_match_the_classes(name: str) -> None:
    assert task_class(name).name == name
    assert get_task(name).name == name


def test_unknown_task_is_named() -> None:
    with pytest.raises(ValueError, match="unknown task 'mnist'; registered tasks: breast-cancer"):
        task_config("mnist", {})


def test_breast_cancer_round_trip_imports_no_heavy_library() -> None:
    """A client message of the default task: registry, partition, train and evaluate."""
    code = (
        "from data.partition import PartitionSpec; from tasks import get_task, TrainSettings; "
        "t = get_task('breast-cancer'); d = t.load_partition(0, 3, PartitionSpec()); "
        "m = t.build_model(); t.train(m, d.train, TrainSettings(1, 16, 0.1)); "
        "t.evaluate(m, d.val)"
    )
    assert _imported_after(code) == set()


def test_mcsn_on_synthetic_records_imports_no_heavy_library() -> None:
    assert (
        _imported_after("from tasks import get_task; get_task('mcsn').num_train_samples()") == set()
    )
