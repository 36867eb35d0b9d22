"""Run cells: one RunSpec end to end (`run_spec`), or every pending cell of a grid, in this process or in local
worker processes (`run_grid`).

A cell is skipped if recorded (or done by another worker); otherwise it is claimed, trained (resuming from its epoch
checkpoint if a previous attempt was interrupted) and its record written atomically.

A non-finite loss is the method's failure: it is recorded with status 'failed' and the error, never as a result.
Any other exception (including being killed) leaves no record: the cell is trained again by the next attempt,
from its last epoch checkpoint.
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from bench import checkpoints
from bench.execute.claims import ClaimStore
from bench.execute.identity import plugin_code_version, run_identity, run_key
from bench.execute.tracking import Tracker
from bench.execute.workers import WorkerPlan, run_tasks
from bench.execute.workspace import Workspace
from bench.numerics import cpu_model
from bench.plan.recipes import RECIPE
from bench.records import RECORD_FORMAT, read_record, record_path, write_record
from bench.spec import RunSpec
from bench.versions import git_commit, package_versions

STATES = ("trained", "failed", "recorded", "elsewhere", "lost")
"""What can become of a cell: see `Outcome`."""


@dataclass
class Outcome:
    """What became of one cell: 'trained', 'failed' (recorded as failed now), 'recorded' (already),
    'elsewhere' (done or being trained by another worker), or 'lost' (not trained: its worker kept dying, or a
    cluster node refused it; `record` then holds only the 'error')."""

    state: str
    record: dict[str, Any] | None


def base_record(spec: RunSpec, key: str, identity: dict[str, Any], hparam_source: dict[str, Any]) -> dict[str, Any]:
    """The provenance fields every record has, whatever the outcome."""
    return {
        "format": RECORD_FORMAT, "run_key": key, "spec": spec.to_dict(), "variant": spec.variant,
        "hparam_source": hparam_source, "code_version": identity["code_version"],
        "code_version_trained": plugin_code_version(spec.method, spec.dataset),
        "data_fingerprint": identity["data_fingerprint"], "numerics": identity["numerics"], "cpu_model": cpu_model(),
        **({"weights_sha256": identity["weights_sha256"]} if "weights_sha256" in identity else {}),
        "versions": package_versions(), "git_commit": git_commit(), "device": spec.device,
        "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def run_spec(spec: RunSpec, workspace: Workspace, *, claims: ClaimStore | None = None,
             hparam_source: dict[str, Any] | None = None, progress: bool = True,
             tracker: Tracker | None = None,
             on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> Outcome:
    """Train `spec` unless it is recorded or another worker has it; see the module docstring. With a `tracker`,
    the run is also logged to MLflow; `on_epoch(epoch, point)` is called after every epoch it trains."""
    identity = run_identity(spec, workspace.data_cache, workspace.ledger())
    key = spec.key(identity)
    claims = claims or ClaimStore(workspace.claims_url())
    resume = checkpoints.resume_file(workspace.checkpoints, key)
    stop_heartbeat, run_id = None, None
    try:  # from the claim on: an interruption anywhere gives the claim back (release touches only our own claim)
        skipped = claim_or_skip(key, workspace, claims)
        if skipped is not None:
            return skipped
        stop_heartbeat = claims.keep_alive(key)
        run_id = tracker.start(spec, key) if tracker else None
        def after_epoch(epoch: int, point: dict[str, float]) -> None:
            if tracker:
                tracker.epoch(run_id, epoch, point)
            if on_epoch:
                on_epoch(epoch, point)

        record = train_record(spec, key, identity, hparam_source or {"kind": "defaults"},
                              data_cache=workspace.data_cache, checkpoint_dir=workspace.checkpoints, progress=progress,
                              on_epoch=after_epoch)
        write_record(workspace.results, record)
        resume.unlink(missing_ok=True)
        claims.finish(key, record)
    except BaseException:
        release_quietly(claims, key)
        if tracker:
            tracker.end(run_id, "KILLED")
        raise
    finally:
        if stop_heartbeat is not None:
            stop_heartbeat.set()
    if tracker:
        tracker.finish(run_id, record)
    return Outcome("trained" if record["status"] == "done" else "failed", record)


def claim_or_skip(key: str, workspace: Workspace, claims: ClaimStore) -> Outcome | None:
    """Claim `key` for this worker and return None, or return why it needs no training here: 'recorded' (its record
    is in the results folder, copied there if another worker finished it) or 'elsewhere' (another worker has it)."""
    path = record_path(workspace.results, key)
    if path.exists():
        checkpoints.resume_file(workspace.checkpoints, key).unlink(missing_ok=True)  # killed right after writing
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
                 data_cache: Path, checkpoint_dir: Path, progress: bool = True,
                 on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train `spec` (datasets built in `data_cache`; resuming from `checkpoint_dir`'s epoch checkpoint when it exists)
    and return its record: status 'done' with the results, or 'failed' for a non-finite loss. The best epoch's
    weights are saved in `checkpoint_dir` (`bench.checkpoints.best_file`); the caller writes the record, then deletes
    the epoch checkpoint."""
    from bench.trainer import NumericalFault, Trainer

    trainer = Trainer(spec, data_cache, progress=progress)
    record = base_record(spec, key, identity, hparam_source)
    try:
        record.update(status="done", **trainer.run(resume_path=checkpoints.resume_file(checkpoint_dir, key),
                                                   on_epoch=on_epoch))
        trainer.save_best(checkpoints.best_file(checkpoint_dir, key))
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
        key = run_key(spec, workspace.data_cache, workspace.ledger())
        path = record_path(workspace.results, key)
        failed_here = path.exists() and read_record(path)["status"] != "done"
        failed_elsewhere = (claims.done_record(key) or {}).get("status") == "failed"
        if failed_here or failed_elsewhere:
            path.unlink(missing_ok=True)
            claims.forget(key)
            removed += 1
    return removed


def outcome_line(spec: RunSpec, outcome: Outcome) -> str | None:
    """The line printed when a cell ends (None for a cell that was already recorded)."""
    label = f"{spec.dataset} {spec.variant} seed={spec.seed}" + (
        f" ({spec.recipe} recipe)" if RECIPE[spec.recipe].named else "")
    record = outcome.record
    if outcome.state == "trained":
        return (f"{label}: val mAP {record['val_map']:.2f}, test mAP {record['test_map']:.2f} (best epoch "
                f"{record['best_epoch']}, {record['train_seconds']:.1f} s of training)")
    if outcome.state == "failed":
        return f"{label}: FAILED, recorded as failed: {record['error']}"
    if outcome.state == "elsewhere":
        return f"{label}: being trained by another worker"
    if outcome.state == "lost":
        return f"{label}: NOT TRAINED ({record['error']}); run the command again to retry it"
    return None


@cache
def worker_tracker(cache_dir: str, uri: str) -> Tracker:
    """The MLflow tracker of a worker process, opened once per process."""
    return Tracker(Path(cache_dir), uri)


def run_cell(spec: RunSpec, source: dict[str, Any], workspace: Workspace,
             tracking: tuple[str, str] | None) -> Outcome:
    """One cell in a worker process: `run_spec` with the worker's own claims store and tracker (`tracking` is the
    tracker's (cache folder, URI), or None)."""
    tracker = worker_tracker(*tracking) if tracking else None
    return run_spec(spec, workspace, claims=ClaimStore(workspace.claims_url()), hparam_source=source,
                    progress=False, tracker=tracker)


def run_grid(cells: list[tuple[RunSpec, dict[str, Any]]], workspace: Workspace, *, plan: WorkerPlan | None = None,
             claims: ClaimStore | None = None, tracker: Tracker | None = None,
             progress: bool = True) -> dict[str, int]:
    """Run every cell not yet recorded, printing one line per cell trained, failed, left to another worker or not
    trained, under one progress bar over the cells (on a terminal). With a `plan` of several jobs, the cells are
    trained in that many local worker processes (`bench.execute.workers`), each with the plan's thread count, which must
    be this process's too: the run keys are computed here. Returns how many cells ended in each state."""
    from tqdm import tqdm

    workspace.ensure_writable()
    claims = claims or ClaimStore(workspace.claims_url())
    counts = dict.fromkeys(STATES, 0)
    with tqdm(total=len(cells), desc="cells", unit="cell", dynamic_ncols=True,
              disable=not (progress and sys.stderr.isatty())) as bar:

        def finished(spec: RunSpec, outcome: Outcome) -> None:
            counts[outcome.state] += 1
            bar.update()
            line = outcome_line(spec, outcome)
            if line is not None:
                bar.write(f"[{sum(counts.values())}/{len(cells)}] {line}", file=sys.stdout)
                sys.stdout.flush()

        if plan is None or plan.jobs == 1:
            for spec, source in cells:
                finished(spec, run_spec(spec, workspace, claims=claims, hparam_source=source, tracker=tracker,
                                        progress=progress))
            return counts
        pending, ledger = [], workspace.ledger()
        for spec, source in cells:
            path = record_path(workspace.results, run_key(spec, workspace.data_cache, ledger))
            if path.exists():
                finished(spec, Outcome("recorded", read_record(path)))
            else:
                pending.append((spec, source))
        tracking = (str(workspace.cache.resolve()), tracker.uri) if tracker else None
        started = time.perf_counter()
        lost = run_tasks([(spec, source, workspace, tracking) for spec, source in pending], run_cell, plan,
                         on_result=lambda task, outcome: finished(task[0], outcome),
                         on_broken=lambda unfinished: bar.write(
                             f"a worker process died; {len(unfinished)} unfinished cell(s) go to a new pool "
                             "(finished records are kept)", file=sys.stderr))
        for spec, _, _, _ in lost:
            finished(spec, Outcome("lost", {"error": "its worker process died again and again"}))
        bar.write(f"{len(pending)} cell(s) in {plan.jobs} worker processes of {plan.threads} thread(s): "
                  f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    return counts
