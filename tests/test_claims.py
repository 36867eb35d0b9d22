"""The claims table in-process, on a real SQLite file: which worker trains which cell, and when a claim may be taken
over (its owner stopped beating, or its owner process on this machine is gone)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from bench.errors import UserError
from bench.execute.claims import ClaimStore, create_tables, dead_local_worker, process_started, worker_name


def store(tmp_path, stale_after: float = 120.0) -> ClaimStore:
    return ClaimStore(f"sqlite:///{tmp_path / 'deep' / 'er' / 'claims.sqlite'}", stale_after=stale_after)


def row(claims: ClaimStore, key: str):
    with claims.engine.connect() as connection:
        return connection.execute(sa.select(claims.table).where(claims.table.c.run_key == key)).one_or_none()


def dead_worker() -> str:
    """The name a worker of this machine whose process has exited would have."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return f"{socket.gethostname()}:{int(gone.stdout)}:abcdef"


def test_a_free_cell_is_claimed_once_and_its_folder_is_made(tmp_path):
    first, second = store(tmp_path), store(tmp_path)
    assert (tmp_path / "deep" / "er" / "claims.sqlite").exists()  # its folders are made
    assert first.worker != second.worker and first.worker.startswith(f"{socket.gethostname()}:{os.getpid()}:")
    assert first.claim("k") and not second.claim("k") and not first.claim("k")  # held: not even by its owner again
    claimed = row(first, "k")
    assert (claimed.worker, claimed.status, claimed.record) == (first.worker, "running", None)
    assert abs(claimed.heartbeat - time.time()) < 5


def test_a_claim_whose_owner_stopped_beating_is_taken_over(tmp_path):
    owner, other = store(tmp_path, stale_after=0.5), store(tmp_path, stale_after=0.5)
    assert owner.claim("k")
    assert not other.claim("k")  # fresh
    time.sleep(0.6)
    assert other.claim("k") and row(other, "k").worker == other.worker
    assert not owner.claim("k")  # and the new owner's beat is fresh


def test_a_beat_keeps_a_claim_fresh_and_only_the_owner_beats(tmp_path):
    owner, other = store(tmp_path, stale_after=1.0), store(tmp_path, stale_after=1.0)
    assert owner.claim("k")
    before = row(owner, "k").heartbeat
    time.sleep(0.7)
    other.beat("k")  # not its claim: nothing changes
    assert row(owner, "k").heartbeat == before
    owner.beat("k")
    assert row(owner, "k").heartbeat > before
    time.sleep(0.5)
    assert not other.claim("k")  # 1.2 s after the claim, but 0.5 s after the beat


def test_taking_over_a_stale_claim_touches_that_claim_alone(tmp_path):
    claims = store(tmp_path, stale_after=1.0)
    stale = time.time() - 10
    with claims.engine.begin() as connection:
        for key in ("a", "b"):  # two stale claims with the very same heartbeat
            connection.execute(claims.table.insert().values(run_key=key, worker="gone-host:1:abcdef",
                                                            status="running", heartbeat=stale))
    assert claims.claim("a")
    assert row(claims, "a").worker == claims.worker and row(claims, "b").worker == "gone-host:1:abcdef"


def test_the_claim_of_a_dead_process_on_this_machine_is_taken_over_at_once(tmp_path):
    claims = store(tmp_path)
    with claims.engine.begin() as connection:
        connection.execute(claims.table.insert().values(run_key="k", worker=dead_worker(), status="running",
                                                        heartbeat=time.time()))
    assert claims.claim("k") and row(claims, "k").worker == claims.worker


def test_a_dead_worker_is_one_of_this_machine_whose_process_is_gone():
    assert dead_local_worker(dead_worker())
    assert not dead_local_worker(worker_name())  # this process
    assert not dead_local_worker(f"another-host:{dead_worker().split(':')[1]}:abcdef")  # not ours to judge
    assert not dead_local_worker(f"{socket.gethostname()}:notapid:abcdef")
    assert not dead_local_worker(f"{socket.gethostname()}:1:abcdef")  # init: alive (or not ours to signal)


def test_a_finished_cell_keeps_its_record_and_is_never_claimed_again(tmp_path):
    owner, other = store(tmp_path, stale_after=0.0), store(tmp_path, stale_after=0.0)
    assert owner.claim("k")
    assert other.done_record("k") is None  # running, not done
    claimed_at = row(owner, "k").heartbeat
    time.sleep(0.05)
    other.finish("k", {"z": 1, "a": 2})  # another worker finished it (a cluster driver, say)
    finished = row(owner, "k")
    assert finished.worker == other.worker and finished.heartbeat > claimed_at
    assert finished.record == '{"a": 2, "z": 1}'  # key-sorted: the same record gives the same text
    owner.finish("k", {"run_key": "k", "test_map": 50.0})
    assert other.done_record("k") == {"run_key": "k", "test_map": 50.0}
    assert json.loads(row(other, "k").record) == {"run_key": "k", "test_map": 50.0} and row(other, "k").status == "done"
    assert not other.claim("k")  # done: even a stale threshold of 0 does not take it
    assert other.done_record("unknown") is None


def test_release_gives_back_only_one_s_own_running_claim_and_forget_drops_any(tmp_path):
    owner, other = store(tmp_path), store(tmp_path)
    assert owner.claim("k")
    other.release("k")
    assert row(owner, "k") is not None  # not other's to give back
    owner.release("k")
    assert row(owner, "k") is None and other.claim("k")
    other.finish("k", {"run_key": "k"})
    other.release("k")
    assert row(other, "k").status == "done"  # a finished cell is not released
    owner.forget("k")
    assert row(owner, "k") is None and owner.claim("k")  # forgotten: trained again


def test_keep_alive_beats_every_key_of_a_changing_set_until_stopped(tmp_path, monkeypatch):
    import bench.execute.claims as claims_module

    monkeypatch.setattr(claims_module, "HEARTBEAT_SECONDS", 0.1)
    claims = store(tmp_path)
    assert claims.claim("a") and claims.claim("b")
    keys = {"a"}
    started = {key: row(claims, key).heartbeat for key in ("a", "b")}
    stop = claims.keep_alive_all(keys)
    [beating] = [thread for thread in threading.enumerate() if thread.name == "claims-heartbeat"]
    assert beating.daemon  # it never keeps a finished command alive
    time.sleep(0.35)
    keys.add("b")
    time.sleep(0.35)
    stop.set()
    assert row(claims, "a").heartbeat > started["a"] and row(claims, "b").heartbeat > started["b"]
    time.sleep(0.25)
    stopped = row(claims, "a").heartbeat
    time.sleep(0.3)
    assert row(claims, "a").heartbeat == stopped  # stopped: no more beats
    single = claims.keep_alive("a")
    time.sleep(0.35)
    single.set()
    assert row(claims, "a").heartbeat > stopped


def test_a_storage_that_cannot_be_opened_is_one_line(tmp_path):
    with pytest.raises(UserError, match="^cannot open the claims storage .*check the URL"):
        ClaimStore("notadatabase://x")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot open the claims storage"):
        ClaimStore(f"sqlite:///{blocker / 'claims.sqlite'}")


def test_creating_the_tables_twice_and_racing_are_harmless(tmp_path):
    url = f"sqlite:///{tmp_path / 'claims.sqlite'}"
    one, two = ClaimStore(url), ClaimStore(url)  # the second sees the table already there
    assert one.claim("k") and not two.claim("k")
    metadata = sa.MetaData()
    sa.Table("t", metadata, sa.Column("x", sa.Integer, primary_key=True))
    engine = sa.create_engine(url)
    create_tables(metadata, engine)
    create_tables(metadata, engine)
    assert "t" in sa.inspect(engine).get_table_names()


def test_a_process_start_time_is_read_for_a_live_process_only():
    assert process_started(os.getpid()) not in (None, "unknown")
    assert process_started(os.getpid()) == process_started(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        uptime = float(open("/proc/uptime").read().split()[0])
        started = int(process_started(child.pid)) / os.sysconf("SC_CLK_TCK")  # seconds after boot
        assert uptime - 10 < started <= uptime + 1  # the child started just now: the start-time field, no other
        assert process_started(child.pid) != process_started(os.getpid()) or uptime < 10
    finally:
        child.kill()
        child.wait()
    gone = int(dead_worker().split(":")[1])
    assert process_started(gone) is None


def locked_for(path, seconds: float) -> threading.Thread:
    """A thread holding an exclusive lock on the SQLite file at `path` for `seconds` (as a second worker creating the
    tables at the same moment does), started once the lock is held."""
    import sqlite3

    held = threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(seconds)
        connection.execute("COMMIT")
        connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    return thread


def test_creating_the_tables_on_a_locked_database_is_retried_then_gives_up(tmp_path):
    path = tmp_path / "locked.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.01})
    metadata = sa.MetaData()
    sa.Table("t", metadata, sa.Column("x", sa.Integer, primary_key=True))
    holder = locked_for(path, 0.5)
    started = time.time()
    create_tables(metadata, engine, attempts=5)  # locked at first: retried after 0.2 s, 0.4 s, ... until free
    assert 0.45 < time.time() - started < 0.9 and "t" in sa.inspect(engine).get_table_names()  # at 0.2 + 0.4 s
    holder.join()
    other = sa.MetaData()
    sa.Table("u", other, sa.Column("x", sa.Integer, primary_key=True))
    holder = locked_for(path, 2.0)
    started = time.time()
    with pytest.raises(sa.exc.OperationalError, match="locked"):
        create_tables(other, engine, attempts=2)  # still locked after its last attempt: the error goes on
    assert 0.15 < time.time() - started < 1.5  # one wait of 0.2 s between the two attempts
    holder.join()


def test_an_error_that_is_no_race_is_raised_at_once(tmp_path):
    path = tmp_path / "read-only.sqlite"
    sa.create_engine(f"sqlite:///{path}").connect().close()
    engine = sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    metadata = sa.MetaData()
    sa.Table("t", metadata, sa.Column("x", sa.Integer, primary_key=True))
    started = time.time()
    with pytest.raises(sa.exc.OperationalError, match="readonly"):
        create_tables(metadata, engine, attempts=5)
    assert time.time() - started < 0.15  # not retried: no wait of 0.2 s
