"""Failure is boring: kills resume, workers share a grid, numerical faults are recorded as failures, bad input is
one line and exit status 2, and nothing finished is lost or corrupted."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fixtures import finish, metrics, write_grid

from bench.cli.main import main
from bench.execute.claims import ClaimStore
from bench.execute.runner import Workspace, run_grid, run_spec
from bench.plan.grid import Grid
from bench.records import read_records, write_record
from bench.report.leaderboard import leaderboard_markdown
from bench.spec import make_spec
from bench.trainer import Trainer


def pamlbench(*args, cwd, env_extra=None, **popen):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def results_part(board: str) -> str:
    """The leaderboard without its details (train seconds and memory differ between any two runs)."""
    return "\n".join(section.split("### Details")[0] for section in board.split("\n## "))


# --- numerical faults ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_non_finite_loss_is_recorded_as_failed_and_the_grid_goes_on(faulty_plugins, mini_mosaic, workspace):
    specs = Grid([mini_mosaic], ["nan-after-epoch-1", "an"], [0], overrides={"epochs": 2}, device="cpu",
                 recipes=["defaults"]).cells(Path("unused"))[0]
    counts = run_grid(specs, workspace, progress=False)
    assert counts == {"trained": 1, "failed": 1, "recorded": 0, "elsewhere": 0, "lost": 0}
    records = {r["variant"]: r for r in read_records(workspace.results)}
    failed = records["nan-after-epoch-1"]
    assert failed["status"] == "failed" and "test_map" not in failed
    assert "non-finite loss in method nan-after-epoch-1" in failed["error"] and "epoch 2, batch 1 of" in failed["error"]
    assert records["an"]["status"] == "done"
    board = leaderboard_markdown(list(records.values()))
    assert "| nan-after-epoch-1 | failed" in board
    # a failed cell is not retrained silently, only on request
    assert run_grid(specs, workspace, progress=False)["recorded"] == 2


@pytest.mark.slow
def test_cuda_out_of_memory_is_a_clear_error_and_no_record(faulty_plugins, mini_mosaic, tmp_path, cache_root):
    code, out, err = finish(pamlbench("run", "--dataset", mini_mosaic, "--method", "out-of-memory", "--results",
                                      "results", "--cache", str(cache_root), "--set", "batch_size=64", cwd=tmp_path))
    assert code == 2 and err.count("\n") == 1
    assert "out of GPU memory with batch_size=64" in err and "--set batch_size=32" in err
    assert list((tmp_path / "results").glob("*.json")) == []


# --- kill and resume -----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_bench(mini_mosaic, tmp_path, monkeypatch):
    config = write_grid(tmp_path / "grid.toml", ["an", "ls"], [0, 1], epochs=4)
    killed, calm = tmp_path / "killed", tmp_path / "calm"
    for folder in (killed, calm):
        folder.mkdir()
    worker = pamlbench("bench", "--config", str(config), "--results", "results", "--cache", "cache", cwd=killed)
    checkpoints = killed / "cache" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not (len(list((killed / "results").glob("*.json"))) >= 1
                                          and list(checkpoints.glob("*.partial.pt"))):
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    first = {p.name: p.stat().st_mtime_ns for p in (killed / "results").glob("*.json")}
    assert 1 <= len(first) < 4 and list(checkpoints.glob("*.partial.pt"))  # two workers may finish in one poll
    assert not list((killed / "results").glob("*.tmp")) and not list((killed / "results").glob(".*.tmp"))
    code, out, _ = finish(pamlbench("bench", "--config", str(config), "--results", "results", "--cache", "cache",
                                    cwd=killed))
    assert code == 0 and f"{4 - len(first)} run(s) trained, 0 failed, {len(first)} already recorded" in out
    assert {p.name: p.stat().st_mtime_ns for p in (killed / "results").glob("*.json") if p.name in first} == first
    assert not list(checkpoints.glob("*.partial.pt"))
    shutil.copytree(killed / "cache" / "data", calm / "cache" / "data")  # the built dataset, not under test here
    monkeypatch.chdir(calm)  # the uninterrupted bench, in this process with the killed one's 1-thread numerics
    assert main(["bench", "--config", str(config), "--results", "results", "--cache", "cache", "--no-tracking",
                 "--jobs", "1", "--threads", "1"]) == 0
    assert metrics(killed / "results") == metrics(calm / "results")
    assert results_part((killed / "leaderboard.md").read_text()) == results_part((calm / "leaderboard.md").read_text())


@pytest.mark.slow
def test_resume_from_epoch_checkpoint_equals_uninterrupted(mini_mosaic, workspace, tmp_path):
    spec = make_spec(mini_mosaic, "role", 0, overrides={"epochs": 3})
    whole = Trainer(spec, workspace.data_cache, progress=False).run()

    class Interrupt(Exception):
        pass

    def stop_after_two(epoch, point):
        if epoch == 2:
            raise Interrupt

    partial = tmp_path / "run.partial.pt"
    with pytest.raises(Interrupt):
        Trainer(spec, workspace.data_cache, progress=False).run(resume_path=partial, on_epoch=stop_after_two)
    assert torch.load(partial, weights_only=True)["epoch"] == 2
    resumed = Trainer(spec, workspace.data_cache, progress=False).run(resume_path=partial)
    for field in ("val_map", "test_map", "best_epoch", "per_class_ap", "curve", "selections"):
        assert resumed[field] == whole[field]


def test_checkpoint_of_another_run_or_unsafe_pickle_is_refused(mini_mosaic, workspace, tmp_path):
    partial = tmp_path / "run.partial.pt"

    def stop(epoch, point):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(make_spec(mini_mosaic, "an", 0, overrides={"epochs": 2}), workspace.data_cache,
                progress=False).run(resume_path=partial, on_epoch=stop)
    other = Trainer(make_spec(mini_mosaic, "an", 1, overrides={"epochs": 2}), workspace.data_cache, progress=False)
    with pytest.raises(Exception, match="belongs to another run"):
        other.run(resume_path=partial)
    torch.save({"payload": Workspace(tmp_path, tmp_path)}, partial)  # an arbitrary Python object
    with pytest.raises(Exception, match="cannot read checkpoint"):
        other.run(resume_path=partial)


# --- concurrent workers --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_workers_share_one_grid_without_training_a_cell_twice(mini_mosaic, tmp_path, cache_root):
    config = write_grid(tmp_path / "grid.toml", ["an", "wan"], [0, 1, 2], epochs=1)
    args = ("bench", "--config", str(config), "--results", "results", "--cache", str(cache_root), "--no-report",
            "--jobs", "1", "--threads", "1")  # two single-process commands: only the claims keep them apart
    workers = [pamlbench(*args, cwd=tmp_path) for _ in range(2)]
    outputs = [finish(worker) for worker in workers]
    assert all(code == 0 for code, _, _ in outputs), outputs
    trained = [line.split(":")[0].split("] ")[1] for _, out, _ in outputs for line in out.splitlines()
               if "val mAP" in line]
    assert len(trained) == 6 and len(set(trained)) == 6  # every cell once, none twice
    records = read_records(tmp_path / "results")
    assert len(records) == 6 and all(r["status"] == "done" for r in records)


def test_claims_are_exclusive_and_stale_claims_are_taken_over(tmp_path):
    url = f"sqlite:///{tmp_path / 'claims.sqlite'}"
    first, second = ClaimStore(url), ClaimStore(url, stale_after=0.2)
    assert first.claim("k") and not second.claim("k")
    time.sleep(0.3)  # first stopped beating: its claim is stale
    assert second.claim("k") and not first.claim("k")
    second.finish("k", {"run_key": "k", "status": "done"})
    assert first.done_record("k") == {"run_key": "k", "status": "done"}
    assert not first.claim("k")


def test_record_done_by_another_worker_is_copied_and_a_malformed_one_is_not(mini_mosaic, workspace, tmp_path):
    spec = make_spec(mini_mosaic, "an", 0, overrides={"epochs": 1})
    elsewhere = Workspace(results=tmp_path / "elsewhere", cache=workspace.cache)
    record = run_spec(spec, elsewhere, progress=False).record  # another worker's finished record, in its folder
    key = record["run_key"]
    claims = ClaimStore(workspace.claims_url())
    assert claims.claim(key)
    claims.finish(key, record)
    outcome = run_spec(spec, workspace, claims=claims)
    assert outcome.state == "recorded" and json.loads((workspace.results / f"{key}.json").read_text()) == record
    malformed = {**record, "run_key": "other", "test_map": 101.0}  # a percentage above 100: the report would refuse it
    with pytest.raises(ValueError, match="test_map"):
        write_record(workspace.results, malformed)
    assert not (workspace.results / "other.json").exists()


# --- determinism ---------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_same_spec_same_numbers_in_a_fresh_process(mini_mosaic, workspace, tmp_path, cache_root):
    spec = make_spec(mini_mosaic, "em", 5, overrides={"epochs": 1})
    here = run_spec(spec, workspace, progress=False).record
    code, out, err = finish(pamlbench("run", "--dataset", mini_mosaic, "--method", "em", "--seed", "5", "--set",
                                      "epochs=1", "--device", "cpu", "--results", "fresh", "--cache", str(cache_root),
                                      cwd=tmp_path))
    assert code == 0, err
    fresh = read_records(tmp_path / "fresh")[0]
    assert fresh["run_key"] == here["run_key"]
    assert (fresh["val_map"], fresh["test_map"], fresh["per_class_ap"]) == (
        here["val_map"], here["test_map"], here["per_class_ap"])
    assert fresh["determinism"].startswith("deterministic")


def test_claim_of_a_dead_process_on_this_machine_is_taken_over_at_once(tmp_path):
    import socket

    url = f"sqlite:///{tmp_path / 'claims.sqlite'}"
    gone = subprocess.Popen(["true"])
    gone.wait()
    killed = ClaimStore(url)
    killed.worker = f"{socket.gethostname()}:{gone.pid}:abcdef"
    assert killed.claim("k")
    alive = ClaimStore(url)
    alive.worker = f"{socket.gethostname()}:{os.getppid()}:abcdef"  # a live process: its claim holds
    assert alive.claim("k") is True and not ClaimStore(url).claim("k")
