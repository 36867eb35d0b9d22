"""Real benchmark datasets: the common prepared format, Cole et al.'s splits, and the image pipeline.

`pamlbench data prepare NAME --raw DIR --out DIR` asks the dataset plugin (a `PreparedDataset`) to read the official
files into `OfficialData` (the official train and test splits, in the reference preprocessing's row order), then
writes, into a temporary folder renamed to `--out` only when everything succeeded:

    manifest.json                  dataset, classes, split sizes, image root, checksums of every file below
    images.txt                     image paths relative to the image root, rows: train, val, test
    labels.npy                     full label matrix (C columns; 1 positive, 0 negative; OpenImages: -1 = not annotated)
    splits.npz                     row indices of train, val, test, and `official`: the official train split's row
                                   of every train and val row (the order the reference draws labels in)
    annotated.npy                  the dataset's own partial annotations of the train+val rows (OpenImages only)
    images_<size>.u8               optional decoded-image cache (--cache): uint8 N x 3 x size x size, memory-mapped

Splits (Cole et al.'s `datasets.py`): val = 20 % of the official train split, n_val = round(0.2 N),
perm = RandomState(1200).permutation(N), train = sort(perm[:N - n_val]), val = sort(perm[-n_val:]); test = the
official held-out split. No label draw is stored: the trainer draws the observed labels of any label seed on the
official train split's rows in their official order (`Splits.draw_order`), exactly as Cole et al.'s
`generate_observed_labels.py` does before the split, so every draw is bit-identical to theirs.

Images (as the papers): resized to size x size with PIL bilinear (aspect ratio not kept), ImageNet normalisation, random
horizontal flip in training (done by the trainer). From the cache, batches are slices of a memory map; without it,
JPEGs are decoded by DataLoader workers into pinned memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
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
VAL_FRACTION = 0.2
SPLIT_SEED = 1200


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


def cole_split(num_rows: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) row indices of the official train split, Cole et al.'s `datasets.py`."""
    num_val = int(np.round(VAL_FRACTION * num_rows))
    perm = np.random.RandomState(seed).permutation(num_rows)
    return np.sort(perm[:num_rows - num_val]), np.sort(perm[-num_val:]) if num_val else np.array([], dtype=int)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def _decode_chunk(args: tuple[list[str], int]) -> np.ndarray:
    paths, size = args
    return np.stack([decode(p, size) for p in paths]) if paths else np.zeros((0, 3, size, size), np.uint8)


def decode_all(paths: list[str], size: int, cache: Path | None) -> None:
    """Decode every image (to check it), writing them to the memory-mapped `cache` when given."""
    target = (np.lib.format.open_memmap(cache, mode="w+", dtype=np.uint8, shape=(len(paths), 3, size, size))
              if cache is not None else None)
    chunk = 64
    jobs = [(paths[i:i + chunk], size) for i in range(0, len(paths), chunk)]
    with ProcessPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, 8))) as pool:
        for number, images in enumerate(pool.map(_decode_chunk, jobs)):
            if target is not None:
                target[number * chunk:number * chunk + len(images)] = images
    if target is not None:
        target.flush()


def prepare(plugin: PreparedDataset, raw: Path, out: Path, *, cache_size: int | None = None,
            verify: bool = True) -> dict:
    """Read the official files of `plugin` under `raw` and write the prepared folder `out` (atomically)."""
    if not raw.is_dir():
        raise UserError(f"raw folder {raw} does not exist: point --raw at the unpacked official download")
    if out.exists():
        raise UserError(f"output folder {out} exists already: remove it or choose another --out")
    data = plugin.read_official(raw)
    num_classes = len(data.class_names)
    for split, labels, images in (("train", data.train_labels, data.train_images),
                                  ("test", data.test_labels, data.test_images)):
        if labels.ndim != 2 or labels.shape[1] != num_classes or len(labels) != len(images):
            raise UserError(f"{plugin.name}: {split} labels have shape {labels.shape} for {len(images)} images and "
                            f"{num_classes} classes: the annotation files do not match each other")
    train_rows, val_rows = cole_split(len(data.train_labels))
    paths = ([data.train_images[i] for i in train_rows] + [data.train_images[i] for i in val_rows]
             + data.test_images)
    missing = next((p for p in paths if not (data.image_root / p).exists()), None)
    if missing is not None:
        raise UserError(f"image {data.image_root / missing} is listed in the annotations but absent: restore it from "
                        "the official download")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        labels = np.concatenate([data.train_labels[train_rows], data.train_labels[val_rows], data.test_labels])
        np.save(staging / "labels.npy", labels)
        num_train, num_val = len(train_rows), len(val_rows)
        np.savez(staging / "splits.npz", train=np.arange(num_train), val=np.arange(num_train, num_train + num_val),
                 test=np.arange(num_train + num_val, len(labels)), official=np.concatenate([train_rows, val_rows]))
        (staging / "images.txt").write_text("\n".join(paths) + "\n")
        if data.observed_train is not None:
            annotated = np.concatenate([data.observed_train[train_rows], data.observed_train[val_rows]])
            np.save(staging / "annotated.npy", annotated.astype(np.float32))
        if verify or cache_size:
            decode_all([str(data.image_root / p) for p in paths], cache_size or 32,
                       staging / f"images_{cache_size}.u8" if cache_size else None)
        manifest = {
            "format": FORMAT, "dataset": plugin.name, "class_names": data.class_names,
            "image_root": str(data.image_root.resolve()),
            "splits": {"train": num_train, "val": num_val, "test": len(data.test_labels)},
            "annotated": data.observed_train is not None, "cache_size": cache_size,
            "files": {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if not p.name.endswith(".u8")},
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


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
