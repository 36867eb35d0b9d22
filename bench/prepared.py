"""Real benchmark datasets at training time: reading a prepared folder, and the image pipeline.

A prepared folder is what `pamlbench data prepare` wrote (see `bench.preparation`, which also states Cole et al.'s
split rule): a manifest with checksums of every file, the label matrix, the split rows and the image paths, and
optionally a decoded-image cache `images_<size>.u8`. A run's data fingerprint is the hash of the manifest's
checksums, so the run key changes with anything the preparation wrote.

No label draw is stored: the trainer draws the observed labels of any label seed on the official train split's rows
in their official order (`Splits.draw_order`), exactly as Cole et al.'s `generate_observed_labels.py` does before
the split, so every draw is bit-identical to theirs.

Images (as the papers): resized to size x size with PIL bilinear (aspect ratio not kept), ImageNet normalisation, random
horizontal flip in training (done by the trainer). From the cache, batches are slices of a memory map; without it,
JPEGs are decoded by DataLoader workers into pinned memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from bench.dataset import Dataset, Split, Splits
from bench.errors import UserError

FORMAT = 2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def decode(path: str, size: int) -> np.ndarray:
    """uint8 3 x size x size image (PIL bilinear resize, RGB); UserError naming an unreadable or truncated file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB").resize((size, size), Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
    except FileNotFoundError:
        raise UserError(f"image {path} is listed in the annotations but absent: restore it from the official "
                        "download") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise UserError(f"image {path} is unreadable or truncated ({error}): re-download it") from None



class ImageStore:
    """The images of one split of a prepared dataset, as uint8 3 x size x size tensors, read on demand.

    With the decoded cache, a batch is a slice of a memory map (no decoding); otherwise JPEGs are decoded by
    `workers` DataLoader processes into pinned memory (on CUDA). It stays on the host; the trainer moves batches.
    """

    def __init__(self, paths: list[str], size: int, cache: np.ndarray | None, workers: int, pin: bool = False):
        self.paths, self.size, self.cache, self.workers, self.pin = paths, size, cache, workers, pin

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), 3, self.size, self.size)

    def to(self, device: torch.device) -> ImageStore:
        self.pin = torch.device(device).type == "cuda"
        return self

    def __getitem__(self, indices) -> torch.Tensor:
        indices = np.asarray(torch.as_tensor(indices).cpu())
        if self.cache is not None:
            order = np.argsort(indices)
            batch = np.empty((len(indices), 3, self.size, self.size), dtype=np.uint8)
            batch[order] = self.cache[indices[order]]
            return torch.from_numpy(batch)
        return torch.from_numpy(np.stack([decode(self.paths[i], self.size) for i in indices]))

    def batches(self, order: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        """uint8 batches in `order`, decoded ahead by worker processes."""
        chunks = [order[i:i + batch_size].cpu() for i in range(0, len(order), batch_size)]
        if self.cache is not None or self.workers == 0:
            yield from (self[chunk] for chunk in chunks)
            return
        loader = torch.utils.data.DataLoader(_Decoder(self), batch_size=None, sampler=chunks,
                                             num_workers=self.workers, pin_memory=self.pin, persistent_workers=False)
        yield from loader


class _Decoder(torch.utils.data.Dataset):
    def __init__(self, store: ImageStore) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, indices) -> torch.Tensor:
        return torch.from_numpy(np.stack([decode(self.store.paths[i], self.store.size) for i in indices]))


def read_manifest(data_dir: Path, name: str) -> dict:
    path = data_dir / "manifest.json"
    if not path.exists():
        raise UserError(f"{data_dir} is not a prepared {name} folder (no manifest.json): run `pamlbench data "
                        f"prepare {name} --raw DIR --out {data_dir}`")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"malformed manifest {path}: {error}; prepare the dataset again") from None
    if manifest.get("dataset") != name or manifest.get("format") != FORMAT:
        raise UserError(f"{data_dir} holds a prepared {manifest.get('dataset')!r} (format {manifest.get('format')}),"
                        f" not {name!r} (format {FORMAT})")
    return manifest


@dataclass
class OfficialData:
    """What a plugin reads from the official files: official train and test splits, rows in reference order.

    labels: N x C, 1 = positive, 0 = negative; with `annotated` (OpenImages), -1 = not annotated.
    observed_train: real partial annotations of the train split (1 / 0 / -1), when the dataset has them.
    """

    class_names: list[str]
    image_root: Path
    train_images: list[str]
    train_labels: np.ndarray
    test_images: list[str]
    test_labels: np.ndarray
    observed_train: np.ndarray | None = None


class PreparedDataset(Dataset):
    """Base of the real datasets: `read_official` parses the official files; loading reads the prepared folder."""

    needs_data_dir = True
    train_flip = True
    default_weights = "imagenet"
    image_size: ClassVar[int] = 448
    expected_sizes: ClassVar[tuple[int, int, int] | None] = None
    """(train, val, test) sizes of Cole et al.'s table; a prepared folder that differs is reported."""

    def read_official(self, raw: Path) -> OfficialData:
        raise NotImplementedError

    @classmethod
    def available(cls, data_dir: Path | None = None) -> bool:
        """True when `data_dir` holds a prepared folder of this dataset."""
        return data_dir is not None and (Path(data_dir) / "manifest.json").exists()

    def load(self, data_dir: Path | None, cache_dir: Path, image_size: int | None = None) -> Splits:
        manifest = read_manifest(data_dir, self.name)
        size = image_size or self.image_size
        try:
            labels = np.load(data_dir / "labels.npy")
            rows = np.load(data_dir / "splits.npz")
            paths = (data_dir / "images.txt").read_text().splitlines()
            annotated = np.load(data_dir / "annotated.npy") if manifest["annotated"] else None
        except (OSError, KeyError, ValueError) as error:
            raise UserError(f"prepared folder {data_dir} is incomplete or malformed ({error}); prepare it again") \
                from None
        root = Path(manifest["image_root"])
        cache_file = data_dir / f"images_{size}.u8"
        cache = np.load(cache_file, mmap_mode="r") if cache_file.exists() else None
        workers = min(8, os.cpu_count() or 1)

        def split(name: str) -> Split:
            index = rows[name]
            store = ImageStore([str(root / paths[i]) for i in index], size,
                               cache[index[0]:index[-1] + 1] if cache is not None and len(index) else None, workers)
            known = labels[index] != -1 if (labels == -1).any() else None
            return Split(store, (labels[index] == 1).astype(np.float32), known)

        return Splits(train=split("train"), val=split("val"), test=split("test"),
                      class_names=list(manifest["class_names"]), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                      draw_order=rows["official"], annotated=annotated)

    def fingerprint(self, data_dir: Path | None, cache_dir: Path) -> str:
        manifest = read_manifest(data_dir, self.name)
        digest = hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode())
        return digest.hexdigest()[:16]
