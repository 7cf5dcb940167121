"""Gradient inversion by the server on one client's round update, under each protection.

Usage: python -m benchmarks.inversion [--models lenet dp-cnn] [--datasets mnist fashion-mnist]
       [--batch-sizes 1 4 16] [--trials 6 2 1] [--steps 1 5] [--iterations 300]
       [--protected-trials 2] [--real-model-trials 3] [--mnist-dir DIR] [--fashion-dir DIR]
       [--out FILE]

The server is honest-but-curious and attacks round 1: it sent a freshly initialized
model (seeded, public) and receives one client's reply after ``steps`` local SGD steps
(learning rate ``--lr``) on one batch of training images. The attack is
``flwr_privacy.attacks.inversion`` (DLG's L2 gradient matching, Geiping et al.'s
optimizer: signed Adam, TV, box constraints; labels from the last bias gradient).

Protections, as the server sees the reply:
- ``plaintext``: FedAvg; the reply is the trained model, so the update is exact.
- ``he``: server-blind CKKS (``flwr_privacy.he``): the reply is a tagged payload of
  ciphertexts under the clients' secret key, which the server does not hold. The attack is
  fed the only numbers it has: the ciphertext bytes read as values in [-1, 1].
- ``local-dp``: the toolkit's local-DP client mod at the app's defaults (epsilon 3,
  delta 1e-5, L2 clip 1.0, planned over 30 rounds): Flower's LocalDpMod clips the update
  and adds Gaussian noise.
- ``dp-sgd-eps{1,3,8}``: Opacus DP-SGD through ``flwr_privacy.dp.sgd`` on the batch
  (per-example clip 1.0, Poisson sampling at rate 1 on the client's batch), with the noise
  multiplier the accountant plans for the README's MNIST schedule (10 clients of 5,880
  images, batch 512: sample rate 1/12, 20 rounds x 12 steps, delta 1e-5, RDP).

Models: ``dp-cnn`` is the app's image model (tasks/dp_cnn.py: strided convs, GroupNorm,
tanh, max-pooling); ``lenet`` is DLG's LeNet (Zhu et al. 2019: three strided 5x5 convs with
sigmoid, one linear layer), a smooth model on which published attacks succeed.
Writes JSON (default benchmarks/results/inversion.json) and a PNG beside it.
"""

from __future__ import annotations

import argparse
import copy
import json
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from app.results import environment
from benchmarks.inversion_threats import PROTECTIONS, ClientBatch, client_update, he_view
from data.images import load_images
from flwr_privacy.attacks.inversion import InversionSettings, match_images, reconstruct
from tasks.dp_cnn import CNN, NORMALIZATION

SHAPE = (1, 28, 28)


def lenet() -> nn.Module:
    """DLG's LeNet for 28x28 gray images (Zhu et al. 2019, their Fig. 3 model)."""
    return nn.Sequential(
        nn.Conv2d(1, 12, 5, padding=2, stride=2), nn.Sigmoid(),
        nn.Conv2d(12, 12, 5, padding=2, stride=2), nn.Sigmoid(),
        nn.Conv2d(12, 12, 5, padding=2, stride=1), nn.Sigmoid(),
        nn.Flatten(), nn.Linear(12 * 7 * 7, 10),
    )  # fmt: skip


MODELS = {"lenet": lenet, "dp-cnn": lambda: CNN(1, 28, 10, group_norm=True)}


def images(dataset: str, root: str, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` training images in [0, 1] and their labels, drawn by ``seed``."""
    x, y = load_images(dataset, root, train=True)
    idx = np.random.default_rng(seed).choice(len(x), size=count, replace=False)
    return torch.tensor(x[idx], dtype=torch.float32) / 255.0, torch.tensor(y[idx])


def attack_cell(
    model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, dataset: str,
    protection: str, steps: int, args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    """One client batch through one protection and the server's attack; its scores."""
    (mean,), (std,) = NORMALIZATION[dataset]
    batch = ClientBatch(inputs=(pixels - mean) / std, labels=labels, lr=args.lr, steps=steps)
    start = time.perf_counter()
    update = client_update(copy.deepcopy(model), batch, protection, seed=secrets.randbits(62))
    bounds = (-mean / std, (1 - mean) / std)
    settings = InversionSettings(
        iterations=args.iterations, loss=args.loss, tv=args.tv, bounds=bounds, seed=args.seed
    )
    rec = reconstruct(model, update, lr=args.lr, steps=steps, batch_size=len(labels),
                      input_shape=SHAPE, num_classes=10, settings=settings)  # fmt: skip
    out = (rec.images * std + mean).clamp(0, 1)
    match = match_images(pixels, out)
    blank = torch.full_like(pixels, float(mean))  # knows nothing: the mean pixel everywhere
    base = match_images(pixels, blank)
    return {
        "psnr": match.psnr.tolist(), "ssim": match.ssim.tolist(),
        "baseline-psnr": base.psnr.tolist(), "baseline-ssim": base.ssim.tolist(),
        "labels-correct": sorted(labels.tolist()) == sorted(rec.labels.tolist()),
        "seconds": time.perf_counter() - start,
        "reconstructions": out[torch.as_tensor(match.assignment)],  # in the originals' order
    }  # fmt: skip


def plan(args: argparse.Namespace) -> list[tuple[str, str, int, int, int, str]]:
    """Cells: (model, dataset, batch, trials, steps, protection).

    Protections other than plaintext run on batch 1 and the first step count (a noisier
    update can only be harder). The app's dp-cnn runs batch 1, first step count, plaintext and
    DP-SGD at epsilon 3 only: it already resists the attack there (README).
    """
    cells = []
    for m in args.models:
        for d in args.datasets:
            for b, n in zip(args.batch_sizes, args.trials, strict=True):
                for s in args.steps:
                    for p in args.protections:
                        protected = p != "plaintext"
                        if protected and (b != 1 or s != args.steps[0]):
                            continue
                        if m == "dp-cnn" and (
                            p not in ("plaintext", "dp-sgd-eps3") or b != 1 or s != args.steps[0]
                        ):
                            continue
                        trials = min(n, args.protected_trials) if protected else n
                        trials = min(trials, args.real_model_trials) if m == "dp-cnn" else trials
                        cells.append((m, d, b, trials, s, p))
    return cells


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows, pictures = [], {}
    roots = {"mnist": args.mnist_dir, "fashion-mnist": args.fashion_dir}
    cells = plan(args)
    data = {d: images(d, roots[d], 64, args.seed) for d in args.datasets}
    print(f"{len(cells)} cells; model, dataset, batch, steps, protection: mean PSNR/SSIM")
    for m, d, b, trials, s, p in cells:
        torch.manual_seed(args.seed)
        model = MODELS[m]()
        scores: dict[str, list[Any]] = {}
        for t in range(trials):
            pixels, labels = data[d][0][t * b : (t + 1) * b], data[d][1][t * b : (t + 1) * b]
            cell = attack_cell(model, pixels, labels, d, p, s, args)
            if b == 1 and s == args.steps[0]:
                pictures[(m, d, p, t)] = (
                    pixels[0, 0].numpy(),
                    cell["reconstructions"][0, 0].numpy(),
                )
            for k, v in cell.items():
                if k != "reconstructions":
                    scores.setdefault(k, []).append(v)
        row = summarize(m, d, b, s, p, scores)
        rows.append(row)
        print(
            f"{m:<7} {d:<13} B={b:<2} steps={s} {p:<12} PSNR {row['psnr-mean']:6.2f} dB "
            f"SSIM {row['ssim-mean']:.3f}  (blank {row['baseline-psnr-mean']:.2f} dB)  "
            f"labels {row['labels-correct']}/{trials}  {row['seconds']:.0f}s",
            flush=True,
        )
    return rows, pictures


def summarize(
    m: str, d: str, b: int, s: int, p: str, scores: dict[str, list[Any]]
) -> dict[str, Any]:
    flat = {k: np.concatenate([np.ravel(v) for v in scores[k]]) for k in ("psnr", "ssim",
            "baseline-psnr", "baseline-ssim")}  # fmt: skip
    return {
        "model": m, "dataset": d, "batch-size": b, "local-steps": s, "protection": p,
        "trials": len(scores["psnr"]), "images": int(flat["psnr"].size),
        **{f"{k}-mean": float(v.mean()) for k, v in flat.items()},
        "psnr-std": float(flat["psnr"].std()), "psnr": flat["psnr"].tolist(),
        "ssim": flat["ssim"].tolist(),
        "labels-correct": int(sum(scores["labels-correct"])),
        "seconds": float(sum(scores["seconds"])),
    }  # fmt: skip


def figure(pictures: dict[Any, Any], he: dict[str, Any], path: Path, per: int) -> None:
    """Originals (top) and reconstructions per model/protection: batch 1, first step count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(m, p) for m, _, p, _ in pictures}, key=lambda k: (k[0] != "lenet",
                  PROTECTIONS.index(k[1])))  # fmt: skip
    datasets = sorted({d for _, d, _, _ in pictures}, key=["mnist", "fashion-mnist"].index)
    cols = [(d, t) for d in datasets for t in range(per)]
    fig, axes = plt.subplots(len(keys) + 1, len(cols), figsize=(1.1 * len(cols) + 2.2,
                             1.15 * (len(keys) + 1)), squeeze=False)  # fmt: skip
    for j, (d, t) in enumerate(cols):
        orig = next((v[0] for k, v in pictures.items() if k[1] == d and k[3] == t), None)
        for i, row in enumerate([None, *keys]):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            img = orig if row is None else pictures.get((row[0], d, row[1], t), (None, None))[1]
            if img is not None:
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            if j == 0:
                label = "original" if row is None else f"{row[0]}\n{row[1]}"
                if row is not None and row[1] == "he":
                    label += "\n(bytes as numbers)"
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(
        f"Server-side gradient inversion, batch 1, round 1.\nHE: the server holds "
        f"{he['chunks']} CKKS ciphertexts ({he['bytes']:,} B), no secret key",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """The command line's options (the notebook parses its parameters with it too)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"],
                        choices=["mnist", "fashion-mnist"])  # fmt: skip
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument(
        "--trials",
        type=int,
        nargs="+",
        default=[6, 2, 1],
        help="batches per batch size (same order as --batch-sizes)",
    )
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--protections", nargs="+", default=list(PROTECTIONS), choices=PROTECTIONS)
    parser.add_argument("--protected-trials", type=int, default=2)
    parser.add_argument("--real-model-trials", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--loss", default="l2", choices=["l2", "cosine"])
    parser.add_argument("--tv", type=float, default=1e-4)
    parser.add_argument("--lr", type=float, default=0.1, help="the client's local learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mnist-dir", default="../shared/data/mnist")
    parser.add_argument("--fashion-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/inversion.json"))
    return parser


def main() -> None:
    args = build_parser().parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows, pictures = run(args)
    he = he_view(MODELS[args.models[0]]())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"args": vars(args) | {"out": str(args.out)}, "environment": environment(),
            "he-server-view": he, "seconds": time.perf_counter() - start}  # fmt: skip
    args.out.write_text(json.dumps(meta | {"rows": rows}, indent=2))
    figure(pictures, he, args.out.with_suffix(".png"), per=min(4, max(args.trials)))
    print(
        f"HE: the server holds {he['chunks']} CKKS ciphertexts, {he['bytes']:,} bytes, "
        f"header {he['header']}; decrypting with its bundle: {he['decrypt-attempt']}"
    )
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
