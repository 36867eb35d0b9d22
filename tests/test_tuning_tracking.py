"""Optuna tuning and MLflow tracking on real storage (SQLite files, a real PostgreSQL server), no mocks."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli.main import main
from bench.records import read_records


def pamlbench(*args, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def grid_file(folder: Path, variants=("an",), seeds=(0,), epochs=3) -> Path:
    path = folder / "grid.toml"
    path.write_text(f"datasets = ['mini-mosaic']\nvariants = {list(variants)!r}\nseeds = {list(seeds)!r}\n"
                    f"device = 'cpu'\n[overrides]\nepochs = {epochs}\n")
    return path


@pytest.mark.slow
def test_tune_writes_a_study_with_pruning_mlflow_runs_and_bench_uses_it(mini_mosaic, tmp_path, cache_root,
                                                                      monkeypatch):
    import mlflow
    import optuna

    monkeypatch.chdir(tmp_path)
    grid_file(tmp_path, variants=("ls",), epochs=3)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    cache = tmp_path / "cache"
    assert main(["tune", "--config", "grid.toml", "--n-trials", "4", "--storage", storage, "--cache",
                 str(cache), "--jobs", "1"]) == 0
    name = "pamlbench/mini-mosaic/single-positive/labels1200/ls/small-cnn/3ep"
    study = optuna.load_study(study_name=name, storage=storage)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 4 and "PRUNED" in states, states
    assert set(study.best_params) == {"lr", "ls_coef"}
    summary = json.loads(next((tmp_path / "results" / "tuned").glob("*.json")).read_text())
    assert summary["study"] == name and summary["n_trials"] == 4 and summary["pruned"] >= 1
    assert summary["epochs_trained"] < 4 * 3  # pruning saved epochs
    mlflow.set_tracking_uri(f"sqlite:///{cache / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["mini-mosaic/single-positive"])
    assert len(runs) == 5  # the study's parent run and its four trials
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(children) == 4 and children["metrics.val_map"].notna().all()
    # the grid now trains the tuned hyperparameters and says so
    assert main(["bench", "--config", "grid.toml", "--cache", str(cache), "--jobs", "1"]) == 0
    records = {r["spec"]["recipe"]: r for r in read_records(tmp_path / "results")}
    assert set(records) == {"tuned", "defaults"}  # the mosaics' recipes: the study's best values, and the defaults
    record = records["tuned"]
    source = record["hparam_source"]
    assert (source["kind"], source["study"], source["n_trials"], source["overrides"]) == ("tuned", name, 4,
                                                                                          {"epochs": 3})
    assert source["values"] == study.best_params and source["budget"]["n_trials"] == 4
    assert record["spec"]["lr"] == pytest.approx(study.best_params["lr"])
    assert records["defaults"]["spec"]["lr"] == 3e-3
    board = (tmp_path / "results" / "leaderboard-tuned.md").read_text()
    assert "### Recipe: tuned" in board and f"tuned: 4 trials, study {name}" in board
    runs = mlflow.search_runs(experiment_names=["mini-mosaic/single-positive"],
                              filter_string="metrics.final_test_map > 0")
    bench_run = runs[runs["tags.pamlbench.run_key"] == record["run_key"]]
    assert len(bench_run) == 1 and bench_run["metrics.final_test_map"].iloc[0] == pytest.approx(record["test_map"])
    assert bench_run["params.seed"].iloc[0] == "0" and bench_run["tags.git_commit"].iloc[0]
    # the per-epoch curve is steps 1..3 of test_map, and nothing else is logged under that key
    history = mlflow.MlflowClient().get_metric_history(bench_run["run_id"].iloc[0], "test_map")
    assert [(m.step, m.value) for m in history] == [(p["epoch"], pytest.approx(p["test_map"])) for p in record["curve"]]


@pytest.mark.slow
def test_killed_tune_resumes_and_retries_the_lost_trial(mini_mosaic, tmp_path, cache_root):
    import optuna

    grid_file(tmp_path, variants=("an",), epochs=6)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = ("tune", "--config", "grid.toml", "--n-trials", "3", "--pruner", "none", "--storage", storage,
            "--cache", str(cache_root), "--no-tracking", "--heartbeat", "1")
    worker = pamlbench(*args, cwd=tmp_path)
    name = "pamlbench/mini-mosaic/single-positive/labels1200/an/small-cnn/6ep"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            trials = optuna.load_study(study_name=name, storage=storage).trials
        except KeyError:
            trials = []
        # the second trial has run an epoch, so its heartbeat is recorded: optuna counts a trial as stale only by
        # its heartbeats, and one killed between its creation and its first heartbeat would stay RUNNING
        if [t.state.name for t in trials] == ["COMPLETE", "RUNNING"] and trials[1].intermediate_values:
            break
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    time.sleep(4)  # past the heartbeat grace period: the running trial is stale
    resumed = pamlbench(*args, cwd=tmp_path)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    trials = optuna.load_study(study_name=name, storage=storage).trials
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 3 and states.count("FAIL") == 1 and "RUNNING" not in states
    assert trials[0].state.name == "COMPLETE" and trials[1].state.name == "FAIL"  # finished work kept
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert len(retried) == 1 and retried[0].params == trials[1].params


@pytest.mark.slow
def test_two_workers_on_postgresql_share_a_study_and_a_grid(mini_mosaic, tmp_path, cache_root, postgres_url):
    import optuna
    import sqlalchemy as sa

    grid_file(tmp_path, variants=("an", "wan"), seeds=(0, 1), epochs=1)
    common = ("--config", "grid.toml", "--storage", postgres_url, "--cache", str(cache_root), "--no-tracking",
              "--jobs", "1", "--threads", "1")
    tuners = [pamlbench("tune", "--variants", "an", "--n-trials", "4", "--pruner", "none", *common, cwd=tmp_path)
              for _ in range(2)]
    outputs = [worker.communicate(timeout=600) for worker in tuners]
    assert all(worker.returncode == 0 for worker in tuners), outputs
    trials = optuna.load_study(study_name="pamlbench/mini-mosaic/single-positive/labels1200/an/small-cnn/1ep",
                               storage=postgres_url).trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))  # no duplicated trial
    assert all(t.state.name == "COMPLETE" for t in trials)  # none lost or left running
    assert 4 <= len(trials) <= 5  # the budget, plus at most one trial started by the second worker meanwhile
    benches = [pamlbench("bench", "--no-report", *common, cwd=tmp_path) for _ in range(2)]
    outputs = [worker.communicate(timeout=600) for worker in benches]
    assert all(worker.returncode == 0 for worker in benches), outputs
    trained = [line.split("] ")[1].split(":")[0] for out, _ in outputs for line in out.splitlines()
               if "val mAP" in line]
    # an under both recipes (tuned, defaults), wan under defaults alone (its study was not run): each cell once
    assert sorted(trained) == sorted(set(trained)) and len(trained) == 6
    assert sum("(tuned recipe)" in cell for cell in trained) == 2
    assert len(read_records(tmp_path / "results")) == 6
    engine = sa.create_engine(postgres_url)
    with engine.connect() as connection:
        statuses = connection.execute(sa.text("SELECT status FROM pamlbench_claims")).scalars().all()
    engine.dispose()
    assert statuses == ["done"] * 6


def test_tuning_ranges_follow_the_dataset(capsys):
    from bench.plan.studies import search_ranges

    voc = search_ranges("voc", "ll-r+boostlu")
    assert voc["lr"] == pytest.approx((1e-6, 1e-4))  # around VOC's 1e-5: the papers' value can be tried
    assert voc["delta_rel"] == pytest.approx((0.005 / 4, 0.005 * 4)) and voc["boost_alpha"] == (1.0, 10.0)
    mosaic = search_ranges("digits-mosaic", "ll-r")
    assert mosaic["lr"] == pytest.approx((3e-4, 3e-2)) and "boost_alpha" not in mosaic
    assert main(["list", "methods", "ll-r", "--dataset", "voc"]) == 0
    out = capsys.readouterr().out
    assert "learning rate tuned in [1e-06, 0.0001]" in out and "delta_rel = 0.005" in out
    assert "tuned in [0.00125, 0.02]" in out


@pytest.mark.slow
def test_tune_honours_the_label_seed(mini_mosaic, tmp_path, cache_root, monkeypatch):
    import optuna

    monkeypatch.chdir(tmp_path)
    grid_file(tmp_path, variants=("an",), epochs=1)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    common = ["--config", "grid.toml", "--storage", storage, "--cache", str(cache_root), "--no-tracking", "--jobs", "1"]
    assert main(["tune", *common, "--n-trials", "1", "--pruner", "none", "--label-seed", "7"]) == 0
    names = optuna.get_all_study_names(storage)
    assert names == ["pamlbench/mini-mosaic/single-positive/labels7/an/small-cnn/1ep"]
    # the draw of seed 7 is tuned, and a bench on seed 1200 does not reuse its result, one on seed 7 does
    assert main(["bench", *common, "--no-report"]) == 0
    assert main(["bench", *common, "--no-report", "--label-seed", "7"]) == 0
    records = read_records(tmp_path / "results")
    sources = sorted((r["spec"]["label_seed"], r["hparam_source"]["kind"]) for r in records)
    assert sources == [(7, "defaults"), (7, "tuned"), (1200, "defaults")]  # the mosaics run both recipes
    checksums = {(r["spec"]["label_seed"], r["label_checksum"]) for r in records}
    assert len(checksums) == 2 and len({seed for seed, _ in checksums}) == 2  # one draw per label seed, two draws
