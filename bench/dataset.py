"""The dataset plugin contract.

A dataset is a subclass of `Dataset` in a file under `datasets/`. `load` returns `Splits`: images and *full* labels
for train, val and test. The observation protocol (which training labels are seen) is applied by `bench`, not by the
plugin, so every dataset gets the same, seeded label draws; a plugin whose prepared files already hold the observed
matrices of the reference preprocessing returns them in `Splits.observed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch


@dataclass
class Split:
    """One split. images: uint8 tensor N x channels x H x W (or an image store with `shape`, `__getitem__(indices)`
    and `batches(order, batch_size)`, see bench.prepared.ImageStore); labels: float32 N x C full labels in {0, 1};
    known: optional N x C mask of the annotated entries (partially annotated evaluation sets)."""

    images: torch.Tensor
    labels: np.ndarray
    known: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Splits:
    """The three splits of a dataset, plus what the trainer needs to read its images.

    observed: optional precomputed observed matrices {(protocol, label_seed): N_train+N_val x C}, rows in the order
              train then val; when absent, bench draws them (see `bench.observation`).
    """

    train: Split
    val: Split
    test: Split
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    observed: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class Dataset:
    """Base class of every dataset plugin. Subclasses set the class attributes and implement `load`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    train_flip: ClassVar[bool] = True
    """Random horizontal flip in training (METHODS_SPEC §1.4); off where flipping changes what an image shows."""
    defaults: ClassVar[dict[str, float | int | str]] = {}
    """Training defaults on this dataset: lr, batch_size, epochs, backbone, head_lr_mult, weights."""
    needs_data_dir: ClassVar[bool] = False

    def load(self, data_dir: Path | None, cache_dir: Path, image_size: int | None = None) -> Splits:
        """Return the splits. `cache_dir` is a folder the plugin may use to keep what it built; `image_size` (side
        in pixels) asks for resized images, None for the dataset's default."""
        raise NotImplementedError

    def fingerprint(self, data_dir: Path | None, cache_dir: Path) -> str:
        """A short string that changes whenever the data `load` returns would change (used in the run key)."""
        raise NotImplementedError
