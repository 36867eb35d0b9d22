"""The report's statistics on hand-made numbers: intervals, the tie rule, groups and tied ranks."""

import math

import pytest

from bench.report import stats


def test_interval_is_students_t_half_width():
    values = [80.0, 82.0, 84.0]  # mean 82, sample sd 2
    assert stats.half_width(values) == pytest.approx(4.302653 * 2 / math.sqrt(3), rel=1e-6)
    assert math.isnan(stats.half_width([80.0]))
    assert stats.half_width([5.0, 5.0, 5.0]) == 0.0


def test_paired_differences_use_shared_seeds_only():
    assert stats.paired_differences({0: 3.0, 1: 5.0, 2: 9.0}, {1: 4.0, 2: 4.0, 3: 0.0}) == [1.0, 5.0]


def test_tie_when_the_paired_interval_contains_zero():
    base = {0: 80.0, 1: 82.0, 2: 84.0, 3: 81.0, 4: 83.0}
    noisy = {0: 81.0, 1: 81.5, 2: 85.0, 3: 80.0, 4: 83.5}  # differences +1, -0.5, +1, -1, +0.5: straddle 0
    steady = {seed: value + 0.4 for seed, value in base.items()}  # +0.4 on every seed: small but certain
    assert stats.tied(base, noisy)
    assert not stats.tied(base, steady)
    assert stats.excludes_zero([0.4] * 5) and not stats.excludes_zero([1.0, -0.5, 1.0, -1.0, 0.5])


def test_without_two_shared_seeds_only_equal_means_tie():
    assert stats.tied({0: 70.0}, {0: 70.0})
    assert not stats.tied({0: 70.0}, {0: 70.1})
    assert not stats.tied({0: 70.0, 1: 72.0}, {2: 70.0, 3: 72.5})


def test_groups_and_tied_ranks():
    results = {
        "a": {0: 90.0, 1: 91.0, 2: 92.0},
        "b": {0: 90.5, 1: 90.0, 2: 92.0},   # tied with a (differences +0.5, -1, 0... straddle 0)
        "c": {0: 85.0, 1: 86.0, 2: 87.0},   # clearly below a and b
        "d": {0: 80.0, 1: 81.0, 2: 82.0},   # clearly below c
    }
    assert stats.tie_groups(results) == [["a", "b"], ["c"], ["d"]]
    assert stats.tied_ranks(results) == {"a": 1.5, "b": 1.5, "c": 3.0, "d": 4.0}


def test_group_membership_is_judged_against_the_leader():
    # b ties a, c ties b but not a: c starts the second group
    results = {"a": {0: 10.0, 1: 10.0, 2: 10.0}, "b": {0: 9.5, 1: 10.3, 2: 9.3},
               "c": {0: 9.0, 1: 9.1, 2: 9.2}}
    assert stats.tied(results["a"], results["b"]) and stats.tied(results["b"], results["c"])
    assert not stats.tied(results["a"], results["c"])
    assert stats.tie_groups(results) == [["a", "b"], ["c"]]


def test_identical_results_are_tied_and_share_a_group():
    same = {0: 80.0, 1: 82.5, 2: 81.0}
    assert stats.tied(same, dict(same))
    assert stats.tie_groups({"a": same, "b": dict(same), "c": {0: 70.0, 1: 71.0, 2: 70.5}}) == [["a", "b"], ["c"]]
    assert stats.tied_ranks({"a": same, "b": dict(same)}) == {"a": 1.5, "b": 1.5}


def test_average_rank_is_the_mean_over_every_dataset():
    """Ranks 1 and 3 on one dataset, 2 and 2 ... on the other: the mean of each variant's ranks, not their sum,
    and not the last dataset's alone."""
    from bench.report.tables import Cell, average_ranks

    def cell(*values):
        return Cell(test_map=dict(enumerate(values)))

    table = {
        ("an", "one"): cell(90.0, 90.1, 90.2), ("ls", "one"): cell(80.0, 80.1, 80.3),
        ("em", "one"): cell(70.0, 70.1, 70.0),
        ("an", "two"): cell(60.0, 60.2, 60.1), ("ls", "two"): cell(70.0, 70.2, 70.1),
        ("em", "two"): cell(80.0, 80.1, 80.3),
        ("full", "one"): cell(99.0, 99.0, 99.0), ("full", "two"): cell(99.0, 99.0, 99.0),  # the oracle: unranked
    }
    assert average_ranks(table, ["one", "two"]) == {"an": 2.0, "ls": 2.0, "em": 2.0}
    table[("em", "two")] = cell(50.0, 50.1, 50.2)
    assert average_ranks(table, ["one", "two"]) == {"an": 1.5, "ls": 1.5, "em": 3.0}
    assert average_ranks(table, ["two"]) == {"ls": 1.0, "an": 2.0, "em": 3.0}


def test_the_mean_of_nothing_is_nan():
    import math

    assert math.isnan(stats.mean([]))


def test_two_differences_are_enough_for_an_interval():
    """t(0.975, 1) = 12.71: two close differences of 1.0 and 1.1 still exclude 0; one difference never does."""
    assert stats.excludes_zero([1.0, 1.1])
    assert not stats.excludes_zero([5.0]) and not stats.excludes_zero([])


def test_two_shared_seeds_are_judged_by_the_interval_not_the_means():
    """Paired differences -0.5 and -0.6 have an interval of ±0.64 around -0.55: tied, although the means differ."""
    assert stats.tied({0: 1.0, 1: 2.0}, {0: 1.5, 1: 2.6})
    assert not stats.tied({0: 1.0, 1: 2.0}, {0: 3.0, 1: 4.05})


def test_the_interval_factor_is_students_t_quantile_exactly():
    from scipy import stats as reference

    from bench.report.stats import t_quantile

    assert [t_quantile(n) for n in range(2, 101)] == [float(reference.t.ppf(0.975, n - 1)) for n in range(2, 101)]
    assert t_quantile(5) == pytest.approx(2.776, abs=1e-3)  # the textbook value for 4 degrees of freedom


def test_holm_adjusts_a_hand_worked_family():
    # p sorted 0.01, 0.02, 0.03, 0.04 of m = 4: 0.04, 0.06, 0.06 (made non-decreasing), 0.06
    adjusted = stats.holm([0.03, 0.01, 0.04, 0.02])
    assert adjusted == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert [p < 0.05 for p in adjusted] == [False, True, False, False]  # raw: all four below 0.05
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    nan_kept = stats.holm([0.01, math.nan, 0.04])
    assert nan_kept[0] == pytest.approx(0.02) and math.isnan(nan_kept[1]) and nan_kept[2] == pytest.approx(0.04)


def test_the_paired_t_test_on_hand_worked_numbers():
    # differences 1, 2, 3: mean 2, s 1, t = 2 / (1 / sqrt 3) = 3.4641 with 2 degrees of freedom: p = 0.0742
    assert stats.paired_p_value([1.0, 2.0, 3.0]) == pytest.approx(0.07418, abs=1e-4)
    assert stats.paired_p_value([0.4] * 5) == 0.0 and stats.paired_p_value([0.0] * 3) == 1.0
    assert math.isnan(stats.paired_p_value([1.0]))


def test_the_equivalence_test_on_hand_worked_numbers():
    # differences 0.1, -0.1, 0.2, 0.0: mean 0.05, s 0.12910, se 0.06455; with 3 degrees of freedom the
    # one-sided p-values are P(T < -(0.55)/0.06455) and P(T < (0.05 - 0.5)/0.06455), the larger 0.003
    assert stats.equivalence_p_value([0.1, -0.1, 0.2, 0.0]) == pytest.approx(0.00302, abs=1e-4)
    # a non-significant but wide difference is NOT equivalent: 1, -1, 2, -2 has p = 1 for a difference...
    wide = [1.0, -1.0, 2.0, -2.0]
    assert stats.paired_p_value(wide) == pytest.approx(1.0) and stats.equivalence_p_value(wide) > 0.05
    assert stats.equivalence_p_value([0.3] * 4) == 0.0 and stats.equivalence_p_value([0.6] * 4) == 1.0
    assert stats.equivalence_p_value([0.4, 0.6, 0.5], margin=1.0) < 0.05
