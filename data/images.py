"""Image datasets for the DP-CNN task: MNIST, Fashion-MNIST (IDX files) and CIFAR-10.

MNIST and Fashion-MNIST are read from a folder holding the four publisher
files, gzipped or not (``train-images-idx3-ubyte[.gz]`` ...): the layout of
``../shared/data/mnist`` and of Debian's ``dataset-fashion-mnist`` package. With
``download=True`` and no files there, torchvision downloads them into
``<root>/<MNIST|FashionMNIST>/raw`` first. CIFAR-10 goes through torchvision's
``CIFAR10`` (its python-pickle batches under ``root``, ``download=True`` to fetch).
Images come back as uint8 arrays N x C x H x W; normalization is the task's job.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from data.nsl_kdd import DataFileError

IDX_SETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
DATASETS = (*IDX_SETS, "cifar10")
SPLIT_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_MAGIC = {0x00000803: 3, 0x00000801: 1}  # unsigned-byte IDX: 3-D images, 1-D labels


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file of unsigned bytes (``.gz`` or plain) as a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic not in IDX_MAGIC:
        raise DataFileError(f"{path}: not an unsigned-byte IDX file (magic {magic:#010x})")
    ndim = IDX_MAGIC[magic]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape))
    if len(raw) - offset != expected:
        raise DataFileError(
            f"{path}: header says {shape} ({expected} bytes), file holds {len(raw) - offset}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


def _find(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _idx_split(name: str, root: Path, train: bool, download: bool) -> tuple[np.ndarray, ...]:
    stems = SPLIT_FILES[train]
    folders = (root, root / IDX_SETS[name])
    found = [next((p for f in folders if (p := _find(f, s))), None) for s in stems]
    if None in found and download:
        import torchvision

        getattr(torchvision.datasets, IDX_SETS[name])(str(root), train=train, download=True)
        found = [_find(root / IDX_SETS[name], s) for s in stems]
    if None in found:
        missing = [s for s, p in zip(stems, found, strict=True) if p is None]
        raise DataFileError(
            f"{name}: {missing} (optionally .gz) not found in {root} or {root / IDX_SETS[name]}; "
            "point the data root at the folder with the four IDX files, or allow download"
        )
    images, labels = (read_idx(p) for p in found)  # type: ignore[arg-type]
    if len(images) != len(labels):
        raise DataFileError(f"{name}: {len(images)} images but {len(labels)} labels in {root}")
    return images[:, None, :, :], labels.astype(np.int64)


def load_images(
    name: str, root: str | Path, *, train: bool, download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N x C x H x W, labels int64) of one split of ``name``."""
    if name not in DATASETS:
        raise ValueError(f"unknown image dataset {name!r}; choose one of {', '.join(DATASETS)}")
    root = Path(root).expanduser()
    if name in IDX_SETS:
        return _idx_split(name, root, train, download)
    import torchvision

    try:
        data = torchvision.datasets.CIFAR10(str(root), train=train, download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise DataFileError(
            f"cifar10: no CIFAR-10 batches under {root} ({e}); allow download or point the "
            "data root at the folder holding cifar-10-batches-py"
        ) from e
    return np.ascontiguousarray(data.data.transpose(0, 3, 1, 2)), np.asarray(data.targets)


def generated_images(
    n: int, *, channels: int, size: int, num_classes: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """GENERATED stand-in images for tests: a class-dependent bright square on noise.

    Learnable (the square's position encodes the label), so a test can check
    that a model trains, without any real dataset.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n)
    x = rng.integers(0, 60, (n, channels, size, size)).astype(np.uint8)
    side = size // 5  # a 4 x 4 grid of positions: up to 16 classes
    for i, label in enumerate(y):
        r, c = divmod(int(label) % 16, 4)
        x[i, :, r * side + 2 : r * side + 2 + side, c * side + 2 : c * side + 2 + side] = 220
    return x, y.astype(np.int64)
