"""Multi-label mosaics built from single-label 28x28 images (the offline datasets digits-mosaic, fashion-mosaic).

Each mosaic is a GRID x GRID grid of 28-pixel cells (56x56, one channel) holding 1..MAX_ITEMS items (count uniform)
drawn with replacement from its split's pool, in distinct random cells, the other cells black. Its labels are the
set of classes present (an item class drawn twice is one label). Everything is drawn from one seeded
RandomState, so a build is deterministic; splits come from disjoint source pools. Built arrays are cached as .npz with
their SHA-256 and rebuilt when the checksum does not match.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path

import numpy as np

from bench.errors import UserError
from bench.records import atomic_write

GRID = 2
CELL = 28
MAX_ITEMS = 4
MOSAICS = {"train": 4000, "val": 1000, "test": 1000}


def split_pools(labels: np.ndarray, per_class: dict[str, int], rng: np.random.RandomState,
                num_classes: int = 10) -> dict[str, np.ndarray]:
    """Disjoint index pools per split, `per_class[split]` items of each class, drawn without replacement."""
    pools: dict[str, list[np.ndarray]] = {name: [] for name in per_class}
    for cls in range(num_classes):
        members = rng.permutation(np.nonzero(labels == cls)[0])
        if len(members) < sum(per_class.values()):
            raise UserError(f"class {cls} has {len(members)} source images, fewer than {sum(per_class.values())}")
        start = 0
        for name, count in per_class.items():
            pools[name].append(members[start:start + count])
            start += count
    return {name: np.sort(np.concatenate(parts)) for name, parts in pools.items()}


def build_mosaics(items: np.ndarray, item_labels: np.ndarray, pool: np.ndarray, count: int,
                  rng: np.random.RandomState, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """`count` mosaics from the items in `pool`: uint8 (count, 1, 56, 56) images, float32 (count, C) labels."""
    side = GRID * CELL
    images = np.zeros((count, 1, side, side), dtype=np.uint8)
    labels = np.zeros((count, num_classes), dtype=np.float32)
    for i in range(count):
        num_items = rng.randint(1, MAX_ITEMS + 1)
        cells = rng.choice(GRID * GRID, size=num_items, replace=False)
        sources = rng.choice(pool, size=num_items, replace=True)
        for cell, source in zip(cells, sources, strict=True):
            row, col = divmod(int(cell), GRID)
            images[i, 0, row * CELL:(row + 1) * CELL, col * CELL:(col + 1) * CELL] = items[source]
            labels[i, item_labels[source]] = 1.0
    return images, labels


def arrays_checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the arrays in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def cached_build(path: Path, build) -> tuple[dict[str, np.ndarray], str]:
    """The arrays stored at `path` if their checksum matches, else `build()` written there atomically."""
    if path.exists():
        try:
            with np.load(path) as stored:
                arrays = {name: stored[name] for name in stored.files if name != "sha256"}
                recorded = str(stored["sha256"]) if "sha256" in stored.files else ""
            if recorded and arrays_checksum(arrays) == recorded:
                return arrays, recorded
        except (OSError, ValueError, EOFError):
            pass  # unreadable cache: rebuilt below
    arrays = build()
    checksum = arrays_checksum(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, sha256=np.array(checksum), **arrays)
    atomic_write(path, buffer.getvalue())
    return arrays, checksum


def native_size(dataset: str, image_size: int | None) -> None:
    """Mosaics come at their native 56 x 56; UserError for any other size."""
    if image_size not in (None, 0, GRID * CELL):
        raise UserError(f"{dataset} images are {GRID * CELL}x{GRID * CELL}; image_size={image_size} is not supported")


def mosaic_splits(arrays: dict[str, np.ndarray], class_names: list[str], mean: float, std: float):
    """`Splits` of built mosaic arrays ({split}_images, {split}_labels)."""
    import torch

    from bench.dataset import Split, Splits

    def split(name: str) -> Split:
        return Split(torch.from_numpy(arrays[f"{name}_images"]), arrays[f"{name}_labels"])

    return Splits(train=split("train"), val=split("val"), test=split("test"), class_names=class_names,
                  mean=(mean,), std=(std,))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format, optionally gzipped): uint8 images (N, 28, 28) or labels (N,)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            data = stream.read()
    except (OSError, EOFError) as error:
        raise UserError(f"cannot read IDX file {path}: {error}") from None
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise UserError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise UserError(f"IDX file {path} is truncated: {body.size} bytes of data for shape {shape}")
    return body.reshape(shape)
