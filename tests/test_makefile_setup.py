"""The Makefile's install step: a failed install fails `make setup` and leaves no stamp, so that `make test` or
`make bench` never go on with a broken virtual environment (say, a torch wheel cut short by a full disk).

The virtual environment is a stand-in: a folder whose `bin/python` answers `-m pip ...` and `-c ...` with the exit
codes the test asks for, and logs how it was called. Everything else is the real Makefile run by the real make."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAND_IN_PYTHON = """#!/bin/bash
echo "python $*" >> "$LOG"
case "$1" in
  -m) echo "WARNING: Location '/nowhere' is ignored: it is neither a file nor a directory." >&2; exit "$PIP_EXIT";;
  -c) exit "$IMPORT_EXIT";;
esac
"""


def make_setup(tmp_path: Path, pip_exit: int, import_exit: int) -> tuple[subprocess.CompletedProcess, Path, str]:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(STAND_IN_PYTHON)
    python.chmod(0o755)
    log = tmp_path / "calls.log"
    env = {**os.environ, "LOG": str(log), "PIP_EXIT": str(pip_exit), "IMPORT_EXIT": str(import_exit)}
    result = subprocess.run(["make", "-C", str(REPO), "--no-print-directory", f"VENV={venv}", "setup"],
                            capture_output=True, text=True, env=env, timeout=60)
    return result, venv / ".pamlbench-installed", log.read_text() if log.exists() else ""


def test_a_good_install_leaves_the_stamp_and_hides_only_the_wheel_folder_noise(tmp_path):
    result, stamp, calls = make_setup(tmp_path, pip_exit=0, import_exit=0)
    assert result.returncode == 0, result.stdout + result.stderr
    assert stamp.exists()
    assert "-m pip install" in calls and "-c import torch, torchvision" in calls
    assert "--no-compile" in calls and "-m compileall -q -j 0" in calls  # compiled once, on every core
    assert "is ignored" not in result.stdout + result.stderr


@pytest.mark.parametrize("pip_exit, import_exit", [(1, 0), (0, 1)], ids=["pip fails", "torch does not import"])
def test_a_failed_install_fails_setup_and_leaves_no_stamp(tmp_path, pip_exit, import_exit):
    result, stamp, _ = make_setup(tmp_path, pip_exit=pip_exit, import_exit=import_exit)
    assert result.returncode != 0
    assert not stamp.exists()
    if import_exit:
        assert "torch does not import" in result.stdout + result.stderr
