"""Run records: one JSON file per finished (or failed) run, `results/<run_key>.json`.

Writes are atomic (a temporary file in the same folder, fsync, rename), so a reader never sees half a record and a
killed writer leaves at most a stray `*.tmp` file, which readers ignore. A record holds the RunSpec, its key, the
status ('done' or 'failed'), the metrics and the provenance (code version, versions, git commit, label checksum).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from bench.errors import UserError

RECORD_FORMAT = 2


def record_path(results_dir: Path, run_key: str) -> Path:
    return results_dir / f"{run_key}.json"


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically: a uniquely named temporary file in the same folder, fsync, mode 0644 (a
    shared results folder stays readable by the team), rename. Any OSError (a full disk, a read-only or forbidden
    folder) is a UserError naming the path and the cause, and leaves no partial file behind."""
    partial = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    except OSError as error:
        if partial is not None:
            Path(partial).unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None
    except BaseException:
        if partial is not None:
            Path(partial).unlink(missing_ok=True)
        raise


def atomic_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (see `atomic_write`)."""
    atomic_write(path, text.encode())


def atomic_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as indented, key-sorted JSON to `path` atomically."""
    atomic_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def write_record(results_dir: Path, record: dict[str, Any]) -> Path:
    """Atomically write `record` as results_dir/<run_key>.json and return its path."""
    path = record_path(results_dir, record["run_key"])
    atomic_json(path, record)
    return path


class SpecShape(BaseModel):
    """The RunSpec fields the report reads."""

    model_config = ConfigDict(extra="allow")
    dataset: str
    method: str
    seed: int
    protocol: str
    label_seed: int
    backbone: str
    epochs: int
    hparams: dict[str, Any]


class Selection(BaseModel):
    epoch: int
    val_map: float
    test_map: float
    per_class_ap: dict[str, float]


class Selections(BaseModel):
    clean: Selection
    observed: Selection
    last: Selection


class RecordShape(BaseModel):
    """The shape of a run record as the report and the runner read it (extra fields are kept)."""

    model_config = ConfigDict(extra="allow")
    format: Literal[2]
    run_key: str
    status: Literal["done", "failed"]
    variant: str
    spec: SpecShape
    code_version: str
    numerics: dict[str, Any]


class DoneShape(BaseModel):
    """What a finished record adds."""

    model_config = ConfigDict(extra="allow")
    val_map: float
    test_map: float
    best_epoch: int
    per_class_ap: dict[str, float]
    selections: Selections
    curve: list[dict[str, float]]


def read_record(path: Path) -> dict[str, Any]:
    """One record; UserError naming the file (and the first wrong field) if it is not a valid record."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"corrupt results file {path}: {error}; delete it to re-run that cell") from None
    try:
        RecordShape.model_validate(record)
        if record["status"] == "done":
            DoneShape.model_validate(record)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise UserError(f"corrupt results file {path}: field {where!r}: {first['msg']}; delete it to re-run that "
                        "cell") from None
    return record


def read_records(results_dir: Path) -> list[dict[str, Any]]:
    """Every record in `results_dir`, sorted by run key. A corrupt file is a UserError naming it."""
    if not results_dir.is_dir():
        return []
    return [read_record(path) for path in sorted(results_dir.glob("*.json"))]
