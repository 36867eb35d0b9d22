import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from bench.metrics import average_precision


def test_hand_computed_ap():
    # ranking: 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg): AP = 1/2 * 1 + 1/2 * 2/3
    scores = np.array([[0.9], [0.8], [0.7], [0.1]])
    targets = np.array([[1], [0], [1], [0]])
    assert average_precision(scores, targets)[0] == pytest.approx(0.5 + 1 / 3)


def test_ties_form_one_threshold():
    # two tied scores, one positive one negative, ranked first: precision 1/2 at recall 1/2, then 2/3 at recall 1
    scores = np.array([[0.9], [0.9], [0.5], [0.1]])
    targets = np.array([[1], [0], [1], [0]])
    assert average_precision(scores, targets)[0] == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_matches_sklearn_with_ties_and_all_negative_class():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, size=(200, 6)).astype(np.float32) / 20  # many ties
    targets = (rng.random((200, 6)) < 0.3).astype(int)
    targets[:, 4] = 0  # no positive at all
    ours = average_precision(scores, targets)
    for c in range(6):
        expected = 0.0 if c == 4 else average_precision_score(targets[:, c], scores[:, c])
        assert ours[c] == pytest.approx(expected, abs=1e-12)
    assert ours[4] == 0.0  # the class stays in the mean with AP 0


def test_targets_are_label_equal_one():
    scores = np.array([[0.9], [0.2]])
    assert average_precision(scores, np.array([[1], [-1]]))[0] == 1.0


def test_known_mask_restricts_each_class_to_its_annotated_images():
    """OpenImages-style evaluation: each class's AP over the images annotated for it, its recall divided by the
    annotated positives only; checked against sklearn on the masked rows."""
    rng = np.random.default_rng(3)
    scores = rng.random((60, 4))
    targets = (rng.random((60, 4)) < 0.3).astype(int)
    known = rng.random((60, 4)) < 0.6
    targets[~known & (rng.random((60, 4)) < 0.5)] = 1  # unannotated positives that must not count
    got = average_precision(scores, targets, known)
    for c in range(4):
        rows = known[:, c]
        assert got[c] == pytest.approx(average_precision_score(targets[rows, c], scores[rows, c]))
    assert not np.allclose(got, average_precision(scores, targets))  # the mask changes the answer
    assert np.array_equal(average_precision(scores, targets, known.astype(np.float32)), got)  # a 0/1 mask is a mask


def test_known_mask_class_without_annotated_positive_counts_zero():
    scores = np.array([[0.9, 0.2], [0.1, 0.8], [0.5, 0.5]])
    targets = np.array([[1, 1], [0, 0], [1, 0]])
    known = np.array([[True, False], [True, True], [True, True]])  # class 1: its only positive is unannotated
    assert average_precision(scores, targets, known).tolist() == [1.0, 0.0]
