"""The dataset card printed by `pamlbench data info`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench import observation, registry
from bench.rundata import load_splits, observed_labels
from bench.spec import trainer_defaults


def size_check(plugin, sizes: dict[str, int]) -> str:
    """One line comparing the split sizes with Cole et al.'s table."""
    expected = getattr(plugin, "expected_sizes", None)
    if not expected:
        return "  split sizes: no reference sizes for this dataset"
    got = (sizes["train"], sizes["val"], sizes["test"])
    if got == tuple(expected):
        return f"  split sizes match Cole et al.'s table: {'/'.join(map(str, expected))}"
    return (f"  split sizes DIFFER from Cole et al.'s table: {'/'.join(map(str, got))} here, "
            f"{'/'.join(map(str, expected))} expected (a partial or different download?)")


def dataset_card(name: str, data_dir: str | None, cache_dir: Path, label_seed: int = observation.COLE_SEED) -> str:
    """Sizes, classes, positives per image, images without labels, checksums."""
    plugin = registry.load_dataset(name)
    splits = load_splits(name, data_dir, str(cache_dir))
    protocol = "annotated" if splits.annotated is not None else "single-positive"
    observed = observed_labels(splits, protocol, label_seed)
    lines = [f"{name}: {plugin.summary}",
             f"  classes ({splits.num_classes}): {', '.join(splits.class_names)}",
             f"  image shape: {tuple(splits.train.images.shape[1:])} (channels, height, width)"]
    for split_name in ("train", "val", "test"):
        labels = getattr(splits, split_name).labels
        positives = labels.sum(1)
        lines.append(f"  {split_name:5s}: {len(labels):6d} images, {positives.mean():.2f} positives per image, "
                     f"{int((positives == 0).sum())} without any positive")
    lines.append(size_check(plugin, {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)}))
    lines += [f"  {protocol} labels (seed {label_seed}, train + val rows): {int((observed == 1).sum())} observed "
              f"positives, "
              f"checksum {observation.checksum(observed)}",
              f"  data fingerprint: {plugin.fingerprint(Path(data_dir) if data_dir else None, cache_dir)}",
              f"  training defaults: {', '.join(f'{k}={v}' for k, v in trainer_defaults(name).items())}",
              f"  horizontal flip in training: {'yes' if plugin.train_flip else 'no'}"]
    per_class = np.asarray(splits.train.labels).sum(0).astype(int)
    counts = ", ".join(f"{c}={n}" for c, n in zip(splits.class_names, per_class, strict=True))
    lines.append(f"  train positives per class: {counts}")
    return "\n".join(lines)
