"""Shared fixtures: one dataset cache for the whole session (digits-mosaic is built once), fresh results folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.runner import Workspace


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pamlbench-cache")


@pytest.fixture
def workspace(tmp_path: Path, cache_root: Path) -> Workspace:
    return Workspace(results=tmp_path / "results", cache=cache_root)
