"""Small real runs: train, record, resume, determinism, and the command line from bench to leaderboard."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli.main import main
from bench.execute.claims import ClaimStore
from bench.execute.runner import run_grid, run_spec
from bench.plan.grid import Grid
from bench.records import read_records
from bench.spec import make_spec

ONE_EPOCH = {"epochs": 1}


def test_one_run_writes_a_complete_record(mini_mosaic, workspace):
    spec = make_spec(mini_mosaic, "an", 0, overrides=ONE_EPOCH)
    outcome = run_spec(spec, workspace, progress=False)
    record = outcome.record
    assert outcome.state == "trained" and record["status"] == "done"
    stored = json.loads((workspace.results / f"{record['run_key']}.json").read_text())
    assert stored == record
    assert 0 < stored["test_map"] <= 100 and stored["best_epoch"] == 1
    assert set(stored["per_class_ap"]) == {str(d) for d in range(10)}
    for field in ("curve", "selections", "train_seconds", "peak_memory_mb", "label_checksum", "versions",
                  "git_commit", "code_version", "data_fingerprint", "image_shape", "determinism", "numerics",
                  "cpu_model"):
        assert field in stored
    assert stored["numerics"]["device"] == "cpu" and stored["numerics"]["threads"] >= 1
    assert (workspace.checkpoints / f"{record['run_key']}.pt").exists()
    assert not (workspace.checkpoints / f"{record['run_key']}.partial.pt").exists()


def test_resume_trains_nothing_already_recorded(mini_mosaic, workspace):
    specs = Grid([mini_mosaic], ["an"], [0, 1], overrides=ONE_EPOCH, device="cpu",
                 recipes=["defaults"]).cells(Path("unused"))[0]
    assert run_grid(specs[:1], workspace, progress=False)["trained"] == 1
    first = sorted(p.stat().st_mtime_ns for p in workspace.results.glob("*.json"))
    assert run_grid(specs, workspace, progress=False) == {"trained": 1, "failed": 0, "recorded": 1, "elsewhere": 0,
                                                       "lost": 0}
    assert run_grid(specs, workspace, progress=False) == {"trained": 0, "failed": 0, "recorded": 2, "elsewhere": 0,
                                                       "lost": 0}
    assert len(read_records(workspace.results)) == 2
    assert sorted(p.stat().st_mtime_ns for p in workspace.results.glob("*.json"))[:1] == first


def test_cpu_runs_are_deterministic(mini_mosaic, workspace, tmp_path):
    spec = make_spec(mini_mosaic, "an", 3, overrides=ONE_EPOCH)
    first = run_spec(spec, workspace, progress=False).record
    workspace.results.joinpath(f"{first['run_key']}.json").unlink()
    ClaimStore(workspace.claims_url()).forget(first["run_key"])
    outcome = run_spec(spec, workspace, progress=False)
    second = outcome.record
    assert outcome.state == "trained"
    assert (first["val_map"], first["test_map"]) == (second["val_map"], second["test_map"])
    assert first["per_class_ap"] == second["per_class_ap"]


def pamlbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.mark.slow
def test_cli_bench_then_report_reproduces_leaderboard(mini_mosaic, tmp_path, cache_root):
    config = tmp_path / "grid.toml"
    config.write_text(f'datasets = ["{mini_mosaic}"]\nvariants = ["full", "an"]\nseeds = [0, 1]\n'
                      'device = "cpu"\n[overrides]\nepochs = 2\n')
    common = ["--results", "results", "--cache", str(cache_root)]
    done = pamlbench("bench", "--config", str(config), *common, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "4 run(s) trained, 0 failed" in done.stdout
    board = (tmp_path / "leaderboard.md").read_text()
    main_table = next(block for block in board.split("\n\n") if block.startswith("| method"))
    rows = {line.split("|")[1].strip(): line for line in main_table.splitlines() if line.startswith("| ")}
    assert "full (oracle)" in rows and "an" in rows
    full_mean = float(rows["full (oracle)"].split("|")[2].split("±")[0])
    an_mean = float(rows["an"].split("|")[2].strip("* ").split("±")[0])
    assert full_mean > an_mean
    again = pamlbench("bench", "--config", str(config), *common, cwd=tmp_path)
    assert "0 run(s) trained, 0 failed, 4 already recorded" in again.stdout
    pages = {path.name: path.read_text() for path in (tmp_path / "results").glob("leaderboard-*.md")}
    assert set(pages) == {"leaderboard-defaults.md"}
    (tmp_path / "leaderboard.md").unlink()
    (tmp_path / "results" / "leaderboard-defaults.md").unlink()
    assert pamlbench("report", "--results", "results", cwd=tmp_path).returncode == 0
    assert (tmp_path / "leaderboard.md").read_text() == board  # the same records give the same bytes
    assert {path.name: path.read_text() for path in (tmp_path / "results").glob("leaderboard-*.md")} == pages


@pytest.mark.parametrize("args, message", [
    (["run", "--method", "nope"], "unknown method 'nope'"),
    (["run", "--method", "an", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["run", "--method", "an", "--set", "lr=-0.1"], "lr=-0.1 is out of range"),
    (["run", "--method", "an", "--set", "lr"], "NAME=VALUE"),
    (["run", "--method", "an", "--seed", "x"], "a seed must be an integer, not 'x'"),
    (["run", "--method", "an", "--seed", "-1"], "a seed -1 must be in [0, 4294967296)"),
    (["run", "--method", "an", "--threads", "0"], "--threads 0 must be in [1, 1025)"),
    (["list", "things"], "invalid choice"),
    (["data", "info", "nope"], "unknown dataset"),
    (["bench", "--config", "missing.toml"], "cannot read benchmark file"),
])
def test_cli_errors_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert list(tmp_path.iterdir()) == []


def test_a_real_process_of_the_command_exits_2_with_the_one_line(tmp_path):
    """`python -m bench.cli` passes `main`'s status to the shell: a parse error and a plugin error."""
    for args, message in ((["list", "things"], "invalid choice"), (["run", "--method", "nope"], "unknown method")):
        done = pamlbench(*args, cwd=tmp_path)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_list_shows_plugins(tmp_path):
    listing = pamlbench("list", "methods", cwd=tmp_path)
    assert listing.returncode == 0 and "an " in listing.stdout and "full " in listing.stdout
    assert "METHOD+li (LinearInit" in listing.stdout and "freeze_backbone = False  valid true/false" in listing.stdout
    assert "li_epochs = 25" in listing.stdout and "li_lr = 0.0001" in listing.stdout
    assert "digits-mosaic" in pamlbench("list", "datasets", cwd=tmp_path).stdout


@pytest.mark.slow
def test_run_shows_each_epoch_on_a_terminal(mini_mosaic, tmp_path, cache_root):
    import pty
    import threading

    terminal, child_side = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", "--dataset", mini_mosaic, "--method", "an",
                                "--set", "epochs=2", "--no-tracking", "--results", "results", "--cache",
                                str(cache_root)],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=child_side, text=True)
    os.close(child_side)
    shown = []

    def read_terminal() -> None:  # read as it comes, so that the progress bars never fill the terminal's buffer
        while True:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:  # the child closed its side
                return
            if not chunk:
                return
            shown.append(chunk)

    reader = threading.Thread(target=read_terminal)
    reader.start()
    out, _ = process.communicate(timeout=600)
    reader.join(timeout=60)
    os.close(terminal)
    text = b"".join(shown).decode(errors="replace")
    assert process.returncode == 0 and "test mAP by selection" in out
    assert "epoch 1/2: train loss " in text and "epoch 2/2: train loss " in text
