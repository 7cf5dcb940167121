"""results.json and plots: one well-defined place for everything a run measured.

The recorder rewrites results.json atomically after every round, so a crash
never loses rounds already finished. Plots are drawn from the file's content
only, so a notebook can redraw them from disk.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from app.dp_config import DpConfig
from app.metering import MeteredGrid
from app.records import PARTITION_ID
from flwr_privacy.dp import DELTA_KEY, EPSILON_KEY
from flwr_privacy.he import KeyBundle, Payload, is_encrypted, save_payload
from flwr_privacy.records import as_float, as_int
from flwr_privacy.settings import handles_ciphertext
from flwr_privacy.strategy.box_plot import FilterReport
from flwr_privacy.strategy.guard import NoContributionError

# What a DP client released in a round (reply metrics): kept per client, never averaged.
RELEASE_KEYS = ("dp-noise-multiplier", "dp-sample-rate", "dp-steps", "dp-round-epsilon")
ENCRYPTED_MODEL = "global-model.he.json"  # the latest encrypted global model (server-blind HE)
PLAIN_MODEL = "global-model.npz"  # the latest plaintext global model (other runs)

EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]
MetricsAggrFn = Callable[[list[RecordDict], str], MetricRecord]


def environment() -> dict[str, Any]:
    """Versions and machine facts, so figures can be compared honestly."""
    versions: dict[str, str | None] = {}
    for pkg in ("flwr", "torch", "numpy", "scikit-learn", "tenseal", "opacus", "phe"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu-count": os.cpu_count(),
        "packages": versions,
    }


def new_run_dir(output_dir: str | Path, run_id: int) -> Path:
    """A fresh sub-directory per run: ``<output-dir>/<timestamp>-run<id>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(output_dir).expanduser().resolve() / f"{stamp}-run{run_id}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=float))
    os.replace(tmp, path)


def save_arrays(arrays: ArrayRecord, path: Path) -> None:
    """The global model as named numpy arrays (``numpy.load`` reads it), written atomically."""
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{k: a.numpy() for k, a in arrays.items()})  # type: ignore[arg-type]  # stub types **kwds as allow_pickle
    os.replace(tmp, path)


def _plain(record: MetricRecord | None) -> dict[str, Any] | None:
    return None if record is None else {k: v for k, v in record.items()}


class RunRecorder:
    """Collects per-round metrics, timings and traffic, and keeps results.json current."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any], grid: MeteredGrid) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "results.json"
        self.grid = grid
        self.data: dict[str, Any] = {
            "status": "running",
            "path": str(self.path),  # where to find the run (app.final_model) once it is copied
            "run-dir": str(run_dir),
            "config": dict(config),
            "setup": {},
            "rounds": [],
            "final": {},
            "environment": environment(),
        }
        self._client: dict[str, tuple[MetricRecord, int] | None] = {"train": None, "evaluate": None}
        self._rejected: list[dict[str, Any]] = []
        self._filter: dict[str, Any] | None = None
        self._tiers: dict[str, Any] | None = None
        self._secagg: dict[str, Any] | None = None
        self._privacy: dict[str, Any] = {}
        self._encrypted = False
        self._tick = time.perf_counter()
        write_json(self.path, self.data)

    def global_model(
        self,
        initial: ArrayRecord,
        *,
        key: KeyBundle | None = None,
        standardization: tuple[list[float], list[float]] | None = None,
    ) -> None:
        """Record what a key holder needs to load the final model (``app.final_model``).

        ``key``: the server's public bundle when the global model is encrypted
        (server-blind HE); then no plaintext model is ever written, not even the
        public initial one. ``standardization``: the federated mean/std the server
        installed (tabular tasks), so loading the model needs no client data.
        """
        self._encrypted = key is not None
        names = list(initial.keys())
        self.data["model"] = {
            "file": ENCRYPTED_MODEL if key is not None else PLAIN_MODEL,
            "encrypted": key is not None,
            "scheme": None if key is None else key.backend,
            "key-fingerprint": None if key is None else key.fingerprint,
            "layout": {
                "names": names,
                "shapes": [list(initial[n].shape) for n in names],
                "dtypes": [str(initial[n].dtype) for n in names],
            },
            "standardization": None
            if standardization is None
            else {"mean": list(standardization[0]), "std": list(standardization[1])},
        }
        write_json(self.path, self.data)

    def metrics_aggr(self, phase: str, fn: MetricsAggrFn) -> MetricsAggrFn:
        """Wrap a strategy's metric aggregation to record its output for this round."""

        def aggregate(contents: list[RecordDict], weighted_by_key: str) -> MetricRecord:
            out = fn(contents, weighted_by_key)
            if phase == "train":
                self._client_epsilons(contents, out)
            # Kept by reference: the strategy adds server-side figures (he-aggregate-s) after this.
            self._client[phase] = (out, len(contents))
            return out

        return aggregate

    def reject(self, node_id: int, reason: str) -> None:
        """Record a reply the strategy refused to aggregate in this round."""
        self._rejected.append({"node-id": node_id, "reason": f"rejected: {reason}"})

    def rejections(self) -> dict[int, str]:
        """This round's refused replies so far: node id -> reason (``StopOnEmptyRounds``)."""
        return {r["node-id"]: r["reason"] for r in self._rejected}

    def no_contribution(self, error: NoContributionError) -> None:
        """Close the round the run stopped in; record per round and node why nothing counted."""
        last, final = error.rounds[-1], self.data["final"]
        if not any(r["round"] == last for r in self.data["rounds"]):
            self._close_round(last, None)  # its failures, bytes and seconds
            self.data["final"] = final  # the last model that was evaluated
        self.data["no-contribution"] = {
            "rounds": error.rounds,
            "limit": error.limit,
            "reasons": {str(r): {str(n): why for n, why in sorted(nodes.items())}
                        for r, nodes in sorted(error.reasons.items())},
        }  # fmt: skip

    def nodes(
        self,
        sizes: Mapping[int, int],
        partitions: Mapping[int, int],
        edges: Mapping[int, int] | None = None,
    ) -> None:
        """Record which node holds which partition (and edge) and how many training examples."""
        self.data["nodes"] = {
            str(n): {"partition-id": partitions.get(n), "num-examples": sizes[n]}
            | ({"edge": edges.get(n)} if edges else {})
            for n in sizes
        }

    def attack(self, kind: str, fraction: float, partitions: Iterable[int]) -> None:
        """Record the attack harness's ground truth (experiments only; strategies never see it)."""
        bad = sorted(partitions)
        nodes = [int(n) for n, v in self.data.get("nodes", {}).items() if v["partition-id"] in bad]
        self.data["attack"] = {
            "type": kind,
            "fraction": fraction,
            "malicious-partitions": bad,
            "malicious-nodes": sorted(nodes),
        }

    def filtered(self, server_round: int, report: FilterReport) -> None:
        """Record this round's box-plot decisions; counts are summed in ``robust``.

        Hierarchical runs report once per edge and once for the cloud tier;
        their reports are kept by tier, and cloud drops count edges, not clients.
        """
        entry = report.as_dict()
        self._filter = {**(self._filter or {}), report.tier: entry} if report.tier else entry
        totals = self.data.setdefault("robust", {"client-rounds": 0, "dropped": 0})
        if report.tier == "cloud":
            totals["edge-rounds"] = totals.get("edge-rounds", 0) + report.received
            totals["dropped-edges"] = totals.get("dropped-edges", 0) + len(report.dropped)
            return
        totals["client-rounds"] += report.received
        totals["dropped"] += len(report.dropped)
        bad = {str(n) for n in self.data.get("attack", {}).get("malicious-nodes", [])}
        if "attack" in self.data:
            dropped = set(entry["dropped"])
            totals["dropped-malicious"] = totals.get("dropped-malicious", 0) + len(dropped & bad)
            totals["dropped-honest"] = totals.get("dropped-honest", 0) + len(dropped - bad)
            totals["malicious-client-rounds"] = totals.get("malicious-client-rounds", 0) + len(
                {str(n) for n in report.nodes} & bad
            )

    def privacy_setup(self, dp: DpConfig) -> None:
        """Record the run's DP mode and budget (no entry when DP is off)."""
        if dp.enabled:
            self.data["privacy"] = {"mode": dp.mode, "budget-epsilon": dp.epsilon,
                                    "delta": dp.delta, "accountant": dp.accountant,
                                    "input-epsilon": dp.input_epsilon, "epsilon-max": 0.0,
                                    "declined": []}  # fmt: skip

    def _client_epsilons(self, contents: list[RecordDict], out: MetricRecord) -> None:
        """Each DP client's cumulative epsilon (by partition); the summary takes the max."""
        for key in (EPSILON_KEY, DELTA_KEY, PARTITION_ID, *RELEASE_KEYS):
            out.pop(key, None)  # a weighted mean of these means nothing
        eps, releases = {}, {}
        for content in contents:
            metrics = next(iter(content.metric_records.values()))
            if EPSILON_KEY in metrics:
                client = str(as_int(metrics[PARTITION_ID]))
                eps[client] = as_float(metrics[EPSILON_KEY])
                releases[client] = {k: metrics[k] for k in RELEASE_KEYS if k in metrics}
        if eps:
            order = sorted(eps, key=int)
            self._privacy["epsilon"] = {c: eps[c] for c in order}
            self._privacy["releases"] = {c: releases[c] for c in order}
            self._privacy["epsilon-max"] = max(eps.values())

    def declined(self, server_round: int, node_id: int, reason: str) -> None:
        """A client declined to train: its next round would exceed its budget."""
        self._privacy.setdefault("declined", []).append(node_id)
        self.data["privacy"]["declined"].append({"round": server_round, "node-id": node_id,
                                                 "reason": reason})  # fmt: skip

    def central_release(self, server_round: int, epsilon: float) -> None:
        """Central DP: the server's epsilon after this round's noised aggregate."""
        self._privacy["epsilon-max"] = epsilon

    def tiers(self, server_round: int, tiers: dict[str, Any]) -> None:
        """Record a hierarchical round's per-edge counts and edge <-> cloud bytes."""
        self._tiers = tiers

    def secagg(self, server_round: int, report: dict[str, Any]) -> None:
        """SecAgg+ stages (messages, bytes, seconds), dropouts and recovered clients."""
        self._secagg = report

    def evaluate_fn(self, central: EvaluateFn | None) -> EvaluateFn:
        """Wrap centralized evaluation; each call closes a round (0 = before training).

        Without ``central`` it only saves the global model, encrypted or not, so
        encrypted strategies accept it (``handles_ciphertext``). An encrypted run
        saves only ciphertexts: its plaintext round-0 model is skipped.
        """

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            if is_encrypted(arrays):  # keep the encrypted global model for key holders
                save_payload(Payload.from_arrays(arrays), self.run_dir / ENCRYPTED_MODEL)
            elif not self._encrypted:
                save_arrays(arrays, self.run_dir / PLAIN_MODEL)
            metrics = central(server_round, arrays) if central is not None else None
            self._close_round(server_round, _plain(metrics))
            return metrics

        return evaluate if central is not None else handles_ciphertext(evaluate)

    def _client_metrics(self, phase: str) -> dict[str, Any] | None:
        client = self._client[phase]
        if client is None:
            return None
        out, replies = client
        return {**(_plain(out) or {}), "num-replies": replies}

    def _close_round(self, server_round: int, server: dict[str, Any] | None) -> None:
        now = time.perf_counter()
        entry: dict[str, Any] = {
            "round": server_round,
            "server": server,
            "train": self._client_metrics("train"),
            "evaluate": self._client_metrics("evaluate"),
            "seconds": now - self._tick,
            **self.grid.take().as_dict(),
        }
        entry["failures"] = entry["failures"] + self._rejected
        if self._filter is not None:
            entry["robust"] = self._filter
        if self._tiers is not None:
            entry["tiers"] = self._tiers
        if self._secagg is not None:
            entry["secagg"] = self._secagg
        if self._privacy:
            entry["privacy"] = self._privacy
            summary = self.data["privacy"]
            eps = self._privacy.get("epsilon-max", 0.0)
            summary["epsilon-max"] = max(summary["epsilon-max"], eps)
        self._tick = now
        self._client = {"train": None, "evaluate": None}
        self._rejected = []
        self._filter = None
        self._tiers = None
        self._secagg = None
        self._privacy = {}
        if server_round == 0:
            self.data["setup"] = entry
        else:
            self.data["rounds"].append(entry)
            self.data["final"] = server or entry["evaluate"] or {}
        write_json(self.path, self.data)

    def finish(self, status: str = "completed", error: str | None = None) -> Path:
        """Mark the run finished (or failed), write the file and the plot."""
        self.data["status"] = status
        if error is not None:
            self.data["error"] = error
        write_json(self.path, self.data)
        if self.data["rounds"]:
            plot_rounds(self.data, self.run_dir / "metrics.png")
        return self.path


def plot_rounds(results: Mapping[str, Any], path: Path) -> Path:
    """Accuracy and loss per round, server-side and federated, from results.json content."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rounds = results["rounds"]
    xs = [r["round"] for r in rounds]
    private = "privacy" in results
    fig, axes = plt.subplots(1, 3 if private else 2, figsize=(15 if private else 10, 4))
    if private:
        _plot_epsilon(axes[2], results)
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=False):
        for source, label in (
            ("server", "server (held-out test)"),
            ("evaluate", "clients (local val)"),
        ):
            ys = [(r.get(source) or {}).get(metric) for r in rounds]
            if any(y is not None for y in ys):
                ax.plot(xs, [float("nan") if y is None else y for y in ys], marker=".", label=label)
        ax.set_xlabel("round")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    fig.suptitle(run_title(results))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_title(results: Mapping[str, Any]) -> str:
    """The plot's title: task / strategy, then each layer the run used (from results.json)."""
    cfg = results.get("config", {})
    layers = [f"{cfg.get('task', '')} / {cfg.get('strategy', '')}"]
    if cfg.get("he.backend", "none") != "none":
        layers.append(f"HE {cfg['he.backend']} {cfg.get('he.mode', 'server-blind')}")
    # SecAgg: its layer goes here, once the app has a run-config key for it.
    if cfg.get("robust.filter", "none") != "none":
        layers.append(f"filter {cfg['robust.filter']}")
    if int(cfg.get("hierarchy.edges", 0)) > 0:
        layers.append(f"{cfg['hierarchy.edges']} edges")
    if cfg.get("dp.mode", "none") != "none":
        privacy = results.get("privacy", {})
        budget = privacy.get("budget-epsilon", cfg.get("dp.epsilon"))
        spent = privacy.get("epsilon-max")
        eps = f"ε {budget:g}" if spent is None else f"ε {spent:.2f} of {budget:g}"
        layers.append(f"DP {cfg['dp.mode']} {eps}")
    return " | ".join(layers if len(layers) > 1 else [*layers, "no privacy layers"])


def _plot_epsilon(ax: Any, results: Mapping[str, Any]) -> None:
    """Cumulative epsilon per round: every client's, and the maximum."""
    rounds = [r for r in results["rounds"] if r.get("privacy", {}).get("epsilon-max") is not None]
    clients = sorted({p for r in rounds for p in r["privacy"].get("epsilon", {})}, key=int)
    for p in clients:
        pts = [(r["round"], r["privacy"]["epsilon"][p]) for r in rounds
               if p in r["privacy"].get("epsilon", {})]  # fmt: skip
        ax.plot(*zip(*pts, strict=True), color="0.7", lw=0.8)
    ax.plot(
        [r["round"] for r in rounds],
        [r["privacy"]["epsilon-max"] for r in rounds],
        marker=".",
        color="C3",
        label="max over clients" if clients else "server (central)",
    )
    privacy = results["privacy"]
    ax.axhline(privacy["budget-epsilon"], ls="--", color="k", lw=0.8, label="budget")
    ax.set_xlabel("round")
    ax.set_ylabel(f"epsilon (delta = {privacy['delta']:g}, {privacy['accountant']})")
    ax.grid(alpha=0.3)
    ax.legend()
