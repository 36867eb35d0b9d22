"""Shared fixtures: one dataset cache for the whole session (digits-mosaic is built once), fresh results folders,
and test plugins on PAMLBENCH_PLUGIN_PATH (mini-mosaic, methods that fail on purpose)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures import PROJECT_GRID, TEST_PLUGINS, plugin_path

from bench.execute.workspace import Workspace

SHARED_MODULE_FIXTURE = ("tests/test_cluster.py", "tests/test_digits_mosaic.py", "tests/test_recipes.py")
"""Test files whose tests share a costly module-scoped fixture (a Ray cluster, a built dataset, a prepared folder)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked slow run first: the xdist workers take tests from one queue, so the short tests fill the end of
    the run and neither worker waits long for the other."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unused when it is not loaded
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """The xdist workers take tests one at a time from one queue, except that each file of SHARED_MODULE_FIXTURE
    goes whole to one worker, which builds its fixture once. (xdist's own `--dist loadgroup` marks do not group
    under pytest 9.2, which no longer reads the node id xdist rewrites.)"""
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureFilesTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::")[0]
            return path if path in SHARED_MODULE_FIXTURE else nodeid

    return SharedFixtureFilesTogether(config, log)


@pytest.fixture
def mini_mosaic() -> Iterator[str]:
    """The dataset name 'mini-mosaic' (digits-mosaic's construction at an eighth of its size), registered for this
    test and for the commands it starts: for tests of whole commands whose subject is not the dataset."""
    with plugin_path(TEST_PLUGINS):
        yield "mini-mosaic"


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pamlbench-cache")


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory, cache_root: Path) -> Path:
    """A working folder with one finished record (trained with MLflow tracking on) and a grid file, built once per
    test process for the bad-input, hostile-input and plan tests."""
    from bench.cli.main import main

    root = tmp_path_factory.mktemp("trained-project")
    (root / "grid.toml").write_text(PROJECT_GRID)
    here = Path.cwd()
    os.chdir(root)
    try:
        assert main(["bench", "--config", "grid.toml", "--cache", str(cache_root), "--no-report", "--jobs", "1",
                     "--threads", "1"]) == 0  # in this process, with the thread count of the default plan
    finally:
        os.chdir(here)
    return root


@pytest.fixture
def project(trained_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the trained project, as the working folder."""
    folder = tmp_path / "project"
    shutil.copytree(trained_project, folder)
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def workspace(tmp_path: Path, cache_root: Path) -> Workspace:
    return Workspace(results=tmp_path / "results", cache=cache_root)


FAULTY_METHODS = '''
import torch
from bench import Method


class NanAfterFirstEpoch(Method):
    name = "nan-after-epoch-1"
    summary = "test plugin: assume-negative loss that turns NaN in epoch 2"

    def batch_loss(self, logits, observed, *, epoch, indices=None):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, observed.clamp(min=0))
        return loss * float("nan") if epoch >= 2 else loss


class OutOfMemory(Method):
    name = "out-of-memory"
    summary = "test plugin: fails like a CUDA allocation"

    def batch_loss(self, logits, observed, *, epoch, indices=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
'''


@pytest.fixture
def faulty_plugins(tmp_path: Path) -> Iterator[Path]:
    """An extra plugin folder (on PAMLBENCH_PLUGIN_PATH) with methods that fail on purpose."""
    root = tmp_path / "plugins"
    (root / "methods").mkdir(parents=True)
    (root / "methods" / "faulty.py").write_text(FAULTY_METHODS)
    with plugin_path(root):
        yield root


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on 127.0.0.1 for this test session (Debian's postgresql; `make test` installs it)."""
    import glob
    import os
    import shutil
    import socket
    import subprocess
    import tempfile

    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    if not found:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries (initdb) are missing: `make test` installs Debian's postgresql")
        pytest.skip("PostgreSQL server binaries (initdb) are not installed")
    bindir = Path(found).resolve().parent
    base = Path(tempfile.mkdtemp(prefix="pamlbench-pg-", dir="/tmp"))
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run([*as_owner, str(bindir / "initdb"), "-D", str(base / "data"), "--auth=trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run([*as_owner, str(bindir / "pg_ctl"), "-D", str(base / "data"), "-l", str(base / "log"), "-w",
                    "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"], check=True,
                   capture_output=True)
    yield f"postgresql://postgres@127.0.0.1:{port}"
    subprocess.run([*as_owner, str(bindir / "pg_ctl"), "-D", str(base / "data"), "-m", "immediate", "stop"],
                   capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh database on the session's PostgreSQL server."""
    import uuid

    import sqlalchemy as sa

    name = f"test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return f"{postgres_server}/{name}"
