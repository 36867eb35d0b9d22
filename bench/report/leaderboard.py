"""The leaderboard, generated from run records alone (`pamlbench report`).

Records are grouped into one section per setting (observation protocol, label seed, backbone, numerics), and a
dataset whose records differ in their number of epochs or their data (content fingerprint) gets one column for each:
runs that differ in any of these are never averaged in one cell. Every run yields three results (`bench.trainer`): the
test mAP at the epoch of best clean validation mAP (the papers' protocol), at the epoch of best observed-label
validation mAP (realistic: no clean labels), and at the last epoch (no early stopping); each gets its table. In a
table a row is a method variant (with where its hyperparameters came from), a column a dataset, a cell the mean ±
the half width of the 95 % confidence interval over seeds (`bench.report.stats`). The best and second groups of
partial-label variants are marked, ties inside the noise sharing a mark, and the average rank treats them as ties;
the full-label oracle is an upper reference row and never ranked. Failed runs are shown as failures, never as
numbers. Records written by other code than the current one (a different code version) are left out and counted.
The same records give the same bytes. Formats: Markdown (leaderboard.md, with details, ablation and figure links),
CSV and LaTeX (tables).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from bench.errors import UserError
from bench.execute.ledger import NO_CARRY, Ledger
from bench.execute.workspace import Workspace
from bench.plan.papers import papers
from bench.plan.recipes import DESCRIPTIONS, RECIPE, TUNED
from bench.records import atomic_text
from bench.report.frame import SELECTIONS, SETTING_COLUMNS, current_records, file_slug, recipes_present, records_frame
from bench.report.sections import (
    ablation_rows,
    boostlu_pair_rows,
    budget_lines,
    cell_text,
    dataset_details,
    failure_rows,
    group_rows,
    oracle_rows,
    recipe_delta_rows,
    regime_note,
    regime_rows,
    tuning_rows,
    variant_details,
)
from bench.report.summary import summary_markdown
from bench.report.tables import average_ranks, cells, is_oracle, placements, variant_order

FORMATS = ("md", "csv", "latex")


def separate_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Give a dataset whose records differ in their number of epochs, or come from different data (fingerprints),
    one column for each: 'dataset (12 epochs)', 'dataset (data v1:ab12...)'."""
    frame = frame.copy()
    for field, label in (("epochs", lambda v: f"{v} epochs"), ("data_fingerprint", lambda v: f"data {v}")):
        versions = frame.groupby("dataset")[field].nunique()
        ambiguous = frame.dataset.map(versions) > 1
        frame.loc[ambiguous, "dataset"] = frame.dataset + " (" + frame[field].map(label) + ")"
    return frame


def emphasise(text: str, place: int | None, fmt: str) -> str:
    if place is None or fmt == "csv":
        return text
    if fmt == "latex":
        return rf"\textbf{{{text}}}" if place == 1 else rf"\underline{{{text}}}"
    return f"**{text}**" if place == 1 else f"<u>{text}</u>"


PAPER_SELECTION = ("Each paper's own epoch selection (its rule: the best validation epoch, or Zhou et al.'s or Large "
                   "Loss Matters' early stopping), with the published numbers")


def selections_of(recipe: str) -> dict[str, str]:
    """The selection tables of one recipe: the papers' rows are read first with their own paper's rule."""
    return {"paper": PAPER_SELECTION, **SELECTIONS} if RECIPE[recipe].from_paper else dict(SELECTIONS)


def comparable(frame: pd.DataFrame, variant: str, dataset: str) -> bool:
    """True when the runs of (variant, dataset) ran, without overrides, the recipe of the paper whose number
    bench/plan/papers.toml [main] quotes for the variant: only then is ours − paper a like-for-like Δ."""
    runs = frame[(frame.variant == variant) & (frame.dataset == dataset)]
    quoted = papers()["main"]["recipes"].get(variant)
    return bool(len(runs)) and all(source.get("kind") == "paper" and source.get("paper") == quoted
                                   and not source.get("overrides") for source in runs.hparam_source)


def still_improving(frame: pd.DataFrame) -> set[tuple[str, str]]:
    """(variant, dataset) of the tuned rows whose study was still improving after its budget (and its second one,
    where the budget gives one)."""
    tuned = frame[frame.recipe.isin(TUNED)]
    return {(row.variant, row.dataset) for row in tuned.itertuples()
            if (row.hparam_source.get("convergence") or {}).get("improving")}


def main_rows(frame: pd.DataFrame, fmt: str, selection: str = "clean") -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the variants x datasets table of one selection (of one recipe). With the `paper`
    selection (each row read by its paper's rule), the published numbers, and Δ = ours − paper where `comparable`.
    A tuned cell whose study was still improving is marked †."""
    table = cells(frame, f"test_map_{selection}")
    flagged = still_improving(frame)
    datasets = sorted(frame.dataset.unique())
    paper = papers()["main"]["values"] if selection == "paper" else {}
    with_paper = [d for d in datasets if any(d in values for values in paper.values())]
    ranks = average_ranks(table, datasets)
    places = {d: placements(table, d) for d in datasets}
    headers = ["method"]
    for dataset in datasets:
        headers += [dataset] + (["paper", "Δ"] if dataset in with_paper else [])
    headers += ["seeds", "avg rank"]
    rows = []
    for variant in variant_order(list(frame.variant.unique())):
        row = [f"{variant} (oracle)" if is_oracle(variant) else variant]
        for dataset in datasets:
            cell = table.get((variant, dataset))
            mark = " †" if (variant, dataset) in flagged else ""
            row.append(emphasise(cell_text(cell, fmt), places[dataset].get(variant), fmt) + mark)
            if dataset in with_paper:
                value = paper.get(variant.split(" (")[0], {}).get(dataset)
                ours = cell.mean if cell and cell.n else None
                like = comparable(frame, variant, dataset)
                row += [f"{value:.2f}" if value is not None else "–",
                        f"{ours - value:+.2f}" if value is not None and ours is not None and like else "–"]
        row.append("/".join(str(table[(variant, d)].n) if (variant, d) in table else "0" for d in datasets))
        row.append(f"{ranks[variant]:.2f}" if variant in ranks else "–")
        rows.append(row)
    return headers, rows


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def split_frame(records: list[dict[str, Any]], ledger: Ledger = NO_CARRY) -> tuple[list[tuple[tuple, pd.DataFrame]],
                                                                               int]:
    """[(setting, frame)] for the current-code records (`ledger`: the carry-over ledger of their results folder),
    and the number of stale records left out."""
    frame = records_frame(records, ledger)
    if frame.empty:
        return [], 0
    stale = int((~frame.current).sum())
    frame = frame[frame.current]
    return [(setting, separate_columns(group))
            for setting, group in frame.groupby(SETTING_COLUMNS, sort=True)], stale


def setting_title(setting: tuple) -> str:
    protocol, label_seed, backbone, training, numerics = setting
    return f"{protocol} (label seed {label_seed}), {backbone}, trained {training}; numerics: {numerics}"


def introduction(results: str, recipe: str | None = None) -> list[str]:
    """The header of the whole leaderboard or of one recipe's page, naming the records folder it was generated from."""
    title = "# pamlbench leaderboard" + (f": the {recipe} recipe" if recipe else "")
    return [title, "", f"Generated by `pamlbench report` from the run records in `{results}/`; do not edit by hand.",
            "", *EXPLANATION]


EXPLANATION = [
    "- Cells: test mAP (%), mean ± the half width of the 95 % confidence interval of the mean over seeds (Student's "
    "t, n − 1 degrees of freedom); a single seed shows the mean alone.",
    "- Each run gives five results, each in its own table: the test mAP at the epoch of best validation mAP on "
    "clean labels (the papers' protocol), at the epoch of best validation mAP on the observed labels (no clean "
    "labels needed), at the last epoch, and at the epochs the early-stopping rules of Zhou et al. and of Large Loss "
    "Matters report, replayed on the stored validation curve. The test mAP never selects anything.",
    "- **Bold**: the best partial-label variants of a column, <u>underlined</u>: the second. Two variants are tied "
    "when the 95 % interval of their per-seed paired differences contains 0; going down by mean, the best unplaced "
    "variant and every unplaced variant tied with it form a group, and ties share their mark.",
    "- Avg rank: mean over the datasets of each variant's rank, the members of a tie group sharing the mean of "
    "their positions (1 = best). The full-label oracle is an upper reference row, never ranked.",
    "- Recipes (where a row's settings come from), each with its own tables: `tuned` (every variant searched with "
    "the same budget, printed with its convergence check), `paper` (each method's own paper on the real datasets, "
    "read with that paper's epoch-selection rule first) and `defaults` (the dataset's defaults). Published numbers "
    "appear only in the `paper` tables.", ""]


def selection_heading(title: str, selection: str, recipe: str, missed: list[str]) -> str:
    """A selection table's heading: for the tuned recipe's observed-label table, that its hyperparameters were chosen
    on clean labels; for a last-epoch table, the datasets where the recipe misses the converged regime."""
    if selection == "observed" and RECIPE[recipe].objective == "clean":
        title += "; its hyperparameters were chosen with clean validation labels"
    if selection == "last" and missed:
        title += f"; this recipe misses the converged regime's criteria on {', '.join(missed)} (see its regime check)"
    return f"#### {title}"


def recipe_lines(frame: pd.DataFrame, records: list[dict[str, Any]], only: str | None = None) -> list[str]:
    """The tables of each recipe of one setting (tuned, paper, defaults; `only` that one), then tuned − defaults
    (on the whole leaderboard and the tuned recipe's page)."""
    lines = []
    main = papers()["main"]
    for recipe in recipes_present(frame):
        if only is not None and recipe != only:
            continue
        runs = frame[frame.recipe == recipe]
        regime = regime_rows(runs, records)
        missed = [row[0] for row in regime[1] if "NO" in row] if regime else []
        lines += [f"### Recipe: {recipe} ({DESCRIPTIONS[recipe]})", ""]
        if RECIPE[recipe].tuned:
            lines += budget_lines(runs)
        for selection, title in selections_of(recipe).items():
            lines += [selection_heading(title, selection, recipe, missed), "",
                      markdown_table(*main_rows(runs, "md", selection)), ""]
            if selection == "paper":
                reruns = papers()["reruns"]
                quoted = "; ".join(f"{variant} " + ", ".join(f"{d} {v:.2f}" for d, v in values.items())
                                   for variant, values in reruns["values"].items())
                lines += [f"Published numbers: {main['source']} ({main['note']}). Δ = ours − paper only for rows run, "
                          "without overrides, by the recipe of the paper whose number is quoted.", "",
                          f"Also published, for the same LL methods: {reruns['source']}: {quoted}.", ""]
        groups = group_rows(runs, records)
        if groups:
            lines += ["#### mAP by annotation frequency (clean selection; group 1 = the classes with the fewest "
                      f"training annotations; published: {papers()['groups']['source']})", "",
                      markdown_table(*groups), ""]
        convergence = tuning_rows(runs) if RECIPE[recipe].tuned else None
        if convergence:
            flagged = sum(row[-1] != "no" for row in convergence[1])
            lines += ["#### Tuning convergence (best validation mAP of each study after two thirds of its trials "
                      "and after all)", "", markdown_table(*convergence), "",
                      f"{flagged} of {len(convergence[1])} studies flagged as still improving.", ""]
    shown = frame if only is None else frame[frame.recipe == only]
    flagged = still_improving(shown)
    if flagged:
        studies = shown[shown.recipe.isin(TUNED)].groupby(["recipe", "variant", "dataset"]).ngroups
        lines += [f"† the study of this row was still improving after its budget ({len(flagged)} of {studies} "
                  "studies): its tuned values may be far from its best.", ""]
    deltas = recipe_delta_rows(frame, "tuned", "defaults") if only in (None, "tuned") else None
    if deltas:
        lines += ["### Tuned − defaults, paired per seed, clean selection", "", markdown_table(*deltas), ""]
    return lines


def leaderboard_markdown(records: list[dict[str, Any]], figures: list[str] | None = None,
                         figures_link: str = "results/figures", results: str = "results",
                         ledger: Ledger = NO_CARRY, recipe: str | None = None) -> str:
    """The whole leaderboard.md text. `figures` are the file names (in the figures folder) to link, with
    `figures_link` the figures folder relative to the leaderboard; `results` names the records folder. Per setting:
    each recipe's tables, then the regime check, BoostLU ablation and paired BoostLU deltas of the first recipe
    present (tuned before paper before defaults), failures and details. `ledger` is the records folder's
    carry-over ledger. With `recipe`, the page of that recipe alone (its side tables too)."""
    lines = introduction(results, recipe)
    sections, stale = split_frame(records, ledger)
    if recipe is not None:
        sections = [(setting, frame) for setting, frame in sections if recipe in recipes_present(frame)]
    if not sections:
        return "\n".join(lines + ["No run records yet: run `make bench`.", ""])
    paper = papers()
    for setting, everything in sections:
        lines += [f"## {setting_title(setting)}", ""] + recipe_lines(everything, records, recipe)
        frame = everything if recipe is None else everything[everything.recipe == recipe]
        primary = recipes_present(frame)[0]
        chosen = frame[frame.recipe == primary]
        of = f"{primary} recipe"
        for title, table in ((f"Regime check ({of}; validation mAP, mean over seeds; docs/regime.md)",
                              regime_rows(chosen, records)),
                             (f"BoostLU ablation ({of}), clean selection (paper: {paper['ablation']['source']})",
                              ablation_rows(chosen)),
                             (f"BoostLU, paired per seed ({of}), clean selection", boostlu_pair_rows(chosen, "clean")),
                             (f"BoostLU, paired per seed ({of}), last epoch", boostlu_pair_rows(chosen, "last")),
                             (f"BoostLU rows against the full+boostlu oracle, paired per seed ({of}), clean "
                              "selection", oracle_rows(chosen, "clean")),
                             ("Failed runs (shown instead of numbers)", failure_rows(frame))):
            if table:
                lines += [f"### {title}", "", markdown_table(*table), ""] + regime_note(title, table, primary)
        lines += ["### Details", "", markdown_table(*dataset_details(frame)), "",
                  markdown_table(*variant_details(frame)), ""]
    if stale:
        lines += [f"{stale} record(s) made by other code versions are not shown (re-run `make bench`).", ""]
    if figures:
        lines += ["## Figures", ""] + [f"- [{caption}]({figures_link}/{name})" for name, caption in figures]
    return "\n".join(lines + [""])


def table_export(records: list[dict[str, Any]], fmt: str, ledger: Ledger = NO_CARRY) -> str:
    """The main tables alone, as CSV (one block per setting, recipe and selection) or LaTeX (one tabular each)."""
    sections, _ = split_frame(records, ledger)
    parts = []
    for setting, frame in sections:
        for recipe in recipes_present(frame):
            runs = frame[frame.recipe == recipe]
            for selection in selections_of(recipe):
                headers, rows = main_rows(runs, fmt, selection)
                title = f"{setting_title(setting)}; {recipe} recipe; {selection} selection"
                if fmt == "csv":
                    parts.append(pd.DataFrame(rows, columns=headers).assign(setting=title).to_csv(index=False))
                else:
                    parts.append(f"% {title}\n" + tabulate(rows, headers=headers, tablefmt="latex_raw",
                                                           disable_numparse=True))
    return "\n".join(parts)


def per_class_ap(records: list[dict[str, Any]], ledger: Ledger = NO_CARRY) -> dict[str, pd.DataFrame]:
    """name -> (variant (recipe)) x classes table of per-class test AP (clean selection, mean over seeds), per
    dataset and setting, current-code finished runs."""
    sections, _ = split_frame(records, ledger)
    by_key = {r["run_key"]: r for r in records}
    tables = {}
    for setting, frame in sections:
        for dataset, runs in frame[frame.status == "done"].groupby("dataset"):
            rows = {f"{variant} ({recipe})": pd.DataFrame([by_key[k]["per_class_ap"] for k in group.run_key]).mean()
                    for (recipe, variant), group in runs.groupby(["recipe", "variant"])}
            tables[file_slug(dataset, *setting)] = pd.DataFrame(rows).T.sort_index()
    return tables


def write_report(records: list[dict[str, Any]], out: Path, workspace: Workspace, fmt: str = "md",
                 force: bool = False) -> list[Path]:
    """Write the report in `fmt` to `out`; with Markdown also the per-class AP CSVs and the records-only figures.

    Refuses (UserError) to replace an existing file with a report built from no current record unless `force`:
    a misspelt or empty results folder must not wipe a real leaderboard."""
    if fmt not in FORMATS:
        raise UserError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
    ledger = workspace.ledger()
    sections, _ = split_frame(records, ledger)
    if not sections and out.exists() and not force:
        raise UserError(f"no current run records in {workspace.results}: refusing to replace {out} with an empty "
                        "report (check --results, or pass --force)")
    if fmt != "md":
        atomic_text(out, table_export(records, fmt, ledger))
        return [out]
    from bench.report.figures import checkpoint_figure_names, record_figures

    frame = records_frame(records, ledger)
    figures = record_figures(frame, records, workspace.figures)
    links = [(path.name, caption) for path, caption in figures]
    current = current_records(records, ledger)
    for dataset in sorted({d for _, section in sections for d in section.dataset.unique()}):
        links += checkpoint_figure_names(current, dataset)
    here = out.resolve().parent if out.parent != Path() else Path.cwd()
    written = [out]
    pages = []
    for recipe in recipes_present(frame[frame.current]) if not frame.empty else []:
        page = workspace.results / f"leaderboard-{recipe}.md"
        atomic_text(page, leaderboard_markdown(records, links, "figures", workspace.results.as_posix(), ledger,
                                               recipe))
        written.append(page)
        pages.append((f"{recipe} recipe", Path(os.path.relpath(page.resolve(), here)).as_posix()))
    figures_link = Path(os.path.relpath(workspace.figures.resolve(), here)).as_posix()
    atomic_text(out, summary_text(sections, pages, figures_link, links, workspace.results.as_posix(),
                                  int((~frame.current).sum())))
    for name, table in per_class_ap(records, ledger).items():
        path = workspace.tables / f"per_class_ap_{name}.csv"
        atomic_text(path, table.to_csv(float_format="%.2f"))
        written.append(path)
    written += [path for path, _ in figures]
    remove_stale(written, [(workspace.tables, "per_class_ap_*.csv"), (workspace.figures, "val_curves_*.png"),
                           (workspace.figures, "memorisation_*.png"), (workspace.results, "leaderboard-*.md")])
    return written


def summary_text(sections: list[tuple[tuple, pd.DataFrame]], pages: list[tuple[str, str]], figures_link: str,
                 figures: list[tuple[str, str]], results: str, stale: int) -> str:
    """leaderboard.md: the first screen (`bench.report.summary`), with a line of figure links."""
    titled = [(setting_title(setting), frame) for setting, frame in sections]
    main_table = ""
    if titled:
        frame = titled[0][1]
        runs = frame[frame.recipe == recipes_present(frame)[0]]
        main_table = markdown_table(*main_rows(runs, "md", "clean"))
        flagged = still_improving(runs)
        if flagged:
            main_table += (f"\n\n† its study was still improving after its budget ({len(flagged)} of "
                           f"{runs.groupby(['variant', 'dataset']).ngroups} studies).")
    text = summary_markdown(titled, main_table, pages, results, stale)
    if figures:
        text += "\nFigures: " + " · ".join(f"[{caption}]({figures_link}/{name})" for name, caption in figures) + ".\n"
    return text


def remove_stale(written: list[Path], patterns: list[tuple[Path, str]]) -> None:
    """Delete the files the report made earlier (`patterns`) that it did not write now: tables and figures of
    settings that no longer have records would otherwise stay and go stale. The checkpoint figures are `figures`'."""
    kept = {path.resolve() for path in written}
    for folder, pattern in patterns:
        for path in folder.glob(pattern):
            if path.resolve() not in kept:
                path.unlink()
