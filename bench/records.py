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
from typing import Any

from bench.errors import UserError

RECORD_FORMAT = 1


def record_path(results_dir: Path, run_key: str) -> Path:
    return results_dir / f"{run_key}.json"


def atomic_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (temporary file in the same folder, fsync, rename); UserError if the
    folder cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    except OSError as error:
        raise UserError(f"cannot write to folder {path.parent}: {error.strerror}; choose a writable folder") from None
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def atomic_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as indented, key-sorted JSON to `path` atomically."""
    atomic_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def write_record(results_dir: Path, record: dict[str, Any]) -> Path:
    """Atomically write `record` as results_dir/<run_key>.json and return its path."""
    path = record_path(results_dir, record["run_key"])
    atomic_json(path, record)
    return path


def read_record(path: Path) -> dict[str, Any]:
    """One record; UserError naming the file if it is not a valid record."""
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"corrupt results file {path}: {error}; delete it to re-run that cell") from None
    if not isinstance(record, dict) or "run_key" not in record or "spec" not in record or "status" not in record:
        raise UserError(f"corrupt results file {path}: not a pamlbench run record; delete it to re-run that cell")
    return record


def read_records(results_dir: Path) -> list[dict[str, Any]]:
    """Every record in `results_dir`, sorted by run key. A corrupt file is a UserError naming it."""
    if not results_dir.is_dir():
        return []
    return [read_record(path) for path in sorted(results_dir.glob("*.json"))]
