"""sklearn_logreg: the ServerApp (Flower's Message API)."""

import json
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from app.task import initial_params

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Train for `num-server-rounds` rounds; save the final model and the metrics."""
    arrays = ArrayRecord({k: Array(v) for k, v in initial_params().items()})

    strategy = FedAvg()
    result = strategy.start(
        grid=grid, initial_arrays=arrays, num_rounds=context.run_config["num-server-rounds"]
    )

    out = Path(str(context.run_config["output-dir"]))
    out.mkdir(parents=True, exist_ok=True)
    final = {name: array.numpy() for name, array in result.arrays.items()}
    np.savez(out / "final_model.npz", **final)
    rounds = {
        "train": {r: dict(m) for r, m in result.train_metrics_clientapp.items()},
        "evaluate": {r: dict(m) for r, m in result.evaluate_metrics_clientapp.items()},
    }
    (out / "metrics.json").write_text(json.dumps(rounds, indent=1))
    print(f"Final model and metrics saved to {out.resolve()}")
