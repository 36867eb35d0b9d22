"""The papers' setup as data (bench/plan/papers.toml): published numbers, the BoostLU ablation's cells, the figures'
picks, the regime criteria and the `paper` recipes. The one place where the harness names concrete methods and
datasets."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

PAPERS_FILE = Path(__file__).with_name("papers.toml")


@cache
def papers() -> dict[str, Any]:
    """bench/plan/papers.toml, parsed once."""
    return tomllib.loads(PAPERS_FILE.read_text())
