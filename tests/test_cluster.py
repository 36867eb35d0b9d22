"""`--cluster`: the grid and the tuning trials run as Ray tasks on a real two-node Ray cluster.

The cluster (`bench.execute.localcluster`) is two `ray start` process trees (a head and a worker node, 1 CPU each)
inside a
private network namespace where only 127.0.0.1 exists; the driver runs in the same namespace. It is stopped by
killing the processes it started, never by `ray stop`. The tests run in file order: the last one kills the worker
node.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures import TEST_PLUGINS, finish, metrics, plugin_path, write_grid

from bench.execute.localcluster import RayCluster, all_processes, kill, namespace_available
from bench.records import read_records

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray")
    reason = namespace_available()
    if reason:
        pytest.skip(reason)
    with plugin_path(TEST_PLUGINS):  # mini-mosaic, on the nodes too (they inherit the environment)
        started = RayCluster(nodes=2, cpus=1)
        try:
            yield started
        finally:
            started.stop()


def one_process_reference(grid: Path, folder: Path, cache: Path) -> dict:
    """The same cells trained by a plain single-process `bench` with one thread (as each Ray task has)."""
    done = subprocess.run([sys.executable, "-m", "bench.cli", "bench", "--config", str(grid), "--results",
                           str(folder), "--cache", str(cache), "--no-report", "--no-tracking", "--jobs", "1",
                           "--threads", "1"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return metrics(folder)


def test_grid_runs_on_both_nodes_each_cell_once_with_single_process_numbers(cluster, tmp_path, cache_root):
    grid = write_grid(tmp_path / "grid.toml", ["an", "ll-r"], [0, 1], epochs=2)
    driver = cluster.pamlbench("bench", "--config", str(grid), "--results", "results", "--cache", str(cache_root),
                               "--cluster", cluster.address, "--threads", "1", "--no-tracking", "--out",
                               "board.md", cwd=tmp_path)
    code, out, err = finish(driver)
    assert code == 0, err
    trained = [line.split(":")[0] for line in out.splitlines() if "val mAP" in line]
    assert sorted(trained) == sorted(f"mini-mosaic {v} seed={s}" for v in ("an", "ll-r") for s in (0, 1))
    assert "4 run(s) trained" in out and "0 already recorded" in out
    assert "ll-r" in (tmp_path / "board.md").read_text()
    assert metrics(tmp_path / "results") == one_process_reference(grid, tmp_path / "reference", cache_root)

    again = cluster.pamlbench("bench", "--config", str(grid), "--results", "results", "--cache", str(cache_root),
                              "--cluster", cluster.address, "--threads", "1", "--no-tracking", "--out", "board.md",
                              cwd=tmp_path)
    code, out, err = finish(again)
    assert code == 0 and "0 run(s) trained" in out and "4 already recorded" in out, out + err


def test_tune_runs_trials_on_both_nodes_within_the_budget(cluster, tmp_path, cache_root):
    import mlflow
    import optuna

    grid = write_grid(tmp_path / "grid.toml", ["an"], [0], epochs=1)
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cluster.env["MLFLOW_TRACKING_URI"] = tracking
    try:
        driver = cluster.pamlbench("tune", "--config", str(grid), "--results", "results", "--cache",
                                   str(cache_root), "--storage", storage, "--cluster", cluster.address, "--threads",
                                   "1", "--n-trials", "4", "--pruner", "none", cwd=tmp_path)
        code, out, err = finish(driver)
    finally:
        del cluster.env["MLFLOW_TRACKING_URI"]
    assert code == 0, err
    assert "2 worker task(s)" in out
    [summary] = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    trials = study.get_trials()
    finished = [t for t in trials if t.state.is_finished()]
    assert 4 <= len(finished) <= 5  # 4 asked; with 2 workers at most one more can finish
    assert len({t.number for t in trials}) == len(trials)
    assert len({t.user_attrs["worker"] for t in finished}) == 2  # both nodes ran trials
    assert (tmp_path / "results" / "tuned").is_dir()
    # the hierarchy is as without a cluster: one study parent, a child per trial (a client, not
    # mlflow.set_tracking_uri, which would change the tracking URI of every later test through the environment)
    client = mlflow.MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([client.get_experiment_by_name("mini-mosaic/single-positive").experiment_id])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(parents) == 1 and len(children) == len(finished)
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parents[0].info.run_id}
    assert all(run.info.status == "FINISHED" for run in runs)


def test_cluster_auto_starts_ray_on_this_machine_with_every_cpu(mini_mosaic, tmp_path, cache_root):
    pytest.importorskip("ray")
    reason = namespace_available()
    if reason:
        pytest.skip(reason)
    grid = write_grid(tmp_path / "grid.toml", ["an"], [0, 1], epochs=1)
    machine = RayCluster(nodes=0)  # only the loopback namespace: the driver starts its own Ray instance in it
    try:
        driver = machine.pamlbench("bench", "--config", str(grid), "--results", "results", "--cache",
                                   str(cache_root), "--cluster", "auto", "--threads", "1", "--no-tracking",
                                   "--no-report", cwd=tmp_path)
        code, out, err = finish(driver)
    finally:
        machine.stop()
    assert code == 0, err
    assert f"cluster auto: 2 cell(s) submitted ({os.cpu_count()} CPU;" in out
    assert "2 run(s) trained" in out and len(read_records(tmp_path / "results")) == 2


def test_killed_worker_node_its_cell_is_retried_and_recorded_once(cluster, tmp_path, cache_root):
    grid = write_grid(tmp_path / "grid.toml", ["an"], [3, 4], epochs=20)  # long enough to be killed mid-cell
    worker_cache = tmp_path / "worker-cache"
    if (cache_root / "data").is_dir():  # the built mosaics: the nodes need not build them again
        shutil.copytree(cache_root / "data", worker_cache / "data")
    driver = cluster.pamlbench("bench", "--config", str(grid), "--results", "results", "--cache", str(cache_root),
                               "--worker-cache", str(worker_cache), "--cluster", cluster.address, "--threads", "1",
                               "--no-tracking", "--no-report", cwd=tmp_path)
    deadline = time.time() + 120
    while len(list((worker_cache / "checkpoints").glob("*.partial.pt"))) < 2:  # both cells past their first epoch
        assert time.time() < deadline and driver.poll() is None, "the cells did not start on both nodes"
        time.sleep(0.2)
    victims = cluster.worker_node_processes()
    commands = all_processes()
    busy = [pid for pid in victims if commands.get(pid, "").startswith("ray::")
            and not any(idle in commands[pid] for idle in ("IDLE", "Agent"))]
    assert busy, "no task was running on the worker node"
    for pid in victims:
        kill(pid)
    code, out, err = finish(driver)
    assert code == 0, out + err
    records = read_records(tmp_path / "results")
    assert len(records) == 2 and all(r["status"] == "done" for r in records)
    assert len([line for line in out.splitlines() if "val mAP" in line]) == 2
    assert metrics(tmp_path / "results") == one_process_reference(grid, tmp_path / "reference", cache_root)
