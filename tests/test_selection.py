"""The papers' stopping rules replayed on hand-made validation curves whose answers are known."""

import pytest

from bench.report.selection import ll_epoch, rule_selection, zhou_epoch


@pytest.mark.parametrize("curve, expected", [
    ([50, 60, 70, 65, 90], 3),    # stops at epoch 4 (no improvement): reports 3, never sees 90
    ([50, 60, 60, 90], 2),        # an equal value is no improvement
    ([50, 60, 70, 80], 4),        # never stops: the last epoch
    ([70, 60, 90], 1),            # the first epoch already
    ([42.0], 1),
])
def test_zhou_reports_the_best_epoch_before_the_first_one_that_does_not_improve(curve, expected):
    assert zhou_epoch(curve) == expected


@pytest.mark.parametrize("curve, expected", [
    ([50, 60, 58, 59, 70], 5),    # dips of less than 3 points do not stop it
    ([50, 60, 57, 90], 4),        # exactly 3 below the best does not stop it (the reference's test is > 3)
    ([50, 60, 56.9, 90], 2),      # 3.1 below stops it at epoch 3
    ([50, 60, 57.5, 56, 90], 2),  # 2.5 below goes on, 4 below stops: the best so far is epoch 2
    ([50, 60, 60, 55], 2),        # ties keep the earliest best
    ([80, 79, 78, 78.5], 1),      # never 3 below: the best over all epochs
])
def test_ll_reports_the_best_epoch_until_a_3_point_drop(curve, expected):
    assert ll_epoch(curve) == expected


def test_a_rule_reads_the_test_map_of_its_epoch():
    curve = [{"val_map": v, "test_map": t} for v, t in ((50, 48), (60, 59), (58, 61), (70, 66))]
    assert rule_selection(curve, "zhou") == {"epoch": 2, "val_map": 60, "test_map": 59}
    assert rule_selection(curve, "ll") == {"epoch": 4, "val_map": 70, "test_map": 66}
