"""Local worker processes (`bench --jobs`), with real processes: the plan, signals that stop every worker and give
their claims back, a worker killed with -9, and results equal to a single process's of the same numerics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from fixtures import alive, finish, metrics, parent_pids, write_grid

from bench.execute.workers import WorkerPlan, plan_workers
from bench.records import read_records


@pytest.mark.parametrize("jobs, threads, device, cores, plan", [
    (None, None, "cpu", 2, WorkerPlan(2, 1)),     # the default: every core busy with a 1-thread worker
    (1, None, "cpu", 2, WorkerPlan(1, 2)),        # one worker gets every core
    (1, 2, "cpu", 2, WorkerPlan(1, 2)),           # today's single 2-thread process
    (None, 2, "cpu", 8, WorkerPlan(4, 2)),        # the cores filled with 2-thread workers
    (3, 1, "cpu", 2, WorkerPlan(3, 1)),           # as asked, even beyond the cores
    (None, None, "cuda", 16, WorkerPlan(1, 16)),  # one worker per GPU unless --jobs shares it
    (4, None, "cuda", 16, WorkerPlan(4, 4)),
])
def test_worker_plan(jobs, threads, device, cores, plan):
    assert plan_workers(jobs, threads, device, cores) == plan


def pamlbench(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *args], cwd=cwd, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            start_new_session=True)


def children(pid: int) -> list[int]:
    """The worker processes of `pid` (multiprocessing's spawned workers, not its resource tracker)."""
    found = []
    for child in (child for child, parent in parent_pids().items() if parent == pid):
        try:
            command = (Path("/proc") / str(child) / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command and b"resource_tracker" not in command:
            found.append(child)
    return found


def running_claims(results: Path) -> int:
    engine = sa.create_engine(f"sqlite:///{results / '.claims.sqlite'}")
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(
                "SELECT count(*) FROM pamlbench_claims WHERE status = 'running'")).scalar_one()
    finally:
        engine.dispose()


def wait_for(condition, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def start_grid(tmp_path: Path, cache_root: Path, epochs: int, seeds: list[int]) -> subprocess.Popen:
    write_grid(tmp_path / "grid.toml", ["an", "wan"], seeds, epochs)
    return pamlbench("bench", "--config", "grid.toml", "--jobs", "2", "--threads", "1", "--no-tracking",
                     "--no-report", "--cache", str(cache_root), cwd=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM to the command", "Ctrl-C to the process group"])
def test_a_signal_stops_every_worker_and_gives_their_claims_back(how, mini_mosaic, tmp_path, cache_root):
    command = start_grid(tmp_path, cache_root, epochs=30, seeds=[0])
    wait_for(lambda: len(children(command.pid)) == 2 and (tmp_path / "results" / ".claims.sqlite").exists()
             and running_claims(tmp_path / "results") == 2)
    workers = children(command.pid)
    if how.startswith("SIGTERM"):
        command.send_signal(signal.SIGTERM)
    else:
        os.killpg(command.pid, signal.SIGINT)
    code, out, err = finish(command, timeout=120)
    assert code == (143 if how.startswith("SIGTERM") else 130), err
    assert "finished runs are kept" in err and "Traceback" not in err
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=10)
    assert running_claims(tmp_path / "results") == 0, err  # both claims given back: a new command starts at once
    assert read_records(tmp_path / "results") == []


@pytest.mark.slow
def test_a_worker_killed_with_9_loses_nothing_and_its_cell_is_trained_again(mini_mosaic, tmp_path, cache_root):
    command = start_grid(tmp_path, cache_root, epochs=6, seeds=[0, 1])
    wait_for(lambda: len(children(command.pid)) == 2 and (tmp_path / "results").exists()
             and len(list((tmp_path / "results").glob("*.json"))) >= 1)
    finished_before = {path.name: path.read_bytes() for path in (tmp_path / "results").glob("*.json")}
    os.kill(children(command.pid)[0], signal.SIGKILL)
    code, out, err = finish(command)
    assert code == 0, err
    assert "a worker process died" in err
    records = read_records(tmp_path / "results")
    assert sorted((r["variant"], r["spec"]["seed"]) for r in records) == [("an", 0), ("an", 1), ("wan", 0),
                                                                         ("wan", 1)]
    for name, content in finished_before.items():  # finished records untouched
        assert (tmp_path / "results" / name).read_bytes() == content
    assert running_claims(tmp_path / "results") == 0


@pytest.mark.slow
def test_workers_give_the_numbers_of_one_process_with_the_same_threads(mini_mosaic, tmp_path, cache_root):
    """Two 1-thread workers and one 1-thread process compute the same run keys and bit-identical results."""
    write_grid(tmp_path / "grid.toml", ["an", "ll-cp"], [0], 2)
    common = ("--config", "grid.toml", "--no-tracking", "--no-report", "--threads", "1", "--cache", str(cache_root))
    for folder, jobs in (("pool", "2"), ("single", "1")):
        code, out, err = finish(pamlbench("bench", *common, "--jobs", jobs, "--results", folder, cwd=tmp_path))
        assert code == 0, err
    assert metrics(tmp_path / "pool") == metrics(tmp_path / "single") != {}
