"""Run a grid's cells as Ray tasks on a cluster (`pamlbench bench --cluster ADDRESS`).

The driver (this process) keys every cell, skips those already recorded, claims the rest in the claims table, and
submits each as one Ray task. A task trains one cell on whatever node Ray places it and returns the record (and
the best epoch's weights) to the driver, which writes them: workers need no shared file system for the results.

- Resources: each task asks for `threads` CPUs (its torch thread count, so part of its numerics) and, on a GPU
  cluster, `gpus` GPUs: 1 by default for a dataset with a data folder, a fraction (0.25) for the small built-in
  datasets, so that several of their cells share one GPU.
- Numerics: before submitting, one probe task reports the numerics of a worker with the cells' resources; the
  driver keys the cells with them. A task whose own key differs (a node of another instruction set, GPU model,
  torch or code) trains nothing and says so: a cluster never mixes numerics under one key.
- Faults: a task whose worker process or node dies (kill -9, preemption, out of memory) is retried by Ray up to
  `retries` times, and resumes from its epoch checkpoint in `worker_cache` when that folder survives (a node's
  local disk for a retry on the same node, or a shared path given as `--worker-cache`). A method failure (a
  non-finite loss) or a user error (a bad hyperparameter) is not retried: it comes back as a failed record.
- Two drivers on one grid: every cell is claimed in the claims table before it is submitted (heartbeats for all
  cells in flight), so a second driver on the same claims storage submits only the cells nobody holds.
- Addresses: `auto` starts a Ray instance for this command on this machine, with every CPU and GPU (it stops with
  the command); anything else is the address of a running cluster (`HOST:PORT` of its head, or
  `ray://HOST:10001`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any

from bench import checkpoints
from bench.errors import UserError, first_line
from bench.execute.claims import ClaimStore
from bench.execute.identity import run_identity
from bench.execute.ledger import NO_CARRY, Ledger
from bench.execute.runner import Outcome, base_record, claim_or_skip, outcome_line, release_quietly, train_record
from bench.execute.tracking import Tracker
from bench.execute.workspace import Workspace
from bench.records import write_record
from bench.spec import RunSpec

EMBEDDED_GPU_SHARE = 0.25
"""GPU share of one cell of a built-in dataset (they are small); cells of prepared datasets take a whole GPU."""

DEFAULT_RETRIES = 3
"""Times a task whose worker or node died is run again."""


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """What every task of a run asks for, and where workers keep their data and checkpoints."""

    threads: int = 1
    gpus: float | None = None
    retries: int = DEFAULT_RETRIES
    worker_cache: str = ""
    ledger: Ledger = NO_CARRY

    def gpus_for(self, spec: RunSpec) -> float:
        if spec.device != "cuda":
            return 0
        if self.gpus is not None:
            return self.gpus
        return 1.0 if spec.data_dir else EMBEDDED_GPU_SHARE


def head_address(address: str) -> tuple[str, int]:
    """(host, port) of a HOST:PORT head address; UserError unless the port is ASCII digits in 1-65535. A bracketed
    IPv6 literal is refused with a clear line (the head is given by IPv4 address or host name)."""
    host, sep, port = address.rpartition(":")
    usage = "give HOST:PORT of the Ray head (e.g. headnode:6379), ray://HOST:PORT, or auto"
    if address.startswith("[") or host.count(":"):
        raise UserError(f"--cluster {address}: IPv6 head addresses are not supported; give the head's IPv4 address "
                        "or host name")
    if not sep or not host or not (port.isascii() and port.isdigit()):
        raise UserError(f"--cluster {address}: {usage}")
    if not 1 <= int(port) <= 65535:
        raise UserError(f"--cluster {address}: port {int(port)} is not in 1-65535; {usage}")
    return host, int(port)


def connect(address: str) -> dict[str, float]:
    """Join the cluster at `address` ('auto': this machine's) and return its resources; UserError when it cannot
    be reached or Ray is not installed."""
    try:
        import ray
    except ImportError:
        raise UserError("--cluster needs Ray: pip install 'pamlbench[cluster]'") from None
    if address != "auto" and not address.startswith("ray://"):
        check_reachable(address)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        ray.init(address="local" if address == "auto" else address, logging_level=logging.WARNING,
                 log_to_driver=False, include_dashboard=False if address == "auto" else None,
                 runtime_env=plugin_environment())
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UserError(f"cannot join the Ray cluster at {address}: {first_line(error)}") from None
    finally:
        for signum, handler in handlers.items():  # ray.init installs its own SIGTERM handler
            signal.signal(signum, handler)
    return ray.cluster_resources()


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """UserError unless something accepts TCP connections at `address` (HOST:PORT of a Ray head) within
    `timeout` seconds (Ray itself would retry for minutes)."""
    host, port = head_address(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        raise UserError(f"cannot reach the Ray head at {address} ({error.strerror or error}); start it with `ray "
                        "start --head` or check the address") from None


def plugin_environment() -> dict[str, Any] | None:
    """The Ray runtime environment that gives workers this driver's plugin path, if one is set."""
    path = os.environ.get("PAMLBENCH_PLUGIN_PATH")
    return {"env_vars": {"PAMLBENCH_PLUGIN_PATH": path}} if path else None


def probe_numerics(device: str, threads: int) -> dict[str, Any]:
    """What a worker with `threads` threads on `device` reports: numerics descriptor and torch version (runs on a
    worker)."""
    import torch

    from bench.numerics import numerics

    torch.set_num_threads(threads)
    return {"numerics": numerics(device), "torch": torch.__version__.split("+")[0]}


def train_cell(spec_fields: dict[str, Any], source: dict[str, Any], expected_key: str,
               options: TaskOptions) -> dict[str, Any]:
    """Train one cell on a worker; returns {'record', 'weights'} or {'mismatch': why} (runs on a worker).

    Resumes from the epoch checkpoint in `<worker_cache>/checkpoints/` when a previous attempt left it."""
    import torch

    torch.set_num_threads(options.threads)
    spec = RunSpec.from_dict(spec_fields)
    data_cache, checkpoint_dir = Path(options.worker_cache) / "data", Path(options.worker_cache) / "checkpoints"
    identity = run_identity(spec, data_cache, options.ledger)
    key = spec.key(identity)
    if key != expected_key:
        return {"mismatch": f"node {socket.gethostname()} keys this cell {key}, the driver {expected_key}: its "
                            f"numerics, torch or code differ ({identity['numerics']}, torch {identity['torch']})"}
    try:
        record = train_record(spec, key, identity, source, data_cache=data_cache, checkpoint_dir=checkpoint_dir,
                              progress=False)
    except UserError as error:  # a bad hyperparameter: the cell fails, nothing to retry
        record = {**base_record(spec, key, identity, source), "status": "failed", "error": str(error)}
    best = checkpoints.best_file(checkpoint_dir, key)
    weights = best.read_bytes() if best.exists() else None
    checkpoints.resume_file(checkpoint_dir, key).unlink(missing_ok=True)
    best.unlink(missing_ok=True)
    return {"record": record, "weights": weights}


def driver_key(spec: RunSpec, workspace: Workspace, probed: dict[str, Any]) -> str:
    """The run key `spec` gets on a worker with the `probed` numerics (the driver may have no GPU)."""
    identity = run_identity(dataclasses.replace(spec, device="cpu"), workspace.data_cache, workspace.ledger())
    return spec.key({**identity, **probed})


def run_on_cluster(cells: list[tuple[RunSpec, dict[str, Any]]], workspace: Workspace, address: str,
                   resources: dict[str, float], options: TaskOptions, *, device: str, claims: ClaimStore,
                   tracker: Tracker | None = None) -> dict[str, int]:
    """Run every pending cell as a Ray task on the cluster at `address` (joined with `connect`, which gave its
    `resources`), on `device` ('auto', 'cpu' or 'cuda', as the grid asks: resolved against the cluster's
    resources, not the driver's), write each record as its task returns, and return the counts per state
    ('trained', 'failed', 'recorded', 'elsewhere', 'lost')."""
    import ray
    from tqdm import tqdm

    chosen = cluster_device(device, resources)
    cells = [(dataclasses.replace(spec, device=chosen), source) for spec, source in cells]
    probe = ray.remote(probe_numerics)
    task = ray.remote(train_cell)
    probes = {}
    counts = dict.fromkeys(("trained", "failed", "recorded", "elsewhere", "lost"), 0)
    in_flight: dict[Any, tuple[RunSpec, str]] = {}
    beating: set[str] = set()
    stop_heartbeat = claims.keep_alive_all(beating)
    try:
        for spec, source in cells:
            gpus = options.gpus_for(spec)
            if (spec.device, gpus) not in probes:
                probes[spec.device, gpus] = ray.get(probe.options(num_cpus=options.threads, num_gpus=gpus).remote(
                    spec.device, options.threads))
            key = driver_key(spec, workspace, probes[spec.device, gpus])
            skipped = claim_or_skip(key, workspace, claims)
            if skipped is not None:
                counts[skipped.state] += 1
                continue
            beating.add(key)
            ref = task.options(num_cpus=options.threads, num_gpus=gpus, max_retries=options.retries,
                               retry_exceptions=False, name=f"{spec.dataset} {spec.variant} seed {spec.seed}").remote(
                spec.to_dict(), source, key, options)
            in_flight[ref] = (spec, key)
        print(f"cluster {address}: {len(in_flight)} cell(s) submitted ({describe(resources)}; "
              f"{options.threads} thread(s) per cell)", flush=True)
        with tqdm(total=len(in_flight), desc="cells", unit="cell", dynamic_ncols=True) as bar:
            while in_flight:
                [ref], _ = ray.wait(list(in_flight), num_returns=1)
                spec, key = in_flight.pop(ref)
                outcome = collect(ref, spec, key, workspace, claims, tracker)
                beating.discard(key)
                counts[outcome.state] += 1
                bar.write(outcome_line(spec, outcome))
                bar.update()
    except BaseException:
        for ref, (_, key) in in_flight.items():
            ray.cancel(ref, force=True)
            release_quietly(claims, key)
        raise
    finally:
        stop_heartbeat.set()
    return counts


def collect(ref, spec: RunSpec, key: str, workspace: Workspace, claims: ClaimStore,
            tracker: Tracker | None) -> Outcome:
    """Wait for the task behind `ref` and `settle` what it returned (a task lost for good, its retries spent,
    returns {'lost': why})."""
    import ray
    from ray.exceptions import RayError

    try:
        returned = ray.get(ref)
    except RayError as error:
        returned = {"lost": first_line(error)}
    return settle(returned, spec, key, workspace, claims, tracker)


def settle(returned: dict[str, Any], spec: RunSpec, key: str, workspace: Workspace, claims: ClaimStore,
           tracker: Tracker | None) -> Outcome:
    """Write what a cell's task returned: the record (and best weights), committed as a local run's; or, for a
    task that was lost or refused by a node of other numerics, give the claim back so that a later command trains
    the cell."""
    if "lost" in returned or "mismatch" in returned:
        release_quietly(claims, key)
        return Outcome("lost", {"error": returned.get("lost") or returned["mismatch"]})
    record = returned["record"]
    if returned["weights"] is not None:
        from bench.records import atomic_write

        atomic_write(checkpoints.best_file(workspace.checkpoints, key), returned["weights"])
    write_record(workspace.results, record)
    claims.finish(key, record)
    if tracker:
        tracker.finish(tracker.start(spec, key), record)
    return Outcome("trained" if record["status"] == "done" else "failed", record)


def cluster_device(requested: str, resources: dict[str, float]) -> str:
    """'cuda' when the grid asks for 'auto' or 'cuda' and the cluster has GPUs, 'cpu' for 'auto' or 'cpu'
    otherwise; UserError for 'cuda' on a cluster without GPUs."""
    has_gpu = resources.get("GPU", 0) > 0
    if requested == "cuda" and not has_gpu:
        raise UserError("--device cuda was asked for, but the Ray cluster has no GPU; use --device cpu or auto")
    return "cuda" if requested != "cpu" and has_gpu else "cpu"


def describe(resources: dict[str, float]) -> str:
    parts = [f"{resources.get('CPU', 0):g} CPU"]
    if resources.get("GPU"):
        parts.append(f"{resources['GPU']:g} GPU")
    return ", ".join(parts)


def tune_worker(grid, base: RunSpec, storage_url: str, budget, sampler_offset: int, *, heartbeat: float,
                tracking: tuple[str, str] | None, parent: str | None, options: TaskOptions) -> None:
    """Run trials of `base`'s study on a cluster worker until the study has its budget's finished trials."""
    import ray
    import torch

    from bench.execute.tuning import trial_worker

    torch.set_num_threads(options.threads)
    trial_worker(grid, base, storage_url, budget, sampler_offset, heartbeat, tracking, parent,
                 str(Path(options.worker_cache) / "data"), worker=ray.get_runtime_context().get_node_id())


def tune_on_cluster(grid, bases: list[RunSpec], workspace: Workspace, resources: dict[str, float],
                    options: TaskOptions, budget, *, heartbeat: float,
                    tracker: Tracker | None) -> list[dict[str, Any]]:
    """Tune each of `bases` in turn, its trials run by as many Ray tasks as the cluster has slots (at most
    `n_trials`), all on the study in `workspace.optuna_url()`, which every worker must reach (PostgreSQL, or the
    SQLite default on a single machine); between rounds of trials the driver `advance`s the study (its confirmation
    runs are trained in the driver's process); returns the summaries."""
    import ray
    from ray.exceptions import RayError

    from bench.execute.tuning import advance, enqueue_first_trials, open_study, start_parent, summarize
    from bench.plan.studies import spec_study

    device = cluster_device(grid.device, resources)
    worker_grid = grid.narrow(device=device)
    task = ray.remote(tune_worker)
    tracking = (str(workspace.cache.resolve()), workspace.tracking_uri()) if tracker else None
    summaries = []
    for base in bases:
        base = dataclasses.replace(base, device=device)
        name = spec_study(base)
        study = open_study(grid, base, workspace.optuna_url(), budget, heartbeat)
        parent = start_parent(tracker, base, name)
        gpus = options.gpus_for(base)
        slots = int(resources.get("GPU", 0) // gpus) if gpus else int(resources.get("CPU", 1) // options.threads)
        workers = max(1, min(slots, budget.n_trials))
        print(f"tune {name}: {workers} worker task(s) on the cluster", flush=True)
        enqueue_first_trials(study, grid, base, budget)
        while not study.user_attrs.get("concluded"):
            refs = [task.options(num_cpus=options.threads, num_gpus=gpus, max_retries=options.retries,
                                 retry_exceptions=False).remote(
                worker_grid, base, workspace.optuna_url(), budget, index, heartbeat=heartbeat, tracking=tracking,
                parent=parent, options=options)
                for index in range(workers)]
            try:
                ray.get(refs)
            except RayError as error:
                raise UserError(f"tune {name}: a worker task failed for good: {first_line(error)}") from None
            except BaseException:
                for ref in refs:
                    ray.cancel(ref, force=True)
                raise
            advance(study, grid, base, workspace.data_cache, budget, progress=False)
        summaries.append(summarize(study, base, workspace, budget, tracker=tracker, parent=parent))
    return summaries
