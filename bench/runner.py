"""Run one RunSpec end to end: skip it if recorded (or done by another worker), else claim it, train it (resuming
from its epoch checkpoint if a previous attempt was interrupted) and write its record atomically.

A non-finite loss is the method's failure: it is recorded with status 'failed' and the error, never as a result.
Any other exception (including being killed) leaves no record: the cell is trained again by the next attempt,
from its last epoch checkpoint.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.claims import ClaimStore
from bench.numerics import cpu_model
from bench.records import RECORD_FORMAT, read_record, record_path, write_record
from bench.spec import RunSpec
from bench.tracking import Tracker
from bench.versions import git_commit, package_versions
from bench.workspace import Workspace


@dataclass
class Outcome:
    """What became of one cell: 'trained', 'failed' (recorded as failed now), 'recorded' (already),
    or 'elsewhere' (done or being trained by another worker)."""

    state: str
    record: dict[str, Any] | None


def base_record(spec: RunSpec, key: str, identity: dict[str, Any], hparam_source: dict[str, Any]) -> dict[str, Any]:
    """The provenance fields every record has, whatever the outcome."""
    return {
        "format": RECORD_FORMAT, "run_key": key, "spec": spec.to_dict(), "variant": spec.variant,
        "hparam_source": hparam_source, "code_version": identity["code_version"],
        "data_fingerprint": identity["data_fingerprint"], "numerics": identity["numerics"], "cpu_model": cpu_model(),
        "versions": package_versions(), "git_commit": git_commit(), "device": spec.device,
        "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def run_spec(spec: RunSpec, workspace: Workspace, *, claims: ClaimStore | None = None,
             hparam_source: dict[str, Any] | None = None, progress: bool = True,
             tracker: Tracker | None = None) -> Outcome:
    """Train `spec` unless it is recorded or another worker has it; see the module docstring. With a `tracker`,
    the run is also logged to MLflow."""
    identity = spec.identity(workspace.data_cache)
    key = spec.key(identity)
    claims = claims or ClaimStore(workspace.claims_url())
    skipped = take(key, workspace, claims)
    if skipped is not None:
        return skipped
    resume = workspace.checkpoints / f"{key}.partial.pt"
    stop_heartbeat = claims.keep_alive(key)
    run_id = tracker.start(spec, key) if tracker else None
    on_epoch = (lambda epoch, point: tracker.epoch(run_id, epoch, point)) if tracker else None
    try:
        record = train_record(spec, key, identity, hparam_source or {"kind": "defaults"},
                              data_cache=workspace.data_cache, checkpoints=workspace.checkpoints, progress=progress,
                              on_epoch=on_epoch)
        write_record(workspace.results, record)
        resume.unlink(missing_ok=True)
        claims.finish(key, record)
    except BaseException:
        release_quietly(claims, key)
        if tracker:
            tracker.end(run_id, "KILLED")
        raise
    finally:
        stop_heartbeat.set()
    if tracker:
        tracker.finish(run_id, record)
    return Outcome("trained" if record["status"] == "done" else "failed", record)


def take(key: str, workspace: Workspace, claims: ClaimStore) -> Outcome | None:
    """Claim `key` for this worker and return None, or return why it needs no training here: 'recorded' (its record
    is in the results folder, copied there if another worker finished it) or 'elsewhere' (another worker has it)."""
    path = record_path(workspace.results, key)
    if path.exists():
        (workspace.checkpoints / f"{key}.partial.pt").unlink(missing_ok=True)  # a worker killed right after writing
        return Outcome("recorded", read_record(path))
    done_elsewhere = claims.done_record(key)
    if done_elsewhere is None and not claims.claim(key):
        return Outcome("elsewhere", None)
    if path.exists():  # finished by another worker between our check and our claim
        return Outcome("recorded", read_record(path))
    if done_elsewhere is not None:
        write_record(workspace.results, done_elsewhere)
        return Outcome("recorded", done_elsewhere)
    return None


def train_record(spec: RunSpec, key: str, identity: dict[str, Any], hparam_source: dict[str, Any], *,
                 data_cache: Path, checkpoints: Path, progress: bool = True,
                 on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train `spec` (datasets built in `data_cache`; resuming from `checkpoints/<key>.partial.pt` when it exists)
    and return its record: status 'done' with the results, or 'failed' for a non-finite loss. The best epoch's
    weights are saved as `checkpoints/<key>.pt`; the caller writes the record, then deletes the epoch checkpoint."""
    from bench.trainer import NumericalFault, Trainer

    trainer = Trainer(spec, data_cache, progress=progress)
    record = base_record(spec, key, identity, hparam_source)
    try:
        record.update(status="done", **trainer.run(resume_path=checkpoints / f"{key}.partial.pt", on_epoch=on_epoch))
        trainer.save_best(checkpoints / f"{key}.pt")
    except NumericalFault as fault:
        record.update(status="failed", error=str(fault))
    return record


def release_quietly(claims: ClaimStore, key: str) -> None:
    """Give the claim back while another error is on its way; a failure here is reported, never masks that error."""
    try:
        claims.release(key)
    except Exception as error:  # noqa: BLE001 - the error being raised matters more
        print(f"claims: could not release {key} ({type(error).__name__}); it goes stale and is taken over",
              file=sys.stderr)


def remove_failed(specs: list[RunSpec], workspace: Workspace, claims: ClaimStore) -> int:
    """Delete the failed records (and claims) of `specs` so that they are trained again; returns how many."""
    removed = 0
    for spec in specs:
        key = spec.key(spec.identity(workspace.data_cache))
        path = record_path(workspace.results, key)
        failed_here = path.exists() and read_record(path)["status"] != "done"
        failed_elsewhere = (claims.done_record(key) or {}).get("status") == "failed"
        if failed_here or failed_elsewhere:
            path.unlink(missing_ok=True)
            claims.forget(key)
            removed += 1
    return removed
