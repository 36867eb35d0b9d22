"""The report from hand-written records: numbers, emphasis, failures, missing seeds, settings never mixed."""

import csv
import io
import random

import pytest

from bench import registry
from bench.report import leaderboard_markdown, table_export, write_report
from bench.spec import make_spec
from bench.versions import code_version


def record(variant, seed, test_map, *, status="done", protocol="single-positive", dataset="digits-mosaic",
           stale=False, source=None):
    spec = make_spec(dataset, variant, seed, protocol=protocol)
    current = code_version(registry.method_class(spec.method), registry.dataset_class(dataset))
    result = {"run_key": f"{variant}-{seed}-{protocol}-{status}-{stale}", "spec": spec.to_dict(), "status": status,
              "variant": spec.variant, "code_version": "0ld" if stale else current,
              "hparam_source": source or {"kind": "defaults"}, "label_checksum": "abc", "data_fingerprint": "v1:x",
              "image_shape": [1, 56, 56]}
    if status == "done":
        result.update(test_map=test_map, val_map=test_map, train_seconds=2.0, peak_memory_mb=100.0,
                      per_class_ap={str(d): test_map for d in range(10)},
                      curve=[{"epoch": 1, "train_loss": 1.0, "val_map": test_map}])
    else:
        result["error"] = "non-finite loss in epoch 2, batch 7"
    return result


@pytest.fixture
def records():
    return ([record("full", s, 95.0 + s) for s in range(3)]
            + [record("an", s, m) for s, m in enumerate([80.0, 82.0, 84.0])]
            + [record("ls", s, m) for s, m in enumerate([85.0, 87.0])]          # seed 2 missing
            + [record("em", 0, 90.0), record("em", 1, 0, status="failed"), record("em", 2, 88.0)]
            + [record("wan", 0, 0, status="failed")]
            + [record("an+boostlu", s, m) for s, m in enumerate([81.0, 81.5, 86.0])])


def rows_of(markdown: str, section: int = 0) -> dict[str, list[str]]:
    table = markdown.split("\n## ")[1 + section].split("\n\n")[1]
    return {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:])}


def test_cells_mean_std_seeds_and_emphasis(records):
    rows = rows_of(leaderboard_markdown(records))
    assert rows["full (oracle)"][:2] == ["96.00 ± 1.00", "3"]          # the oracle is never bold
    assert rows["an"][:2] == ["82.00 ± 2.00", "3"]
    assert rows["ls"][:2] == ["<u>86.00 ± 1.41</u>", "2"]                # missing seed: n = 2; second best
    assert rows["em"][:2] == ["**89.00 ± 1.41 (1 failed)**", "2"]        # best partial-label method
    assert rows["an+boostlu"][0] == "82.83 ± 2.75"
    assert rows["wan"][:2] == ["failed", "0"]                            # a failure, never a number
    assert list(rows)[0] == "full (oracle)"


def test_second_best_is_underlined_and_average_rank():
    records = [record("an", 0, 70.0), record("ls", 0, 75.0), record("em", 0, 80.0)]
    rows = rows_of(leaderboard_markdown(records))
    assert rows["em"] == ["**80.00**", "1", "1.00"]
    assert rows["ls"] == ["<u>75.00</u>", "1", "2.00"]
    assert rows["an"] == ["70.00", "1", "3.00"]


def test_protocols_are_never_mixed_and_stale_records_are_left_out(records):
    other = [record("an", s, 50.0 + s, protocol="partial-0.5") for s in range(2)]
    stale = [record("an", 0, 10.0, stale=True)]
    board = leaderboard_markdown(records + other + stale)
    assert "## partial-0.5, clean validation" in board and "## single-positive, clean validation" in board
    assert rows_of(board, 0)["an"][0] == "**50.50 ± 0.71**"  # alone in its table
    assert rows_of(board, 1)["an"][0] == "82.00 ± 2.00"
    assert "1 record(s) made by other code versions are not shown" in board


def test_failed_runs_are_listed(records):
    board = leaderboard_markdown(records)
    assert "### Failed runs" in board and "non-finite loss in epoch 2, batch 7" in board


def test_paired_boostlu_difference(records):
    board = leaderboard_markdown(records)
    pairs = board.split("### BoostLU, paired per seed")[1].split("\n\n")[1]
    assert "| an       | digits-mosaic | +0.83" in pairs and "| 2/3 " in pairs


def test_ablation_table_when_its_cells_exist(records):
    board = leaderboard_markdown(records)
    ablation = board.split("### BoostLU ablation")[1].split("\n\n")[1].splitlines()
    assert any("| an " in line and "82.00 ± 2.00" in line and "86.10" in line for line in ablation)
    assert any("ll-r+boostlu " in line and "–" in line and "89.27" in line for line in ablation)


def test_published_numbers_and_delta(records, monkeypatch):
    import bench.report as report

    table = report.published()
    patched = {**table, "main": {**table["main"], "values": {"an": {"digits-mosaic": 81.0}}}}
    monkeypatch.setattr(report, "published", lambda: patched)
    rows = rows_of(leaderboard_markdown(records))
    assert rows["an"][:3] == ["82.00 ± 2.00", "81.00", "+1.00"]
    assert rows["ls"][1:3] == ["–", "–"]


def test_no_published_numbers_is_said(records):
    assert "No published numbers exist for digits-mosaic" in leaderboard_markdown(records)


def test_same_records_same_bytes_whatever_their_order(records):
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    assert leaderboard_markdown(shuffled) == leaderboard_markdown(records)


def test_tuned_rows_are_separate(records):
    tuned = [record("an", 0, 90.0, source={"kind": "tuned", "study": "s", "n_trials": 20})]
    rows = rows_of(leaderboard_markdown(records + tuned))
    assert rows["an (tuned)"][:2] == ["**90.00**", "1"] and rows["an"][:2] == ["82.00 ± 2.00", "3"]
    assert "tuned: 20 trials, study s" in leaderboard_markdown(records + tuned)


def test_csv_and_latex_exports(records):
    rows = list(csv.DictReader(io.StringIO(table_export(records, "csv"))))
    an = next(r for r in rows if r["method"] == "an")
    assert an["digits-mosaic"] == "82.00 ± 2.00" and an["seeds"] == "3"
    latex = table_export(records, "latex")
    assert r"\textbf{89.00 $\pm$ 1.41 (1 failed)}" in latex and r"\begin{tabular}" in latex


def test_write_report_writes_per_class_csv_and_curves(records, tmp_path):
    written = write_report(records, tmp_path / "leaderboard.md", tmp_path / "results")
    names = {p.name for p in written}
    assert "val_map_curves.png" in names
    per_class = next(p for p in written if p.name.startswith("per_class_ap_digits-mosaic"))
    table = list(csv.reader(per_class.open()))
    assert table[0] == [""] + [str(d) for d in range(10)]
    assert ["an"] + ["82.00"] * 10 in table
    assert "(results/figures/val_map_curves.png)" in (tmp_path / "leaderboard.md").read_text()
