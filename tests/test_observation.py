import numpy as np
import pytest

from bench.errors import UserError
from bench.observation import checksum, observe, parse_protocol, partial, single_positive


def cole_generate_observed(label_matrix: np.ndarray, seed: int) -> np.ndarray:
    """Direct transcription of Cole et al.'s preproc/generate_observed_labels.py (num_pos=1, num_neg=0)."""
    rng = np.random.RandomState(seed)
    label_matrix = 2 * label_matrix - 1
    obs = np.zeros_like(label_matrix)
    for i in range(label_matrix.shape[0]):
        idx_pos = np.nonzero(label_matrix[i, :] == 1.0)[0]
        rng.shuffle(idx_pos)
        obs[i, idx_pos[:1]] = 1.0
        idx_neg = np.nonzero(label_matrix[i, :] == -1.0)[0]
        rng.shuffle(idx_neg)
        obs[i, idx_neg[:0]] = -1.0
    return obs


@pytest.fixture
def labels() -> np.ndarray:
    rng = np.random.default_rng(7)
    matrix = (rng.random((300, 12)) < 0.25).astype(np.float64)
    matrix[5] = 0  # a row with no positive
    return matrix


def test_one_true_positive_per_image(labels):
    observed = single_positive(labels, 1200)
    has_positive = labels.sum(1) > 0
    assert np.array_equal((observed == 1).sum(1), has_positive.astype(int))
    assert np.all(labels[observed == 1] == 1)
    assert not np.any(observed == -1)
    assert np.all(observed[5] == 0)


@pytest.mark.parametrize("seed", [1200, 3])
def test_draw_equals_cole_generator(labels, seed):
    assert np.array_equal(single_positive(labels, seed), cole_generate_observed(labels, seed))


def test_draw_is_seeded(labels):
    assert np.array_equal(single_positive(labels, 1), single_positive(labels, 1))
    assert not np.array_equal(single_positive(labels, 1), single_positive(labels, 2))


def test_negative_shuffle_consumes_random_numbers(labels):
    """Skipping the (empty) negative draw would change later rows: the reference's second shuffle matters."""
    rng = np.random.RandomState(1200)
    skipped = np.zeros_like(labels)
    for i in range(labels.shape[0]):
        positives = np.nonzero(labels[i] == 1)[0]
        rng.shuffle(positives)
        skipped[i, positives[:1]] = 1
    assert not np.array_equal(skipped, single_positive(labels, 1200))


def test_int_labels_keep_dtype(labels):
    assert single_positive(labels.astype(int), 1200).dtype == np.int64


def test_partial_keeps_fraction_of_true_labels(labels):
    observed = partial(labels, 0.25, seed=0)
    assert np.all((observed != 0).sum(1) == 3)
    seen = observed != 0
    assert np.array_equal(observed[seen] == 1, labels[seen] == 1)


def test_protocol_parsing_and_checksum(labels):
    assert parse_protocol("single-positive") is None
    assert parse_protocol("partial-0.1") == pytest.approx(0.1)
    for bad in ("partial-0", "partial-1.5", "single", "partial-x"):
        with pytest.raises(UserError):
            parse_protocol(bad)
    first, second = observe(labels, "single-positive", 1200), observe(labels, "single-positive", 1201)
    assert checksum(first) == checksum(first.copy())
    assert checksum(first) != checksum(second)


def test_partial_draw_is_seeded_exact_and_float32(labels):
    observed = partial(labels, 0.25, seed=4)
    assert observed.dtype == np.float32 and np.array_equal(observed, partial(labels, 0.25, seed=4))
    assert not np.array_equal(observed, partial(labels, 0.25, seed=5))
    seen = observed != 0
    assert set(np.unique(observed)) == {-1.0, 0.0, 1.0}
    assert np.all(observed[seen & (labels == 1)] == 1) and np.all(observed[seen & (labels == 0)] == -1)


def test_partial_keeps_at_least_one_label_per_image(labels):
    assert np.all((partial(labels, 0.01, seed=0) != 0).sum(1) == 1)  # round(0.12) = 0 labels, raised to 1


def test_protocol_boundaries_and_message():
    assert parse_protocol("annotated") is None
    assert parse_protocol("partial-1") == parse_protocol("partial-1.0") == 1.0
    assert parse_protocol("partial-.5") == 0.5
    for bad in ("partial-0.0", "partial-.0", "partial-1.01", "Annotated"):
        with pytest.raises(UserError, match=r"use single-positive, annotated or partial-<fraction in \(0,1\]>"):
            parse_protocol(bad)


def test_observe_dispatches_each_protocol_with_its_seed(labels):
    single = observe(labels, "single-positive", 3)
    assert single.dtype == np.float32 and np.array_equal(single, single_positive(labels, 3))
    some = observe(labels, "partial-0.5", 3)
    assert some.dtype == np.float32 and np.array_equal(some, partial(labels, 0.5, 3))
    with pytest.raises(UserError) as refused:
        observe(labels, "annotated", 3)
    assert str(refused.value) == ("protocol 'annotated' needs a dataset with its own partial annotations "
                                  "(e.g. openimages)")


def test_checksum_is_sha256_of_the_shape_and_int8_values():
    import hashlib

    observed = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    expected = hashlib.sha256(b"(2, 3)" + bytes([1, 0, 255, 0, 1, 0])).hexdigest()[:16]
    assert checksum(observed) == expected and len(expected) == 16
    assert checksum(np.zeros((2, 6))) != checksum(np.zeros((3, 4)))  # same values, another shape


def test_the_draw_follows_the_dataset_s_draw_order_and_maps_back_to_its_rows(labels):
    """A real dataset stores its rows in Cole et al.'s split order but draws in the official file's order: row r of
    the stored train + val rows is row draw_order[r] of the draw."""
    import torch

    from bench.dataset import Split, Splits
    from bench.rundata import observed_labels

    rows = len(labels)
    draw_order = np.random.default_rng(3).permutation(rows)
    stored = np.empty_like(labels)
    stored[np.arange(rows)] = labels[draw_order]                    # the rows as the dataset stores them
    images = torch.zeros(rows, 1, 2, 2, dtype=torch.uint8)
    split = rows * 3 // 4
    splits = Splits(Split(images[:split], stored[:split]), Split(images[split:], stored[split:]),
                    Split(images[:2], stored[:2]), [str(c) for c in range(labels.shape[1])], (0.5,), (0.25,),
                    draw_order=draw_order)
    drawn = observed_labels(splits, "single-positive", 1200)
    assert np.array_equal(drawn, single_positive(labels, 1200)[draw_order])
    assert not np.array_equal(drawn, single_positive(stored, 1200))   # the stored order would draw otherwise
    with pytest.raises(UserError, match=r"^protocol 'annotated' needs a dataset with its own partial annotations "
                                        r"\(e.g. openimages\)$"):
        observed_labels(splits, "annotated", 1200)
