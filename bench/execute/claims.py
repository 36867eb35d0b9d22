"""Which worker trains which run: a claims table shared by every `pamlbench bench` worker of one benchmark.

A worker claims a run key before training it and marks it done afterwards, storing the finished record with it, so
several workers (processes, GPUs or machines) on one storage each take cells that are not done, no cell is trained
twice while no worker crashes, and every worker can copy the records of cells done elsewhere into its own results
folder.
A crashed worker stops its heartbeat; its claim goes stale after `stale_after` seconds, or at once when the worker
ran on this machine and its process is gone (a `kill -9` followed by the same command), and another worker takes the
cell over (atomically: compare-and-swap on the heartbeat).

Storage: any SQLAlchemy URL — by default a SQLite file next to the results (`results/.claims.sqlite`, enough for
several processes on one machine), or the PostgreSQL URL given with `--storage` for several machines.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from bench.errors import UserError, first_line, redact

HEARTBEAT_SECONDS = 30.0
"""Heartbeat of claims and tuning trials; a claim or trial silent for a few beats is taken over or retried."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def dead_local_worker(worker: str) -> bool:
    """True if `worker` (a worker_name) ran on this machine and its process no longer exists."""
    host, _, rest = worker.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def process_started(pid: int) -> str | None:
    """When process `pid` of this machine started (its start time in clock ticks since boot, from /proc), or None
    when there is no such process; 'unknown' for a process that exists but whose start time cannot be read (no
    /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except (PermissionError, OverflowError):
        return "unknown"
    return "unknown"


def process_owner() -> dict[str, str | int | None]:
    """This process as an owner: {host, pid, started}."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": process_started(os.getpid())}


def owner_gone(owner: dict) -> bool:
    """True when `owner` (`process_owner` of some process) ran on this machine and that process is gone: no such pid,
    or a pid now reused by a process that started at another time."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    now = process_started(owner["pid"])
    return now is None or (owner.get("started") not in (None, "unknown") and now != owner["started"])


class ClaimStore:
    """The claims table at `url`. Rows: run_key (primary key), worker, status (running/done), heartbeat (epoch
    seconds), record (the finished record's JSON)."""

    def __init__(self, url: str, stale_after: float = 120.0) -> None:
        self.url = url
        self.stale_after = stale_after
        self.worker = worker_name()
        connect_args = {"timeout": 60} if url.startswith("sqlite") else {}
        try:
            database = sa.engine.make_url(url).database
            if url.startswith("sqlite") and database:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
            metadata = sa.MetaData()
            self.table = sa.Table("pamlbench_claims", metadata,
                                  sa.Column("run_key", sa.String(64), primary_key=True),
                                  sa.Column("worker", sa.String(200), nullable=False),
                                  sa.Column("status", sa.String(16), nullable=False),
                                  sa.Column("heartbeat", sa.Float, nullable=False),
                                  sa.Column("record", sa.Text, nullable=True))
            create_tables(metadata, self.engine)
        except (SQLAlchemyError, ImportError, OSError, ValueError) as error:
            raise UserError(f"cannot open the claims storage {redact(url)}: {first_line(error)}; check the URL and "
                            "that the database server is running") from None

    def claim(self, run_key: str) -> bool:
        """True if this worker now owns `run_key`: it was free, or its owner stopped its heartbeat."""
        now = time.time()
        try:
            with self.engine.begin() as connection:
                connection.execute(self.table.insert().values(run_key=run_key, worker=self.worker, status="running",
                                                              heartbeat=now))
            return True
        except IntegrityError:
            pass
        with self.engine.begin() as connection:
            row = connection.execute(sa.select(self.table).where(self.table.c.run_key == run_key)).one_or_none()
            if row is None or row.status == "done":
                return False
            if now - row.heartbeat < self.stale_after and not dead_local_worker(row.worker):
                return False
            taken = connection.execute(self.table.update().where(
                (self.table.c.run_key == run_key) & (self.table.c.heartbeat == row.heartbeat)
                & (self.table.c.status == "running")).values(worker=self.worker, heartbeat=now))
            return taken.rowcount == 1

    def done_record(self, run_key: str) -> dict | None:
        """The record of `run_key` if some worker finished it, else None."""
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(self.table.c.status, self.table.c.record).where(
                self.table.c.run_key == run_key)).one_or_none()
        return json.loads(row.record) if row is not None and row.status == "done" and row.record else None

    def beat(self, run_key: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(self.table.update().where(
                (self.table.c.run_key == run_key) & (self.table.c.worker == self.worker)).values(heartbeat=time.time()))

    def finish(self, run_key: str, record: dict) -> None:
        """Mark `run_key` done and keep its record."""
        with self.engine.begin() as connection:
            connection.execute(self.table.update().where(self.table.c.run_key == run_key).values(
                status="done", worker=self.worker, heartbeat=time.time(), record=json.dumps(record, sort_keys=True)))

    def forget(self, run_key: str) -> None:
        """Drop any claim of `run_key`, done or not (so that it is trained again)."""
        with self.engine.begin() as connection:
            connection.execute(self.table.delete().where(self.table.c.run_key == run_key))

    def release(self, run_key: str) -> None:
        """Give a claim back without finishing (the run stopped on an error that is not the method's)."""
        with self.engine.begin() as connection:
            connection.execute(self.table.delete().where(
                (self.table.c.run_key == run_key) & (self.table.c.worker == self.worker)
                & (self.table.c.status == "running")))

    def keep_alive(self, run_key: str) -> threading.Event:
        """Beat for `run_key` in a background thread until the returned event is set."""
        return self.keep_alive_all({run_key})

    def keep_alive_all(self, run_keys: set[str]) -> threading.Event:
        """Beat for every key in the set `run_keys`, which the caller may change while it runs (a cluster driver
        adds and removes the keys of its cells in flight), until the returned event is set."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(HEARTBEAT_SECONDS):
                for run_key in list(run_keys):
                    try:
                        self.beat(run_key)
                    except OperationalError:
                        continue

        threading.Thread(target=loop, daemon=True, name="claims-heartbeat").start()
        return stop


def create_tables(metadata: sa.MetaData, engine: sa.Engine, attempts: int = 5) -> None:
    """CREATE TABLE IF NOT EXISTS, retried: two workers starting together race on PostgreSQL's catalog, and on
    SQLite one of them can see 'table ... already exists' or a locked database."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            return
        except (IntegrityError, sa.exc.ProgrammingError, OperationalError) as error:
            racing = not isinstance(error, OperationalError) or "already exists" in str(error) or "locked" in str(
                error)
            if attempt == attempts - 1 or not racing:
                raise
            time.sleep(0.2 * (attempt + 1))
