"""Pooled features of a frozen backbone, computed once and cached: the inputs of Cole et al.'s linear setting
(`freeze_backbone`) and of LinearInit's first stage.

The backbone runs in eval mode (batch-norm statistics as loaded), on the normalised images without augmentation
(as the reference extracts its features once), and its feature maps are averaged over space: N x C_f per split,
stored as N x C_f x 1 x 1 so that the CAM head (a 1x1 convolution) and the global average pool apply unchanged.
With the head being linear, GAP(head(F)) = head(GAP(F)): training on pooled features is training the same
classifier as end to end, with the backbone fixed.

The cache file is named by everything the features depend on: the dataset and its content fingerprint, the
backbone, its weights (a weights file by its content hash), the image size, the seed of a random initialisation,
the torch version and the numerics (`bench.numerics`: thread count and instruction set on CPU change the last
bits). It holds a SHA-256 checksum of the features, checked on every load: a damaged file is rebuilt, never used.
The checksum goes into the run's record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from bench import checkpoints, registry
from bench.errors import UserError
from bench.model import build_backbone
from bench.numerics import describe, numerics
from bench.rundata import RunData, batches, normalise

EXTRACT_BATCH = 256
EXTRACTIONS = {"count": 0}
"""How many times this process ran a backbone to extract features (the tests check that a cache hit runs none)."""


@dataclass
class Features:
    """Pooled features of the three splits (float32, N x C_f x 1 x 1, on the training device) and their checksum."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    checksum: str

    @property
    def channels(self) -> int:
        return self.train.shape[1]


def checksum(tensors: list[torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_path(spec, cache_dir: Path) -> Path:
    """The cache file of `spec`'s features (see the module's docstring for what names it)."""
    dataset = registry.dataset_class(spec.dataset)()
    data_dir = Path(spec.data_dir) if spec.data_dir else None
    weights = spec.weights or f"random-seed{spec.seed}"
    if spec.weights and Path(spec.weights).is_file():
        weights = "file-" + hashlib.sha256(Path(spec.weights).read_bytes()).hexdigest()[:16]
    parts = [spec.dataset, dataset.fingerprint(data_dir, cache_dir), spec.backbone, weights, str(spec.image_size),
             torch.__version__.split("+")[0], describe(numerics(spec.device))]
    name = hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]
    return cache_dir / "features" / f"{spec.dataset}-{spec.backbone}-{name}.pt"


def pooled_features(spec, data: RunData, cache_dir: Path, device: torch.device) -> Features:
    """The pooled features of `spec`'s backbone on `data`'s three splits: from the cache when its file is there and
    its checksum holds, else extracted (and cached)."""
    path = cache_path(spec, cache_dir)
    cached = cached_features(path, device)
    if cached is not None:
        return cached
    with torch.random.fork_rng(devices=[]):  # the run's own random state stays as if the cache had been hit
        torch.manual_seed(spec.seed)  # a randomly initialised backbone gets the run's seed
        backbone = build_backbone(spec.backbone, data.train_images.shape[1], spec.weights).to(device)
    backbone = backbone.to(memory_format=torch.channels_last).eval()
    splits = [extract(backbone, images, data, device)
              for images in (data.train_images, data.val_clean.images, data.test.images)]
    EXTRACTIONS["count"] += 1
    features = Features(*splits, checksum(splits))
    checkpoints.save({"train": splits[0].cpu(), "val": splits[1].cpu(), "test": splits[2].cpu(),
                      "checksum": features.checksum}, path)
    return features


def cached_features(path: Path, device: torch.device) -> Features | None:
    """The features in the cache file `path`, or None when it is absent, unreadable or fails its checksum."""
    if not path.exists():
        return None
    try:
        stored = checkpoints.load(path)
        splits = [stored["train"], stored["val"], stored["test"]]
    except (UserError, KeyError, TypeError):
        return None
    if checksum(splits) != stored.get("checksum"):
        return None
    return Features(*(split.to(device) for split in splits), stored["checksum"])


@torch.inference_mode()
def extract(backbone: torch.nn.Module, images, data: RunData, device: torch.device) -> torch.Tensor:
    """N x C_f x 1 x 1 spatial means of `backbone`'s feature maps of `images` (uint8, normalised here)."""
    order = torch.arange(len(images))
    pooled = []
    for _, batch in batches(images, order.to(device) if isinstance(images, torch.Tensor) else order, EXTRACT_BATCH):
        maps = backbone(normalise(batch.to(device), data.mean, data.std))
        pooled.append(maps.float().mean(dim=(2, 3), keepdim=True))
    return torch.cat(pooled).contiguous()
