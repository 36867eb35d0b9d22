"""The report from hand-written records: intervals, tie marks, three selections, failures, settings never mixed."""

import csv
import io
import json
import random

import pytest

from bench import registry
from bench.errors import UserError
from bench.execute.workspace import Workspace
from bench.records import read_record
from bench.report.leaderboard import leaderboard_markdown, table_export, write_report
from bench.spec import make_spec
from bench.versions import code_version


def record(variant, seed, test_map, *, status="done", protocol="single-positive", dataset="digits-mosaic",
           stale=False, source=None, observed=None, last=None, threads=2):
    """A finished (or failed) record; `observed` / `last` are the test mAP of those selections (default test_map);
    its recipe is its source's kind (defaults without a source)."""
    recipe = (source or {}).get("kind", "defaults")
    spec = make_spec(dataset, variant, seed, protocol=protocol, recipe="defaults" if recipe == "manual" else recipe)
    current = code_version(registry.method_class(spec.method), registry.dataset_class(dataset))
    result = {"format": 2, "run_key": f"{variant}-{seed}-{protocol}-{status}-{stale}-{threads}-{recipe}",
              "spec": spec.to_dict(), "status": status, "variant": spec.variant,
              "code_version": "0ld" if stale else current, "numerics": {"device": "cpu", "isa": "AVX2",
                                                                       "threads": threads},
              "cpu_model": "test CPU", "hparam_source": source or {"kind": "defaults"}, "label_checksum": "abc",
              "data_fingerprint": "v1:x", "image_shape": [1, 56, 56]}
    if status == "done":
        per_class = {str(d): test_map for d in range(10)}
        picks = {"clean": test_map, "observed": test_map if observed is None else observed,
                 "last": test_map if last is None else last}
        result.update(test_map=test_map, val_map=test_map, best_epoch=1, per_class_ap=per_class, train_seconds=2.0,
                      peak_memory_mb=100.0,
                      selections={name: {"epoch": 1, "val_map": value, "test_map": value, "per_class_ap": per_class}
                                  for name, value in picks.items()},
                      curve=[{"epoch": 1, "train_loss": 1.0, "val_map": test_map, "val_map_observed": test_map,
                              "test_map": test_map, "fn_memorised": 0.5}])
    else:
        result["error"] = "non-finite loss in epoch 2, batch 7"
    return result


@pytest.fixture
def records():
    return ([record("full", s, 95.0 + s) for s in range(3)]
            + [record("an", s, m, last=m - 10) for s, m in enumerate([80.0, 82.0, 84.0])]
            + [record("ls", s, m) for s, m in enumerate([85.0, 87.0])]          # seed 2 missing
            + [record("em", 0, 90.0), record("em", 1, 0, status="failed"), record("em", 2, 88.0)]
            + [record("wan", 0, 0, status="failed")]
            + [record("an+boostlu", s, m) for s, m in enumerate([81.0, 81.5, 86.0])])


def rows_of(markdown: str, table: int = 0) -> dict[str, list[str]]:
    """Rows of the `table`-th Markdown table (0: clean selection, 1: observed, 2: last epoch)."""
    tables = [block for block in markdown.split("\n\n") if block.startswith("| ")]
    return {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in tables[table].splitlines()[2:])}


def test_cells_are_mean_and_95_percent_interval(records):
    rows = rows_of(leaderboard_markdown(records))
    assert rows["full (oracle)"][:2] == ["96.00 ± 2.48", "3"]            # t(0.975, 2) * 1 / sqrt(3)
    assert rows["an"][0].strip("*<u>/") == "82.00 ± 4.97"
    assert rows["ls"][0].strip("*<u>/") == "86.00 ± 12.71"              # two seeds: t(0.975, 1) = 12.71
    assert rows["wan"][:2] == ["failed", "0"]                            # a failure, never a number
    assert "(1 failed)" in rows["em"][0]
    assert list(rows)[0] == "full (oracle)"


def five(values):
    return dict(enumerate(values))


@pytest.fixture
def separated():
    """a and b tied (paired differences straddle 0), c clearly below both, d clearly below c."""
    a = [90.0, 91.0, 92.0, 90.0, 91.0]
    b = [90.5, 90.2, 92.6, 89.4, 91.1]
    c = [85.0, 86.0, 87.0, 85.0, 86.5]
    d = [80.0, 81.0, 82.0, 80.0, 81.0]
    return [record(v, s, m) for v, values in (("em", a), ("ll-r", b), ("ls", c), ("an", d))
            for s, m in five(values).items()] + [record("full", s, 99.0) for s in range(5)]


def test_ties_inside_the_noise_share_the_best_mark_and_rank(separated):
    rows = rows_of(leaderboard_markdown(separated))
    assert rows["em"][0].startswith("**") and rows["ll-r"][0].startswith("**")   # tied: both best
    assert rows["ls"][0].startswith("<u>")                                       # second group
    assert not rows["an"][0].startswith(("**", "<u>"))
    assert not rows["full (oracle)"][0].startswith(("**", "<u>"))               # the oracle is never marked
    assert [rows[v][-1] for v in ("em", "ll-r", "ls", "an")] == ["1.50", "1.50", "3.00", "4.00"]
    assert rows["full (oracle)"][-1] == "–"


def test_three_selections_from_the_same_runs(records):
    board = leaderboard_markdown(records)
    assert "Selected by clean validation" in board and "Selected by observed validation" in board
    assert "Last epoch (no early stopping" in board
    assert rows_of(board, 0)["an"][0].strip("*<u>/").startswith("82.00")
    assert rows_of(board, 1)["an"][0].strip("*<u>/").startswith("82.00")
    assert rows_of(board, 2)["an"][0].strip("*<u>/").startswith("72.00")    # last epoch: 10 points lower


def test_protocols_and_numerics_are_never_mixed_and_stale_records_are_left_out(records):
    other = [record("an", s, 50.0 + s, protocol="partial-0.5") for s in range(2)]
    one_thread = [record("an", s, 60.0, threads=1) for s in range(2)]
    stale = [record("an", 0, 10.0, stale=True)]
    board = leaderboard_markdown(records + other + one_thread + stale)
    titles = [line for line in board.splitlines() if line.startswith("## ")]
    setting = "small-cnn, trained end to end; numerics: cpu AVX2"
    assert titles == [f"## partial-0.5 (label seed 1200), {setting}, 2 threads",
                      f"## single-positive (label seed 1200), {setting}, 1 thread",
                      f"## single-positive (label seed 1200), {setting}, 2 threads"]
    sections = board.split("\n## ")
    assert rows_of(sections[1])["an"][0] == "**50.50 ± 6.35**"   # alone in its table
    assert rows_of(sections[2])["an"][0] == "**60.00 ± 0.00**"
    assert rows_of(sections[3])["an"][0].strip("*<u>/") == "82.00 ± 4.97"
    assert "1 record(s) made by other code versions are not shown" in board


def test_each_dataset_in_its_own_regime_shares_a_table_and_other_epochs_get_their_own_column(records):
    fashion = [record("an", s, 70.0 + s, dataset="fashion-mosaic") for s in range(3)]
    board = leaderboard_markdown(records + fashion)
    assert board.count("\n## ") == 1
    assert rows_of(board)["an"][:2] == [rows_of(leaderboard_markdown(records))["an"][0], "**71.00 ± 2.48**"]
    short = [dict(record("an", s, 60.0), run_key=f"short-{s}") for s in range(2)]
    for entry in short:
        entry["spec"]["epochs"] = 3
    header = next(b for b in leaderboard_markdown(records + short).split("\n\n") if b.startswith("| method"))
    assert "| digits-mosaic (12 epochs) " in header and "| digits-mosaic (3 epochs) " in header


def test_regime_check_of_the_oracle_and_assume_negative():
    def curved(variant, seed, values):
        entry = record(variant, seed, values[-1])
        entry["curve"] = [{"epoch": e, "train_loss": 1.0, "val_map": v, "val_map_observed": v, "test_map": v,
                           "fn_memorised": 0.5} for e, v in enumerate(values, 1)]
        return entry

    oracle = [90, 95, 97, 97.2, 97.3, 97.4, 97.5, 97.6]  # gain over the last 2 epochs: 0.2
    an = [70, 80, 84, 83, 81, 80, 79, 78]  # peak 84 at epoch 3, last 78: drop 6
    board = leaderboard_markdown([curved("full", s, oracle) for s in range(2)] + [curved("an", s, an)
                                                                                   for s in range(2)])
    row = next(line for line in board.split("### Regime check")[1].splitlines() if line.startswith("| digits"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["digits-mosaic", "8", "+0.20", "yes", "6.00 (peak at epoch 3)", "yes"]
    assert "do not meet the converged regime's criteria" not in board
    steady = [70, 80, 84, 84, 84, 84, 84, 83]  # drop 1: does not memorise
    board = leaderboard_markdown([curved("full", s, oracle) for s in range(2)] + [curved("an", s, steady)
                                                                                   for s in range(2)])
    assert "The defaults records do not meet the converged regime's criteria on digits-mosaic" in board


def test_failed_runs_are_listed(records):
    board = leaderboard_markdown(records)
    assert "### Failed runs" in board and "non-finite loss in epoch 2, batch 7" in board


def test_paired_boostlu_difference_with_interval(records):
    board = leaderboard_markdown(records)
    pairs = board.split("### BoostLU, paired per seed (defaults recipe), clean selection")[1].split("\n\n")[1]
    row = next(line for line in pairs.splitlines() if line.startswith("| an "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # differences +1.0, -0.5, +2.0: mean +0.83, sd 1.26, half width 4.302653 * 1.258 / sqrt(3) = 3.13
    # t = 0.833 / (1.258 / sqrt 3) = 1.147 on 2 degrees of freedom: p = 0.370; a family of one: Holm leaves it
    assert cells == ["an", "digits-mosaic", "+0.83 ± 3.13", "2/3", "no", "0.370", "0.370", "no"]


def test_paired_boostlu_interval_that_excludes_zero():
    records = ([record("an", s, 80.0 + s) for s in range(5)]
               + [record("an+boostlu", s, 82.0 + s + (0.1 if s % 2 else -0.1)) for s in range(5)])
    board = leaderboard_markdown(records)
    pairs = board.split("### BoostLU, paired per seed (defaults recipe), clean selection")[1].split("\n\n")[1]
    row = next(line for line in pairs.splitlines() if line.startswith("| an "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # differences 1.9, 2.1, 1.9, 2.1, 1.9: mean +1.98, sd 0.11, half width 2.776445 * 0.1095 / sqrt(5) = 0.14
    assert cells[:5] == ["an", "digits-mosaic", "+1.98 ± 0.14", "5/5", "yes"]
    assert float(cells[5]) < 0.001 and cells[5] == cells[6] and cells[7] == "yes"


def test_ablation_table_when_its_cells_exist(records):
    board = leaderboard_markdown(records)
    ablation = board.split("### BoostLU ablation")[1].split("\n\n")[1].splitlines()
    assert any("| an " in line and "82.00 ± 4.97" in line and "86.10" in line for line in ablation)
    assert any("ll-r+boostlu " in line and "–" in line and "89.27" in line for line in ablation)


def test_table_numbers_count_failures_pair_only_shared_cells_and_name_the_oracle():
    from bench.report.frame import records_frame
    from bench.report.tables import cells, is_oracle, paired_boostlu

    runs = ([record("an", s, 80.0 + s) for s in range(3)] + [record("an+boostlu", s, 80.0 + s + (s > 0)) for s in
                                                           range(3)]
            + [record("ls+boostlu", 0, 70.0)]                              # no ls rows: nothing to pair it with
            + [record("em", 0, 0, status="failed"), record("em", 1, 0, status="failed")])
    frame = records_frame(runs)
    table = cells(frame, "test_map_clean")
    assert table[("em", "digits-mosaic")].failed == 2 and table[("em", "digits-mosaic")].n == 0
    [pair] = paired_boostlu(frame, "test_map_clean")
    assert (pair.method, pair.seeds, pair.positive) == ("an", 3, 2)  # a difference of exactly 0 is not positive
    assert is_oracle("full") and is_oracle("full+boostlu (lr=0.1)") and not is_oracle("an (lr=0.1)")
    assert not is_oracle("no-such-method")


def paper_source(paper, rule="clean", **extra):
    return {"kind": "paper", "paper": paper, "source": f"{paper} et al.", "rule": rule, "values": {}, **extra}


def test_published_numbers_and_delta_only_for_the_quoted_papers_recipe(records, monkeypatch):
    import bench.report.leaderboard as report

    table = report.papers()
    patched = {**table, "main": {**table["main"], "values": {"an": {"digits-mosaic": 81.0},
                                                             "ls": {"digits-mosaic": 80.0},
                                                             "em": {"digits-mosaic": 85.0}},
                                 "recipes": {"an": "cole", "ls": "cole", "em": "zhou"}}}
    monkeypatch.setattr(report, "papers", lambda: patched)
    paper_runs = ([record("an", s, 82.0, source=paper_source("cole")) for s in range(2)]
                  + [record("ls", 0, 83.0, source=paper_source("cole", overrides={"epochs": 2}))]
                  + [record("em", 0, 87.0, source=paper_source("boostlu"))])
    board = leaderboard_markdown(records + paper_runs)
    rows = rows_of(board.split(report.PAPER_SELECTION)[1])
    assert [rows["an"][0].strip("*<u>/"), *rows["an"][1:3]] == ["82.00 ± 0.00", "81.00", "+1.00"]  # quoted recipe
    assert rows["ls"][1:3] == ["80.00", "–"]                            # run with an override: no Δ
    assert rows["em"][1:3] == ["85.00", "–"]                            # another paper's recipe: no Δ
    defaults_tables = board.split("### Recipe: defaults")[1].split("\n### ")[0]
    assert "| paper" not in defaults_tables                             # published numbers only beside paper rows


def test_a_paper_row_is_read_with_its_papers_rule(records):
    curve = [(50, 48), (60, 59), (58, 61), (70, 66)]
    zhou = record("em", 0, 66.0, source=paper_source("zhou", rule="zhou"))
    zhou["curve"] = [{"epoch": e, "val_map": v, "test_map": t} for e, (v, t) in enumerate(curve, 1)]
    board = leaderboard_markdown(records + [zhou])
    rows = rows_of(board.split("#### Each paper's own epoch selection")[1])
    assert rows["em"][0] == "**59.00**"     # Zhou et al. stop after epoch 3 and report epoch 2
    assert rows_of(board.split("### Recipe: paper")[1].split("#### Selected by clean")[1])["em"][0] == "**66.00**"


def test_same_records_same_bytes_whatever_their_order(records):
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    assert leaderboard_markdown(shuffled) == leaderboard_markdown(records)


def tuned_source(gain=0.1):
    return {"kind": "tuned", "study": "s", "n_trials": 12, "budget": {"n_trials": 12, "startup_trials": 4},
            "values": {"lr": 0.0056509, "ls_coef": 0.25},
            "convergence": {"trials": 12, "early_trials": 8, "best_early": 90.0, "best": 90.0 + gain, "gain": gain,
                            "improving": gain > 0.5}}


def test_tuned_rows_come_first_with_their_budget_convergence_and_delta_to_defaults(records):
    tuned = ([record("an", s, 90.0 + s, source=tuned_source()) for s in range(2)]
             + [record("ls", 0, 80.0, source=tuned_source(gain=2.0))])
    board = leaderboard_markdown(records + tuned)
    assert board.index("### Recipe: tuned") < board.index("### Recipe: defaults")
    tuned_part, defaults_part = board.split("### Recipe: tuned")[1].split("### Recipe: defaults")
    assert rows_of(tuned_part)["an"][:2] == ["**90.50 ± 6.35**", "2"] and rows_of(defaults_part)["an"][1] == "3"
    assert "Tuning budget: 12 finished trials per study; TPE sampler (seed 100, 4 random start-up trials)" in board
    convergence = rows_of(tuned_part.split("#### Tuning convergence")[1])
    assert convergence["an"][-2:] == ["+0.10", "no"] and convergence["ls"][-2:] == ["+2.00", "STILL IMPROVING"]
    assert "1 of 2 studies flagged as still improving." in board
    deltas = rows_of(board.split("### Tuned − defaults")[1])
    assert deltas["an"][3:6] == ["+9.50 ± 6.35", "2/2", "yes"]         # 90-80, 91-82: paired on seeds 0 and 1
    assert deltas["ls"][3:6] == ["-5.00", "0/1", "no"]
    assert "tuned: 12 trials, study s; tuned values lr=0.005651, ls_coef=0.25" in board  # every value, lr too
    assert rows_of(tuned_part)["ls"][0].endswith("†") and not rows_of(tuned_part)["an"][0].endswith("†")
    assert "† the study of this row was still improving after its budget (1 of 2 studies)" in board
    assert "### BoostLU, paired per seed (tuned recipe)" not in board  # the tuned rows have no BoostLU pair


def test_csv_and_latex_exports(records):
    rows = list(csv.DictReader(io.StringIO(table_export(records, "csv").split("\n\n")[0])))
    an = next(r for r in rows if r["method"] == "an")
    assert an["digits-mosaic"].strip("*<u>/") == "82.00 ± 4.97" and an["seeds"] == "3"
    latex = table_export(records, "latex")
    assert r"\begin{tabular}" in latex and r"$\pm$" in latex and latex.count(r"\begin{tabular}") == 5  # selections


def test_write_report_writes_per_class_csv_and_figures(records, tmp_path):
    workspace = Workspace(results=tmp_path / "results", cache=tmp_path / "cache")
    written = write_report(records, tmp_path / "leaderboard.md", workspace)
    names = {p.name for p in written}
    assert any(n.startswith("val_curves_digits-mosaic") for n in names)
    assert any(n.startswith("memorisation_digits-mosaic") for n in names)
    per_class = next(p for p in written if p.name.startswith("per_class_ap_digits-mosaic"))
    table = list(csv.reader(per_class.open()))
    assert table[0] == [""] + [str(d) for d in range(10)]
    assert ["an (defaults)"] + ["82.00"] * 10 in table
    board = (tmp_path / "leaderboard.md").read_text()
    assert "(results/figures/val_curves_digits-mosaic" in board and "(results/figures/memorisation_" in board
    assert f"from the run records in `{workspace.results.as_posix()}/`" in board


def test_tables_and_figures_of_settings_without_records_are_removed(records, tmp_path):
    workspace = Workspace(results=tmp_path / "results", cache=tmp_path / "cache")
    first = {p.name for p in write_report(records, tmp_path / "leaderboard.md", workspace)}
    (workspace.figures / "cam_examples_digits-mosaic.png").write_bytes(b"a checkpoint figure")
    partial = [record(v, s, 80.0 + s, protocol="partial-0.5") for v in ("full", "an") for s in range(2)]
    second = {p.name for p in write_report(partial, tmp_path / "leaderboard.md", workspace)}
    left = {p.name for p in workspace.tables.iterdir()} | {p.name for p in workspace.figures.iterdir()}
    pages = {name for name in second if name.startswith("leaderboard-")}
    assert left == (second - {"leaderboard.md"} - pages) | {"cam_examples_digits-mosaic.png"}
    assert {p.name for p in workspace.results.glob("leaderboard-*.md")} == pages == {"leaderboard-defaults.md"}
    assert any("partial-0.5" in name for name in second) and first - second  # the old setting's files are gone


def test_an_empty_results_folder_never_replaces_a_real_leaderboard(records, tmp_path):
    workspace = Workspace(results=tmp_path / "results", cache=tmp_path / "cache")
    out = tmp_path / "leaderboard.md"
    write_report(records, out, workspace)
    before = out.read_bytes()
    with pytest.raises(UserError, match="refusing to replace"):
        write_report([], out, workspace)
    assert out.read_bytes() == before
    write_report([], out, workspace, force=True)
    assert "No run records yet" in out.read_text()


@pytest.mark.parametrize("change, field", [
    (lambda r: r.pop("status"), "status"), (lambda r: r["spec"].update(seed="zero"), "spec.seed"),
    (lambda r: r.update(test_map="high"), "test_map"), (lambda r: r.pop("selections"), "selections"),
    (lambda r: r["selections"].pop("last"), "selections.last"),
])
def test_a_record_of_the_wrong_shape_is_one_line_naming_the_file_and_field(records, tmp_path, change, field):
    shaped = json.loads(json.dumps(records[0]))
    change(shaped)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(shaped))
    with pytest.raises(UserError) as error:
        read_record(path)
    message = str(error.value)
    assert message.startswith(f"corrupt results file {path}: field '{field}") and "\n" not in message


def test_a_boostlu_row_reaches_the_oracle_only_by_the_equivalence_test():
    oracle = [record("full+boostlu", s, 90.0 + s) for s in range(5)]
    close = [record("an+boostlu", s, 90.0 + s + d) for s, d in enumerate([0.1, -0.1, 0.2, 0.0, 0.1])]
    # ls+boostlu is 1.5 below on average, so widely spread that no test finds the difference
    wide = [record("ls+boostlu", s, 90.0 + s + d) for s, d in enumerate([-6.0, 3.0, -5.0, 2.0, -1.5])]
    board = leaderboard_markdown(oracle + close + wide)
    table = board.split("### BoostLU rows against the full+boostlu oracle")[1].split("\n\n")[1]
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in table.splitlines()[2:])}
    # mean 0.06, sd 0.114: half width 2.776445 * 0.114 / sqrt(5) = 0.14
    assert rows["an+boostlu"][2] == "+0.06 ± 0.14" and rows["an+boostlu"][4] == "no"
    assert rows["an+boostlu"][-1] == "yes"  # the 90 % interval lies within ±0.5
    assert rows["ls+boostlu"][4] == "no"     # not different ...
    assert rows["ls+boostlu"][-1] == "no"    # ... and not the same either
    # Holm over the table's two equivalence tests doubles the smaller p-value
    assert float(rows["an+boostlu"][6]) == pytest.approx(min(1.0, 2 * float(rows["an+boostlu"][5])), abs=2e-3)
