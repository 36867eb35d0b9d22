"""The dataset plugin contract.

A dataset is a subclass of `Dataset` in a file under `datasets/`. `load` returns `Splits`: images and *full* labels
for train, val and test. The observation protocol (which training labels are seen) is applied by `bench`, not by the
plugin, so every dataset gets the same, seeded label draws (`bench.rundata.observed_labels`). A plugin says in which
row order the reference preprocessing draws (`Splits.draw_order`), so that the draw is the reference's bit for bit,
and a dataset with real partial annotations returns them in `Splits.annotated`.
"""

from __future__ import annotations

from dataclasses import dataclass
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

    draw_order: optional position of every train and val row (train first) in the row order the reference draws
                observed labels in (for the real datasets: the official train split's order); None = as stored.
    annotated:  optional N_train+N_val x C matrix of the dataset's own partial annotations (1 / 0 / -1, train rows
                first), used by the protocol 'annotated'.
    """

    train: Split
    val: Split
    test: Split
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    draw_order: np.ndarray | None = None
    annotated: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class Dataset:
    """Base class of every dataset plugin. Subclasses set the class attributes and implement `load`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    train_flip: ClassVar[bool] = True
    """Random horizontal flip in training, as the papers do; off where flipping changes what an image shows."""
    defaults: ClassVar[dict[str, float | int | str]] = {}
    """Defaults of the trainer's hyperparameters on this dataset (`bench.spec.TRAINING_HPARAMS`: lr, lr_schedule,
    batch_size, epochs, head_lr_mult, backbone, ...); the trainer's own defaults fill in the rest."""
    default_weights: ClassVar[str | None] = None
    """Backbone weights of the default backbone ('imagenet' for the real datasets), None for random init."""
    needs_data_dir: ClassVar[bool] = False
    """True when the data lives in a folder the user gives (`--data`), e.g. a prepared real dataset."""
    takes_data_dir: ClassVar[bool] = False
    """True when `--data` is optional (a folder of source files other than the default one)."""
    frequency_groups: ClassVar[int] = 0
    """Groups of classes by annotation frequency the report gives mAPs for (`bench.groups`; OpenImages: 5), from
    the dataset's own training annotations; 0 for none."""
    recipes: ClassVar[tuple[str, ...]] = ("defaults",)
    """The recipes a grid runs on this dataset unless told otherwise (`bench.recipes`): `paper` where the source
    papers published their settings, `tuned` and `defaults` where none did."""

    @classmethod
    def available(cls, data_dir: Path | None = None) -> bool:
        """True when the dataset can be loaded here (its files are present); a grid's optional datasets join it only
        then."""
        return True

    def load(self, data_dir: Path | None, cache_dir: Path, image_size: int | None = None) -> Splits:
        """Return the splits. `cache_dir` is a folder the plugin may use to keep what it built; `image_size` (side
        in pixels) asks for resized images, None for the dataset's default."""
        raise NotImplementedError

    def fingerprint(self, data_dir: Path | None, cache_dir: Path) -> str:
        """A short string that changes whenever the data `load` returns would change (used in the run key)."""
        raise NotImplementedError
