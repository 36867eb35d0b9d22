"""Run one RunSpec end to end: skip it if recorded (or done by another worker), else claim it, train it (resuming
from its epoch checkpoint if a previous attempt was interrupted) and write its record atomically.

A non-finite loss is the method's failure: it is recorded with status 'failed' and the error, never as a result.
Any other exception (including being killed) leaves no record: the cell is trained again by the next attempt,
from its last epoch checkpoint.
"""

from __future__ import annotations

import datetime
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import registry
from bench.claims import ClaimStore
from bench.errors import UserError
from bench.records import RECORD_FORMAT, read_record, record_path, write_record
from bench.spec import RunSpec
from bench.tracking import Tracker
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

    def default_claims_url(self) -> str:
        return f"sqlite:///{(self.results / '.claims.sqlite').resolve()}"

    def ensure_writable(self) -> None:
        """UserError unless records can be written to the results folder (checked before any training)."""
        try:
            self.results.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.results, prefix=".write-check-"):
                pass
        except OSError as error:
            raise UserError(f"results folder {self.results} is not writable ({error.strerror}); fix its permissions "
                            "or choose another with --results") from None


@dataclass
class Outcome:
    """What became of one cell: 'trained', 'failed' (recorded as failed now), 'recorded' (already),
    or 'elsewhere' (done or being trained by another worker)."""

    state: str
    record: dict[str, Any] | None


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


def run_spec(spec: RunSpec, workspace: Workspace, *, claims: ClaimStore | None = None,
             hparam_source: dict[str, Any] | None = None, progress: bool = True,
             tracker: Tracker | None = None) -> Outcome:
    """Train `spec` unless it is recorded or another worker has it; see the module docstring. With a `tracker`,
    the run is also logged to MLflow."""
    from bench.trainer import NumericalFault, Trainer

    key = spec.key(workspace.data_cache)
    path = record_path(workspace.results, key)
    resume = workspace.checkpoints / f"{key}.partial.pt"
    if path.exists():
        resume.unlink(missing_ok=True)  # left behind by a worker killed right after writing the record
        return Outcome("recorded", read_record(path))
    claims = claims or ClaimStore(workspace.default_claims_url())
    done_elsewhere = claims.done_record(key)
    if done_elsewhere is None and not claims.claim(key):
        return Outcome("elsewhere", None)
    if path.exists():  # finished by another worker between our check and our claim
        return Outcome("recorded", read_record(path))
    if done_elsewhere is not None:
        write_record(workspace.results, done_elsewhere)
        return Outcome("recorded", done_elsewhere)
    stop_heartbeat = claims.keep_alive(key)
    run_id = tracker.start(spec, key) if tracker else None
    on_epoch = (lambda epoch, val_map, loss: tracker.epoch(run_id, epoch, val_map, loss)) if tracker else None
    try:
        trainer = Trainer(spec, workspace.data_cache, progress=progress)
        record = base_record(spec, key, workspace, hparam_source or {"kind": "defaults"})
        try:
            record.update(status="done", **trainer.run(resume_path=resume, on_epoch=on_epoch))
            trainer.save_checkpoint(workspace.checkpoints / f"{key}.pt")
        except NumericalFault as fault:
            record.update(status="failed", error=str(fault))
        write_record(workspace.results, record)
        resume.unlink(missing_ok=True)
        claims.finish(key, record)
    except BaseException:
        claims.release(key)
        if tracker:
            tracker.end(run_id, "KILLED")
        raise
    finally:
        stop_heartbeat.set()
    if tracker:
        tracker.finish(run_id, record)
    return Outcome("trained" if record["status"] == "done" else "failed", record)


def remove_failed(specs: list[RunSpec], workspace: Workspace, claims: ClaimStore) -> int:
    """Delete the failed records (and claims) of `specs` so that they are trained again; returns how many."""
    removed = 0
    for spec in specs:
        key = spec.key(workspace.data_cache)
        path = record_path(workspace.results, key)
        failed_here = path.exists() and read_record(path)["status"] != "done"
        failed_elsewhere = (claims.done_record(key) or {}).get("status") == "failed"
        if failed_here or failed_elsewhere:
            path.unlink(missing_ok=True)
            claims.forget(key)
            removed += 1
    return removed
