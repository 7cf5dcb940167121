"""A run's final global model for whoever may read it: load it, test it on your own test file.

    python -m app.final_model <run dir> [--bundle keys/client.json] \\
        [--run-config "mcsn.data-dir='/my/data' mcsn.test-file='my_test.csv'"] [--out metrics.json]

A plaintext run's model (``global-model.npz``) loads as it is. A server-blind HE
run keeps only ``global-model.he.json``: it loads with the client bundle (secret
key) its clients used, which the server never had. Tabular models get the
federated standardization recorded in results.json (``model``), so testing needs
no client data. ``--run-config`` changes the task's own keys (another data
directory or test file), written as for ``flwr run --run-config``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from app.keys import decrypt_model
from flwr_privacy.he import BundleError, PayloadError, load_bundle
from tasks import Task, get_task
from tasks.tabular import TabularTask

RunRef = str | Path | Mapping[str, Any]


class FinalModelError(ValueError):
    """The final model cannot be loaded or tested; the message names the cause and the fix."""


def read_results(run: RunRef) -> tuple[dict[str, Any], Path]:
    """A run's results.json content and its directory, from a run dir, a results.json or a dict.

    A path is trusted over the directory results.json recorded, so a copied run loads.
    """
    if isinstance(run, Mapping):
        results = dict(run)
        recorded = results.get("path")
        where = results.get("run-dir") or (str(Path(recorded).parent) if recorded else "")
        if not where:
            raise FinalModelError("these results record no run directory; pass the run's directory")
        return results, Path(where)
    path = Path(run).expanduser()
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise FinalModelError(
            f"{run}: no run directory or results.json there; pass the directory a run wrote "
            "(it holds results.json), e.g. outputs/<timestamp>-run<id>"
        )
    try:
        return json.loads(file.read_text()), file.parent
    except (OSError, ValueError) as e:
        raise FinalModelError(f"{file}: not a readable results.json ({e})") from e


def task_settings(results: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict:
    """The run's config with ``overrides``, which may change only the task's own keys."""
    config = results.get("config")
    if not isinstance(config, dict) or "task" not in config:
        raise FinalModelError("results.json has no run config ('config'); pass a run's results")
    own = sorted(k for k in config if k.startswith(f"{config['task']}."))
    unknown = sorted(set(overrides or {}) - set(own))
    if unknown:
        raise FinalModelError(
            f"unknown run-config keys {unknown} for testing: only the task's own keys change "
            f"the test; allowed: {own}"
        )
    return {**config, **(overrides or {})}


def _model_section(results: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    model = results.get("model")
    if not isinstance(model, dict):
        raise FinalModelError(
            f"{run_dir / 'results.json'} has no 'model' section (written before runs recorded "
            "it); rerun with this version, or decrypt by hand: python -m app.keys decrypt"
        )
    if not (run_dir / model["file"]).is_file():
        raise FinalModelError(
            f"{run_dir / model['file']} does not exist: the run (status "
            f"{results.get('status')!r}) ended before round 1 saved a global model, or the "
            "file was moved; pass the directory that holds it"
        )
    return model


def _decrypt(
    model: Mapping[str, Any], file: Path, results: Mapping[str, Any], bundle: str | Path | None
) -> dict[str, np.ndarray]:
    per_run = not results["config"].get("he.server-bundle")
    lost = (
        " This run used per-run simulation keys, deleted when it ended, so nobody can decrypt "
        f"it: deal keys first (python -m app.keys generate --backend {model['scheme']} "
        "--out keys/ with the run's he.* parameters; docs/guides/he-server-blind.md, \"Keys\") "
        "and run with he.server-bundle='/abs/keys/server.json' "
        "he.client-bundle='/abs/keys/client.json'."
        if per_run
        else ""
    )
    if bundle is None:
        raise FinalModelError(
            f"the final model {file} is encrypted ({model['scheme']}, key "
            f"{model['key-fingerprint']}); pass the client bundle with the secret key the "
            f"clients used: --bundle keys/client.json (Python: bundle=...).{lost}"
        )
    try:
        keys = load_bundle(bundle, expect_private=True)
        return decrypt_model(file, keys)
    except (BundleError, PayloadError) as e:
        raise FinalModelError(
            f"cannot decrypt {file} with {bundle}: {e}. Pass the client bundle (client.json, "
            f"with secret key) of key {model['key-fingerprint']}.{lost}"
        ) from e


def _data_error(cfg: Mapping[str, Any], e: Exception) -> str:
    own = {k: v for k, v in cfg.items() if k.startswith(f"{cfg['task']}.")}
    return (
        f"task {cfg['task']!r} cannot load with these settings: {e} (its settings: {own}); "
        "fix them with --run-config (Python: overrides=...)"
    )


def load_final_model(
    run: RunRef,
    *,
    bundle: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Task, nn.Module]:
    """The run's task and its final global model, decrypted with ``bundle`` if encrypted.

    ``run``: the run directory, its results.json, or that file's content.
    ``overrides``: the task's run-config keys to change (e.g. ``mcsn.test-file``).
    """
    results, run_dir = read_results(run)
    cfg = task_settings(results, overrides)
    model_info = _model_section(results, run_dir)
    file = run_dir / model_info["file"]
    if model_info["encrypted"]:
        arrays = _decrypt(model_info, file, results, bundle)
    else:
        try:
            with np.load(file) as f:
                arrays = dict(f)
        except (OSError, ValueError) as e:
            raise FinalModelError(f"{file}: not a readable saved model ({e}); rerun") from e
    try:
        task = get_task(cfg["task"], cfg)
        model = task.build_model()  # loads the task's data where the model's width depends on it
    except (ValueError, OSError) as e:
        raise FinalModelError(_data_error(cfg, e)) from e
    try:
        model.load_state_dict({k: torch.as_tensor(v) for k, v in arrays.items()})
    except RuntimeError as e:
        raise FinalModelError(
            f"the saved model does not fit the model task {cfg['task']!r} builds with these "
            f"settings (overrides {dict(overrides or {})}): {e}"
        ) from e
    stats = model_info.get("standardization")
    if isinstance(task, TabularTask):
        if stats is None:
            raise FinalModelError("results.json records no standardization for a tabular model")
        task.set_standardization(model, stats["mean"], stats["std"])
    return task, model


def test_final_model(
    run: RunRef,
    *,
    bundle: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The final model's metrics on the task's test set (``overrides`` may name your own)."""
    task, model = load_final_model(run, bundle=bundle, overrides=overrides)
    try:
        test = task.load_test()
    except (ValueError, OSError) as e:
        raise FinalModelError(_data_error(task_settings(read_results(run)[0], overrides), e)) from e
    return task.evaluate(model, test)


test_final_model.__test__ = False  # type: ignore[attr-defined]  # a library function, not a pytest test


def main(argv: list[str] | None = None) -> int:
    from flwr.common.config import parse_config_args

    parser = argparse.ArgumentParser(
        prog="python -m app.final_model", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("run", type=Path, help="the run directory (or its results.json)")
    parser.add_argument("--bundle", type=Path, help="client bundle (secret key), encrypted runs")
    parser.add_argument(
        "--run-config", default="", help="task keys to change, e.g. \"mcsn.test-file='t.csv'\""
    )
    parser.add_argument("--out", type=Path, help="also write the metrics to this JSON file")
    args = parser.parse_args(argv)
    try:
        try:
            overrides = parse_config_args([args.run_config])
        except Exception as e:  # click's error for a malformed string
            raise FinalModelError(
                f"--run-config {args.run_config!r}: {e}; write e.g. \"key='text' other=1\""
            ) from e
        metrics = test_final_model(args.run, bundle=args.bundle, overrides=overrides)
    except FinalModelError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    text = json.dumps(metrics, indent=2, default=float)
    sys.stdout.write(text + "\n")
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
