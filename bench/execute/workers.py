"""Local worker processes: the cells of a grid, or the studies of a tuning, in N processes on this machine.

Small convolutions do not scale across threads, independent runs do: on a 2-core machine two 1-thread processes
train about 1.65x as many images per second as one 2-thread process. So `bench` and `tune` default to one
worker per core with one thread each (`plan_workers`), and `--jobs 1 --threads 2` gives a single 2-thread process.
The thread count is part of a CPU run's numerics, hence of its run key.

The pool is the standard library's `ProcessPoolExecutor` with the `spawn` start method (a fresh interpreter per
worker: no torch or OpenMP state is forked). Each task is one cell (`run_spec`, with its claim, checkpoint resume
and record) or one study (`tune`), so the claims table and the Optuna storage keep their guarantees: two `bench`
commands on one grid still train each cell once, and a study counts its finished trials over every worker.

Faults:
- SIGINT (Ctrl-C reaches the whole process group; workers leave it to the parent) or SIGTERM to the command:
  every worker is sent SIGTERM; each gives its claim back and marks its MLflow run
  KILLED (`run_spec`'s cleanup), then exits; the command waits for them, so no child process is left.
- kill -9 of the command: its workers are killed too (Linux's parent-death signal), exactly as if they had been
  one process: their claims are taken over at once by the next command and their cells resume from their epoch
  checkpoints; a tuning trial in flight is retried after the heartbeat's grace period.
- A worker that dies (kill -9, the OOM killer) breaks the pool: finished records are already written, the other
  workers stop as above, and the pool is started again for the cells not yet finished, at most `RESTARTS` times.
  The dead worker's claim is taken over at once (its process is gone), and its cell resumes from its last epoch
  checkpoint.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

RESTARTS = 3
"""How many times a pool broken by a dying worker is started again before the rest is reported as not trained."""
STOP_GRACE_SECONDS = 30.0
"""How long an interrupted command waits for its workers to clean up before it kills them."""


@dataclass(frozen=True)
class WorkerPlan:
    """How many worker processes, and torch threads in each."""

    jobs: int
    threads: int


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def plan_workers(jobs: int | None, threads: int | None, device: str, cores: int | None = None) -> WorkerPlan:
    """The worker plan for `--jobs` and `--threads` (None = not given) on `device` ('cpu' or 'cuda').

    CPU: one worker per core with 1 thread each by default; given one of the two, the other fills the cores
    (`--jobs 1` -> 1 worker with every core; `--threads 2` -> cores // 2 workers). CUDA: one worker (sharing a GPU
    is for small cells and must be asked for with --jobs) with every core unless --threads says otherwise.
    """
    cores = cores or available_cores()
    if device == "cuda":
        return WorkerPlan(jobs or 1, threads or max(1, cores // (jobs or 1)))
    if jobs is None and threads is None:
        return WorkerPlan(cores, 1)
    if jobs is None:
        return WorkerPlan(max(1, cores // threads), threads)
    return WorkerPlan(jobs, threads or max(1, cores // jobs))


def start_worker(threads: int, parent: int) -> None:
    """Pool initializer: `threads` torch threads; SIGTERM raises in the task (so that its cleanup runs), SIGINT is
    left to the parent (Ctrl-C reaches the whole process group; the parent then sends SIGTERM, so that each
    worker gets one signal); and the worker is killed when its parent process `parent` dies, however it dies."""
    import torch
    from tqdm import tqdm

    from bench.execute.signals import ignore_late_signals, stop_on_signal

    die_with_parent(parent)
    torch.set_num_threads(threads)
    tqdm.set_lock(threading.RLock())  # not a multiprocessing lock: a worker ended by os._exit leaks no semaphore
    ignore_late_signals()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_on_signal(signum, frame) if IN_TASK["now"]
                  else os._exit(128 + signum))


def die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG); exit now if the parent is
    already gone. Elsewhere a worker outlives a killed parent until its task ends."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


IN_TASK = {"now": False}
"""True while a worker runs a task: SIGTERM then raises in the task (its cleanup runs); between tasks the worker
just exits."""


def call_in_worker(function: Callable[..., Any], *args: Any) -> Any:
    """Run a task; a worker interrupted by a signal exits at once after the task's cleanup, taking no next task."""
    IN_TASK["now"] = True
    try:
        return function(*args)
    except KeyboardInterrupt as interrupt:
        sys.stderr.flush()
        os._exit(128 + int(getattr(interrupt, "signum", signal.SIGINT)))
    finally:
        IN_TASK["now"] = False


def stop_workers(executor: ProcessPoolExecutor) -> None:
    """Send SIGTERM to every worker of `executor`, wait for them to clean up and exit, kill any that do not."""
    children = multiprocessing.active_children()
    for child in children:
        if child.pid is not None:
            try:
                os.kill(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for child in children:
        child.join(STOP_GRACE_SECONDS)
        if child.is_alive():
            child.kill()
            child.join()
    executor.shutdown(wait=True, cancel_futures=True)


def run_tasks(tasks: list[tuple[Any, ...]], function: Callable[..., Any], plan: WorkerPlan,
              on_result: Callable[[tuple[Any, ...], Any], None],
              on_broken: Callable[[Iterable[tuple[Any, ...]]], None]) -> list[tuple[Any, ...]]:
    """Call `function(*task)` for every task in `plan.jobs` spawned worker processes; `on_result(task, result)` in
    this process as each one finishes. A pool broken by a dying worker is started again for the unfinished tasks
    (`on_broken(unfinished)` is told first), at most RESTARTS times. Returns the tasks left unfinished (empty
    unless the restarts ran out). An exception raised by `function` (other than a worker's death) is raised here
    after the other workers were stopped."""
    pending = list(tasks)
    context = multiprocessing.get_context("spawn")
    for _ in range(RESTARTS + 1):
        if not pending:
            break
        executor = ProcessPoolExecutor(max_workers=min(plan.jobs, len(pending)), mp_context=context,
                                       initializer=start_worker, initargs=(plan.threads, os.getpid()))
        futures: dict[Future, tuple[Any, ...]] = {}
        try:
            futures = {executor.submit(call_in_worker, function, *task): task for task in pending}
            broken = False
            remaining = set(futures)
            while remaining:
                done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for future in done:
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        broken = True
                        continue
                    pending.remove(futures[future])
                    on_result(futures[future], result)
            if broken:
                on_broken(list(pending))
            executor.shutdown(wait=True)
        except BaseException:
            stop_workers(executor)
            executor = futures = None  # the pool's queues are freed now, not at exit: no "leaked semaphore" warning
            gc.collect()
            raise
    return pending

