"""Run one RunSpec end to end: skip it if its record exists, else train and write the record atomically."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import registry
from bench.records import RECORD_FORMAT, read_record, record_path, write_record
from bench.spec import RunSpec
from bench.versions import code_version, git_commit, package_versions


@dataclass(frozen=True)
class Workspace:
    """Where a benchmark keeps its files: records (committed), and a cache for built data and checkpoints."""

    results: Path
    cache: Path

    @property
    def checkpoints(self) -> Path:
        return self.cache / "checkpoints"

    @property
    def data_cache(self) -> Path:
        return self.cache / "data"


def base_record(spec: RunSpec, key: str, workspace: Workspace, hparam_source: dict[str, Any]) -> dict[str, Any]:
    """The provenance fields every record has, whatever the outcome."""
    method = registry.method_class(spec.method)
    dataset = registry.dataset_class(spec.dataset)
    return {
        "format": RECORD_FORMAT, "run_key": key, "spec": spec.to_dict(), "variant": spec.variant,
        "hparam_source": hparam_source, "code_version": code_version(method, dataset),
        "data_fingerprint": dataset().fingerprint(Path(spec.data_dir) if spec.data_dir else None,
                                                  workspace.data_cache),
        "versions": package_versions(), "git_commit": git_commit(), "device": spec.device,
        "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def run_spec(spec: RunSpec, workspace: Workspace, *, hparam_source: dict[str, Any] | None = None,
             progress: bool = True) -> tuple[dict[str, Any], bool]:
    """Return (record, trained): the existing record of `spec`, or a freshly trained one (then trained=True)."""
    from bench.trainer import Trainer

    key = spec.key(workspace.data_cache)
    path = record_path(workspace.results, key)
    if path.exists():
        return read_record(path), False
    trainer = Trainer(spec, workspace.data_cache, progress=progress)
    outcome = trainer.run()
    trainer.save_checkpoint(workspace.checkpoints / f"{key}.pt")
    record = base_record(spec, key, workspace, hparam_source or {"kind": "defaults"})
    record.update(status="done", **outcome)
    write_record(workspace.results, record)
    return record, True
