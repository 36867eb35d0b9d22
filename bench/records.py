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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench.errors import UserError, field_error, first_line

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
    """Atomically write `record` as results_dir/<run_key>.json and return its path. The record is checked first
    against the shape that `read_record` accepts, so that a record the report would refuse is never written:
    ValueError naming the first wrong field."""
    problem = shape_problem(record)
    if problem:
        raise ValueError(f"record {record.get('run_key')!r} is not a valid run record ({problem}); nothing written")
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


Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
"""mAP and AP in records are percentages: finite, in [0, 100]."""
Finite = Annotated[float, Field(allow_inf_nan=False)]


class Selection(BaseModel):
    epoch: int = Field(ge=1)
    val_map: Percent
    test_map: Percent
    per_class_ap: dict[str, Percent] = Field(min_length=1)


class CurvePoint(BaseModel):
    """One epoch of a run's curve."""

    model_config = ConfigDict(extra="allow")
    epoch: int = Field(ge=1)
    train_loss: Finite
    val_map: Percent
    val_map_observed: Percent
    test_map: Percent
    fn_memorised: float = Field(ge=0, le=1, allow_inf_nan=False)


class Selections(BaseModel):
    clean: Selection
    observed: Selection
    last: Selection


class RecordShape(BaseModel):
    """The shape of a run record as the report and the runner read it (extra fields are kept)."""

    model_config = ConfigDict(extra="allow")
    format: Literal[RECORD_FORMAT]
    run_key: str
    status: Literal["done", "failed"]
    variant: str
    spec: SpecShape
    code_version: str
    numerics: dict[str, Any]


class DoneShape(BaseModel):
    """What a finished record adds."""

    model_config = ConfigDict(extra="allow")
    val_map: Percent
    test_map: Percent
    best_epoch: int = Field(ge=1)
    per_class_ap: dict[str, Percent] = Field(min_length=1)
    selections: Selections
    curve: list[CurvePoint] = Field(min_length=1)
    class_groups: dict[str, Annotated[int, Field(ge=1)]] | None = None

    @model_validator(mode="after")
    def consistent(self) -> DoneShape:
        """The curve has one point per epoch, in order; every selection picks one of them; the headline result is
        the clean selection's."""
        if [point.epoch for point in self.curve] != list(range(1, len(self.curve) + 1)):
            raise ValueError("the curve's epochs are not 1, 2, ... in order")
        for name in ("clean", "observed", "last"):
            if getattr(self.selections, name).epoch > len(self.curve):
                raise ValueError(f"selection {name!r} picks an epoch after the last one of the curve")
        clean = self.selections.clean
        if (self.best_epoch, self.test_map) != (clean.epoch, clean.test_map):
            raise ValueError("best_epoch and test_map are not those of the clean selection")
        if self.selections.last.epoch != len(self.curve):
            raise ValueError("selection 'last' is not the curve's last epoch")
        if self.class_groups is not None and set(self.class_groups) != set(self.per_class_ap):
            raise ValueError("class_groups does not name exactly the classes of per_class_ap")
        return self


MAX_RECORD_BYTES = 64 * 2**20
"""A record is a few hundred KiB at most (per-class AP of 5,000 classes in three selections, a curve); a larger
file is refused before it is parsed."""


def read_record(path: Path) -> dict[str, Any]:
    """One record; UserError naming the file (and the first wrong field) if it is not a valid record: a regular
    file of at most MAX_RECORD_BYTES of JSON, of the record's shape, with finite metrics in range and a curve that
    agrees with its selections."""
    if not path.is_file():
        raise UserError(f"results entry {path} is not a regular file; remove it from the results folder")
    if path.stat().st_size > MAX_RECORD_BYTES:
        raise UserError(f"results file {path} is over {MAX_RECORD_BYTES // 2**20} MiB, not a run record; remove it")
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:  # ValueError: JSON, or an integer past Python's limit
        raise UserError(f"corrupt results file {path}: {first_line(error)}; delete it to re-run that cell") from None
    except RecursionError:
        raise UserError(f"corrupt results file {path}: nested too deeply to be a run record; delete it") from None
    problem = shape_problem(record)
    if problem:
        raise UserError(f"corrupt results file {path}: {problem}; delete it to re-run that cell")
    return record


def shape_problem(record: Any) -> str | None:
    """None if `record` has a run record's shape (`RecordShape`, and `DoneShape` when it is done), else its first
    wrong field as one phrase."""
    try:
        RecordShape.model_validate(record)
        if record["status"] == "done":
            DoneShape.model_validate(record)
    except ValidationError as error:
        return field_error(error)
    return None


def read_records(results_dir: Path) -> list[dict[str, Any]]:
    """Every record in `results_dir`, sorted by run key. A corrupt file is a UserError naming it."""
    if not results_dir.is_dir():
        return []
    return [read_record(path) for path in sorted(results_dir.glob("*.json"))]
