"""What one client sends in round 1 under each protection, and what the server can attack.

Each function runs the toolkit's own code path: plain SGD, the local-DP client mod
(``flwr_privacy.mods.local_dp``, i.e. Flower's LocalDpMod), Opacus DP-SGD
(``flwr_privacy.dp.sgd``) and CKKS encryption (``flwr_privacy.he``). Noise seeds are
drawn with ``secrets`` by the caller, as the toolkit's clients do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from torch import nn
from torch.utils.data import TensorDataset

from flwr_privacy.dp.sgd import DpSgd, planned_noise, sampling
from flwr_privacy.he import EncodeSettings, decrypt_arrays, encrypt_arrays, keygen
from flwr_privacy.mods import make_local_dp_mod

PROTECTIONS = ("plaintext", "he", "local-dp", "dp-sgd-eps1", "dp-sgd-eps3", "dp-sgd-eps8")
DELTA = 1e-5
CLIP = 1.0  # dp.max-grad-norm default: per example (DP-SGD), per update (local DP)
LOCAL_DP = {"epsilon": 3.0, "delta": DELTA, "clip": CLIP, "rounds": 30}  # app defaults
# README's MNIST DP-SGD runs: 10 clients x 5,880 images, batch 512, 20 rounds of one epoch.
SCHEDULE = {"examples": 5880, "batch": 512, "rounds": 20}


@dataclass(frozen=True)
class ClientBatch:
    """One client's local data (normalized images, labels) and its local schedule."""

    inputs: torch.Tensor
    labels: torch.Tensor
    lr: float
    steps: int


@lru_cache(maxsize=8)
def dp_sgd_noise(epsilon: float) -> float:
    """The noise multiplier the RDP accountant plans for ``SCHEDULE`` at ``epsilon``."""
    q, per_round = sampling(SCHEDULE["examples"], SCHEDULE["batch"])
    return planned_noise(target_epsilon=epsilon, delta=DELTA, sample_rate=q,
                         steps=SCHEDULE["rounds"] * per_round, accountant="rdp")  # fmt: skip


def _sgd(model: nn.Module, batch: ClientBatch) -> nn.Module:
    opt = torch.optim.SGD(model.parameters(), lr=batch.lr)
    for _ in range(batch.steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(batch.inputs), batch.labels).backward()
        opt.step()
    return model


def _arrays(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: p.detach().numpy().copy() for k, p in model.named_parameters()}


def _local_dp(model: nn.Module, batch: ClientBatch, seed: int) -> dict[str, np.ndarray]:
    """The client trains, then the local-DP mod clips and noises the reply (Flower's noise)."""
    sent = _arrays(model)
    from flwr.supercore.task_identity import TaskIdentity  # messages need a sender identity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in sent.items()}),
                          "config": ConfigRecord({"server-round": 1})})  # fmt: skip
    msg = Message(content, dst_node_id=1, message_type="train")

    def train(m: Message, ctx: Context) -> Message:
        trained = _arrays(_sgd(model, batch))
        arrays = ArrayRecord({k: Array(v) for k, v in trained.items()})
        metrics = MetricRecord({"num-examples": len(batch.labels)})
        reply = RecordDict({"arrays": arrays, "metrics": metrics})
        return Message(reply, reply_to=m)

    ctx = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    np.random.seed()  # Flower's LocalDpMod draws from numpy's global generator: OS entropy
    reply = make_local_dp_mod(**LOCAL_DP)(msg, ctx, train)
    if reply.has_error():
        raise RuntimeError(f"local DP mod failed: {reply.error.reason}")
    return {k: a.numpy() - sent[k] for k, a in reply.content["arrays"].items()}


def _dp_sgd(model: nn.Module, batch: ClientBatch, epsilon: float, seed: int) -> nn.Module:
    """Opacus DP-SGD on the batch: every example in each step (rate 1 on the client's batch)."""
    data = TensorDataset(batch.inputs, batch.labels)
    dp = DpSgd(noise_multiplier=dp_sgd_noise(epsilon), max_grad_norm=CLIP)
    from flwr_privacy.dp.sgd import train_dp_sgd

    model.train()
    train_dp_sgd(model, data, nn.functional.cross_entropy, dp, epochs=batch.steps,
                 batch_size=len(batch.labels), lr=batch.lr, seed=seed)  # fmt: skip
    return model


def client_update(
    model: nn.Module, batch: ClientBatch, protection: str, *, seed: int
) -> dict[str, np.ndarray]:
    """The update (new - old, per parameter name) the server can compute from the reply."""
    old = _arrays(model)
    if protection == "plaintext":
        new = _arrays(_sgd(model, batch))
    elif protection == "local-dp":
        return _local_dp(model, batch, seed)
    elif protection.startswith("dp-sgd-eps"):
        new = _arrays(_dp_sgd(model, batch, float(protection.removeprefix("dp-sgd-eps")), seed))
    elif protection == "he":
        new = ciphertext_as_numbers(_encrypted(_arrays(_sgd(model, batch))), old)
    else:
        raise ValueError(f"protection {protection!r}; allowed: {PROTECTIONS}")
    return {k: new[k] - old[k] for k in old}


@lru_cache(maxsize=1)
def _keys() -> Any:
    return keygen("ckks")


def _encrypted(arrays: dict[str, np.ndarray]) -> Any:
    """The client's reply under server-blind CKKS (he.clip 4.0, weight 1): a Payload."""
    return encrypt_arrays(arrays, bundle=_keys().for_client(), weight=1.0,
                          settings=EncodeSettings())  # fmt: skip


def ciphertext_as_numbers(payload: Any, like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The only numbers the blind server has: ciphertext bytes mapped to [-1, 1], laid out
    as the model (repeated if short). Not a decryption: no key, no plaintext."""
    raw = np.frombuffer(b"".join(payload.chunks), dtype=np.uint8)
    total = sum(a.size for a in like.values())
    values = (np.resize(raw, total).astype(np.float32) - 127.5) / 127.5
    out, at = {}, 0
    for k, a in like.items():
        out[k] = values[at : at + a.size].reshape(a.shape)
        at += a.size
    return out


def he_view(model: nn.Module) -> dict[str, Any]:
    """Exactly what the server holds of one CKKS reply, and what a decryption attempt gives."""
    payload = _encrypted(_arrays(model))
    server_bundle = _keys().public_only()
    try:
        decrypt_arrays(payload, bundle=server_bundle)
        attempt = "decrypted (BUG: the server bundle must not hold a secret key)"
    except Exception as e:  # the expected outcome: the server has no secret key
        attempt = f"{type(e).__name__}: {e}"
    h = payload.header
    n = h.layout.size
    return {
        "chunks": len(payload.chunks),
        "bytes": sum(len(c) for c in payload.chunks),
        "parameters": n,
        "values-per-ciphertext": int(h.params["poly-modulus-degree"]) // 2,
        "expected-chunks": math.ceil(n / (int(h.params["poly-modulus-degree"]) // 2)),
        "header": {
            "scheme": h.scheme,
            "params": h.params,
            "fingerprint": h.fingerprint,
            "layout-names": list(h.layout.names),
            "weight": h.weight,
            "clipped": h.clipped,
            "extra": h.extra,
        },  # fmt: skip
        "server-bundle-is-private": server_bundle.is_private,
        "decrypt-attempt": attempt,
    }
