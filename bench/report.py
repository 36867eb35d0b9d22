"""The leaderboard, generated from run records alone (`pamlbench report`).

Records are grouped into one section per setting (observation protocol, validation variant, backbone, epochs), and
a dataset whose records come from different data (content fingerprints) gets one column per fingerprint: runs that
differ in any of these are never mixed in one cell. In a table a row is a method variant (with where its
hyperparameters came from), a column a dataset, a cell the mean ± sample std of test mAP over seeds; best of a
column in bold, second underlined, among the partial-label methods (the full-label oracle is the upper reference
row). Failed runs are shown as failures, never as numbers. Records written by other code than the current one (a
different code version) are left out and counted. The output is a pure function of the records: same records,
same bytes. Formats: Markdown (leaderboard.md, with details, ablation and figure links), CSV and LaTeX (tables).
"""

from __future__ import annotations

import os
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from bench import registry
from bench.errors import UserError
from bench.records import atomic_text
from bench.tables import Cell, average_ranks, cells, is_oracle, paired_boostlu, placements, variant_order
from bench.versions import code_version

SETTING_COLUMNS = ["protocol", "val_variant", "backbone", "epochs"]
PUBLISHED_FILE = Path(__file__).with_name("published.toml")
FORMATS = ("md", "csv", "latex")
DATASET_FIGURES = {"cam_attribution": "CAM attribution on true positive classes: Full, AN, AN + BoostLU at inference",
                   "cam_examples": "CAMs of positive classes, LL-R without and with BoostLU"}
"""Figures drawn per dataset from the best-epoch checkpoints by `pamlbench figures` (and `make bench`)."""

ABLATION_CELLS = [  # (BoostLU in inference, BoostLU in training, LL-R in training) -> variant; METHODS_SPEC §3
    ((False, False, False), "an"),
    ((True, False, False), "an+boostlu-infer"),
    ((True, True, False), "an+boostlu"),
    ((False, False, True), "ll-r"),
    ((False, True, True), "ll-r+boostlu-train"),
    ((True, False, True), "ll-r+boostlu-infer"),
    ((True, True, True), "ll-r+boostlu"),
]


@cache
def published() -> dict[str, Any]:
    """The published numbers (bench/published.toml): {table: {source, values: {variant: {dataset: mAP}}}}."""
    return tomllib.loads(PUBLISHED_FILE.read_text())


def hparam_label(source: dict[str, Any]) -> str:
    """'' for defaults, ' (tuned)' for tuned hyperparameters, ' (k=v, ...)' for hand-set ones."""
    kind = source.get("kind", "defaults")
    if kind == "defaults":
        return ""
    if kind == "tuned":
        return " (tuned)"
    return " (" + ", ".join(f"{k}={v}" for k, v in sorted(source.get("values", {}).items())) + ")"


def provenance_text(source: dict[str, Any]) -> str:
    kind = source.get("kind", "defaults")
    if kind == "tuned":
        return f"tuned: {source.get('n_trials', '?')} trials, study {source.get('study', '?')}"
    return "defaults" if kind == "defaults" else "set by hand"


def current_code_version(method: str, dataset: str) -> str | None:
    try:
        return code_version(registry.method_class(method), registry.dataset_class(dataset))
    except UserError:
        return None


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per record with the fields the tables use; `current` says if it was made by the current code."""
    rows = []
    for record in records:
        spec = record["spec"]
        source = record.get("hparam_source", {})
        rows.append({
            "run_key": record["run_key"], "status": record["status"], "dataset": spec["dataset"],
            "variant": record["variant"] + hparam_label(source), "seed": spec["seed"],
            "protocol": spec["protocol"], "val_variant": spec["val_variant"], "backbone": spec["backbone"],
            "epochs": spec["epochs"], "test_map": record.get("test_map"), "val_map": record.get("val_map"),
            "train_seconds": record.get("train_seconds"), "peak_memory_mb": record.get("peak_memory_mb"),
            "label_checksum": record.get("label_checksum"), "data_fingerprint": record.get("data_fingerprint"),
            "code_version": record.get("code_version"), "provenance": provenance_text(source),
            "image_shape": "x".join(map(str, record.get("image_shape", []))) or "?",
            "hparams": ", ".join(f"{k}={v}" for k, v in sorted(spec["hparams"].items())) or "–",
            "error": record.get("error", ""),
            "current": record.get("code_version") == current_code_version(spec["method"], spec["dataset"]),
        })
    columns = ["run_key", "status", "dataset", "variant", "seed", *SETTING_COLUMNS, "current"]
    return pd.DataFrame(rows, columns=columns if not rows else None)


def separate_data_versions(frame: pd.DataFrame) -> pd.DataFrame:
    """Give a dataset whose records come from different data (fingerprints) one column per fingerprint."""
    frame = frame.copy()
    versions = frame.groupby("dataset").data_fingerprint.nunique()
    ambiguous = frame.dataset.map(versions) > 1
    frame.loc[ambiguous, "dataset"] = frame.dataset + " (data " + frame.data_fingerprint.astype(str) + ")"
    return frame


def emphasise(text: str, place: int | None, fmt: str) -> str:
    if place is None or fmt == "csv":
        return text
    if fmt == "latex":
        return rf"\textbf{{{text}}}" if place == 1 else rf"\underline{{{text}}}"
    return f"**{text}**" if place == 1 else f"<u>{text}</u>"


def cell_text(cell: Cell | None, fmt: str) -> str:
    if cell is None or (cell.n == 0 and cell.failed == 0):
        return "–"
    if cell.n == 0:
        return "failed" if cell.failed == 1 else f"failed ({cell.failed})"
    pm = r"$\pm$" if fmt == "latex" else "±"
    text = f"{cell.mean:.2f}" if cell.n == 1 else f"{cell.mean:.2f} {pm} {cell.std:.2f}"
    return text + (f" ({cell.failed} failed)" if cell.failed else "")


def main_rows(frame: pd.DataFrame, fmt: str) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the variants x datasets table, with published numbers and deltas where they exist."""
    table = cells(frame)
    datasets = sorted(frame.dataset.unique())
    paper = published()["main"]["values"]
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
            row.append(emphasise(cell_text(cell, fmt), places[dataset].get(variant), fmt))
            if dataset in with_paper:
                value = paper.get(variant.split(" (")[0], {}).get(dataset)
                ours = cell.mean if cell and cell.n else None
                row += [f"{value:.2f}" if value is not None else "–",
                        f"{ours - value:+.2f}" if value is not None and ours is not None else "–"]
        row.append("/".join(str(table[(variant, d)].n) if (variant, d) in table else "0" for d in datasets))
        row.append(f"{ranks[variant]:.2f}" if variant in ranks else "–")
        rows.append(row)
    return headers, rows


def ablation_rows(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]] | None:
    """The BoostLU x LL-R ablation (7 cells), ours beside the paper's VOC / COCO; None if no cell was run."""
    if not set(frame.variant) & {variant for _, variant in ABLATION_CELLS}:
        return None
    table = cells(frame)
    datasets = sorted(frame.dataset.unique())
    paper = published()["ablation"]["values"]
    rows = []
    for flags, variant in ABLATION_CELLS:
        row = ["✓" if flag else "" for flag in flags] + [variant]
        row += [cell_text(table.get((variant, d)), "md") for d in datasets]
        row += [f"{paper[variant]['voc']:.2f}", f"{paper[variant]['coco']:.2f}"]
        rows.append(row)
    return ["BoostLU inference", "BoostLU training", "LL-R training", "variant", *datasets, "paper VOC",
            "paper COCO"], rows


def boostlu_pair_rows(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]] | None:
    pairs = paired_boostlu(frame)
    if pairs.empty:
        return None
    rows = [[p.method, p.dataset, f"{p.mean_delta:+.2f}", f"{p.positive}/{p.seeds}"] for p in pairs.itertuples()]
    return ["method", "dataset", "mean Δ test mAP (with − without BoostLU)", "seeds with Δ > 0"], rows


def dataset_details(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    rows = []
    for dataset, runs in frame.groupby("dataset"):
        rows.append([dataset, ", ".join(sorted(runs.image_shape.unique())),
                     ", ".join(sorted(runs.label_checksum.dropna().unique())),
                     ", ".join(sorted(runs.data_fingerprint.dropna().unique())), str(len(runs))])
    return ["dataset", "image (C x H x W)", "label-draw checksum", "data fingerprint", "runs"], rows


def variant_details(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    rows = []
    for (variant, dataset), runs in frame.groupby(["variant", "dataset"]):
        done = runs[runs.status == "done"]
        rows.append([variant, dataset, ", ".join(sorted(runs.provenance.unique())),
                     ", ".join(sorted(runs.hparams.unique())), ", ".join(sorted(runs.code_version.unique())),
                     f"{done.train_seconds.mean():.1f}" if len(done) else "–",
                     f"{done.peak_memory_mb.max():.0f}" if len(done) else "–"])
    rows.sort(key=lambda r: (not is_oracle(r[0]), r[0], r[1]))
    return ["variant", "dataset", "hyperparameters from", "method hyperparameters", "code version",
            "mean train s", "peak MiB"], rows


def failure_rows(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]] | None:
    failed = frame[frame.status != "done"].sort_values(["variant", "dataset", "seed"])
    if failed.empty:
        return None
    return ["variant", "dataset", "seed", "run key", "error"], [
        [r.variant, r.dataset, str(r.seed), r.run_key, r.error] for r in failed.itertuples()]


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def split_frame(records: list[dict[str, Any]]) -> tuple[list[tuple[tuple, pd.DataFrame]], int]:
    """[(setting, frame)] for the current-code records, and the number of stale records left out."""
    frame = records_frame(records)
    if frame.empty:
        return [], 0
    stale = int((~frame.current).sum())
    frame = frame[frame.current]
    return [(setting, separate_data_versions(group))
            for setting, group in frame.groupby(SETTING_COLUMNS, sort=True)], stale


def setting_title(setting: tuple) -> str:
    protocol, val_variant, backbone, epochs = setting
    return f"{protocol}, {val_variant} validation, {backbone}, {epochs} epochs"


def leaderboard_markdown(records: list[dict[str, Any]], figures_link: str = "results/figures") -> str:
    """The whole leaderboard.md text; `figures_link` is the figures folder relative to the leaderboard."""
    lines = ["# pamlbench leaderboard", "",
             "Generated by `pamlbench report` from the run records in `results/`; do not edit by hand.",
             "Cells: test mAP (%) at the epoch with the best validation mAP, mean ± sample std over seeds. "
             "**Bold**: best partial-label method of the column, <u>underlined</u>: second (the full-label oracle "
             "is an upper reference). Avg rank: mean rank over the datasets of the table (1 = best).", ""]
    sections, stale = split_frame(records)
    if not sections:
        return "\n".join(lines + ["No run records yet: run `make bench`.", ""])
    paper = published()
    for setting, frame in sections:
        lines += [f"## {setting_title(setting)}", "", markdown_table(*main_rows(frame, "md")), ""]
        datasets = sorted(frame.dataset.unique())
        without = [d for d in datasets if not any(d in v for v in paper["main"]["values"].values())]
        if without:
            lines += [f"No published numbers exist for {', '.join(without)}. Published numbers and Δ = ours − paper "
                      f"appear for voc, coco, nuswide and cub (source: {paper['main']['source']}; "
                      f"{paper['main']['note']}).", ""]
        for title, table in (("BoostLU ablation (paper: " + paper["ablation"]["source"] + ")", ablation_rows(frame)),
                             ("BoostLU, paired per seed", boostlu_pair_rows(frame)),
                             ("Failed runs (shown instead of numbers)", failure_rows(frame))):
            if table:
                lines += [f"### {title}", "", markdown_table(*table), ""]
        lines += ["### Details", "", markdown_table(*dataset_details(frame)), "",
                  markdown_table(*variant_details(frame)), ""]
    if stale:
        lines += [f"{stale} record(s) made by other code versions are not shown (re-run `make bench`).", ""]
    lines += ["## Figures", "", f"- [Validation mAP per epoch (mean over seeds)]({figures_link}/val_map_curves.png)"]
    datasets = sorted({d for _, frame in sections for d in frame.dataset.unique()})
    lines += [f"- {dataset}: [{caption}]({figures_link}/{name}_{dataset}.png)"
              for dataset in datasets for name, caption in DATASET_FIGURES.items()]
    return "\n".join(lines + [""])


def table_export(records: list[dict[str, Any]], fmt: str) -> str:
    """The main tables alone, as CSV (one block per setting) or LaTeX (one tabular per setting)."""
    sections, _ = split_frame(records)
    parts = []
    for setting, frame in sections:
        headers, rows = main_rows(frame, fmt)
        if fmt == "csv":
            parts.append(pd.DataFrame(rows, columns=headers).assign(setting=setting_title(setting))
                         .to_csv(index=False))
        else:
            parts.append(f"% {setting_title(setting)}\n" + tabulate(rows, headers=headers, tablefmt="latex_raw",
                                                                  disable_numparse=True))
    return "\n".join(parts)


def per_class_ap(records: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """dataset -> variants x classes table of per-class test AP (mean over seeds), current-code finished runs."""
    sections, _ = split_frame(records)
    by_key = {r["run_key"]: r for r in records}
    tables = {}
    for setting, frame in sections:
        for dataset, runs in frame[frame.status == "done"].groupby("dataset"):
            rows = {variant: pd.DataFrame([by_key[k]["per_class_ap"] for k in group.run_key]).mean()
                    for variant, group in runs.groupby("variant")}
            name = f"{dataset}_{'_'.join(map(str, setting))}"
            tables[name] = pd.DataFrame(rows).T.sort_index()
    return tables


def write_report(records: list[dict[str, Any]], out: Path, results_dir: Path, fmt: str = "md") -> list[Path]:
    """Write the report in `fmt` to `out`; with Markdown also the per-class AP CSVs and the records-only figure."""
    if fmt not in FORMATS:
        raise UserError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt != "md":
        atomic_text(out, table_export(records, fmt))
        return [out]
    figures_dir = results_dir / "figures"
    link = Path(os.path.relpath(figures_dir, out.resolve().parent if out.parent != Path() else Path.cwd()))
    atomic_text(out, leaderboard_markdown(records, link.as_posix()))
    written = [out]
    for name, table in per_class_ap(records).items():
        path = results_dir / "tables" / f"per_class_ap_{name}.csv"
        atomic_text(path, table.to_csv(float_format="%.2f"))
        written.append(path)
    from bench.figures import validation_curves

    written += validation_curves(records_frame(records), records, figures_dir)
    return written
