"""The carry-over ledger of a results folder: `results/carry-ledger.jsonl`, one JSON entry per line, appended by
`pamlbench records carry` (`bench.execute.carry`) and never rewritten.

An entry says: on the numerics it names, the code of version B computes the numbers that the records of version A
hold, bit for bit, as a re-training of a sample of those records under B showed. From then on a run of code B on
those numerics is keyed and recorded as code version A (`Ledger.resolve`), so A's records are found as B's and
nothing is trained again. On other numerics nothing is carried: code B is keyed as B there.

An entry: {"format": 1, "date", "git_commit", "versions": {B: A, ...}, "numerics": [descriptor, ...],
"sampled": [run key, ...], "records": how many records it carried, "all": whether every one was re-trained}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.errors import UserError, field_error, quoted

LEDGER_NAME = "carry-ledger.jsonl"
LEDGER_FORMAT = 1
MAX_LEDGER_BYTES = 16 * 2**20
"""A ledger grows by one line of a few KiB per carry; a larger file is refused before it is parsed."""

Version = Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")]


class LedgerEntry(BaseModel):
    """One carry-over (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    format: Literal[LEDGER_FORMAT]
    date: str
    git_commit: str
    versions: dict[Version, Version] = Field(min_length=1)
    numerics: list[dict[str, Any]] = Field(min_length=1)
    sampled: list[Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]] = Field(min_length=1)
    records: int = Field(ge=1)
    all: bool


@dataclass(frozen=True)
class Ledger:
    """The entries of one results folder's ledger, oldest first."""

    entries: tuple[LedgerEntry, ...] = ()

    def resolve(self, version: str, numerics: dict[str, Any]) -> str:
        """The code version a run of code `version` on `numerics` is keyed and recorded as: the stored version the
        latest entry that covers both carries it to, else `version` itself."""
        for entry in reversed(self.entries):
            if version in entry.versions and numerics in entry.numerics:
                return entry.versions[version]
        return version


NO_CARRY = Ledger()
"""The empty ledger: every code version is keyed as itself."""


def ledger_path(results: Path) -> Path:
    return results / LEDGER_NAME


def read_ledger(results: Path) -> Ledger:
    """The ledger of the results folder `results` (empty when it has none); UserError naming the file and line when
    it is not a valid ledger."""
    path = ledger_path(results)
    try:
        status = path.stat()
    except OSError:
        return Ledger()
    return _read(str(path.resolve()), status.st_size, status.st_mtime_ns)


@cache
def _read(path: str, size: int, modified_ns: int) -> Ledger:
    if size > MAX_LEDGER_BYTES:
        raise UserError(f"carry-over ledger {quoted(path)} is over {MAX_LEDGER_BYTES // 2**20} MiB; it is not a "
                        "ledger pamlbench wrote")
    entries = []
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read carry-over ledger {quoted(path)}: {error}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entries.append(LedgerEntry.model_validate(json.loads(line)))
        except (json.JSONDecodeError, RecursionError, ValueError) as error:
            detail = field_error(error) if isinstance(error, ValidationError) else "not a JSON object"
            raise UserError(f"corrupt carry-over ledger {quoted(path)}, line {number}: {detail}; restore it from "
                            "version control") from None
    return Ledger(tuple(entries))


def append_entry(results: Path, entry: dict[str, Any]) -> Path:
    """Append `entry` (checked against `LedgerEntry` first) to the ledger of `results`, atomically: the old lines
    and the new one are written to a temporary file that replaces the ledger, so a fault leaves the old ledger."""
    from bench.records import atomic_text

    LedgerEntry.model_validate(entry)
    path = ledger_path(results)
    old = path.read_text() if path.exists() else ""
    atomic_text(path, old + ("" if not old or old.endswith("\n") else "\n") + json.dumps(entry, sort_keys=True) + "\n")
    return path
