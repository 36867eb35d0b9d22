"""The leaderboard's first screen: its findings, checked against records whose statistics are worked by hand."""

from __future__ import annotations

from test_report import record

from bench.report.frame import records_frame
from bench.report.leaderboard import leaderboard_markdown
from bench.report.summary import findings

SEEDS = range(5)


def runs(variant: str, values: list[float]) -> list[dict]:
    return [record(variant, seed, value) for seed, value in zip(SEEDS, values, strict=True)]


def plus(values: list[float], deltas: list[float]) -> list[float]:
    return [round(v + d, 6) for v, d in zip(values, deltas, strict=True)]


AN = [80.0, 81.0, 82.0, 83.0, 84.0]
EM = [90.0, 91.0, 92.0, 93.0, 94.0]
RECORDS = (runs("full", [95.0, 96.0, 97.0, 98.0, 99.0]) + runs("an", AN)
           + runs("ll-r", plus(AN, [2.0, 2.5, 1.5, 2.0, 2.0]))
           + runs("em", EM) + runs("em-apl", plus(EM, [0.1, -0.1, 0.2, -0.2, 0.0]))
           + runs("an+boostlu", plus(AN, [3.1, 2.9, 3.0, 3.2, 2.8]))
           + runs("ll-r+boostlu", plus(plus(AN, [2.0, 2.5, 1.5, 2.0, 2.0]), [0.5, -0.5, 0.3, -0.3, 0.0])))


def test_the_findings_on_hand_worked_records():
    lines = findings(records_frame(RECORDS))
    # ll-r − an: differences 2, 2.5, 1.5, 2, 2: mean 2, sd 0.3536, half width 2.776445 * 0.3536 / sqrt(5) = 0.44;
    # t = 12.65 on 4 degrees of freedom: p = 0.0002 (one dataset: Holm leaves it)
    assert lines[0] == ("- **ll-r − an**, test mAP: digits-mosaic +2.00 [+1.56, +2.44], p(Holm) = 0.000 (better).")
    # BoostLU: an +3.00 (differences 3.1, 2.9, 3, 3.2, 2.8: sd 0.158, t = 42.4, p < 0.001, x2 by Holm: still < 0.001);
    # ll-r +0.00 (p = 1): a family of two, one decided
    assert lines[1] == ("- **BoostLU** (with − without, 2 method × dataset pairs; 1 significant before Holm, 1 after): "
                        "helps an on digits-mosaic +3.00 (p = 0.000); hurts none; no decision on 1.")
    # em-apl − em: differences 0.1, -0.1, 0.2, -0.2, 0: mean 0, p = 1
    assert lines[2].startswith("- **em-apl − em**, test mAP: digits-mosaic +0.00 [") and \
        lines[2].endswith("p(Holm) = 1.000 (no decision).")
    # the best partial-label row by mean is em (92.00; em-apl ties at 92.00 and comes after it), 5 below the
    # oracle on every seed: not within ±0.5
    assert lines[3] == ("- **Best partial-label row − full-label oracle**: digits-mosaic: em -5.00 [-5.00, -5.00], "
                        "equivalence within ±0.5 p(Holm) = 1.000: not shown to reach it.")


def test_a_row_within_the_margin_reaches_the_oracle_only_by_the_equivalence_test():
    close = runs("em", plus([95.0, 96.0, 97.0, 98.0, 99.0], [0.1, -0.1, 0.2, 0.0, 0.1]))
    [line] = [line for line in findings(records_frame(runs("full", [95.0, 96.0, 97.0, 98.0, 99.0]) + close))
              if "oracle" in line]
    # differences 0.1, -0.1, 0.2, 0, 0.1: mean 0.06, se 0.051; TOST p = 0.0000...: equivalent within ±0.5
    assert line.endswith("p(Holm) = 0.000: reaches the oracle.") and "em +0.06 [" in line


def test_the_first_screen_links_every_page_and_stays_short(tmp_path):
    from bench.execute.workspace import Workspace
    from bench.report.leaderboard import write_report

    workspace = Workspace(results=tmp_path / "results", cache=tmp_path / "cache")
    tuned = [{**r, "spec": {**r["spec"], "recipe": "tuned"}, "hparam_source": {"kind": "tuned", "study": "s"}}
             for r in RECORDS]
    write_report(RECORDS + tuned, tmp_path / "leaderboard.md", workspace)
    board = (tmp_path / "leaderboard.md").read_text()
    assert "[tuned recipe](results/leaderboard-tuned.md) · [defaults recipe](results/leaderboard-defaults.md)" in board
    assert "## tuned recipe, selected by clean validation" in board and len(board.splitlines()) <= 60
    page = (tmp_path / "results" / "leaderboard-defaults.md").read_text()
    assert page.startswith("# pamlbench leaderboard: the defaults recipe")
    assert "### Recipe: defaults" in page and "### Recipe: tuned" not in page
    assert page.split("## Figures")[0] == leaderboard_markdown(RECORDS + tuned, [], "figures",
                                                               (tmp_path / "results").as_posix(), recipe="defaults")
