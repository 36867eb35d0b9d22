"""The leaderboard, generated from run records alone (`pamlbench report`).

Records are grouped into one table per setting (observation protocol, validation variant, backbone, epochs), and a
dataset whose records come from different data (content fingerprints) gets one column per fingerprint: runs that
differ in any of these are never mixed in one cell. In a table a row is a method
variant (with where its hyperparameters came from), a column a dataset, a cell the mean ± sample std of test mAP
over seeds. The best mean of each column among the partial-label methods is bold; the full-label oracle is the
upper reference row and never bold. Records written by other code than the current one (a different code version)
are left out and counted, never mixed in. The output is a pure function of the records: same records, same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from bench import registry
from bench.errors import UserError
from bench.versions import code_version

ORACLE = "full"
SETTING_COLUMNS = ["protocol", "val_variant", "backbone", "epochs"]
PUBLISHED_FILE = Path(__file__).with_name("published.toml")

ABLATION_CELLS = [  # (BoostLU in inference, BoostLU in training, LL-R in training) -> variant; METHODS_SPEC §3
    ((False, False, False), "an"),
    ((True, False, False), "an+boostlu-infer"),
    ((True, True, False), "an+boostlu"),
    ((False, False, True), "ll-r"),
    ((False, True, True), "ll-r+boostlu-train"),
    ((True, False, True), "ll-r+boostlu-infer"),
    ((True, True, True), "ll-r+boostlu"),
]


def published() -> dict[str, Any]:
    """The published numbers (bench/published.toml): {table: {source, values: {variant: {dataset: mAP}}}}."""
    import tomllib

    return tomllib.loads(PUBLISHED_FILE.read_text())


def hparam_label(source: dict[str, Any]) -> str:
    """'' for defaults, ' (tuned)' for tuned hyperparameters, ' (k=v, ...)' for hand-set ones."""
    kind = source.get("kind", "defaults")
    if kind == "defaults":
        return ""
    if kind == "tuned":
        return " (tuned)"
    return " (" + ", ".join(f"{k}={v}" for k, v in sorted(source.get("values", {}).items())) + ")"


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
        rows.append({
            "run_key": record["run_key"], "status": record["status"], "dataset": spec["dataset"],
            "method": spec["method"], "variant": record["variant"] + hparam_label(record.get("hparam_source", {})),
            "seed": spec["seed"], "protocol": spec["protocol"], "val_variant": spec["val_variant"],
            "backbone": spec["backbone"], "epochs": spec["epochs"], "batch_size": spec["batch_size"],
            "lr": spec["lr"], "test_map": record.get("test_map"), "val_map": record.get("val_map"),
            "best_epoch": record.get("best_epoch"), "train_seconds": record.get("train_seconds"),
            "peak_memory_mb": record.get("peak_memory_mb"), "label_checksum": record.get("label_checksum"),
            "data_fingerprint": record.get("data_fingerprint"), "code_version": record.get("code_version"),
            "current": record.get("code_version") == current_code_version(spec["method"], spec["dataset"]),
        })
    return pd.DataFrame(rows)


def format_cell(values: pd.Series) -> str:
    """'m ± s' (sample std) for several seeds, 'm' for one."""
    if len(values) == 1:
        return f"{values.iloc[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def results_table(frame: pd.DataFrame) -> str:
    """The variants x datasets table of one setting, in Markdown."""
    done = frame[frame.status == "done"]
    datasets = sorted(frame.dataset.unique())
    variants = sorted(frame.variant.unique(), key=lambda v: (not v.startswith(ORACLE + " ") and v != ORACLE, v))
    means = done.groupby(["variant", "dataset"]).test_map.mean()
    rows = []
    for variant in variants:
        row = [f"{variant} (oracle)" if variant == ORACLE else variant]
        for dataset in datasets:
            cell = done[(done.variant == variant) & (done.dataset == dataset)].sort_values("seed")
            failed = int(((frame.variant == variant) & (frame.dataset == dataset) & (frame.status != "done")).sum())
            text = format_cell(cell.test_map) if len(cell) else "–"
            contenders = means.xs(dataset, level="dataset").drop(ORACLE, errors="ignore")
            if len(cell) and variant != ORACLE and cell.test_map.mean() == contenders.max():
                text = f"**{text}**"
            if failed:
                text += f" ({failed} failed)"
            row += [text, str(len(cell))]
        rows.append(row)
    headers = ["method"] + [h for d in datasets for h in (d, "seeds")]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def ablation_table(frame: pd.DataFrame) -> str | None:
    """The BoostLU x LL-R ablation (7 cells), ours beside the paper's VOC / COCO; None if no cell was run."""
    done = frame[frame.status == "done"]
    if not set(done.variant) & {variant for _, variant in ABLATION_CELLS}:
        return None
    datasets = sorted(frame.dataset.unique())
    paper = published()["ablation"]["values"]
    rows = []
    for flags, variant in ABLATION_CELLS:
        row = ["✓" if flag else "" for flag in flags] + [variant]
        for dataset in datasets:
            cell = done[(done.variant == variant) & (done.dataset == dataset)].sort_values("seed")
            row.append(format_cell(cell.test_map) if len(cell) else "–")
        row += [f"{paper[variant]['voc']:.2f}", f"{paper[variant]['coco']:.2f}"]
        rows.append(row)
    headers = ["BoostLU inference", "BoostLU training", "LL-R training", "variant", *datasets, "paper VOC",
               "paper COCO"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def details_table(frame: pd.DataFrame) -> str:
    """Per-dataset facts of one setting: what produced the numbers."""
    rows = []
    for dataset, runs in frame.groupby("dataset"):
        rows.append([dataset, ", ".join(sorted(runs.code_version.unique())),
                     ", ".join(sorted(runs.label_checksum.dropna().unique())),
                     ", ".join(sorted(runs.data_fingerprint.dropna().unique())),
                     f"{runs.train_seconds.mean():.1f}", f"{runs.peak_memory_mb.max():.0f}", str(len(runs))])
    headers = ["dataset", "code version", "label-draw checksum", "data fingerprint", "mean train s", "peak MiB",
               "runs"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def separate_data_versions(frame: pd.DataFrame) -> pd.DataFrame:
    """Give a dataset whose records come from different data (fingerprints) one column per fingerprint."""
    frame = frame.copy()
    versions = frame.groupby("dataset").data_fingerprint.nunique()
    ambiguous = frame.dataset.map(versions) > 1
    frame.loc[ambiguous, "dataset"] = frame.dataset + " (data " + frame.data_fingerprint.astype(str) + ")"
    return frame


def leaderboard_markdown(records: list[dict[str, Any]]) -> str:
    """The whole leaderboard.md text."""
    lines = ["# pamlbench leaderboard", "",
             "Generated by `pamlbench report` from the run records in `results/`; do not edit by hand.",
             "Cells: test mAP (%) at the epoch with the best validation mAP, mean ± sample std over seeds. "
             "Bold: best partial-label method per column (the full-label oracle is an upper reference).", ""]
    frame = records_frame(records)
    if frame.empty:
        return "\n".join(lines + ["No run records yet: run `make bench`.", ""])
    stale = frame[~frame.current]
    frame = frame[frame.current]
    for setting, group in frame.groupby(SETTING_COLUMNS, sort=True):
        protocol, val_variant, backbone, epochs = setting
        group = separate_data_versions(group)
        lines += [f"## {protocol}, {val_variant} validation, {backbone}, {epochs} epochs", "",
                  results_table(group), ""]
        ablation = ablation_table(group)
        if ablation:
            lines += ["BoostLU ablation (paper: " + published()["ablation"]["source"] + "):", "", ablation, ""]
        lines += ["Details:", "", details_table(group), ""]
    if len(stale):
        lines += [f"{len(stale)} record(s) made by other code versions are not shown (re-run `make bench`).", ""]
    return "\n".join(lines)


def write_leaderboard(records: list[dict[str, Any]], path: Path) -> None:
    """Write the leaderboard atomically."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(leaderboard_markdown(records))
    partial.replace(path)
