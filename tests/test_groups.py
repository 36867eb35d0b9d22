"""OpenImages' annotation-frequency groups: the grouping rule on matrices whose answer is known by hand, the group
mAPs of the report, and a run on the OpenImages fixture that records its classes' groups."""

import numpy as np
import pytest
from fixtures import openimages_tree
from test_report import record

from bench.cli.main import main
from bench.groups import frequency_groups, group_maps
from bench.records import read_records
from bench.report.leaderboard import leaderboard_markdown


def annotations(counts: list[int], rows: int = 12) -> np.ndarray:
    """A rows x len(counts) matrix whose column c has counts[c] annotated entries (positives and negatives)."""
    matrix = np.zeros((rows, len(counts)))
    for column, count in enumerate(counts):
        matrix[:count, column] = [1 if row % 2 else -1 for row in range(count)]
    return matrix


def test_classes_are_sorted_by_annotations_and_cut_into_equal_groups():
    #                    class:  0  1  2  3  4  5  6  7  8  9
    groups = frequency_groups(annotations([9, 1, 5, 3, 7, 2, 10, 4, 8, 6]), 5)
    assert groups == [5, 1, 3, 2, 4, 1, 5, 2, 4, 3]


def test_ties_keep_the_class_order_and_uneven_counts_fill_the_first_groups():
    assert frequency_groups(annotations([4, 4, 4, 4]), 2) == [1, 1, 2, 2]      # a stable sort
    assert frequency_groups(annotations([3, 1, 2, 5, 4, 0, 6]), 5) == [2, 1, 2, 4, 3, 1, 5]  # sizes 2, 2, 1, 1, 1
    assert frequency_groups(np.zeros((4, 3)), 5) == [1, 2, 3]                  # 0 annotations still count


def test_ties_among_many_classes_keep_the_class_order():
    """Ties that straddle the group boundaries, past the 16 elements below which numpy sorts stably whatever the
    kind: only a stable sort keeps the class order here."""
    counts = [(column * 7) % 2 for column in range(60)]                    # 0, 1, 0, 1, ...: 30 classes each
    groups = frequency_groups(annotations(counts), 5)
    zeros, ones = list(range(0, 60, 2)), list(range(1, 60, 2))
    expected = {column: 1 + position // 12 for position, column in enumerate(zeros + ones)}
    assert groups == [expected[column] for column in range(60)]
    assert groups[:6] == [1, 3, 1, 3, 1, 3] and groups[24:26] == [2, 4] and groups[48:50] == [3, 5]
    assert all(type(group) is int for group in groups)


def test_group_map_is_the_mean_ap_of_its_classes():
    assert group_maps({"a": 10.0, "b": 30.0, "c": 50.0}, {"a": 1, "b": 1, "c": 2}) == {1: 20.0, 2: 50.0}


def test_the_report_gives_group_maps_over_seeds():
    runs = []
    for seed, (a, b, c) in enumerate([(10.0, 30.0, 50.0), (20.0, 40.0, 70.0)]):
        entry = record("an", seed, 40.0)
        entry["class_groups"] = {"0": 1, "1": 1, "2": 2, **{str(d): 2 for d in range(3, 10)}}
        per_class = {**{str(d): 0.0 for d in range(10)}, "0": a, "1": b, "2": c}
        entry["selections"]["clean"]["per_class_ap"] = per_class
        runs.append(entry)
    board = leaderboard_markdown(runs)
    row = next(line for line in board.split("#### mAP by annotation frequency")[1].splitlines()
               if line.startswith("| an "))
    # group 1: (10 + 30) / 2 = 20 and (20 + 40) / 2 = 30 -> 25; group 2: 50 / 8 and 70 / 8 -> 7.5; all: 40
    assert [c.strip() for c in row.strip("|").split("|")] == ["an", "digits-mosaic", "2", "25.00", "7.50", "40.00",
                                                               "–"]


@pytest.mark.slow
def test_an_openimages_run_records_its_classes_groups(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    openimages_tree(tmp_path / "raw")
    assert main(["data", "prepare", "openimages", "--raw", "raw", "--out", "oi"]) == 0
    assert main(["run", "--method", "an", "--dataset", "openimages", "--data", "oi", "--protocol", "annotated",
                 "--set", "backbone=small-cnn", "--set", "image_size=32", "--set", "epochs=1", "--set",
                 "batch_size=4", "--no-tracking", "--results", "results", "--cache", "cache"]) == 0
    [run] = read_records(tmp_path / "results")
    # training annotations per class in the fixture's train rows: cat fewest, then dog, then car
    assert run["class_groups"] == {"cat": 1, "dog": 2, "car": 3}
    assert "#### mAP by annotation frequency" in leaderboard_markdown([run])


def test_the_published_openimages_groups_and_their_context_are_shown_beside_ours():
    from bench.plan.papers import papers
    from bench.report.frame import records_frame
    from bench.report.sections import group_rows

    published = papers()["groups"]["values"]
    assert published["ll-r+boostlu"]["openimages"] == [79.28, 80.81, 83.32, 85.63, 90.27, 83.86]
    assert all(len(values["openimages"]) == 6 for values in published.values())
    runs = []
    for seed in range(2):
        entry = record("ll-r", seed, 40.0)
        entry["class_groups"] = {str(d): 1 + d % 5 for d in range(10)}
        runs.append(entry)
    _, rows = group_rows(records_frame(runs), runs)
    assert rows[0][-1] == "–" and len(rows) == 1  # a mosaic: nothing published, no context
    on_openimages = [{**entry, "spec": {**entry["spec"], "dataset": "openimages"}} for entry in runs]
    _, rows = group_rows(records_frame(on_openimages), on_openimages)
    assert rows[0][:3] == ["ll-r", "openimages", "2"]
    assert rows[0][-1] == "77.76 / 79.07 / 81.94 / 84.51 / 89.36 / 82.53"
    context = [row for row in rows if row[0] == "P-ASL (published only)"]
    assert context == [["P-ASL (published only)", "openimages", "–", *["–"] * 6,
                        "73.19 / 78.61 / 85.11 / 87.70 / 90.61 / 83.03"]]
    assert len(rows) == 5  # ours and the table's four methods pamlbench does not run
