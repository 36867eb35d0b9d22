import numpy as np
import pytest

import bench
from bench import mosaic

digits_mosaic = bench.registry.dataset_class("digits-mosaic")
module = __import__(digits_mosaic.__module__, fromlist=["build"])


@pytest.fixture(scope="module")
def built() -> dict[str, np.ndarray]:
    return module.build()


def test_build_is_deterministic(built):
    assert mosaic.arrays_checksum(module.build()) == mosaic.arrays_checksum(built)


def test_split_sizes_shapes_and_label_counts(built):
    for split, count in mosaic.MOSAICS.items():
        images, labels = built[f"{split}_images"], built[f"{split}_labels"]
        assert images.shape == (count, 1, 56, 56) and images.dtype == np.uint8
        assert labels.shape == (count, 10)
        assert set(np.unique(labels)) == {0.0, 1.0}
        assert labels.sum(1).min() >= 1 and labels.sum(1).max() <= mosaic.MAX_ITEMS


def test_labels_match_filled_cells(built):
    """Every mosaic has at least as many non-empty cells as labels, and at most MAX_ITEMS."""
    images, labels = built["train_images"], built["train_labels"]
    cells = images.reshape(len(images), 2, 28, 2, 28).max(axis=(2, 4)) > 0
    filled = cells.reshape(len(images), -1).sum(1)
    assert np.all(filled >= labels.sum(1)) and np.all(filled <= mosaic.MAX_ITEMS)


def test_source_pools_are_disjoint():
    _, digit_labels = module.load_source_digits()
    pools = mosaic.split_pools(digit_labels, module.POOL_PER_CLASS, np.random.RandomState(module.BUILD_SEED))
    names = list(pools)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            assert not set(pools[first]) & set(pools[second])
    assert np.bincount(digit_labels[pools["val"]]).tolist() == [100] * 10


def test_cache_roundtrip_and_corrupt_cache_is_rebuilt(tmp_path, built):
    path = tmp_path / f"digits-mosaic-{module.VERSION}.npz"
    arrays, checksum = mosaic.cached_build(path, module.build)
    assert checksum == mosaic.arrays_checksum(built)
    stored = dict(np.load(path))
    stored["train_labels"] = stored["train_labels"][::-1].copy()  # tamper: checksum no longer matches
    np.savez(path, **stored)
    _, again = mosaic.cached_build(path, module.build)
    assert again == checksum
    assert mosaic.arrays_checksum(dict((k, v) for k, v in np.load(path).items() if k != "sha256")) == checksum


def test_plugin_load_and_fingerprint(tmp_path):
    plugin = bench.load_dataset("digits-mosaic")
    splits = plugin.load(None, tmp_path)
    assert splits.num_classes == 10 and len(splits.train) == 4000 and len(splits.test) == 1000
    assert plugin.fingerprint(None, tmp_path).startswith(module.VERSION)
