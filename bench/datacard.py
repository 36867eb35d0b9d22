"""The dataset card printed by `pamlbench data info`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench import observation, registry
from bench.trainer import load_splits, observed_labels


def dataset_card(name: str, data_dir: str | None, cache_dir: Path, label_seed: int = observation.COLE_SEED) -> str:
    """Sizes, classes, positives per image, images without labels, checksums."""
    plugin = registry.load_dataset(name)
    splits = load_splits(name, data_dir, str(cache_dir))
    observed = observed_labels(splits, "single-positive", label_seed)
    lines = [f"{name}: {plugin.summary}",
             f"  classes ({splits.num_classes}): {', '.join(splits.class_names)}",
             f"  image shape: {tuple(splits.train.images.shape[1:])} (channels, height, width)"]
    for split_name in ("train", "val", "test"):
        labels = getattr(splits, split_name).labels
        positives = labels.sum(1)
        lines.append(f"  {split_name:5s}: {len(labels):6d} images, {positives.mean():.2f} positives per image, "
                     f"{int((positives == 0).sum())} without any positive")
    lines += [f"  single-positive draw (seed {label_seed}, train + val rows): {int((observed == 1).sum())} observed "
              f"positives, "
              f"checksum {observation.checksum(observed)}",
              f"  data fingerprint: {plugin.fingerprint(Path(data_dir) if data_dir else None, cache_dir)}",
              f"  training defaults: {', '.join(f'{k}={v}' for k, v in plugin.defaults.items())}",
              f"  horizontal flip in training: {'yes' if plugin.train_flip else 'no'}"]
    per_class = np.asarray(splits.train.labels).sum(0).astype(int)
    counts = ", ".join(f"{c}={n}" for c, n in zip(splits.class_names, per_class, strict=True))
    lines.append(f"  train positives per class: {counts}")
    return "\n".join(lines)
