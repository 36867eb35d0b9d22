"""Everything one run reads, assembled once before training: the dataset's splits, the observed labels, and the
targets of every evaluation.

There is one label-draw path, `observed_labels`: the observation protocol runs on the train and val rows in the
dataset's draw order (`Splits.draw_order`). For the prepared real datasets that is the official train split's row
order, which is where Cole et al.'s generator draws, so every label seed gives their draw bit for bit; for the
mosaics it is simply train then val. The `annotated` protocol uses a dataset's own partial annotations instead
(OpenImages).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from bench import observation, registry
from bench.dataset import Splits
from bench.errors import UserError
from bench.groups import frequency_groups

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(requested: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; 'cuda' without a GPU is an error."""
    if requested not in DEVICES:
        raise UserError(f"unknown device {requested!r}; use auto, cpu or cuda")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA GPU is visible; use --device cpu or auto")
    return requested


@lru_cache(maxsize=4)
def load_splits(dataset: str, data_dir: str | None, cache_dir: str, image_size: int = 0) -> Splits:
    """The dataset's splits, loaded once per process (a benchmark trains many runs on the same data)."""
    plugin = registry.load_dataset(dataset)
    return plugin.load(Path(data_dir) if data_dir else None, Path(cache_dir), image_size or None)


def observed_labels(splits: Splits, protocol: str, label_seed: int) -> np.ndarray:
    """The observed matrix of the train and val rows (train first): the protocol's draw in the dataset's draw
    order, or the dataset's own annotations for protocol 'annotated'."""
    if protocol == "annotated":
        if splits.annotated is None:
            raise UserError("protocol 'annotated' needs a dataset with its own partial annotations (e.g. openimages)")
        return splits.annotated
    trainval = np.concatenate([splits.train.labels, splits.val.labels])
    order = splits.draw_order if splits.draw_order is not None else np.arange(len(trainval))
    in_draw_order = np.empty_like(trainval)
    in_draw_order[order] = trainval
    return observation.observe(in_draw_order, protocol, label_seed)[order]


def batches(images, order: torch.Tensor, batch_size: int):
    """(indices, uint8 batch) in `order`: slices of an in-memory tensor, or an image store's decoded batches."""
    chunks = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    if isinstance(images, torch.Tensor):
        yield from ((chunk, images[chunk]) for chunk in chunks)
    else:
        yield from zip(chunks, images.batches(order, batch_size), strict=True)


@dataclass
class Evaluation:
    """One evaluation set: its images and, per selection target, the binary targets (and annotated mask)."""

    images: torch.Tensor
    targets: np.ndarray
    known: np.ndarray | None = None


@dataclass
class RunData:
    """Everything the training loop reads, already on the device.

    train_targets: what the method sees: the observed labels, or the full labels for the oracle.
    false_negatives: N_train x C bool mask of the entries that are truly positive but not observed positive under
        the draw: what a model trained with assumed negatives can memorise. The same mask whatever the method
        trains on, so the full-label oracle shows how a model that is told the truth scores them.
    class_groups: each class's annotation-frequency group (`bench.groups`), for datasets that report them.
    val_clean / val_observed: validation with full labels, and with the observed labels only.
    """

    train_images: torch.Tensor
    train_targets: torch.Tensor
    false_negatives: torch.Tensor
    val_clean: Evaluation
    val_observed: Evaluation
    test: Evaluation
    mean: torch.Tensor
    std: torch.Tensor
    train_flip: bool
    label_checksum: str
    expected_positives: float
    class_names: list[str]
    class_groups: list[int] | None = None


def prepare_data(dataset: str, data_dir: str | None, image_size: int, protocol: str, label_seed: int,
                 trains_on_full_labels: bool, cache_dir: Path, device: torch.device) -> RunData:
    """Load the splits, draw the observed labels and put everything the loop reads on `device`."""
    splits = load_splits(dataset, data_dir, str(cache_dir), image_size)
    observed = observed_labels(splits, protocol, label_seed)
    num_train = len(splits.train)
    train_observed, val_observed = observed[:num_train], observed[num_train:]
    train_targets = splits.train.labels if trains_on_full_labels else train_observed
    false_negatives = (splits.train.labels == 1) & (train_observed != 1)
    group_count = registry.dataset_class(dataset).frequency_groups
    class_groups = (frequency_groups(splits.annotated[:num_train], group_count)
                    if group_count and splits.annotated is not None else None)
    shape = (1, -1, 1, 1)
    return RunData(
        train_images=splits.train.images.to(device),
        train_targets=torch.as_tensor(train_targets, dtype=torch.float32, device=device).clone(),
        false_negatives=torch.as_tensor(false_negatives, device=device),
        val_clean=Evaluation(splits.val.images.to(device), splits.val.labels, splits.val.known),
        val_observed=Evaluation(splits.val.images.to(device), (val_observed == 1).astype(np.float32)),
        test=Evaluation(splits.test.images.to(device), splits.test.labels, splits.test.known),
        mean=torch.tensor(splits.mean, device=device).view(shape) * 255,
        std=torch.tensor(splits.std, device=device).view(shape) * 255,
        train_flip=registry.dataset_class(dataset).train_flip,
        label_checksum=observation.checksum(observed),
        expected_positives=float(splits.train.labels.sum(1).mean()), class_names=splits.class_names,
        class_groups=class_groups)


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
              flip_mask: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 -> normalised float (channels_last), flipping the rows where `flip_mask` is True."""
    batch = (images.float() - mean) / std
    if flip_mask is not None:
        batch = torch.where(flip_mask.view(-1, 1, 1, 1), batch.flip(3), batch)
    return batch.contiguous(memory_format=torch.channels_last)
