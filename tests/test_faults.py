"""Faults: a full disk, SIGTERM, a tracking store gone, concurrent writers. One line, state released, nothing
half-written, nothing finished lost."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from fixtures import alive, parent_pids, voc_tree, write_grid
from PIL import Image

from bench.data.preparation import decode_all
from bench.errors import UserError
from bench.execute.claims import ClaimStore
from bench.records import atomic_text, read_records
from bench.spec import make_spec

GRID = "datasets = ['mini-mosaic']\nvariants = {variants!r}\nseeds = [0]\ndevice = 'cpu'\n[overrides]\nepochs = {e}\n"


def pamlbench(*args, cwd, env_extra=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 96 KiB tmpfs (root only): a disk that fills up."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_is_one_error_naming_the_path_and_leaves_no_partial_file(tiny_disk):
    (tiny_disk / "filler").write_bytes(b"x" * 60 * 1024)
    path = tiny_disk / "results" / "record.json"
    with pytest.raises(UserError, match=f"cannot write {path}: No space left on device"):
        atomic_text(path, "y" * 200 * 1024)
    assert [p.name for p in (tiny_disk / "results").iterdir()] == []


@pytest.mark.slow
def test_a_run_on_a_full_disk_fails_with_one_line_and_releases_its_claim(tiny_disk, mini_mosaic, tmp_path,
                                                                         cache_root):
    """The epoch checkpoint cannot be written (the cache is on the full disk): one line, exit 2, claim released."""
    from bench import registry

    registry.load_dataset(mini_mosaic).fingerprint(None, cache_root / "data")  # built once, outside the disk
    (tiny_disk / "filler").write_bytes(b"x" * 80 * 1024)
    cache = tiny_disk / "cache"
    (cache / "data").mkdir(parents=True)
    os.symlink(cache_root / "data" / "mini-mosaic-v1.npz", cache / "data" / "mini-mosaic-v1.npz")
    done = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--dataset", mini_mosaic, "--method", "an",
                           "--set", "epochs=1",
                           "--no-tracking", "--results", str(tmp_path / "results"), "--cache", str(cache)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "No space left on device" in done.stderr and "checkpoints" in done.stderr
    assert not (cache / "checkpoints").exists() or not list((cache / "checkpoints").iterdir())
    assert not list((tmp_path / "results").glob("*.json"))
    claims = ClaimStore(f"sqlite:///{tmp_path / 'results' / '.claims.sqlite'}")
    key = make_spec(mini_mosaic, "an", 0, overrides={"epochs": 1}).key(
        make_spec(mini_mosaic, "an", 0, overrides={"epochs": 1}).identity(cache_root / "data"))
    assert claims.claim(key)  # free again: the failed run gave its claim back


@pytest.mark.slow
def test_sigterm_is_handled_like_ctrl_c(mini_mosaic, tmp_path, cache_root):
    # 4 cells on 2 workers: when the first record is written, two cells are still to train (a signal then always
    # finds one running; with 2 cells both could finish within one poll)
    write_grid(tmp_path / "grid.toml", ["an", "wan"], [0, 1], epochs=6)
    worker = pamlbench("bench", "--config", "grid.toml", "--cache", str(cache_root), "--no-tracking", cwd=tmp_path)
    deadline = time.time() + 300
    checkpoints = cache_root / "checkpoints"
    while time.time() < deadline and not (list((tmp_path / "results").glob("*.json"))
                                          and list(checkpoints.glob("*.partial.pt"))):
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)  # a second signal during the cleanup changes nothing
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("pamlbench: terminated (SIGTERM); finished runs are kept")
    assert "Traceback" not in err
    records = read_records(tmp_path / "results")
    assert len(records) >= 1 and all(r["status"] == "done" for r in records)
    assert not list((tmp_path / "results").glob(".*.tmp"))
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'results' / '.claims.sqlite'}")
    with engine.connect() as connection:
        running = connection.execute(sa.text("SELECT count(*) FROM pamlbench_claims WHERE status = 'running'"))
        assert running.scalar() == 0  # the interrupted cell's claim was given back
    engine.dispose()
    for partial in checkpoints.glob("*.partial.pt"):
        partial.unlink()


def test_concurrent_writers_of_one_artefact_never_collide(tmp_path):
    """Every atomic write uses a unique temporary name: many writers of one file, no error, a whole file left."""
    path = tmp_path / "figures" / "val_curves.png"
    errors = []

    def write(number: int) -> None:
        try:
            for _ in range(30):
                atomic_text(path, f"writer {number} " * 1000)
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    text = path.read_text()
    assert len(set(text.split())) == 2 and len(text) == len("writer 0 " * 1000)
    assert [p.name for p in path.parent.iterdir()] == ["val_curves.png"]


def test_files_are_readable_by_the_team(tmp_path):
    path = tmp_path / "record.json"
    atomic_text(path, "{}")
    assert path.stat().st_mode & 0o777 == 0o644


def test_sqlite_claims_tables_are_created_by_two_workers_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'claims.sqlite'}"
    stores, errors = [], []

    def open_store() -> None:
        try:
            stores.append(ClaimStore(url))
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    for _ in range(5):
        (tmp_path / "claims.sqlite").unlink(missing_ok=True)
        threads = [threading.Thread(target=open_store) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == [] and len(stores) == 20


def test_unreachable_tracking_server_fails_within_seconds(mini_mosaic, tmp_path, cache_root):
    (tmp_path / "grid.toml").write_text(GRID.format(variants=["an"], e=1))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bench.cli", "bench", "--config", "grid.toml", "--cache",
                           str(cache_root)], cwd=tmp_path, capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, MLFLOW_TRACKING_URI="http://127.0.0.1:9"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "cannot open MLflow tracking at http://127.0.0.1:9" in done.stderr
    assert time.perf_counter() - started < 120  # MLflow's own retries would take about 4.5 minutes
    assert not (tmp_path / "results").exists()


def test_a_deleted_tracking_store_is_said_once_and_training_goes_on(tmp_path, capsys):
    from bench.execute.tracking import Tracker

    cache = tmp_path / "cache"
    tracker = Tracker(cache, f"sqlite:///{cache / 'mlflow.db'}")
    run = tracker.start(make_spec("digits-mosaic", "an", 0), "key")
    assert run is not None
    (cache / "mlflow.db").unlink()
    for epoch in (1, 2, 3):
        tracker.epoch(run, epoch, {"val_map": 50.0, "train_loss": 1.0})
    tracker.finish(run, {"status": "done", "val_map": 50.0, "best_epoch": 1, "per_class_ap": {}})
    err = capsys.readouterr().err
    assert err.count("tracking:") == 1 and "was deleted" in err and "tracking is off" in err
    assert tracker.broken


def test_runs_of_a_killed_worker_are_marked_killed_by_the_next_tracker(tmp_path):
    import socket

    from mlflow.tracking import MlflowClient

    from bench.execute.tracking import Tracker

    cache = tmp_path / "cache"
    uri = f"sqlite:///{cache / 'mlflow.db'}"
    gone = subprocess.Popen(["true"])
    gone.wait()
    first = Tracker(cache, uri)
    first.worker = f"{socket.gethostname()}:{gone.pid}:{uuid.uuid4().hex[:6]}"  # as if run by a killed process
    run = first.start(make_spec("digits-mosaic", "an", 0), "key")
    live_run = first.start(make_spec("digits-mosaic", "an", 1), "key2")
    MlflowClient(uri).set_tag(live_run, "pamlbench.worker", f"{socket.gethostname()}:{os.getpid()}:abcdef")
    assert MlflowClient(uri).get_run(run).info.status == "RUNNING"
    Tracker(cache, uri)
    assert MlflowClient(uri).get_run(run).info.status == "KILLED"
    assert MlflowClient(uri).get_run(live_run).info.status == "RUNNING"  # a live worker's run is left alone


@pytest.mark.slow
def test_figures_missing_from_the_leaderboard_are_redrawn(mini_mosaic, tmp_path, cache_root):
    (tmp_path / "grid.toml").write_text(GRID.format(variants=["full", "an"], e=1))
    common = ["bench", "--config", "grid.toml", "--cache", str(cache_root), "--no-tracking", "--jobs", "1"]
    assert subprocess.run([sys.executable, "-m", "bench.cli", *common], cwd=tmp_path, capture_output=True,
                          timeout=300).returncode == 0
    figure = tmp_path / "results" / "figures" / "cam_attribution_mini-mosaic.png"
    assert figure.exists() and f"({Path('results/figures') / figure.name})" in (tmp_path / "leaderboard.md").read_text()
    figure.unlink()
    again = subprocess.run([sys.executable, "-m", "bench.cli", *common], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and "0 run(s) trained" in again.stdout and figure.exists()


def slow_voc_tree(raw: Path, images: int) -> list[Path]:
    """A VOC tree of `images` listed images, all hard links to one large noise JPEG, so that decoding takes seconds."""
    voc_tree(raw, train=images // 2, val=images - images // 2)
    large = raw / "large.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 1200, 3), dtype=np.uint8)).save(large)
    jpegs = sorted((raw / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))
    for jpeg in jpegs:
        jpeg.unlink()
        os.link(large, jpeg)
    return jpegs


def descendants(root: int) -> dict[int, int]:
    """The live descendants of process `root`, each pid with its parent's."""
    parents = parent_pids()
    found, frontier = {}, {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier and pid not in found}
        found.update({pid: parents[pid] for pid in frontier})
    return found


def test_a_cache_larger_than_the_free_space_is_refused_before_anything_is_written(tiny_disk, tmp_path, capsys):
    from bench.cli.main import main

    voc_tree(tmp_path / "raw")
    out = tiny_disk / "voc"
    assert main(["data", "prepare", "voc", "--raw", str(tmp_path / "raw"), "--out", str(out), "--image-cache",
                 "--size", "64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the decoded image cache needs 0.2 MB" in err and f"{tiny_disk} has" in err, err
    assert list(tiny_disk.iterdir()) == []


def test_a_cache_that_does_not_fit_is_an_error_naming_the_path_not_a_sigbus(tiny_disk, tmp_path):
    """The free-space check is passed (another writer fills the disk later): the full allocation still fails cleanly,
    and no decoding worker is left."""
    import multiprocessing

    voc_tree(tmp_path / "raw")
    jpegs = sorted((tmp_path / "raw").rglob("*.jpg"))
    cache = tiny_disk / "images_64.u8"
    with pytest.raises(UserError, match=f"cannot write {cache}: No space left on device"):
        decode_all([str(p) for p in jpegs], 64, cache, progress=False)
    assert multiprocessing.active_children() == []


@pytest.mark.timeout(60)
def test_a_lock_another_thread_holds_cannot_hang_the_decoding_workers(tmp_path):
    """The workers are not forks of the caller: a lock that another of its threads holds when decoding starts (here
    one an after-fork hook takes, as a forked child would) is not theirs, so decoding ends and so does the pool."""
    import multiprocessing.util

    voc_tree(tmp_path / "raw")
    jpegs = sorted((tmp_path / "raw").rglob("*.jpg"))
    held = threading.Lock()
    holder_ready, release = threading.Event(), threading.Event()

    def hold() -> None:
        with held:
            holder_ready.set()
            release.wait()

    class Hook:
        pass

    hook = Hook()
    multiprocessing.util.register_after_fork(hook, lambda _: held.acquire())
    holder = threading.Thread(target=hold)
    holder.start()
    holder_ready.wait()
    try:
        decode_all([str(p) for p in jpegs], 32, tmp_path / "images.u8", progress=False)
    finally:
        release.set()
        holder.join()
        del hook
    images = np.load(tmp_path / "images.u8")
    assert images.shape == (len(jpegs), 3, 32, 32) and images.any()
    assert multiprocessing.active_children() == []


@pytest.mark.slow
def test_sigterm_while_decoding_removes_the_staging_folder_and_the_workers(tmp_path):
    raw = tmp_path / "raw"
    slow_voc_tree(raw, 600)
    out = tmp_path / "data" / "voc"
    out.parent.mkdir()
    worker = pamlbench("data", "prepare", "voc", "--raw", str(raw), "--out", str(out), "--image-cache", cwd=tmp_path)
    deadline, decoding = time.time() + 120, []
    while time.time() < deadline and not decoding:
        spawned = descendants(worker.pid)
        decoding = [pid for pid, parent in spawned.items() if parent != worker.pid]  # the fork server's children
        time.sleep(0.05)
    time.sleep(1.0)  # decoding under way
    spawned = descendants(worker.pid)
    assert worker.poll() is None and list(out.parent.glob(".voc.*/images_448.u8")) and decoding, spawned
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 143 and "Traceback" not in err, err
    assert err.strip().splitlines() == ["pamlbench: terminated (SIGTERM); finished runs are kept, run the same "
                                        "command again to resume"]
    assert list(out.parent.iterdir()) == []
    deadline = time.time() + 10
    while any(alive(pid) for pid in spawned) and time.time() < deadline:
        time.sleep(0.1)
    assert [pid for pid in spawned if alive(pid)] == []
