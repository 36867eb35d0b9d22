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
import types

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


def live_child() -> subprocess.Popen:
    """A sleeping child process, returned once it runs, whose every signal has its default action (a signal ignored
    where the tests run, such as SIGHUP under nohup, would otherwise be ignored by the child too): any signal sent to
    it but 0 ends it."""
    script = ("import signal, time\nfor number in signal.valid_signals():\n    try:\n"
              "        signal.signal(number, signal.SIG_DFL)\n    except (OSError, ValueError):\n"
              "        pass\nprint('ready', flush=True)\ntime.sleep(30)\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    return child


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
    child = live_child()
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


def test_by_default_the_tables_are_tried_five_times_and_a_claim_is_stale_after_two_minutes(tmp_path, monkeypatch):
    path = tmp_path / "locked.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.01})
    metadata = sa.MetaData()
    sa.Table("t", metadata, sa.Column("x", sa.Integer, primary_key=True))
    waits = []
    holder = locked_for(path, 1.0)
    monkeypatch.setattr("bench.execute.claims.time", types.SimpleNamespace(sleep=waits.append, time=time.time))
    with pytest.raises(sa.exc.OperationalError, match="locked"):
        create_tables(metadata, engine)
    holder.join()
    assert waits == [pytest.approx(0.2), pytest.approx(0.4), pytest.approx(0.6), pytest.approx(0.8)]
    assert ClaimStore(f"sqlite:///{tmp_path / 'claims.sqlite'}").stale_after == 120.0


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


def test_a_worker_name_is_host_pid_and_six_hex_digits():
    import re

    assert re.fullmatch(rf"{re.escape(socket.gethostname())}:{os.getpid()}:[0-9a-f]{{6}}", worker_name())
    assert worker_name() != worker_name()


def test_a_live_worker_s_process_is_only_asked_whether_it_exists():
    child = live_child()
    try:
        assert not dead_local_worker(f"{socket.gethostname()}:{child.pid}:abcdef")
        time.sleep(0.2)
        assert child.poll() is None  # no signal but 0 was sent: the worker lives on
    finally:
        child.kill()
        child.wait()


def test_a_process_whose_name_holds_parentheses_has_its_start_time_read():
    renamed = ("import ctypes, sys, time; ctypes.CDLL(None).prctl(15, b'x) 1 2 3 (y', 0, 0, 0); "
               "print('ready', flush=True); time.sleep(30)")
    child = subprocess.Popen([sys.executable, "-c", renamed], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        assert "x) 1 2 3 (y" in open(f"/proc/{child.pid}/stat").read()
        uptime = float(open("/proc/uptime").read().split()[0])
        started = int(process_started(child.pid)) / os.sysconf("SC_CLK_TCK")
        assert uptime - 10 < started <= uptime + 1  # the field after the name's last ")", not after its first
    finally:
        child.kill()
        child.wait()
    assert process_started(2**70) == "unknown"  # no /proc entry and no such pid on this system: cannot tell


def test_an_owner_of_unknown_start_is_gone_only_when_its_pid_is():
    from bench.execute.claims import owner_gone, process_owner

    assert process_owner() == {"host": socket.gethostname(), "pid": os.getpid(),
                               "started": process_started(os.getpid())}
    child = live_child()
    try:
        owner = {"host": socket.gethostname(), "pid": child.pid}
        assert not owner_gone({**owner, "started": "unknown"})  # alive; its start time not compared
        assert not owner_gone({**owner, "started": None})
        assert owner_gone({**owner, "started": "1"})  # the pid now belongs to a process started at another time
    finally:
        child.kill()
        child.wait()
    gone = int(dead_worker().split(":")[1])
    assert owner_gone({"host": socket.gethostname(), "pid": gone, "started": "unknown"})


def test_a_claim_is_stale_from_exactly_stale_after_seconds_on(tmp_path, monkeypatch):
    claims = store(tmp_path, stale_after=120.0)
    with claims.engine.begin() as connection:
        connection.execute(claims.table.insert().values(run_key="k", worker="elsewhere:1:abcdef", status="running",
                                                        heartbeat=1000.0))
    monkeypatch.setattr(time, "time", lambda: 1119.5)
    assert not claims.claim("k")
    monkeypatch.setattr(time, "time", lambda: 1120.0)
    assert claims.claim("k")
    assert (row(claims, "k").worker, row(claims, "k").heartbeat) == (claims.worker, 1120.0)


def test_a_beat_that_fails_for_one_key_still_beats_the_others(tmp_path, monkeypatch):
    import bench.execute.claims as claims_module

    class FailingFirst(ClaimStore):
        def beat(self, run_key: str) -> None:
            if run_key == "locked":
                raise sa.exc.OperationalError("UPDATE", {}, Exception("database is locked"))
            super().beat(run_key)

    monkeypatch.setattr(claims_module, "HEARTBEAT_SECONDS", 0.1)
    claims = FailingFirst(f"sqlite:///{tmp_path / 'claims.sqlite'}")
    assert claims.claim("fine")
    before = row(claims, "fine").heartbeat
    stop = claims.keep_alive_all(["locked", "fine"])  # in this order: the failing key first
    time.sleep(0.35)
    stop.set()
    assert row(claims, "fine").heartbeat > before


def test_the_claims_table_keeps_its_name_and_its_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'claims.sqlite'}"
    claims = ClaimStore(url)
    assert claims.url == url
    assert sa.inspect(claims.engine).get_table_names() == ["pamlbench_claims"]  # shared with other versions


def test_a_bad_claims_url_is_refused_with_its_password_hidden_and_nothing_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as raised:
        ClaimStore("nodb://user:secret@host/sub/dir/claims")
    assert str(raised.value).startswith("cannot open the claims storage nodb://user:***@host/sub/dir/claims: ")
    assert str(raised.value).endswith("; check the URL and that the database server is running")
    assert "secret" not in str(raised.value) and "None" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []  # no folder made for a database that is not a SQLite file


def test_a_claim_waits_for_a_sqlite_lock_longer_than_sqlite_s_own_five_seconds(tmp_path):
    claims = store(tmp_path)
    holder = locked_for(tmp_path / "deep" / "er" / "claims.sqlite", 5.5)
    assert claims.claim("k")  # waited for the other worker's write, not refused after 5 s
    holder.join()


def test_a_table_created_by_another_worker_between_the_check_and_the_create_is_a_race(tmp_path):
    """`create_all` checks that the table is missing, then creates it; another worker may create it in between.
    The CREATE then fails with 'already exists', and the retry finds the table."""
    path = tmp_path / "race.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}")
    metadata = sa.MetaData()
    sa.Table("t", metadata, sa.Column("x", sa.Integer, primary_key=True))
    raced = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def other_worker_first(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith("CREATE TABLE") and not raced:
            raced.append(statement)
            import sqlite3

            other = sqlite3.connect(path)
            other.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
            other.commit()
            other.close()

    create_tables(metadata, engine)
    assert raced and sa.inspect(engine).get_table_names() == ["t"]
